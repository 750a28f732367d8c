"""The chart's least privilege on the suite's real control plane: a cluster-wide release whose
operator pod runs under the chart's ClusterRole (no Secrets) and per-namespace Secrets Roles, with
an image allowlist from the values. The API server itself refuses the operator a Secret in a
namespace the chart did not grant, and the experiment says so; an image outside the allowlist is
an invalid spec; in a granted namespace the same experiment is created."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from services import tiny_experiment, wait_for

from p2p_job.spec import API_GROUP, API_VERSION
from p2pk_operator.admission import CREDENTIALS_LABEL
from p2pk_operator.crd import PLURAL
from p2pk_operator.manifests import EXPERIMENT_LABEL

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "p2pk"
TOOLS = ROOT / ".tools" / "bin"
RELEASE = "lp"
STORE_SECRET = "store-keys"


@pytest.fixture(scope="module")
def release(control_plane, node_agent, s3_server, tmp_path_factory):
    """A cluster-wide release in namespace ``ops``; ``team`` is watched but not granted Secrets."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    if not (TOOLS / "helm").exists():
        pytest.fail("helm missing in .tools/bin: run scripts/get-tools.sh")
    work = tmp_path_factory.mktemp("least-privilege")
    suffix = uuid.uuid4().hex[:6]
    ops, team = f"ops-{suffix}", f"team-{suffix}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "KUBECONFIG": str(control_plane.kubeconfig),
           **{var: str(work / var.lower()) for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}}
    core = client.CoreV1Api(control_plane.api_client())
    for namespace in (ops, team):
        core.create_namespace({"metadata": {"name": namespace}})
        core.create_namespaced_secret(namespace, {"metadata": {"name": STORE_SECRET, "labels": {CREDENTIALS_LABEL: "true"}},
                                                  "stringData": {"accessKey": s3_server.access_key, "secretKey": s3_server.secret_key}})
    values = {"operator": {"clusterWide": True, "allowedImages": ["ghcr.io/p2pk/worker:*"], "extraArgs": ["--observe-interval=2"]},
              "monitoring": {"podMonitor": {"enabled": False}}, "tests": {"enabled": False}}
    (work / "values.yaml").write_text(yaml.safe_dump(values))

    def helm(*args: str) -> None:
        done = subprocess.run([str(TOOLS / "helm"), *args], env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr

    helm("install", RELEASE, str(CHART), "-n", ops, "-f", str(work / "values.yaml"), "--wait", "--timeout=120s")
    bucket = s3_server.store_url().split("/")[2]
    try:
        yield {"ops": ops, "team": team, "bucket": bucket, "endpoint": s3_server.endpoint, "api": control_plane.api_client()}
    finally:
        subprocess.run([str(TOOLS / "helm"), "uninstall", RELEASE, "-n", ops, "--wait", "--timeout=120s"], env=env,
                       capture_output=True, timeout=240)
        for namespace in (team, ops):
            try:
                core.delete_namespace(namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def experiment(release: dict, name: str, **kubernetes) -> dict:
    doc = tiny_experiment(name, n_clients=2)
    doc["spec"]["kubernetes"] = {"image": "ghcr.io/p2pk/worker:0.1.0",
                                 "s3": {"endpoint": release["endpoint"], "bucket": release["bucket"], "credentialsSecret": STORE_SECRET},
                                 **kubernetes}
    return doc


def apply_and_wait(release: dict, namespace: str, doc: dict, holds, what: str) -> dict:
    from kubernetes import client

    custom = client.CustomObjectsApi(release["api"])
    custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, doc)
    seen: dict = {}

    def check():
        seen.clear()
        seen.update(custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, doc["metadata"]["name"]).get("status") or {})
        return holds(seen)

    try:
        wait_for(check, 90, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {json.dumps(seen, indent=1)}") from None
    return seen


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or () if c["type"] == type_), {})


def jobs(release: dict, namespace: str, name: str) -> list:
    from kubernetes import client

    return client.BatchV1Api(release["api"]).list_namespaced_job(namespace, label_selector=f"{EXPERIMENT_LABEL}={name}").items


def test_a_secret_in_a_namespace_without_the_charts_secrets_role_is_refused_by_the_api_server(release):
    from kubernetes import client

    status = apply_and_wait(release, release["team"], experiment(release, "elsewhere"),
                            lambda s: condition(s, "InvalidSpec").get("reason") == "SecretNotPermitted", "SecretNotPermitted")
    message = condition(status, "InvalidSpec")["message"]
    assert f"Secret {release['team']}/{STORE_SECRET} (spec.kubernetes.s3.credentialsSecret): the operator may not read it" in message
    assert "forbidden" in message.lower()
    assert status["phase"] == "Failed" and jobs(release, release["team"], "elsewhere") == []
    events = client.CoreV1Api(release["api"]).list_namespaced_event(release["team"], field_selector="involvedObject.name=elsewhere").items
    assert any(e.type == "Warning" and e.reason == "SecretNotPermitted" for e in events)


def test_the_same_experiment_in_a_granted_namespace_is_created(release):
    status = apply_and_wait(release, release["ops"], experiment(release, "at-home"),
                            lambda s: condition(s, "Created").get("status") == "True", "Created")
    assert condition(status, "InvalidSpec").get("status") in (None, "False")
    assert len(jobs(release, release["ops"], "at-home")) == 2


def test_an_image_outside_the_charts_allowlist_is_an_invalid_spec(release):
    status = apply_and_wait(release, release["ops"], experiment(release, "miner", image="docker.io/evil/miner:1"),
                            lambda s: condition(s, "InvalidSpec").get("status") == "True", "InvalidSpec")
    assert "spec.kubernetes.image: image 'docker.io/evil/miner:1' is not allowed by this operator; allowed: ghcr.io/p2pk/worker:*" in condition(status, "InvalidSpec")["message"]
    assert jobs(release, release["ops"], "miner") == []
