"""End to end on a real Kubernetes cluster: the CRD, the operator (``p2pk operator``, started
here as a process), an experiment's Jobs, its status, a refused spec change and deletion.

Skipped unless a cluster answers through KUBECONFIG (or the in-cluster configuration), and
unless a store is given — the operator writes the spec into it and reads the clients' metrics:

    P2PK_E2E_S3_ENDPOINT   host:port of MinIO/S3 reachable from the cluster AND from here
    P2PK_E2E_S3_ACCESS_KEY, P2PK_E2E_S3_SECRET_KEY
                           MinIO admin keys (scoped users per client), or with
    P2PK_E2E_S3_SHARED=1   one shared user's keys
    P2PK_E2E_IMAGE         worker image (default ghcr.io/p2pk/worker:0.1.0)
    P2PK_E2E_RUN=1         also wait for the workers to finish (the image must run there)

Without them, ``conftest.py`` runs these tests on the suite's own control plane with moto's S3.

Run: ``pytest -m cluster tests/e2e_cluster``. Each run works in its own namespace and deletes it
(while the operator still runs, so it can remove its finalizers) and waits until it is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import yaml
from services import wait_for

from p2p_job.spec import API_GROUP, API_VERSION
from p2pk_operator.crd import CRD_NAME, PLURAL, custom_resource_definition
from p2pk_operator.manifests import EXPERIMENT_LABEL

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CREATED_WITHIN = 120  # seconds for the operator to create the Jobs
DELETED_WITHIN = 120  # seconds for the namespace to go
FINISHED_WITHIN = 1800  # seconds for a tiny experiment to run (P2PK_E2E_RUN=1)


def _cluster():
    """The kubernetes client module configured for a reachable cluster, or a skip saying why not."""
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes import client, config

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:  # KUBECONFIG as it is now (the client read it once, when it was imported)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    except config.ConfigException as exc:
        pytest.skip(f"no Kubernetes cluster configured (KUBECONFIG / in-cluster): {exc}")
    try:
        client.VersionApi().get_code(_request_timeout=5)
    except Exception as exc:  # any transport error means: no cluster here
        pytest.skip(f"Kubernetes cluster not reachable: {exc}")
    return kubernetes


def _store_env() -> dict[str, str]:
    needed = ("P2PK_E2E_S3_ENDPOINT", "P2PK_E2E_S3_ACCESS_KEY", "P2PK_E2E_S3_SECRET_KEY")
    missing = [k for k in needed if not os.environ.get(k)]
    if missing:
        pytest.skip(f"no store for the experiment: set {', '.join(missing)}")
    return {k: os.environ[k] for k in needed}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    kubernetes = _cluster()
    store = _store_env()
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    crd = custom_resource_definition()
    ext = client.ApiextensionsV1Api()
    try:
        ext.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = ext.read_custom_resource_definition(CRD_NAME)
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(CRD_NAME, crd)
    wait_for(lambda: any(c.type == "Established" and c.status == "True" for c in ext.read_custom_resource_definition(CRD_NAME).status.conditions or ()),
             60, "the CRD to be served")

    namespace = f"p2pk-e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api()
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_secret(namespace, {
        "metadata": {"name": "e2e-store", "labels": {"p2pk.io/store-credentials": "true"}},  # the operator reads only labelled Secrets
        "stringData": {"accessKey": store["P2PK_E2E_S3_ACCESS_KEY"], "secretKey": store["P2PK_E2E_S3_SECRET_KEY"]},
    })
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    with open(log_path, "wb") as log:  # a file, not a pipe nobody reads (a full pipe blocks the operator)
        operator = subprocess.Popen([sys.executable, "-m", "p2pk_operator", "--namespace", namespace],
                                    stdout=log, stderr=subprocess.STDOUT)
    try:
        yield kubernetes, namespace, store
    finally:
        # The namespace first: its experiments with adminSecret carry the operator's finalizer,
        # which only the running operator removes (stopped first, the namespace would stay
        # Terminating); those with shared keys carry none.
        try:
            core.delete_namespace(namespace)
            wait_for(lambda: namespace not in [n.metadata.name for n in core.list_namespace().items],
                     DELETED_WITHIN, f"namespace {namespace} to be deleted")
        finally:
            operator.terminate()
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()


def experiment(name: str, store: dict[str, str], **spec_changes) -> dict:
    s3 = {"endpoint": store["P2PK_E2E_S3_ENDPOINT"], "bucket": "p2pk-e2e"}
    s3["credentialsSecret" if os.environ.get("P2PK_E2E_S3_SHARED") else "adminSecret"] = "e2e-store"
    spec = {
        "seed": 1,
        "rounds": 2,
        "dataset": {"kind": "builtin", "builtin": {"devices": 2, "families": 1, "features": 8, "benignPerDevice": 200, "maliciousPerFamily": 40}},
        "scenario": {
            "kind": "imbalanced-iid",
            "clients": [{"name": c, "train": {"benign": 80, "malicious": 10}, "validation": {"benign": 20, "malicious": 4}} for c in ("a", "b")],
        },
        "methods": [{"rebalancing": "ksmote"}],
        "rebalancing": {"k": 3, "neighbours": 3},
        "training": {"localEpochs": 1, "hiddenLayers": [8]},
        "kubernetes": {"image": os.environ.get("P2PK_E2E_IMAGE", "ghcr.io/p2pk/worker:0.1.0"), "backoffLimit": 1, "s3": s3},
        **spec_changes,
    }
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "P2PExperiment", "metadata": {"name": name}, "spec": spec}


def _status(api, namespace: str, name: str) -> dict:
    return api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name).get("status") or {}


def wait_for_status(api, namespace: str, name: str, what: str, holds, timeout: float = CREATED_WITHIN, poll: float = 2.0) -> dict:
    """The experiment's status once ``holds(status)``."""
    found: dict = {}

    def check() -> bool:
        found.clear()
        found.update(_status(api, namespace, name))
        return bool(holds(found))

    wait_for(check, timeout, what, poll)
    return found


