"""Shards on disk (p2p_job.shards): Parquet round trip, manifest, damaged folders."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_helpers import SMALL_BUILTIN, client, experiment

from p2p_job.datasets import DataError
from p2p_job.scenarios import build_shards
from p2p_job.shards import class_counts, read_client_shard, read_shards, write_shards
from p2p_job.spec import parse_experiment

NON_IID = {
    "kind": "non-iid",
    "clients": [
        client("client-a", (120, 12), (40, 6), benign=["device-0"], malicious=["device-0"]),
        client("client-b", (100, 9), (40, 6), benign=["device-1"], malicious=["family-1"]),
    ],
    "globalTest": {"benign": 50, "malicious": 7},
}


@pytest.fixture
def shards():
    return build_shards(parse_experiment(experiment(NON_IID, SMALL_BUILTIN, seed=11)))


def assert_same(a, b):
    assert a.name == b.name
    for split in ("train", "validation", "global_test"):
        x, y = getattr(a, split), getattr(b, split)
        assert (x is None) == (y is None)
        if x is not None:
            assert np.array_equal(x.X, y.X) and np.array_equal(x.y, y.y)
            assert x.X.dtype == np.float32 and x.y.dtype == np.int8
    assert np.array_equal(a.scaler.data_min, b.scaler.data_min) and np.array_equal(a.scaler.data_max, b.scaler.data_max)


def test_round_trip_through_parquet(shards, tmp_path):
    write_shards(shards, tmp_path)
    back = read_shards(tmp_path)
    assert list(back.clients) == ["client-a", "client-b"] and back.feature_names == shards.feature_names
    assert back.load_report == shards.load_report
    for name in shards.clients:
        assert_same(back.clients[name], shards.clients[name])
        assert_same(read_client_shard(tmp_path, name), shards.clients[name])


def test_manifest_counts_features_and_scalers(shards, tmp_path):
    write_shards(shards, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "p2pk.shards/v1" and manifest["feature_names"] == [f"f{j:03d}" for j in range(12)]
    a = manifest["clients"]["client-a"]
    assert (a["train"], a["validation"], a["global_test"]) == ({"benign": 120, "malicious": 12}, {"benign": 40, "malicious": 6}, {"benign": 50, "malicious": 7})
    assert a["scaler"]["data_min"] == shards.clients["client-a"].scaler.data_min.tolist()
    assert pq.read_schema(tmp_path / "client-b" / "train.parquet").names == [*shards.feature_names, "label", "kind"]
    assert manifest["kind_column"] == "family"
    assert sum(a["global_test_kinds"].values()) == 7 and set(a["global_test_kinds"]) <= {"family-0", "family-1"}


def test_class_counts_follow_the_papers_tables(shards):
    assert class_counts(shards) == {
        "Training_benign": {"client-a": 120, "client-b": 100},
        "Training_anomaly": {"client-a": 12, "client-b": 9},
        "Local_Val_benign": {"client-a": 40, "client-b": 40},
        "Local_Val_anomaly": {"client-a": 6, "client-b": 6},
        "Global_benign": {"client-a": 50, "client-b": 50},
        "Global_anomaly": {"client-a": 7, "client-b": 7},
    }


def test_no_global_test_no_file(tmp_path):
    iid = {"kind": "imbalanced-iid", "clients": [client("a", (50, 5), (10, 2)), client("b", (50, 5), (10, 2))]}
    shards = build_shards(parse_experiment(experiment(iid, SMALL_BUILTIN)))
    write_shards(shards, tmp_path)
    assert not (tmp_path / "a" / "global_test.parquet").exists()
    assert read_client_shard(tmp_path, "b").global_test is None
    assert list(class_counts(shards)) == ["Training_benign", "Training_anomaly", "Local_Val_benign", "Local_Val_anomaly"]


def test_damaged_or_foreign_folders_are_named(shards, tmp_path):
    with pytest.raises(DataError, match="manifest.json: not found; is .* a folder written by `p2pk data prepare`"):
        read_shards(tmp_path)
    write_shards(shards, tmp_path)
    with pytest.raises(DataError, match=r"no shard for client 'client-z'; clients are \['client-a', 'client-b'\]"):
        read_client_shard(tmp_path, "client-z")
    validation = tmp_path / "client-a" / "validation.parquet"
    pq.write_table(pq.read_table(validation).slice(0, 10), validation)
    with pytest.raises(DataError, match=r"validation\.parquet: holds \{'benign': \d+, 'malicious': \d+\} rows, the manifest says \{'benign': 40, 'malicious': 6\}"):
        read_client_shard(tmp_path, "client-a")
    train = tmp_path / "client-b" / "train.parquet"
    pq.write_table(pq.read_table(train).drop_columns(["f003"]), train)
    with pytest.raises(DataError, match=r"train\.parquet: columns are not the manifest's 12 features followed by \['label', 'kind'\]"):
        read_client_shard(tmp_path, "client-b")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something/v9"}))
    with pytest.raises(DataError, match="not a p2pk.shards/v1 manifest"):
        read_shards(tmp_path)


def test_a_manifest_missing_a_field_is_a_data_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "p2pk.shards/v1", "clients": {}}))
    with pytest.raises(DataError, match="field 'feature_names' is missing or not a list"):
        read_shards(tmp_path)
