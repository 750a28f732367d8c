"""Helpers for the Helm chart tests: paths, the real helm binary (scripts/get-tools.sh puts it
in .tools/bin) run with its cache/config/data homes in a temp dir, and object lookups."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "p2pk"
HELM = ROOT / ".tools" / "bin" / "helm"
CRD_FILE = CHART / "crds" / "p2pexperiments.p2pk.io.yaml"
KUBE_VERSION = "1.30.0"

#: None = the chart's default values; then every example values file.
VALUES_FILES = [None, *sorted(CHART.glob("examples/*-values.yaml"))]
VALUES_IDS = ["default" if v is None else v.name.removesuffix("-values.yaml") for v in VALUES_FILES]


def require(path: Path, what: str, how: str) -> None:
    """Skip when a tool or generated file is absent locally; fail in CI (env CI set)."""
    if path.exists():
        return
    message = f"{what} not found at {path.relative_to(ROOT)}: {how}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Helm:
    """Runs the helm binary against the chart with isolated HELM_*_HOME directories."""

    def __init__(self, home: Path):
        self.env = dict(os.environ)
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            self.env[var] = str(home / var.lower())

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(HELM), *args], env=self.env, capture_output=True, text=True, timeout=120)

    def template(self, *args: str, release: str = "exp", namespace: str = "p2pk") -> list[dict]:
        """`helm template` of the chart; returns the rendered objects (hooks included)."""
        proc = self.run("template", release, str(CHART), "--namespace", namespace,
                        "--kube-version", KUBE_VERSION, *args)
        assert proc.returncode == 0, f"helm template {' '.join(args)} failed:\n{proc.stderr}"
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def hooks(objects: list[dict], hook: str) -> list[dict]:
    """The objects carrying the helm.sh/hook annotation `hook` (e.g. "test")."""
    return [o for o in objects if o["metadata"].get("annotations", {}).get("helm.sh/hook") == hook]


def release_objects(objects: list[dict]) -> list[dict]:
    """What `helm install` creates with the release (hooks left out)."""
    return [o for o in objects if "helm.sh/hook" not in o["metadata"].get("annotations", {})]