def _condition(status: dict, type: str) -> dict:
    return next((c for c in status.get("conditions") or () if c["type"] == type), {})


def test_the_api_server_rejects_what_the_schema_can(cluster):
    kubernetes, namespace, store = cluster
    from kubernetes.client.exceptions import ApiException

    api = kubernetes.client.CustomObjectsApi()
    bad = experiment("bad-rate", store, training={"learningRate": -1})
    with pytest.raises(ApiException) as info:
        api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, bad)
    assert info.value.status == 422 and "spec.training.learningRate" in info.value.body


def test_an_invalid_spec_gets_a_condition_and_no_jobs(cluster):
    kubernetes, namespace, store = cluster
    api = kubernetes.client.CustomObjectsApi()
    doc = experiment("bad-topology", store, topology={"kind": "k-regular", "degree": 5})
    api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, doc)
    status = wait_for_status(api, namespace, "bad-topology", "the InvalidSpec condition", lambda s: s.get("phase"))
    assert status["phase"] == "Failed" and "spec.topology" in _condition(status, "InvalidSpec")["message"]
    jobs = kubernetes.client.BatchV1Api().list_namespaced_job(namespace, label_selector=f"{EXPERIMENT_LABEL}=bad-topology")
    assert jobs.items == []


def test_an_experiment_runs_as_one_job_per_client_and_goes_with_its_owner(cluster):
    kubernetes, namespace, store = cluster
    api = kubernetes.client.CustomObjectsApi()
    batch = kubernetes.client.BatchV1Api()
    created = api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, experiment("tiny", store))

    status = wait_for_status(api, namespace, "tiny", "the Created condition", lambda s: _condition(s, "Created").get("status") == "True")
    assert status["observedGeneration"] == 1
    jobs = batch.list_namespaced_job(namespace, label_selector=f"{EXPERIMENT_LABEL}=tiny").items
    assert sorted(j.metadata.name for j in jobs) == ["tiny-ksmote-a", "tiny-ksmote-b"]
    for job in jobs:
        (ref,) = job.metadata.owner_references
        assert (ref.kind, ref.uid) == ("P2PExperiment", created["metadata"]["uid"])

    if os.environ.get("P2PK_E2E_RUN"):
        done = wait_for_status(api, namespace, "tiny", "the experiment to finish",
                               lambda s: s.get("phase") in ("Succeeded", "Failed"), FINISHED_WITHIN, poll=10)
        assert done["phase"] == "Succeeded", yaml.safe_dump(done)
        assert done["round"]["slowest"] == 2

    # A spec change while it runs (or after) is refused, naming the field.
    api.patch_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, "tiny", {"spec": {"rounds": 5}})
    refused = wait_for_status(api, namespace, "tiny", "SpecChangeRefused",
                              lambda s: _condition(s, "Degraded").get("reason") == "SpecChangeRefused")
    assert "spec.rounds" in _condition(refused, "Degraded")["message"]

    api.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, "tiny", propagation_policy="Foreground")
    wait_for(lambda: not batch.list_namespaced_job(namespace, label_selector=f"{EXPERIMENT_LABEL}=tiny").items,
             CREATED_WITHIN, "the Jobs to go with their owner")
