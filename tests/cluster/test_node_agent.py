"""The test node on the real control plane: the real Job controller runs a Job whose pod the
agent runs as a process (env from a Secret and the downward API, a mounted ConfigMap, exit code
reported), a crashed pod is replaced by its Job, and ServiceAccount tokens carry RBAC."""

from __future__ import annotations

import sys
import uuid

import pytest
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
