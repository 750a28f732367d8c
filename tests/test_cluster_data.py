"""Data in, results out, as on a cluster: shards prepared into S3 (moto over HTTP), workers that
each read only their own shard — checked against the per-client store policy the operator would
grant — and ``p2pk collect`` turning the stored metrics into results, from S3 and from a folder.
"""

from __future__ import annotations

import time
import urllib.parse

import pandas as pd
import pytest
import services
import yaml
from iam import allowed

from p2p_job.cli import main
from p2p_job.collect import collect, split_location
from p2p_job.results import read_parquet
from p2p_job.shards import read_client_shard
from p2p_job.spec import load_experiment
from p2p_job.store import DirectoryStore

NAMESPACE = "lab"
@pytest.fixture
def cluster_like_spec(tiny_spec, s3_server):
    """A tiny experiment whose workers read their shards from the store, with the Kubernetes
    section the operator would plan it from (its store root holds the namespace)."""
    bucket_url = s3_server.store_url("experiments")  # makes a fresh bucket
    bucket = urllib.parse.urlparse(bucket_url).netloc
    spec = tiny_spec("walk", dataset={**services.tiny_experiment()["spec"]["dataset"], "shards": "store"},
                     kubernetes={"s3": {"endpoint": s3_server.endpoint, "bucket": bucket, "prefix": "experiments", "adminSecret": "minio-admin"}})
    doc = yaml.safe_load(spec.read_text())
    doc["metadata"]["namespace"] = NAMESPACE
    spec.write_text(yaml.safe_dump(doc))
    return spec, bucket, f"s3://{bucket}/experiments/{NAMESPACE}"


@pytest.mark.slow
def test_prepared_shards_in_s3_each_worker_reads_only_its_own_and_collect_writes_results(
        tmp_path, cluster_like_spec, s3_server, monkeypatch, capsys):
    from p2pk_operator import policies
    from p2pk_operator.manifests import plan

    spec, bucket, store_url = cluster_like_spec
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    # 1. The researcher prepares the shards into the store, once.
    assert main(["data", "prepare", str(spec), "--out", store_url, "--s3-endpoint", s3_server.endpoint]) == 0
    assert f"{store_url}/walk/shards/" in " ".join(capsys.readouterr().out.split())
    store = s3_server.open(store_url)
    assert [k for k in store.list("walk/") if k.endswith("manifest.json")] == [
        "walk/shards/client-a/manifest.json", "walk/shards/client-b/manifest.json", "walk/shards/client-c/manifest.json",
        "walk/shards/manifest.json"]

    # 2. Workers as a Job would run them; each one's requests until it starts are its shard reads.
    exp = load_experiment(spec)
    client_plan = plan(exp)
    _, offset = s3_server.requests_since()
    reads: dict[str, list[str]] = {}
    workers = []
    try:
        for client in client_plan.clients:
            worker = services.spawn_worker(spec, client, store_url, tmp_path / "logs", env=s3_server.env)
            workers.append(worker)
            services.wait_for(lambda: any(e["event"] == "worker_start" for e in worker.events()), 120, f"{client} to start")
            time.sleep(0.5)
            seen, offset = s3_server.requests_since(offset)
            reads[client] = [path for verb, path in seen if verb == "GET" and "/shards/" in path]
        for worker in workers:
            assert worker.wait(180) == 0, worker.log_path.read_text()[-3000:]
    finally:
        for worker in workers:
            worker.stop()

    prefix = f"/{bucket}/experiments/{NAMESPACE}/walk/shards/"
    for client in client_plan.clients:
        assert sorted(reads[client]) == sorted(f"{prefix}{client}/{f}" for f in policies.SHARD_FILES), client
        # Every shard object it read is one its per-client policy grants, and no other client's is.
        policy = policies.client_policy(client_plan, client)
        for path in reads[client]:
            assert allowed(policy, "s3:GetObject", bucket, path[len(f"/{bucket}/"):]), path
        for other in client_plan.clients:
            for name in policies.SHARD_FILES:
                key = f"experiments/{NAMESPACE}/walk/shards/{other}/{name}"
                assert allowed(policy, "s3:GetObject", bucket, key) is (other == client), (client, key)
        assert not allowed(policy, "s3:GetObject", bucket, f"experiments/{NAMESPACE}/walk/shards/manifest.json")

    # 3. Results out of S3: the rows the workers wrote, and the files a local run writes.
    out = tmp_path / "collected"
    assert main(["collect", f"{store_url}/walk", "--out", str(out), "--s3-endpoint", s3_server.endpoint]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "12 rows of 1 methods and 3 clients (rounds 2–2)" in printed, printed[-400:]  # 3 clients × 2 rounds × (local, global)
    frame = read_parquet(out / "results.parquet")
    assert sorted(set(zip(frame["client"], frame["round"]))) == [(c, r) for c in ("client-a", "client-b", "client-c") for r in (1, 2)]
    assert (out / "summary.md").read_text().count("| ksmote |") >= 1
    assert sorted(p.name for p in (out / "figures").glob("*.png"))

    # 4. The same from a directory store (a copy of the bucket's objects).
    folder = DirectoryStore(tmp_path / "copy")
    for key in store.list("walk/"):
        folder.put_bytes(key, store.get_bytes(key))
    pd.testing.assert_frame_equal(collect(folder, "walk"), frame)
    assert main(["collect", str(tmp_path / "copy" / "walk"), "--out", str(tmp_path / "from-folder")]) == 0
    pd.testing.assert_frame_equal(read_parquet(tmp_path / "from-folder" / "results.parquet"), frame)
    # A worker's shard from the store is exactly what prepare cut.
    shard, features = read_client_shard(store, "client-b", "walk/shards/")
    assert shard.train.counts == {"benign": 80, "malicious": 12} and len(features) == 6


def test_collect_names_what_is_missing(tmp_path, capsys):
    assert split_location("s3://bucket/experiments/lab/walk") == ("s3://bucket/experiments/lab", "walk")
    assert split_location("file:///runs/store/walk/") == ("file:///runs/store", "walk")
    assert split_location(str(tmp_path / "store" / "walk")) == ((tmp_path / "store").as_uri(), "walk")
    assert main(["collect", str(tmp_path / "store" / "walk"), "--out", str(tmp_path / "out")]) == 1
    assert "no experiment 'walk' (no walk/<method>/spec.yaml)" in capsys.readouterr().err
    DirectoryStore(tmp_path / "store").put_bytes("walk/ksmote/spec.yaml", yaml.safe_dump(services.tiny_experiment("walk")).encode())
    assert main(["collect", str(tmp_path / "store" / "walk"), "--out", str(tmp_path / "out")]) == 1
    assert "experiment 'walk' has no metrics yet" in capsys.readouterr().err
    assert main(["collect", "s3://", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
