"""``helm uninstall`` and namespace deletion on the real control plane (``tests/controlplane.py``):
nothing is left behind and no finalizer is stuck (docs/operator.md, "Uninstalling").

- Experiments applied with kubectl, not the release's, are deleted by the chart's pre-delete hook
  while the operator still runs: a running one with ``purgeOnDelete`` (which carries the
  operator's finalizer) has its Jobs stopped and its store prefix purged, one with shared keys
  carries no finalizer at all; nothing is left and the namespace, deleted, goes.
- A cluster-wide operator living in its own namespace: a watched namespace deleted with its
  running experiments goes; a deletion whose Jobs do not stop (background propagation) is given
  up after ``operator.deletionTimeoutSeconds`` with a Warning Event naming what stays in the store.
- The operator's own namespace deleted with the operator and its experiments in it (no
  ``helm uninstall``): experiments without state outside Kubernetes carry no finalizer, so the
  namespace goes although the operator and its RBAC go in the same sweep.
- Without an operator, the uninstall hook fails at its deadline naming the experiment its
  finalizer holds.
"""

from __future__ import annotations

import os
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from helm_release import STORE_SECRET, create_namespace, install, namespace_gone
from services import tiny_experiment, wait_for

from p2p_job.spec import API_GROUP, API_VERSION
from p2pk_operator.crd import PLURAL

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
#: Rounds enough for the workers to be still running when the experiment is deleted.
LONG = 200
VALUES = {"operator": {"extraArgs": ["--observe-interval=2"]}, "monitoring": {"podMonitor": {"enabled": False}},
          "tests": {"enabled": False}}


def experiment(name: str, s3_server, bucket: str, rounds: int = LONG, **kubernetes) -> dict:
    doc = tiny_experiment(name, n_clients=2, rounds=rounds)
    doc["spec"]["runtime"]["roundTimeoutSeconds"] = 20
    doc["spec"]["kubernetes"] = {"image": "ghcr.io/p2pk/worker:0.1.0", "backoffLimit": 2,
                                 "s3": {"endpoint": s3_server.endpoint, "bucket": bucket, "credentialsSecret": STORE_SECRET},
                                 **kubernetes}
    return doc


def custom(plane):
    from kubernetes import client

    return client.CustomObjectsApi(plane.api_client())


