"""The bytes of a publication, and the checks a receiver makes before trusting them.

DESIGN "Store layout": a peer's round-r publication is three objects —
``model.safetensors`` (its model delta vs w0, float32, :func:`encode_state`),
``synthetic.parquet`` (its shared α-fraction of D_syn in raw feature units, equation 7: one
column per feature, by name, plus ``label``; :func:`encode_synthetic`) and ``manifest.json``
(:func:`encode_manifest`, written last: sizes and sha256 of both payloads, |D_base| and
Var(D_base) for p_k of equation 6, and the sender's last metrics).

Everything read from a neighbour is untrusted. Nothing is unpickled: safetensors and Parquet are
plain data formats. A payload that fails any check raises :class:`PayloadRejected` with one of
:data:`REJECT_REASONS` (the ``reason`` label of ``p2pk_payloads_rejected_total``) and a message
naming the object and what is wrong; the receiver leaves that neighbour out of the round.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from typing import Any

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

MANIFEST_FORMAT = "p2pk.manifest/v1"
MODEL_FILE = "model.safetensors"
SYNTHETIC_FILE = "synthetic.parquet"
MANIFEST_FILE = "manifest.json"
LABEL_COLUMN = "label"
#: Caps on a manifest, whatever ``runtime.maxPayloadMb`` says: a real one is well under 2 KiB,
#: with at most 2 evaluation sets × 8 metrics.
MAX_MANIFEST_BYTES = 64 * 1024
MAX_MANIFEST_METRICS = 64
#: |D_base| and n_synthetic above this are no dataset's (and stay exact in float64).
MAX_COUNT = 2**53

#: Reasons a payload is rejected (label values of ``p2pk_payloads_rejected_total{reason}``).
REJECT_REASONS = (
    "malformed",        # not parseable as JSON / safetensors / Parquet
    "schema",           # manifest fields missing, mistyped, or naming another run/client/round
    "too-large",        # over runtime.maxPayloadMb (a manifest: over MAX_MANIFEST_BYTES)
    "hash-mismatch",    # bytes differ from the manifest's sha256 or size
    "model-mismatch",   # tensor names, shapes or dtypes differ from the model's state
    "non-finite",       # NaN or infinity in weights or points
    "bad-synthetic",    # wrong columns, non-numeric values or labels outside {0, 1}
    # the values checked against what the receiver knows (p2p_job.screening):
    "bad-weights",      # |D_base| above the spec's count for that client, variance outside [0, 1/4]
    "too-many-points",  # more shared points than α·r·|D_base| (0 when the method does not share)
    "wrong-label",      # a shared point not of the sender's minority class
    "out-of-range",     # a shared point beyond rebalancing.pointTolerance of the receiver's feature ranges
    "class-region",     # a shared point inside the receiver's own region of the other class (rebalancing.classRegion)
    "degenerate",       # a model with non-finite values or outputs, or a BatchNorm variance <= 0
    "robust-rule",      # a model aggregation.robustRule left out (krum, multi-krum, filtered-clipped-mean, validation)
    "hostile-sender",   # a shared point whose sender's model was refused as hostile (aggregation.refuseHostilePoints)
)


class PayloadRejected(ValueError):
    """A neighbour's payload failed validation; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str, where: str, detail: str):
        assert reason in REJECT_REASONS, reason
        self.reason = reason
        self.where = where
        self.detail = detail
        super().__init__(f"{where}: {reason}: {detail}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- model state


#: Expected tensors of a model state: name → (shape, dtype).
StateLayout = dict[str, tuple[tuple[int, ...], np.dtype]]


def state_layout(state: dict[str, np.ndarray]) -> StateLayout:
    """The names, shapes and dtypes a received state must have (taken from w0)."""
    return {name: (tuple(a.shape), a.dtype) for name, a in state.items()}


def encode_state(state: dict[str, np.ndarray]) -> bytes:
    """safetensors bytes of named arrays; the same arrays always give the same bytes."""
    return safetensors_save({name: np.ascontiguousarray(state[name]) for name in sorted(state)})


def decode_state(data: bytes, layout: StateLayout, where: str) -> dict[str, np.ndarray]:
    """Parse safetensors bytes and check them against ``layout``: exactly the expected tensor
    names, each with the expected shape and dtype, every value finite."""
    try:
        state = safetensors_load(data)
    except Exception as exc:  # safetensors raises its own error types for any malformed header
        raise PayloadRejected("malformed", where, f"not a safetensors file ({exc})") from None
    if state.keys() != layout.keys():
        missing, extra = sorted(layout.keys() - state.keys()), sorted(state.keys() - layout.keys())
        raise PayloadRejected("model-mismatch", where, f"missing tensors {missing}, unexpected tensors {extra}")
    for name, (shape, dtype) in layout.items():
        array = state[name]
        if tuple(array.shape) != shape or array.dtype != dtype:
            raise PayloadRejected(
                "model-mismatch", where,
                f"tensor {name!r} is {array.dtype}{list(array.shape)}, expected {np.dtype(dtype)}{list(shape)}",
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise PayloadRejected("non-finite", where, f"tensor {name!r} holds NaN or infinite values")
    return state


# --------------------------------------------------------------------------- synthetic points


def encode_synthetic(X: np.ndarray, y: np.ndarray, feature_names: list[str]) -> bytes:
    """Parquet bytes: one float32 column per feature (by name), then ``label`` (int8)."""
    if LABEL_COLUMN in feature_names:
        raise ValueError(f"a feature may not be named {LABEL_COLUMN!r} (it is the label column of synthetic.parquet)")
    X = np.asarray(X, dtype=np.float32).reshape(len(y), len(feature_names))
    columns = {name: pa.array(X[:, j]) for j, name in enumerate(feature_names)}
    columns[LABEL_COLUMN] = pa.array(np.asarray(y, dtype=np.int8))
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def decode_synthetic(data: bytes, feature_names: list[str], where: str,
                     max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse Parquet bytes into (X float32 (n, d) in ``feature_names`` order, y int8), checking
    that the columns are exactly the features and ``label``, all numeric, without nulls,
    finite as float32, and every label 0 or 1. The column names and types and the row count
    (at most ``max_rows``) come from the file's metadata and are checked before any value is
    decoded, so a small file that would decode to millions of rows is refused unread."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema, num_rows = parquet.schema_arrow, parquet.metadata.num_rows
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for bad files
        raise PayloadRejected("malformed", where, f"not a Parquet file ({exc})") from None
    expected = [*feature_names, LABEL_COLUMN]
    if sorted(schema.names) != sorted(expected):
        missing = sorted(set(expected) - set(schema.names))
        extra = sorted(set(schema.names) - set(expected))
        raise PayloadRejected("bad-synthetic", where, f"missing columns {missing}, unexpected columns {extra}")
    for name in expected:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise PayloadRejected("bad-synthetic", where, f"column {name!r} has type {kind}, expected a number")
    if max_rows is not None and num_rows > max_rows:
        raise PayloadRejected("too-many-points", where, f"holds {num_rows} rows, over the {max_rows} allowed")
    try:
        table = parquet.read()
    except Exception as exc:
        raise PayloadRejected("malformed", where, f"Parquet data does not decode ({exc})") from None
    if table.num_rows != num_rows:
        raise PayloadRejected("malformed", where, f"decodes to {table.num_rows} rows, its metadata says {num_rows}")
    for name in expected:
        column = table.column(name)
        if column.null_count:
            raise PayloadRejected("bad-synthetic", where, f"column {name!r} has {column.null_count} null value(s)")
    X = np.empty((table.num_rows, len(feature_names)), dtype=np.float32)
    with np.errstate(over="ignore"):
        for j, name in enumerate(feature_names):
            X[:, j] = table.column(name).to_numpy().astype(np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PayloadRejected("non-finite", where, f"row {row}, column {feature_names[col]!r} is {X[row, col]} as float32")
    labels = table.column(LABEL_COLUMN).to_numpy()
    outside = ~np.isin(labels, (0, 1))
    if outside.any():
        row = int(np.argmax(outside))
        raise PayloadRejected("bad-synthetic", where, f"row {row}: label {labels[row].item()!r} is not 0 or 1")
    return X, labels.astype(np.int8)


# --------------------------------------------------------------------------- manifest

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_PAYLOAD = {
    "type": "object",
    "required": ["sha256", "bytes"],
    "additionalProperties": False,
    "properties": {"sha256": _SHA256, "bytes": {"type": "integer", "minimum": 0}},
}
#: JSON schema of manifest.json (docs/internals.md "Store").
MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["format", "experiment", "method", "client", "round", "n_base", "variance", "n_synthetic", "payloads", "metrics"],
    "additionalProperties": False,
    "properties": {
        "format": {"const": MANIFEST_FORMAT},
        "experiment": {"type": "string"},
        "method": {"type": "string"},
        "client": {"type": "string"},
        "round": {"type": "integer", "minimum": 0},
        "n_base": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
        "variance": {"type": "number", "minimum": 0},  # finite: decode_manifest; tighter: p2p_job.screening
        "n_synthetic": {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
        "payloads": {
            "type": "object",
            "required": [MODEL_FILE, SYNTHETIC_FILE],
            "additionalProperties": False,
            "properties": {MODEL_FILE: _PAYLOAD, SYNTHETIC_FILE: _PAYLOAD},
        },
        # a metric that is undefined (NaN) is written as null: JSON has no NaN
        "metrics": {
            "type": "object",
            "maxProperties": MAX_MANIFEST_METRICS,
            "propertyNames": {"maxLength": 64},
            "additionalProperties": {"type": ["number", "null"]},
        },
    },
}


def encode_manifest(*, experiment: str, method: str, client: str, round: int, n_base: int, variance: float,
                    n_synthetic: int, payloads: dict[str, bytes], metrics: dict[str, float]) -> bytes:
    """manifest.json bytes (sorted keys: the same publication always gives the same bytes)."""
    document = {
        "format": MANIFEST_FORMAT,
        "experiment": experiment,
        "method": method,
        "client": client,
        "round": int(round),
        "n_base": int(n_base),
        "variance": float(variance),
        "n_synthetic": int(n_synthetic),
        "payloads": {name: {"sha256": sha256(data), "bytes": len(data)} for name, data in payloads.items()},
        "metrics": {k: (float(v) if math.isfinite(v) else None) for k, v in metrics.items()},
    }
    return json.dumps(document, sort_keys=True, allow_nan=False).encode("utf-8")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def decode_manifest(data: bytes, where: str, *, experiment: str, method: str, client: str, round: int) -> dict[str, Any]:
    """Parse and check a manifest: the schema above, and that it is the manifest of
    (experiment, method, client, round) it was fetched as. Null metrics become NaN."""
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PayloadRejected("malformed", where, f"not strict JSON ({exc})") from None
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(MANIFEST_SCHEMA).iter_errors(document))
    if error is not None:
        raise PayloadRejected("schema", where, f"{error.json_path}: {error.message}")
    if not math.isfinite(document["variance"]):  # JSON's 1e999 parses as infinity
        raise PayloadRejected("schema", where, f"$.variance: {document['variance']} is not finite")
    claimed = {k: document[k] for k in ("experiment", "method", "client", "round")}
    wanted = {"experiment": experiment, "method": method, "client": client, "round": round}
    if claimed != wanted:
        wrong = sorted(k for k in wanted if claimed[k] != wanted[k])
        raise PayloadRejected("schema", where, f"names {', '.join(f'{k}={claimed[k]!r}' for k in wrong)}, expected {', '.join(f'{k}={wanted[k]!r}' for k in wrong)}")
    document["metrics"] = {k: (math.nan if v is None else float(v)) for k, v in document["metrics"].items()}
    return document


def check_declared_size(manifest: dict[str, Any], name: str, max_bytes: int, where: str) -> None:
    """Reject before download when the manifest declares a payload over the size cap."""
    declared = manifest["payloads"][name]["bytes"]
    if declared > max_bytes:
        raise PayloadRejected("too-large", where, f"declares {declared} bytes, over the cap of {max_bytes} (runtime.maxPayloadMb)")


def check_payload(manifest: dict[str, Any], name: str, data: bytes | None, where: str) -> bytes:
    """The payload must be present and match the manifest's size and sha256."""
    if data is None:
        raise PayloadRejected("hash-mismatch", where, "listed in the manifest but absent from the store")
    entry = manifest["payloads"][name]
    if len(data) != entry["bytes"] or sha256(data) != entry["sha256"]:
        raise PayloadRejected(
            "hash-mismatch", where,
            f"{len(data)} bytes with sha256 {sha256(data)[:12]}…, manifest says {entry['bytes']} bytes, {entry['sha256'][:12]}…",
        )
    return data
