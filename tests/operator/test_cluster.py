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
}


@pytest.fixture
def api():
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            seen.append((self.command, self.path))
            status, body = ANSWERS.get((self.command, self.path), (500, {"message": f"unexpected {self.command} {self.path}"}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    yield KubeCluster(client.ApiClient(config)), seen
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
