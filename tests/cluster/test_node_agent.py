"""The test node on the real control plane: the real Job controller runs a Job whose pod the
agent runs as a process (env from a Secret and the downward API, a mounted ConfigMap, exit code
reported, its log read through the API server), a crashed pod is replaced by its Job,
ServiceAccount tokens carry RBAC, a pod finds its in-cluster configuration where client
libraries look, and one without a token gets none."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
from node_agent import SERVICE_ACCOUNT_DIR
from services import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def namespace(control_plane, node_agent):
    from kubernetes import client

    core = client.CoreV1Api(control_plane.api_client())
    name = f"agent-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(lambda: _exists(core.read_namespaced_service_account, "default", name), 30, "the default ServiceAccount")
    yield name
    core.delete_namespace(name)
    wait_for(lambda: not _exists(core.read_namespace, name), 60, f"namespace {name} to go")


def _exists(read, *args) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        read(*args)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def _job(name: str, script: str, **pod_spec) -> dict:
    container = {"name": "main", "image": "python:3", "command": [sys.executable, "-c", script]}
    container.update(pod_spec.pop("container", {}))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never", "containers": [container], **pod_spec}}}}


def _pods(core, namespace: str, job: str):
    return core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items


def test_a_job_runs_its_pod_with_env_volumes_and_exit_code(control_plane, node_agent, namespace):
    from kubernetes import client

    api = control_plane.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"word": "hush"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"a.txt": "from the map"}})
    script = ("import os, sys; print(os.environ['WORD'], os.environ['NS'], os.environ['FILE'], open(os.environ['FILE']).read()); "
              "sys.exit(3 if os.environ['WORD'] == 'hush' else 0)")
    # A volume at /tmp too: the pod's folders lie under the host's /tmp, and must not be rewritten twice.
    job = _job("env", script, volumes=[{"name": "cfg", "configMap": {"name": "c"}}, {"name": "scratch", "emptyDir": {}}], container={
        "env": [{"name": "WORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "word"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "FILE", "value": "/etc/cfg/a.txt"}],
        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "scratch", "mountPath": "/tmp"}]})
    job["spec"]["backoffLimit"] = 0
    batch.create_namespaced_job(namespace, job)

    def failed():
        conditions = batch.read_namespaced_job("env", namespace).status.conditions or ()
        return next((c for c in conditions if c.type == "Failed" and c.status == "True"), None)

    assert wait_for(failed, 60, "the Job to fail").reason == "BackoffLimitExceeded"
    (pod,) = _pods(core, namespace, "env")
    state = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, state.exit_code, state.reason) == ("Failed", 3, "Error")
    assert pod.spec.node_name == "p2pk-test-node"
    assert f"hush {namespace} " in node_agent.log(namespace, pod.metadata.name)
    assert node_agent.log(namespace, pod.metadata.name).rstrip().endswith("/volumes/cfg/a.txt from the map")
    # Its log through the API server (`kubectl logs`), which asks the node's kubelet API.
    def api_log(**query) -> str:
        return core.read_namespaced_pod_log(pod.metadata.name, namespace, _preload_content=False, **query).data.decode()

    assert api_log() == node_agent.log(namespace, pod.metadata.name)
    assert api_log(tail_lines=1).startswith("hush ") and api_log(limit_bytes=4) == "hush"


def test_a_killed_pod_is_replaced_by_its_job(control_plane, node_agent, namespace):
    from kubernetes import client

    api = control_plane.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    # The first pod sleeps until killed; the second finds the mark and succeeds.
    script = ("import os, pathlib, time; mark = pathlib.Path(os.environ['MARK']); "
              "(exit(0) if mark.exists() else (mark.touch(), time.sleep(600)))")
    mark = node_agent.work / f"{namespace}-mark"
    batch.create_namespaced_job(namespace, _job("crash", script, container={"env": [{"name": "MARK", "value": str(mark)}]}))
    first = wait_for(lambda: [p for p in _pods(core, namespace, "crash") if p.status.phase == "Running"], 60, "the pod to run")[0]
    wait_for(mark.exists, 30, "the first pod to start its script")
    node_agent.kill(namespace, first.metadata.name)

    def complete():
        return batch.read_namespaced_job("crash", namespace).status.succeeded == 1

    wait_for(complete, 60, "the Job to succeed with a second pod")
    status = batch.read_namespaced_job("crash", namespace).status
    assert status.failed == 1
    killed = core.read_namespaced_pod(first.metadata.name, namespace).status.container_statuses[0].state.terminated
    assert killed.exit_code == 137


def test_a_service_account_token_carries_its_rbac(control_plane, node_agent, namespace):
    from kubernetes import client

    api = control_plane.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "reader"},
                                            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reader"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    batch.create_namespaced_job(namespace, _job("rbac", "pass", serviceAccountName="reader", container={
        "command": ["sh", "-c", "kubectl get configmaps -o name && ! kubectl get secrets"]}))

    def done():
        status = batch.read_namespaced_job("rbac", namespace).status
        return status.succeeded or status.failed

    wait_for(done, 60, "the Job to finish")
    (pod,) = _pods(core, namespace, "rbac")
    output = node_agent.log(namespace, pod.metadata.name)
    assert batch.read_namespaced_job("rbac", namespace).status.succeeded == 1, output
    assert "configmap/kube-root-ca.crt" in output
    assert f'User "system:serviceaccount:{namespace}:reader" cannot list resource "secrets"' in output


def test_a_deleted_running_pod_gets_sigterm_and_goes(control_plane, node_agent, namespace):
    from kubernetes import client

    core = client.CoreV1Api(control_plane.api_client())
    script = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM'), sys.exit(0))); time.sleep(600)"
    core.create_namespaced_pod(namespace, {"metadata": {"name": "sleeper"}, "spec": {
        "containers": [{"name": "main", "image": "python:3", "command": [sys.executable, "-u", "-c", script]}]}})
    wait_for(lambda: core.read_namespaced_pod("sleeper", namespace).status.phase == "Running", 30, "the pod to run")
    core.delete_namespaced_pod("sleeper", namespace)  # graceful: the node must confirm
    wait_for(lambda: not _exists(core.read_namespaced_pod, "sleeper", namespace), 15, "the pod to go")
    assert "got SIGTERM" in node_agent.log(namespace, "sleeper")


def _finished_pod(core, namespace: str, name: str, spec: dict) -> object:
    core.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": {"restartPolicy": "Never", **spec}})
    return wait_for(lambda: (p := core.read_namespaced_pod(name, namespace)).status.phase in ("Succeeded", "Failed") and p,
                    60, f"pod {name} to finish")


#: Run in a pod: what a client inside a cluster finds (in-cluster files, the API with them).
IN_CLUSTER_PROBE = """
import base64, json, os, pathlib
from kubernetes import client, config
sa = pathlib.Path('/var/run/secrets/kubernetes.io/serviceaccount')
print('KUBECONFIG' in os.environ, os.environ['KUBERNETES_SERVICE_HOST'], (sa / 'token').exists())
try:
    config.load_incluster_config()
