"""The CRD: generated from the spec model, structural, valid for Kubernetes 1.30, in the chart,
accepting every example and rejecting bad documents at the field that is wrong."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from operator_fakes import experiment
from pydantic import BaseModel

from p2p_job.cli import main
from p2p_job.spec import InvalidSpec, parse_experiment
from p2pk_operator.crd import CRD_NAME, crd_yaml, custom_resource_definition, structural_schema

ROOT = Path(__file__).resolve().parents[2]
CHART_CRD = ROOT / "charts" / "p2pk" / "crds" / "p2pexperiments.p2pk.io.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CRD = custom_resource_definition()
(VERSION,) = CRD["spec"]["versions"]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def api_server_schema(node: dict, path: str = "") -> dict:
    """The CRD schema as a JSON Schema (draft 4, whose exclusiveMinimum is a boolean like
    OpenAPI 3.0's) checking what the API server checks on ``kubectl apply``: nullable fields
    take null, int-or-string takes either, and unknown fields are errors (kubectl's default
    strict field validation) except under metadata, which the server validates itself."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if "properties" in node:
        out["properties"] = {k: api_server_schema(v, f"{path}.{k}") for k, v in node["properties"].items()}
        if path != ".metadata":
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out[key] = api_server_schema(node[key], f"{path}[]")
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


VALIDATOR = jsonschema.Draft4Validator(api_server_schema(SCHEMA))


def schema_errors(doc: dict) -> list[tuple[str, str]]:
    return sorted((".".join(map(str, e.absolute_path)), e.message) for e in VALIDATOR.iter_errors(doc))


def walk(node: dict, path: str = ""):
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from walk(node[key], f"{path}[]")


# --------------------------------------------------------------------------- the CRD itself


def test_chart_holds_the_generated_crd():
    assert CHART_CRD.read_text() == crd_yaml(), "regenerate it: p2pk crd > charts/p2pk/crds/p2pexperiments.p2pk.io.yaml"


def test_p2pk_crd_prints_the_crd(capsys):
    assert main(["crd"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == CRD


def test_crd_passes_kubernetes_validate_strict_for_1_30():
    kubernetes_validate.validate(CRD, "1.30.0", strict=True)


def test_names_status_subresource_and_printer_columns():
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == CRD_NAME == "p2pexperiments.p2pk.io"
    assert (spec["group"], spec["scope"]) == ("p2pk.io", "Namespaced")
    assert spec["names"]["kind"] == "P2PExperiment" and spec["names"]["plural"] == "p2pexperiments"
    assert spec["names"]["shortNames"] == ["p2px"]
    assert VERSION["name"] == "v1alpha1" and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}
    columns = VERSION["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == ["Phase", "Clients", "Round", "FNR", "FPR", "Age"]
    # Every column points at a field of the schema with the column's type.
    fields = dict(walk(SCHEMA))
    for column in columns[:-1]:
        node = fields[column["jsonPath"]]
        assert node["type"] == column["type"], column
    assert columns[-1]["jsonPath"] == ".metadata.creationTimestamp"


def test_schema_is_structural():
    """The API server's rules for structural schemas (apiextensions v1)."""
    for path, node in walk(SCHEMA):
        assert not {"$ref", "$defs", "allOf", "oneOf", "not", "const", "default", "title"} & set(node), path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "anyOf" not in node, path
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path}: no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert not isinstance(node.get("additionalProperties"), bool), path
        if node.get("exclusiveMinimum") is not None:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_schema_keeps_descriptions_constraints_and_defaults_of_the_model():
    fields = dict(walk(SCHEMA))
    rounds = fields[".spec.rounds"]
    assert (rounds["type"], rounds["minimum"], rounds["maximum"]) == ("integer", 1, 99_999)
    assert rounds["description"] == "Communication rounds (global epochs); the store numbers them with five digits."
    assert "rounds" in fields[".spec"]["required"] and "scenario" in fields[".spec"]["required"]
    lam = fields[".spec.aggregation.lambda"]
    assert (lam["minimum"], lam["maximum"]) == (0, 1) and lam["description"].endswith("Default: 0.8.")
    prob = fields[".spec.aggregation.updateProbability"]
    assert (prob["minimum"], prob["exclusiveMinimum"], prob["maximum"]) == (0, True, 1)
    assert fields[".spec.dataset.path"] == {**fields[".spec.dataset.path"], "type": "string", "nullable": True}
    assert fields[".spec.methods[].rebalancing"]["enum"] == ["none", "random-over", "random-under", "smote", "ksmote"]
    assert fields[".spec.scenario.clients[].name"]["pattern"] == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    assert fields[".spec.topology.adjacency"]["additionalProperties"] == {"type": "array", "items": {"type": "string"}}
    # Class docstrings become the description of the object (multi-line text joined).
    assert fields[".spec.rebalancing"]["description"].startswith("Parameters of the rebalancing methods")
    assert "\n" not in fields[".spec.rebalancing"]["description"]
    assert fields[".metadata.name"]["maxLength"] == 40
    assert fields[".status.conditions[].type"]["enum"] == ["Created", "Running", "Succeeded", "Failed", "InvalidSpec", "Degraded"]


def test_free_form_objects_keep_unknown_fields():
    class Extra(BaseModel):
        labels: dict[str, object]

    assert structural_schema(Extra)["properties"]["labels"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_a_union_without_structural_form_is_an_error_naming_the_field():
    class Odd(BaseModel):
        size: int | list[int]

    with pytest.raises(ValueError, match=r"Odd\.size: union"):
        structural_schema(Odd)


# --------------------------------------------------------------------------- documents


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates_against_the_crd(path):
    assert schema_errors(yaml.safe_load(path.read_text())) == []


def test_examples_exist():
    assert EXAMPLES, "examples/*.yaml should hold the paper's experiments"


def test_a_full_kubernetes_section_validates():
    doc = experiment(
        gpus=1,
        resources={"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": 4096, "cpu": 2}},
        nodeSelector={"nvidia.com/gpu.present": "true"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        activeDeadlineSeconds=3600,
        ttlSecondsAfterFinished=600,
        serviceAccountName="p2pk-worker",
        purgeOnDelete=True,
    )
    assert schema_errors(doc) == []
    parse_experiment(doc)


def _set(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


DELETE = object()
BAD = [
    ("spec.training", {"learningRate": -1}, "spec.training.learningRate", "minimum"),
    ("spec.methods.0.rebalancing", "adasyn", "spec.methods.0.rebalancing", "is not one of"),
    ("spec.rounds", "ten", "spec.rounds", "is not of type"),
    ("spec.rounds", DELETE, "spec", "'rounds' is a required property"),
    ("spec.trainingg", {}, "spec", "'trainingg' was unexpected"),
    ("metadata.name", "Bad_Name", "metadata.name", "does not match"),
    ("spec.kubernetes.gpus", 17, "spec.kubernetes.gpus", "maximum"),
    ("spec.kubernetes.resources", {"limits": {"cpu": "lots"}}, "spec.kubernetes.resources.limits.cpu", "does not match"),
    ("spec.kubernetes.s3.prefix", "runs/*", "spec.kubernetes.s3.prefix", "does not match"),
    ("spec.kubernetes.tolerations", [{"effect": "Sometimes"}], "spec.kubernetes.tolerations.0.effect", "is not one of"),
    ("spec.aggregation", {"updateProbability": 0}, "spec.aggregation.updateProbability", "minimum"),
    ("spec.scenario.clients.0.name", "A", "spec.scenario.clients.0.name", "does not match"),
]


@pytest.mark.parametrize("where, value, path, message", BAD, ids=[b[2] + ":" + b[3] for b in BAD])
def test_bad_documents_fail_at_the_wrong_field_and_the_model_agrees(where, value, path, message):
    doc = _set(experiment(), where, value)
    errors = schema_errors(doc)
    assert [p for p, _ in errors] == [path], errors
    assert message in errors[0][1]
    with pytest.raises(InvalidSpec):
        parse_experiment(doc)


@pytest.mark.parametrize(
    "where, value, field",
    [
        ("spec.topology", {"kind": "k-regular"}, "topology.degree"),
        ("spec.scenario.clients.1.name", "a", "duplicate client names"),
        ("spec.kubernetes.s3.credentialsSecret", "shared", "not both"),
        ("spec.kubernetes.resources", {"limits": {"nvidia.com/gpu": 1}}, "kubernetes.gpus"),
    ],
)
def test_cross_field_rules_pass_the_schema_and_fail_in_the_model(where, value, field):
    doc = _set(experiment(), where, value)
    assert schema_errors(doc) == []
    with pytest.raises(InvalidSpec, match=field.replace(".", r"\.")):
        parse_experiment(doc)