def get(plane, namespace: str, name: str) -> dict | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return custom(plane).get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def wait_running(release, namespace: str, name: str, timeout: float = 240) -> dict:
    """Until the experiment's workers have finished a round (so its Jobs are active)."""
    seen: dict = {}

    def running():
        obj = get(release.plane, namespace, name) or {}
        seen.update(obj.get("status") or {})
        return obj if ((obj.get("status") or {}).get("round") or {}).get("slowest", 0) >= 1 else None

    try:
        return wait_for(running, timeout, f"{namespace}/{name} to finish a round", interval=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {seen}\noperator log:\n{release.operator_log()[-5000:]}") from None


def events(plane, namespace: str, name: str) -> list:
    from kubernetes import client

    return client.CoreV1Api(plane.api_client()).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items


def delete_namespace(plane, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.CoreV1Api(plane.api_client()).delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def wait_namespace_gone(plane, name: str, timeout: float = 180) -> float:
    started = time.monotonic()

    def leftovers() -> str:
        from kubernetes import client

        try:
            ns = client.CoreV1Api(plane.api_client()).read_namespace(name)
        except Exception:  # gone meanwhile
            return ""
        stuck = [f"{o['metadata']['name']} {o['metadata'].get('finalizers')}"
                 for o in custom(plane).list_namespaced_custom_object(API_GROUP, API_VERSION, name, PLURAL)["items"]]
        return f"conditions: {[(c.type, c.message) for c in ns.status.conditions or ()]}; experiments left: {stuck}"

    try:
        wait_for(lambda: namespace_gone(plane, name), timeout, f"namespace {name} to go", interval=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {leftovers()}") from None
    return time.monotonic() - started


def test_helm_uninstall_deletes_the_experiments_applied_with_kubectl_and_leaves_nothing(control_plane, node_agent, s3_server, tmp_path):
    plane, ns = control_plane, f"un-{uuid.uuid4().hex[:6]}"
    bucket = urllib.parse.urlparse(s3_server.store_url()).netloc
    create_namespace(plane, ns, s3_server, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        release = install(plane, node_agent, tmp_path, "un", ns, VALUES)
        release.apply(experiment("purged", s3_server, bucket, purgeOnDelete=True))
        release.apply(experiment("plain", s3_server, bucket, rounds=1))
        purged = wait_running(release, ns, "purged")
        plain = wait_for(lambda: ((get(plane, ns, "plain") or {}).get("status") or {}).get("phase") == "Succeeded"
                         and get(plane, ns, "plain"), 240, "the plain experiment to succeed", interval=1)
        # Only the experiment with state outside Kubernetes (a prefix to purge) is held for the operator.
        assert FINALIZER in purged["metadata"]["finalizers"]
        assert FINALIZER not in (plain["metadata"].get("finalizers") or ())
        store = s3_server.open(f"s3://{bucket}/experiments/{ns}")
        assert store.list("purged/") and store.list("plain/")

        seconds = release.uninstall()
        print(f"helm uninstall --wait with a running purgeOnDelete experiment: {seconds:.1f} s")
        kinds = "p2pexperiments,jobs,pods,deployments,replicasets,configmaps,secrets,serviceaccounts,roles,rolebindings"
        expected = {"configmap/kube-root-ca.crt", f"secret/{STORE_SECRET}", "serviceaccount/default"}

        def leftovers() -> list[str]:
            return [n for n in release.kubectl("get", kinds, "-o", "name").stdout.split() if n not in expected]

        try:  # the operator's pod may still be terminating (its Deployment is gone)
            wait_for(lambda: not leftovers(), 60, "the release's objects to go")
        except AssertionError:
            raise AssertionError(f"left behind: {leftovers()}") from None
        # The operator finished the deletion before it went: the prefix is purged, the other kept.
        assert store.list("purged/") == [] and store.list("plain/")
        assert any(e.reason == "StorePurged" for e in events(plane, ns, "purged")), release.operator_log()[-3000:]
        for text in release.operator_logs().values():  # waiting for the Jobs to stop is no error
            assert "forbidden" not in text.lower() and "[ERROR" not in text, text[-3000:]
    finally:
        delete_namespace(plane, ns)
    print(f"namespace {ns} gone {wait_namespace_gone(plane, ns):.1f} s after its deletion")


def test_a_cluster_wide_operator_lets_a_watched_namespace_go_and_bounds_a_stuck_deletion(control_plane, node_agent, s3_server, tmp_path):
    plane, suffix = control_plane, uuid.uuid4().hex[:6]
    ops, team = f"ops-{suffix}", f"team-{suffix}"
    bucket = urllib.parse.urlparse(s3_server.store_url()).netloc
    for ns in (ops, team):
        create_namespace(plane, ns, s3_server)
    try:
        values = {**VALUES, "operator": {**VALUES["operator"], "clusterWide": True, "secretNamespaces": [team],
                                         "deletionTimeoutSeconds": 15}}
        release = install(plane, node_agent, tmp_path, "cw", ops, values)
        release.apply(experiment("in-team", s3_server, bucket, purgeOnDelete=True), namespace=team)
        release.apply(experiment("stuck", s3_server, bucket, purgeOnDelete=True))
        wait_running(release, team, "in-team")
        wait_running(release, ops, "stuck")

        # Deleted with background propagation, its Jobs run on until it is gone: the operator waits
        # for them to stop before purging, for operator.deletionTimeoutSeconds (15 s), then lets go.
        started = time.monotonic()
        custom(plane).delete_namespaced_custom_object(API_GROUP, API_VERSION, ops, PLURAL, "stuck")
        wait_for(lambda: get(plane, ops, "stuck") is None, 90, "the stuck deletion to be released", interval=0.5)
        released = time.monotonic() - started
        print(f"a deletion waiting for running Jobs released after {released:.1f} s (deletionTimeoutSeconds 15)")
        assert 13 <= released <= 60  # deletionTimestamp has whole seconds
        (warning,) = [e for e in events(plane, ops, "stuck") if e.reason == "CleanupAbandoned"]
        assert warning.type == "Warning"
        assert "(p2pk operator --deletion-timeout 15); left in the store: " \
               f"everything under s3://{bucket}/experiments/{ops}/stuck/ (waiting for 2 Jobs to stop" in warning.message
        assert s3_server.open(f"s3://{bucket}/experiments/{ops}").list("stuck/"), "what the Warning names is there"

        # The watched namespace deleted with a running experiment holding the finalizer: the
        # operator (elsewhere) finishes its deletion while the namespace controller removes the
        # rest, and the namespace goes.
        delete_namespace(plane, team)
        print(f"watched namespace {team} gone {wait_namespace_gone(plane, team):.1f} s after its deletion")
        release.uninstall()
    finally:
        for ns in (team, ops):
            delete_namespace(plane, ns)
    wait_namespace_gone(plane, ops)


def test_deleting_the_operators_own_namespace_with_its_experiments_ends(control_plane, node_agent, s3_server, tmp_path):
    plane, ns = control_plane, f"own-{uuid.uuid4().hex[:6]}"
    bucket = urllib.parse.urlparse(s3_server.store_url()).netloc
    create_namespace(plane, ns, s3_server)
    try:
        release = install(plane, node_agent, tmp_path, "own", ns, VALUES)
        release.apply(experiment("running", s3_server, bucket))
        running = wait_running(release, ns, "running")
        assert FINALIZER not in (running["metadata"].get("finalizers") or ())
    finally:
        delete_namespace(plane, ns)  # no helm uninstall: the operator goes in the same sweep
    print(f"the operator's own namespace {ns} gone {wait_namespace_gone(plane, ns):.1f} s after its deletion")


def test_the_uninstall_hook_names_what_it_could_not_delete_when_no_operator_runs(control_plane, s3_server, tmp_path):
    """The pre-delete hook's script on the real API server, with no operator: an experiment
    held by a finalizer is still there at the deadline, and the hook fails naming it and its
    finalizer (helm uninstall then stops before removing the operator)."""
    import subprocess
    import sys

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from p2pk_operator.crd import custom_resource_definition

    plane, ns = control_plane, f"hook-{uuid.uuid4().hex[:6]}"
    extensions = client.ApiextensionsV1Api(plane.api_client())
    crd = custom_resource_definition()
    try:
        extensions.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise
    wait_for(lambda: any(c.type == "Established" and c.status == "True"
                         for c in extensions.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or ()),
             60, "the CRD to be established")
    create_namespace(plane, ns, s3_server)
    bucket = urllib.parse.urlparse(s3_server.store_url()).netloc
    held = experiment("held", s3_server, bucket, purgeOnDelete=True)
    held["metadata"]["finalizers"] = [FINALIZER]  # as the operator left it before going
    custom(plane).create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, held)
    script = Path(__file__).resolve().parents[2] / "charts" / "p2pk" / "files" / "delete_experiments.py"
    try:
        done = subprocess.run([sys.executable, str(script), f"--namespace={ns}", "--timeout=3"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "KUBECONFIG": str(plane.kubeconfig)})
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"FAIL still there after 3 s (is the operator running? it removes its finalizer): {ns}/held (finalizers: " \
               f"{FINALIZER}" in done.stderr, done.stderr
        assert get(plane, ns, "held")["metadata"]["deletionTimestamp"], "deleted, kept by the finalizer"
    finally:
        custom(plane).patch_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, "held", {"metadata": {"finalizers": None}})
        delete_namespace(plane, ns)
    wait_namespace_gone(plane, ns)
