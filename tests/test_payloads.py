"""Publication bytes and the receiver's checks: every malformed or hostile payload is rejected
with its reason code and a message naming what is wrong."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from p2p_job.payloads import (
    MODEL_FILE,
    SYNTHETIC_FILE,
    PayloadRejected,
    check_declared_size,
    check_payload,
    decode_manifest,
    decode_state,
    decode_synthetic,
    encode_manifest,
    encode_state,
    encode_synthetic,
    sha256,
    state_layout,
)

STATE = {"0.weight": np.arange(6, dtype=np.float32).reshape(3, 2), "0.bias": np.ones(3, dtype=np.float32)}
NAMES = ["f0", "f1", "f2"]


def rejected(reason: str, match: str = ""):
    return pytest.raises(PayloadRejected, match=f"^where: {reason}: .*{match}")


def parquet(columns: dict) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


# --------------------------------------------------------------------------- model state


def test_state_round_trip_is_exact_and_deterministic():
    data = encode_state(STATE)
    assert data == encode_state(dict(reversed(STATE.items())))
    back = decode_state(data, state_layout(STATE), "where")
    assert back.keys() == STATE.keys()
    for name in STATE:
        np.testing.assert_array_equal(back[name], STATE[name])
        assert back[name].dtype == np.float32


def test_state_with_other_tensor_names_is_rejected():
    other = {**STATE, "extra": np.zeros(1, np.float32)}
    with rejected("model-mismatch", r"unexpected tensors \['extra'\]"):
        decode_state(encode_state(other), state_layout(STATE), "where")


def test_state_with_wrong_shape_or_dtype_is_rejected():
    with rejected("model-mismatch", r"'0.bias' is float32\[4\], expected float32\[3\]"):
        decode_state(encode_state({**STATE, "0.bias": np.ones(4, np.float32)}), state_layout(STATE), "where")
    with rejected("model-mismatch", r"'0.bias' is float64\[3\]"):
        decode_state(encode_state({**STATE, "0.bias": np.ones(3)}), state_layout(STATE), "where")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_state_with_non_finite_values_is_rejected(bad):
    weight = STATE["0.weight"].copy()
    weight[1, 1] = bad
    with rejected("non-finite", "'0.weight'"):
        decode_state(encode_state({**STATE, "0.weight": weight}), state_layout(STATE), "where")


@pytest.mark.parametrize("data", [b"", b"\x00" * 7, b"\xff" * 8 + b"{}", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"])
def test_garbage_is_not_a_state(data):
    with rejected("malformed", "not a safetensors file"):
        decode_state(data, state_layout(STATE), "where")


# --------------------------------------------------------------------------- synthetic points


def test_synthetic_round_trip_by_column_name():
    X = np.array([[1.5, -2.0, 3.25], [0.0, 1e6, -7.0]], dtype=np.float32)
    y = np.array([1, 0], dtype=np.int8)
    X2, y2 = decode_synthetic(encode_synthetic(X, y, NAMES), NAMES, "where")
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    assert X2.dtype == np.float32 and y2.dtype == np.int8
    # a sender may order (and type) the columns its own way: they are read by name
    shuffled = parquet({"label": [1, 0], "f2": [3.25, -7.0], "f0": [1.5, 0.0], "f1": np.array([-2, 1_000_000])})
    X3, _ = decode_synthetic(shuffled, NAMES, "where")
    np.testing.assert_array_equal(X3, X)


def test_no_synthetic_points_round_trip():
    X, y = decode_synthetic(encode_synthetic(np.empty((0, 3)), np.empty(0), NAMES), NAMES, "where")
    assert X.shape == (0, 3) and y.shape == (0,)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(0, 20), st.just(3)),
              elements=st.floats(width=32, allow_nan=False, allow_infinity=False)),
       st.data())
def test_synthetic_round_trip_property(X, data):
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=len(X), max_size=len(X))), dtype=np.int8)
    X2, y2 = decode_synthetic(encode_synthetic(X, y, NAMES), NAMES, "where")
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)


def test_synthetic_columns_must_be_the_features_and_label():
    with rejected("bad-synthetic", r"missing columns \['f2'\], unexpected columns \['g'\]"):
        decode_synthetic(parquet({"f0": [1.0], "f1": [1.0], "g": [1.0], "label": [0]}), NAMES, "where")
    with rejected("bad-synthetic", r"missing columns \['label'\]"):
        decode_synthetic(parquet({"f0": [1.0], "f1": [1.0], "f2": [1.0]}), NAMES, "where")


def test_synthetic_values_must_be_numbers_without_nulls():
    with rejected("bad-synthetic", "column 'f1' has type string"):
        decode_synthetic(parquet({"f0": [1.0], "f1": ["x"], "f2": [1.0], "label": [0]}), NAMES, "where")
    with rejected("bad-synthetic", "column 'f2' has 1 null"):
        decode_synthetic(parquet({"f0": [1.0, 2.0], "f1": [1.0, 2.0], "f2": [1.0, None], "label": [0, 1]}), NAMES, "where")


def test_synthetic_values_must_be_finite_as_float32():
    with rejected("non-finite", "row 1, column 'f0'"):
        decode_synthetic(parquet({"f0": [1.0, math.nan], "f1": [1.0, 1.0], "f2": [1.0, 1.0], "label": [0, 1]}), NAMES, "where")
    # finite as float64 but not as float32
    with rejected("non-finite", "row 0, column 'f2' is inf"):
        decode_synthetic(parquet({"f0": [1.0], "f1": [1.0], "f2": [1e300], "label": [0]}), NAMES, "where")


def test_synthetic_labels_must_be_0_or_1():
    with rejected("bad-synthetic", "row 2: label 2 is not 0 or 1"):
        decode_synthetic(parquet({"f0": [1.0] * 3, "f1": [1.0] * 3, "f2": [1.0] * 3, "label": [0, 1, 2]}), NAMES, "where")
    with rejected("bad-synthetic", "label 0.5"):
        decode_synthetic(parquet({"f0": [1.0], "f1": [1.0], "f2": [1.0], "label": [0.5]}), NAMES, "where")


def test_garbage_is_not_parquet():
    with rejected("malformed", "not a Parquet file"):
        decode_synthetic(b"PAR1 not really", NAMES, "where")


def test_a_feature_may_not_be_called_label():
    with pytest.raises(ValueError, match="may not be named 'label'"):
        encode_synthetic(np.zeros((1, 1)), np.zeros(1), ["label"])


# --------------------------------------------------------------------------- manifest

WHO = {"experiment": "exp", "method": "ksmote", "client": "client-b", "round": 3}


def manifest(**changes) -> dict:
    payloads = {MODEL_FILE: b"model", SYNTHETIC_FILE: b"points"}
    document = json.loads(encode_manifest(**WHO, n_base=100, variance=0.25, n_synthetic=4, payloads=payloads,
                                          metrics={"local_fnr": 0.1, "local_auc": math.nan}))
    document.update(changes)
    return document


def decode(document) -> dict:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    return decode_manifest(data, "where", **WHO)


def test_manifest_round_trip():
    back = decode(manifest())
    assert back["n_base"] == 100 and back["variance"] == 0.25 and back["n_synthetic"] == 4
    assert back["payloads"][MODEL_FILE] == {"sha256": sha256(b"model"), "bytes": 5}
    assert back["metrics"]["local_fnr"] == 0.1
    assert math.isnan(back["metrics"]["local_auc"])  # NaN travels as null


def test_manifest_bytes_are_deterministic():
    args = dict(**WHO, n_base=1, variance=0.0, n_synthetic=0, payloads={MODEL_FILE: b"a", SYNTHETIC_FILE: b"b"})
    assert encode_manifest(**args, metrics={"a": 1.0, "b": 2.0}) == encode_manifest(**args, metrics={"b": 2.0, "a": 1.0})


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"format": "p2pk.manifest/v0"}, r"\$.format"),
        ({"n_base": 0}, r"\$.n_base: 0 is less than the minimum of 1"),
        ({"n_base": "100"}, r"\$.n_base: '100' is not of type 'integer'"),
        ({"variance": -1.0}, r"\$.variance"),
        ({"round": 4}, r"names round=4, expected round=3"),
        ({"client": "client-a"}, r"names client='client-a', expected client='client-b'"),
        ({"method": "smote"}, r"names method='smote'"),
        ({"metrics": {"x": "high"}}, r"\$.metrics.x"),
        ({"surprise": 1}, r"Additional properties"),
    ],
)
def test_bad_manifest_fields_are_rejected(changes, match):
    with rejected("schema", match):
        decode(manifest(**changes))


def test_manifest_payload_entries_are_checked():
    document = manifest()
    document["payloads"][MODEL_FILE]["sha256"] = "abc"
    with rejected("schema", r"\$.payloads\['model.safetensors'\].sha256|sha256"):
        decode(document)
    document = manifest()
    del document["payloads"][SYNTHETIC_FILE]
    with rejected("schema", "synthetic.parquet"):
        decode(document)


@pytest.mark.parametrize("data", [b"", b"[1, 2", b"\xff\xfe", b'{"variance": NaN}', b'{"variance": Infinity}'])
def test_manifest_must_be_strict_json(data):
    with rejected("malformed", "not strict JSON"):
        decode(data)


def test_manifest_must_be_an_object():
    with rejected("schema", "is not of type 'object'"):
        decode(b"[]")


def test_declared_size_over_the_cap_is_rejected_before_download():
    document = decode(manifest())
    check_declared_size(document, SYNTHETIC_FILE, 6, "where")
    with rejected("too-large", "declares 6 bytes, over the cap of 5"):
        check_declared_size(document, SYNTHETIC_FILE, 5, "where")


def test_payload_must_match_the_manifest():
    document = decode(manifest())
    assert check_payload(document, MODEL_FILE, b"model", "where") == b"model"
    with rejected("hash-mismatch", "5 bytes with sha256"):
        check_payload(document, MODEL_FILE, b"MODEL", "where")
    with rejected("hash-mismatch", "absent from the store"):
        check_payload(document, MODEL_FILE, None, "where")
