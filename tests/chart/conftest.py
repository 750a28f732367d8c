"""Fixtures for the Helm chart tests: helm, the chart rendered with the default values and
with each example values file, and the P2PExperiment CRD."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from helmchart import CRD_FILE, HELM, Helm, require


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> Helm:
    require(HELM, "helm", "run scripts/get-tools.sh")
    return Helm(tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="session")
def render(helm):
    """render(values_file or None, *extra args) -> objects, cached per argument list."""
    cache: dict[tuple, list[dict]] = {}

    def _render(values_file: Path | None, *extra: str) -> list[dict]:
        args = (*(("-f", str(values_file)) if values_file else ()), *extra)
        if args not in cache:
            cache[args] = helm.template(*args)
        return cache[args]

    return _render


@pytest.fixture(scope="session")
def crd() -> dict:
    require(CRD_FILE, "the P2PExperiment CRD", "generate it with `p2pk crd > charts/p2pk/crds/p2pexperiments.p2pk.io.yaml`")
    return yaml.safe_load(CRD_FILE.read_text())


@pytest.fixture(scope="session")
def crd_validator(crd) -> jsonschema.Draft4Validator:
    """A validator for the served, stored version's openAPIV3Schema. A CRD schema is OpenAPI
    v3.0, whose exclusiveMinimum/Maximum are booleans beside minimum/maximum as in JSON Schema
    draft 4 (draft 6 and later made them numbers)."""
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    return jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])
