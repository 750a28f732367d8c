"""docs/deploy.md §4a on the suite's real control plane: N-BaIoT shards prepared into S3 (moto
over HTTP), the chart installed (its operator's pod runs under the chart's ServiceAccount token,
so the chart's RBAC is what is tested), the experiment applied with kubectl, the operator making
its Jobs, the node agent running each worker pod — each reading only its own shard from the
store — to Succeeded with no ERROR line in the operator's log, ``p2pk collect`` turning the
stored metrics into results and figures, and ``helm uninstall`` and the namespace's deletion
leaving nothing."""

from __future__ import annotations

import collections
import urllib.parse
import uuid

import pytest
from data_helpers import nbaiot_tree
from helm_release import STORE_SECRET, create_namespace, install, namespace_gone
from services import wait_for

from p2p_job.cli import main
from p2p_job.results import read_parquet
from p2p_job.spec import API_GROUP, API_VERSION

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CLIENTS = ("doorbell", "thermostat")
METHODS = ("none", "ksmote")
SHARD_FILES = ("manifest.json", "train.parquet", "validation.parquet", "global_test.parquet")


def walkthrough(data: str, bucket: str, endpoint: str, namespace: str) -> dict:
    """The deploy guide's experiment, small: two N-BaIoT devices, two methods, two rounds."""
    devices = {"doorbell": "ennio_doorbell", "thermostat": "ecobee_thermostat"}
    clients = [
        {"name": name, "benignGroups": [f"device={devices[name]}"], "maliciousGroups": [f"device={devices[name]}"],
         "train": {"benign": 150, "malicious": 30}, "validation": {"benign": 40, "malicious": 20}}
        for name in CLIENTS
    ]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "P2PExperiment",
        "metadata": {"name": "nbaiot-walk", "namespace": namespace},
        "spec": {
            "seed": 42, "rounds": 2,
            "dataset": {"kind": "nbaiot", "path": data, "families": ["gafgyt"], "shards": "store"},
            "scenario": {"kind": "non-iid", "clients": clients, "globalTest": {"benign": 60, "malicious": 30}},
            "methods": [{"rebalancing": m} for m in METHODS],
            "rebalancing": {"k": 3, "neighbours": 4},
            "training": {"localEpochs": 1, "batchSize": 32, "hiddenLayers": [16, 8]},
            "runtime": {"device": "cpu", "roundTimeoutSeconds": 120},
            "kubernetes": {"image": "ghcr.io/p2pk/worker:0.1.0", "backoffLimit": 0,
                           "s3": {"endpoint": endpoint, "bucket": bucket, "prefix": "experiments", "credentialsSecret": STORE_SECRET}},
        },
    }


def test_the_nbaiot_walkthrough_runs_on_the_control_plane(control_plane, node_agent, s3_server, tmp_path, monkeypatch, capsys):
    import yaml
    from kubernetes import client

    from p2pk_operator.crd import PLURAL

    api = control_plane.api_client()
    custom = client.CustomObjectsApi(api)
    namespace = f"walk-{uuid.uuid4().hex[:6]}"
    create_namespace(control_plane, namespace, s3_server)
    try:
        # 1. Shards into S3, once, under the namespace's store root (docs/deploy.md §4a step 2).
        bucket = urllib.parse.urlparse(s3_server.store_url()).netloc
        store_url = f"s3://{bucket}/experiments/{namespace}"
        doc = walkthrough(str(nbaiot_tree(tmp_path / "N-BaIoT", big=True)), bucket, s3_server.endpoint, namespace)
        spec = tmp_path / "nbaiot.yaml"
        spec.write_text(yaml.safe_dump(doc))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
        assert main(["data", "prepare", str(spec), "--out", store_url, "--s3-endpoint", s3_server.endpoint]) == 0
        capsys.readouterr()
        _, offset = s3_server.requests_since()

        # 2. The chart's operator, and the experiment applied with kubectl as a user would (step 3).
        release = install(control_plane, node_agent, tmp_path, "walk", namespace,
                          {"operator": {"extraArgs": ["--observe-interval=2"]}, "monitoring": {"podMonitor": {"enabled": False}},
                           "tests": {"enabled": False}})
        release.kubectl("apply", "-f", str(spec))

        def phase() -> str | None:
            status = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, "nbaiot-walk").get("status") or {}
            assert status.get("phase") != "Failed", status
            return status.get("phase")

        try:
            wait_for(lambda: phase() == "Succeeded", 540, "the experiment to succeed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{release.operator_log()[-5000:]}") from None
        status = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, "nbaiot-walk")["status"]
        assert status["round"]["slowest"] == 2 and status["readyClients"] is not None
        (log,) = release.operator_logs().values()  # one operator pod ran
        assert "[ERROR" not in log and "forbidden" not in log.lower(), log[-5000:]

        # Each worker read its own shard (four objects), none read another's or the shards' manifest.
        seen, _ = s3_server.requests_since(offset)
        prefix = f"/{bucket}/experiments/{namespace}/nbaiot-walk/shards/"
        shard_reads = collections.Counter(path[len(prefix):] for verb, path in seen if verb == "GET" and path.startswith(prefix))
        assert shard_reads == {f"{c}/{f}": len(METHODS) for c in CLIENTS for f in SHARD_FILES}

        # 3. Results out (step 4): what a local run writes.
        out = tmp_path / "results"
        assert main(["collect", f"{store_url}/nbaiot-walk", "--out", str(out), "--s3-endpoint", s3_server.endpoint]) == 0
        frame = read_parquet(out / "results.parquet")
        assert sorted(set(zip(frame["method"], frame["client"], frame["round"]))) == sorted(
            (m, c, r) for m in METHODS for c in CLIENTS for r in (1, 2))
        assert (out / "summary.md").exists() and list((out / "figures").glob("*.png"))

        # 4. Uninstalled, the kubectl-applied experiment goes with the operator (the chart's hook).
        release.uninstall()
        assert custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL)["items"] == []
    finally:
        client.CoreV1Api(api).delete_namespace(namespace)
    wait_for(lambda: namespace_gone(control_plane, namespace), 120, f"namespace {namespace} to go", interval=1)
