"""KubeCluster against a FAKE Kubernetes API server over HTTP (a recording stand-in, not a
cluster): the right endpoints, a 409 answered with the existing object, a 422 as Rejected,
a 404 as absent, label selectors and plain-dict results."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from p2pk_operator.cluster import KubeCluster, Rejected

SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "exp-a-store", "namespace": "lab"}, "data": {"accessKey": "dXNlcg=="}}
JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "exp-ksmote-a", "namespace": "lab", "labels": {"p2pk.io/experiment": "exp"}},
       "status": {"active": 1, "ready": 1}}
#: (method, path) → (HTTP status, body)
ANSWERS = {
    ("POST", "/api/v1/namespaces/lab/configmaps"): (201, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "exp-spec"}}),
    ("POST", "/api/v1/namespaces/lab/secrets"): (409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"}),
    ("GET", "/api/v1/namespaces/lab/secrets/exp-a-store"): (200, SECRET),
    ("POST", "/apis/batch/v1/namespaces/lab/jobs"): (422, {"kind": "Status", "code": 422, "message": 'Job.batch "x" is invalid: spec.template.labels: too long'}),
    ("GET", "/api/v1/namespaces/lab/configmaps/exp-spec"): (404, {"kind": "Status", "code": 404}),
    ("GET", "/apis/batch/v1/namespaces/lab/jobs?labelSelector=p2pk.io%2Fexperiment%3Dexp"): (200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": [JOB]}),
    ("POST", "/api/v1/namespaces/lab/events"): (201, {"kind": "Event", "metadata": {"name": "exp.1"}, "involvedObject": {"name": "exp"}}),
    ("POST", "/api/v1/namespaces/gone/events"): (403, {"kind": "Status", "code": 403, "message": 'events "exp.1" is forbidden: '
                                                        "unable to create new content in namespace gone because it is being terminated"}),
    ("PATCH", "/apis/p2pk.io/v1alpha1/namespaces/lab/p2pexperiments/exp/status"): (200, {"kind": "P2PExperiment"}),
    ("PATCH", "/apis/p2pk.io/v1alpha1/namespaces/lab/p2pexperiments/deleted/status"): (404, {"kind": "Status", "code": 404}),
}
EXPERIMENT = {"apiVersion": "p2pk.io/v1alpha1", "kind": "P2PExperiment", "metadata": {"name": "exp", "namespace": "lab", "uid": "u-1"}}


@pytest.fixture
def api():
    seen: list[tuple[str, str]] = []
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            seen.append((self.command, self.path))
            if self.headers.get("Content-Length"):
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status, body = ANSWERS.get((self.command, self.path), (500, {"message": f"unexpected {self.command} {self.path}"}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    cluster = KubeCluster(client.ApiClient(config))
    cluster.bodies = bodies
    yield cluster, seen
    server.shutdown()


def test_create_read_and_list_through_the_kubernetes_client(api):
    cluster, seen = api
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "exp-spec", "namespace": "lab"}, "data": {"spec.yaml": "x"}}
    assert cluster.create(cm) is None
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "exp-a-store", "namespace": "lab"}, "stringData": {"accessKey": "user"}}
    assert cluster.create(secret) == SECRET  # 409: the existing one, as a plain dict
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x", "namespace": "lab"}, "spec": {}}
    with pytest.raises(Rejected, match=r'Job x: Job.batch "x" is invalid: spec.template.labels: too long'):
        cluster.create(job)
    assert cluster.read("ConfigMap", "lab", "exp-spec") is None
    assert cluster.list("Job", "lab", {"p2pk.io/experiment": "exp"}) == [JOB]
    assert seen == [
        ("POST", "/api/v1/namespaces/lab/configmaps"),
        ("POST", "/api/v1/namespaces/lab/secrets"),
        ("GET", "/api/v1/namespaces/lab/secrets/exp-a-store"),
        ("POST", "/apis/batch/v1/namespaces/lab/jobs"),
        ("GET", "/api/v1/namespaces/lab/configmaps/exp-spec"),
        ("GET", "/apis/batch/v1/namespaces/lab/jobs?labelSelector=p2pk.io%2Fexperiment%3Dexp"),
    ]


def test_other_api_errors_propagate_for_kopf_to_retry(api):
    cluster, _ = api
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as info:
        cluster.read("Secret", "lab", "unknown")  # the fake answers 500
    assert info.value.status == 500


def test_events_are_posted_on_the_experiment_and_a_refused_one_does_not_raise(api, caplog):
    cluster, seen = api
    cluster.event(EXPERIMENT, "Warning", "CleanupAbandoned", "left in the store: x")
    event = cluster.bodies[-1]
    assert event["involvedObject"] == {"apiVersion": "p2pk.io/v1alpha1", "kind": "P2PExperiment", "name": "exp",
                                       "namespace": "lab", "uid": "u-1"}
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "CleanupAbandoned", "left in the store: x")
    assert event["metadata"] == {"generateName": "exp.", "namespace": "lab"} and event["count"] == 1
    # Its namespace being deleted: the API server refuses new Events; said in the log, not raised.
    terminating = {**EXPERIMENT, "metadata": {**EXPERIMENT["metadata"], "namespace": "gone"}}
    cluster.event(terminating, "Normal", "StorePurged", "deleted 3 objects")
    assert "could not post the Normal Event StorePurged on gone/exp: " in caplog.text and "being terminated" in caplog.text


def test_the_status_is_merge_patched_and_a_deleted_experiment_is_no_error(api):
    cluster, seen = api
    cluster.patch_status(EXPERIMENT, {"phase": "Running"})
    assert seen[-1] == ("PATCH", "/apis/p2pk.io/v1alpha1/namespaces/lab/p2pexperiments/exp/status")
    assert cluster.bodies[-1] == {"status": {"phase": "Running"}}
    cluster.patch_status({**EXPERIMENT, "metadata": {**EXPERIMENT["metadata"], "name": "deleted"}}, {"phase": "Running"})
