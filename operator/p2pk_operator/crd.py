"""The P2PExperiment CustomResourceDefinition, generated from the spec model.

``p2p_job.spec`` is the single source of truth for the experiment's fields: this module turns
its pydantic JSON schema into the *structural* ``openAPIV3Schema`` the Kubernetes API server
wants, so ``kubectl apply`` rejects what the model would reject wherever a schema can say so
(types, enums, ranges, patterns, required fields). Cross-field rules stay in the model and
surface as the InvalidSpec condition (see ``p2pk_operator.reconcile``).

The translation (JSON Schema 2020-12 as pydantic writes it → OpenAPI v3.0 subset of CRDs):

- ``$ref``/``$defs`` are inlined (structural schemas have no references);
- ``anyOf: [X, null]`` (an ``Optional``) becomes X with ``nullable: true``;
  ``anyOf: [integer, string]`` (a quantity) becomes ``x-kubernetes-int-or-string``;
- ``const`` (a one-value ``Literal``) becomes a one-value ``enum``;
- ``exclusiveMinimum: v`` becomes ``minimum: v, exclusiveMinimum: true`` (and the maximum alike);
- ``additionalProperties: false`` beside ``properties`` is dropped (the API server prunes and,
  with kubectl's default strict field validation, rejects unknown fields);
  ``additionalProperties: true`` becomes ``x-kubernetes-preserve-unknown-fields``;
- ``title`` is dropped; a scalar ``default`` is moved into the description ("Default: …"), so
  the stored object is exactly what the user wrote and the model stays the only place that
  fills defaults.

Anything else raises :class:`ValueError` naming the schema path, so a new kind of field cannot
be dropped from the CRD silently.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from pydantic import BaseModel

from p2p_job.spec import API_GROUP, API_VERSION, KIND, ExperimentSpec, Metadata
from p2pk_operator.status import ExperimentStatus

PLURAL = "p2pexperiments"
SINGULAR = "p2pexperiment"
SHORT_NAMES = ["p2px"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"

#: Keys copied as they are (OpenAPI v3.0 and JSON Schema agree on them).
_SAME = ("type", "enum", "minimum", "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties", "maxProperties", "format")
#: Keys consumed by the translation below.
_HANDLED = {"description", "$ref", "anyOf", "const", "default", "title", "properties", "required", "items", "additionalProperties", "exclusiveMinimum", "exclusiveMaximum"}

#: ``kubectl get p2px`` columns (DESIGN, "Kubernetes conventions").
PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Pending, Running, Succeeded or Failed."},
    {"name": "Clients", "type": "string", "jsonPath": ".status.readyClients", "description": "Clients whose Jobs are all running or succeeded / clients."},
    {"name": "Round", "type": "integer", "jsonPath": ".status.round.slowest", "description": "Rounds completed by the slowest client."},
    {"name": "FNR", "type": "number", "jsonPath": ".status.fnr", "description": "Latest false negative rate, mean over clients (first method)."},
    {"name": "FPR", "type": "number", "jsonPath": ".status.fpr", "description": "Latest false positive rate, mean over clients (first method)."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's validation JSON schema (camelCase names) as a structural OpenAPI v3 schema."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(schema, schema.get("$defs", {}), model.__name__)


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    unknown = set(node) - _HANDLED - set(_SAME) - {"$defs"}
    if unknown:
        raise ValueError(f"{path}: no CRD translation for JSON-schema keys {sorted(unknown)}")
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}  # the field's own description wins
        return _convert(merged, defs, path)
    if "anyOf" in node:
        return _convert_union(node, defs, path)

    out: dict[str, Any] = {**_description(node), **{key: node[key] for key in _SAME if key in node}}
    if "const" in node:
        out["enum"] = [node["const"]]
        out.setdefault("type", _json_type(node["const"]))
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:
            out[flag] = node[bound]
            out[bound] = True
    if "properties" in node:
        out["properties"] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in node["properties"].items()}
        if node.get("required"):
            out["required"] = list(node["required"])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        if "properties" in node:
            raise ValueError(f"{path}: both properties and additionalProperties schemas; a structural schema allows one")
        out["additionalProperties"] = _convert(extra, defs, f"{path}.*")
    elif extra is True:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in node:
        out["items"] = _convert(node["items"], defs, f"{path}[]")
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise ValueError(f"{path}: no type; a structural schema needs one on every field")
    return out


def _description(node: dict[str, Any]) -> dict[str, str]:
    """The description, with a scalar default appended ("Default: 0.8.")."""
    text = re.sub(r"(?<!\n)\n(?!\n)", " ", node.get("description", "")).replace("``", "`")  # docstring lines → one paragraph
    default = node.get("default")
    if default is not None and not isinstance(default, dict):
        note = f"Default: {json.dumps(default, ensure_ascii=False)}."
        text = f"{text} {note}" if text else note
    return {"description": text} if text else {}


def _convert_union(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """``Optional[X]`` → X + nullable; ``int | str`` (a quantity) → int-or-string."""
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    branches = [b for b in node["anyOf"] if b != {"type": "null"}]
    if len(branches) == 1:
        out = _convert({**branches[0], **rest}, defs, path)
    elif sorted(b.get("type") for b in branches) == ["integer", "string"]:
        patterns = [b["pattern"] for b in branches if "pattern" in b]
        out = {
            **_description(rest),
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            **({"pattern": patterns[0]} if patterns else {}),
            "x-kubernetes-int-or-string": True,
        }
    else:
        raise ValueError(f"{path}: union of {[b.get('type') for b in branches]} has no structural form")
    if len(branches) < len(node["anyOf"]):
        out["nullable"] = True
    return out


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]


def custom_resource_definition() -> dict[str, Any]:
    """The CRD (apiextensions.k8s.io/v1) for ``P2PExperiment``: spec and status schemas from the
    models, the status subresource, short name ``p2px`` and the printer columns."""
    openapi = {
        "type": "object",
        "description": "A peer-to-peer federated learning experiment for IoT attack detection with K-SMOTE "
        "rebalancing (P2PK-SMOTE): the operator runs one Job per method and client.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # Only metadata.name may be constrained in a CRD; it becomes Job and user names.
            "metadata": {"type": "object", "properties": {"name": structural_schema(Metadata)["properties"]["name"]}},
            "spec": structural_schema(ExperimentSpec),
            "status": structural_schema(ExperimentStatus),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "p2pk", "app.kubernetes.io/component": "crd"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["p2pk"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi},
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML document ``p2pk crd`` prints (and ``charts/p2pk/crds/`` holds)."""
    header = "# Generated by `p2pk crd` from p2p_job/spec.py and p2pk_operator/status.py: do not edit.\n"
    return header + yaml.safe_dump(custom_resource_definition(), sort_keys=False, allow_unicode=True, width=120)
