"""docs/deploy.md §4a on the suite's real control plane: N-BaIoT shards prepared into S3 (moto
over HTTP), an experiment applied to the API server, the operator (a local process) making its
Jobs, the node agent running each worker pod — each reading only its own shard from the store —
to Succeeded, and ``p2pk collect`` turning the stored metrics into results and figures."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import urllib.parse
import uuid

import pytest
import services
from data_helpers import nbaiot_tree
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
                           "s3": {"endpoint": endpoint, "bucket": bucket, "prefix": "experiments", "credentialsSecret": "store-keys"}},
        },
    }


def test_the_nbaiot_walkthrough_runs_on_the_control_plane(control_plane, node_agent, s3_server, tmp_path, monkeypatch, capsys):
    import yaml
    from kubernetes import client

    from p2pk_operator.admission import CREDENTIALS_LABEL
    from p2pk_operator.crd import PLURAL, custom_resource_definition

    api = control_plane.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    extensions = client.ApiextensionsV1Api(api)
    namespace = f"walk-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    crd = custom_resource_definition()
    try:
        extensions.create_custom_resource_definition(crd)
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    wait_for(lambda: any(c.type == "Established" and c.status == "True"
                         for c in extensions.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or ()),
             60, "the CRD to be established")
    core.create_namespaced_secret(namespace, {"metadata": {"name": "store-keys", "labels": {CREDENTIALS_LABEL: "true"}},
                                              "stringData": {"accessKey": s3_server.access_key, "secretKey": s3_server.secret_key}})

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

    # 2. The operator, and the experiment applied as a user would (step 3).
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
    operator_log = open(tmp_path / "operator.log", "wb")
    operator = subprocess.Popen([sys.executable, "-m", "p2p_job.cli", "operator", "--namespace", namespace],
                                env=env, stdout=operator_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, doc)

        def phase() -> str | None:
            status = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, "nbaiot-walk").get("status") or {}
            assert status.get("phase") != "Failed", status
            return status.get("phase")

        wait_for(lambda: phase() == "Succeeded", 540, "the experiment to succeed")
    finally:
        services.terminate(operator)
        operator_log.close()
    status = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, "nbaiot-walk")["status"]
    assert status["round"]["slowest"] == 2 and status["readyClients"] is not None
    assert "ERROR" not in (tmp_path / "operator.log").read_text()

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
    core.delete_namespace(namespace)