except config.ConfigException as exc:
    raise SystemExit(f'no in-cluster config: {exc}')
claims = json.loads(base64.urlsafe_b64decode((sa / 'token').read_text().split('.')[1] + '=='))
print('claims', json.dumps(claims['kubernetes.io']))
ns = (sa / 'namespace').read_text()
print('configmaps', [c.metadata.name for c in client.CoreV1Api().list_namespaced_config_map(ns).items])
try:
    (sa / 'token').write_text('forged')
except OSError as exc:
    print('read-only:', exc.strerror)
"""


def test_a_pod_finds_its_in_cluster_configuration_where_clients_look(control_plane, node_agent, namespace):
    """As on a kubelet: the token the ServiceAccount admission asked for (bound to the pod), the CA
    and the namespace at /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST and
    _PORT naming the API server; ``load_incluster_config`` works with no KUBECONFIG."""
    from kubernetes import client

    if node_agent.in_cluster_problem:
        pytest.skip(f"no mount namespaces here: {node_agent.in_cluster_problem}")
    api = control_plane.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "lister"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "lister"},
                                            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "lister"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lister"},
        "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": namespace}]})
    pod = _finished_pod(core, namespace, "in-cluster", {"serviceAccountName": "lister", "containers": [
        {"name": "main", "image": "python:3", "command": [sys.executable, "-c", IN_CLUSTER_PROBE]}]})
    output = node_agent.log(namespace, "in-cluster")
    assert pod.status.phase == "Succeeded", output
    lines = output.splitlines()
    assert len(lines) == 4, output
    assert lines[0] == "False 127.0.0.1 True"  # no KUBECONFIG: the in-cluster files and env are what it used
    claims = json.loads(lines[1].removeprefix("claims "))
    assert claims["namespace"] == namespace and claims["serviceaccount"]["name"] == "lister"
    assert claims["pod"] == {"name": "in-cluster", "uid": pod.metadata.uid}  # TokenRequest bound to this pod
    assert lines[2].startswith("configmaps [") and "'kube-root-ca.crt'" in lines[2]  # its Role's list, granted
    assert lines[3] == "read-only: Read-only file system"
    # Nothing of it leaks to the host: the fixed path there holds no token.
    assert not Path(SERVICE_ACCOUNT_DIR, "token").exists()


@pytest.mark.parametrize("where", ["pod", "serviceaccount"])
def test_automount_false_gives_a_pod_no_token(control_plane, node_agent, namespace, where):
    """``automountServiceAccountToken: false`` on the pod or its ServiceAccount: the API server adds
    no token volume, and the node gives the process none (no files, no KUBECONFIG), as for the
    operator's worker pods."""
    from kubernetes import client

    core = client.CoreV1Api(control_plane.api_client())
    name = f"tokenless-{where}"
    spec = {"containers": [{"name": "main", "image": "python:3", "command": [sys.executable, "-c", IN_CLUSTER_PROBE]}]}
    if where == "pod":
        spec["automountServiceAccountToken"] = False
    else:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}, "automountServiceAccountToken": False})
        spec["serviceAccountName"] = name
    pod = _finished_pod(core, namespace, name, spec)
    output = node_agent.log(namespace, name)
    assert not [v for v in pod.spec.volumes or () if v.projected], pod.spec.volumes
    assert pod.status.phase == "Failed", output
    assert output.splitlines() == ["False 127.0.0.1 False", "no in-cluster config: Service token file does not exist."]
    run = node_agent.run_of(namespace, name)
    assert "KUBECONFIG" not in run.env and SERVICE_ACCOUNT_DIR not in run.argv


def test_a_followed_log_streams_until_the_container_exits(control_plane, node_agent, namespace, tmp_path):
    """``kubectl logs -f``: lines arrive while the container runs, the stream ends when it exits."""
    from kubernetes import client

    core = client.CoreV1Api(control_plane.api_client())
    mark = tmp_path / "go-on"
    script = (f"import pathlib, time; print('one'); m = pathlib.Path({str(mark)!r})\n"
              "while not m.exists(): time.sleep(0.1)\nprint('two')")
    core.create_namespaced_pod(namespace, {"metadata": {"name": "talker"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "python:3", "command": [sys.executable, "-c", script]}]}})
    wait_for(lambda: "one" in node_agent.log(namespace, "talker"), 30, "the first line")
    stream = core.read_namespaced_pod_log("talker", namespace, follow=True, _preload_content=False)
    assert stream.read(4) == b"one\n"
    mark.touch()
    assert stream.read() == b"two\n"  # to the end: the stream closes once the container is done
