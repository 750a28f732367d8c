"""Shards in a folder or a store (p2p_job.shards): Parquet round trip, manifests, one client
reading only its own files, fingerprints, damaged folders."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_helpers import SMALL_BUILTIN, client, experiment

from p2p_job.datasets import DataError
from p2p_job.scenarios import build_shards
from p2p_job.shards import class_counts, fingerprint, read_client_shard, read_shards, stored_fingerprint, write_shards
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
            assert np.array_equal(x.X, y.X) and np.array_equal(x.y, y.y) and np.array_equal(x.raw, y.raw)
            assert x.X.dtype == np.float32 and x.y.dtype == np.int8
    probe = a.validation.raw * 3 - 1  # the same fitted pipeline, also off the training rows
    assert np.array_equal(a.preprocessor.transform(probe), b.preprocessor.transform(probe))


def test_round_trip_through_parquet(shards, tmp_path):
    write_shards(shards, tmp_path)
    back = read_shards(tmp_path)
    assert list(back.clients) == ["client-a", "client-b"] and back.feature_names == shards.feature_names
    assert back.load_report == shards.load_report
    for name in shards.clients:
        assert_same(back.clients[name], shards.clients[name])
        shard, features = read_client_shard(tmp_path, name)
        assert_same(shard, shards.clients[name])
        assert features == shards.feature_names


def test_manifest_counts_features_and_preprocessing_and_parquet_holds_raw_rows(shards, tmp_path):
    write_shards(shards, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "p2pk.shards/v3" and manifest["feature_names"] == [f"f{j:03d}" for j in range(12)]
    a = manifest["clients"]["client-a"]
    assert (a["train"], a["validation"], a["global_test"]) == ({"benign": 120, "malicious": 12}, {"benign": 40, "malicious": 6}, {"benign": 50, "malicious": 7})
    assert "preprocessing" not in a
    # A client's preprocessing is in its own manifest; its parquet holds raw rows it refits on.
    own = json.loads((tmp_path / "client-a" / "manifest.json").read_text())
    assert own["preprocessing"] == {"auto": False, "transforms": [], "categorical": [], "scaling": "minmax"} and own["categories"] == {}
    stored = pq.read_table(tmp_path / "client-a" / "train.parquet").to_pandas()[shards.feature_names].to_numpy()
    np.testing.assert_array_equal(stored, shards.clients["client-a"].train.raw)
    assert own["splits"]["train"]["counts"] == {"benign": 120, "malicious": 12}
    assert own["splits"]["train"]["bytes"] == (tmp_path / "client-a" / "train.parquet").stat().st_size
    assert pq.read_schema(tmp_path / "client-b" / "train.parquet").names == [*shards.feature_names, "label", "kind"]
    assert manifest["kind_column"] == own["kind_column"] == "family"
    assert sum(a["global_test_kinds"].values()) == 7 and set(a["global_test_kinds"]) <= {"family-0", "family-1"}
    assert own["splits"]["global_test"]["kinds"] == a["global_test_kinds"]


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
    assert read_client_shard(tmp_path, "b")[0].global_test is None
    assert list(class_counts(shards)) == ["Training_benign", "Training_anomaly", "Local_Val_benign", "Local_Val_anomaly"]


def test_damaged_or_foreign_folders_are_named(shards, tmp_path):
    with pytest.raises(DataError, match="manifest.json: not found; is .* a folder written by `p2pk data prepare`"):
        read_shards(tmp_path)
    write_shards(shards, tmp_path)
    with pytest.raises(DataError, match=r"client-z/manifest.json: not found; no shard for client 'client-z'"):
        read_client_shard(tmp_path, "client-z")
    validation = tmp_path / "client-a" / "validation.parquet"
    pq.write_table(pq.read_table(validation).slice(0, 10), validation)
    with pytest.raises(DataError, match=r"validation\.parquet: does not match the sha256 and size in its manifest"):
        read_client_shard(tmp_path, "client-a")
    # A file rewritten together with its manifest entry is still checked for what it holds.
    train = tmp_path / "client-b" / "train.parquet"
    pq.write_table(pq.read_table(train).drop_columns(["f003"]), train)
    own = json.loads((tmp_path / "client-b" / "manifest.json").read_text())
    data = train.read_bytes()
    own["splits"]["train"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (tmp_path / "client-b" / "manifest.json").write_text(json.dumps(own))
    with pytest.raises(DataError, match=r"train\.parquet: columns are not the manifest's 12 features followed by \['label', 'kind'\]"):
        read_client_shard(tmp_path, "client-b")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "p2pk.shards/v1"}))
    with pytest.raises(DataError, match="not a p2pk.shards/v3 manifest"):
        read_shards(tmp_path)


def test_a_manifest_missing_a_field_is_a_data_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "p2pk.shards/v3", "clients": {}}))
    with pytest.raises(DataError, match="field 'feature_names' is missing or not a list"):
        read_shards(tmp_path)


def test_a_client_reads_only_its_own_files_and_shards_of_another_spec_are_refused(shards, tmp_path):
    """What a worker reads of shards in a store: ``<root><client>/…`` and nothing else (the
    keys the per-client store policy grants), checked against the experiment's fingerprint."""
    from p2p_job.store import DirectoryStore

    exp = parse_experiment(experiment(NON_IID, SMALL_BUILTIN, seed=11))
    store = DirectoryStore(tmp_path)
    write_shards(shards, store, "exp/shards/", fingerprint=fingerprint(exp))
    read: list[str] = []

    class Recording:
        def get_bytes(self, key, max_bytes=None):
            read.append(key)
            return store.get_bytes(key, max_bytes)

    shard, _ = read_client_shard(Recording(), "client-b", "exp/shards/", fingerprint=fingerprint(exp))
    assert_same(shard, shards.clients["client-b"])
    assert sorted(read) == [f"exp/shards/client-b/{f}" for f in ("global_test.parquet", "manifest.json", "train.parquet", "validation.parquet")]
    assert stored_fingerprint(store, "exp/shards/") == fingerprint(exp)
    other = parse_experiment(experiment(NON_IID, SMALL_BUILTIN, seed=12))
    assert fingerprint(other) != fingerprint(exp)
    with pytest.raises(DataError, match="cut for another seed, dataset or scenario than this experiment's; prepare them again"):
        read_client_shard(store, "client-b", "exp/shards/", fingerprint=fingerprint(other))


def test_the_fingerprint_ignores_where_data_and_shards_live():
    doc = experiment(NON_IID, SMALL_BUILTIN, seed=11)
    moved = {**doc, "spec": {**doc["spec"], "dataset": {**doc["spec"]["dataset"], "shards": "store"}, "rounds": 9}}
    assert fingerprint(parse_experiment(doc)) == fingerprint(parse_experiment(moved))
