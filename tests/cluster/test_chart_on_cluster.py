"""The chart and the operator on the real control plane (``tests/controlplane.py``), end to end.

``helm install`` the chart (CRD, the operator's Deployment, ServiceAccount and Role, and one
experiment of the release); the node agent runs the operator's pod — ``p2pk operator`` with the
Deployment's args, under the chart's ServiceAccount token, so its RBAC is what is tested — and
the workers' pods (``p2pk worker``), which train and exchange through moto's S3. Then, in order:
an experiment applied with kubectl runs to Succeeded although a worker is killed mid-run (its Job
resumes it) and the operator is restarted mid-run; ``kubectl get p2px`` shows its Round, FNR
and FPR; a spec change is refused; a store without the MinIO admin API is reported at once;
deletion removes the experiment's objects; ``helm uninstall`` leaves nothing behind and the
namespace goes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from services import require_binary, tiny_experiment, wait_for

from p2p_job.spec import API_GROUP, API_VERSION
from p2pk_operator.admission import CREDENTIALS_LABEL
from p2pk_operator.crd import PLURAL
from p2pk_operator.manifests import EXPERIMENT_LABEL

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "p2pk"
RELEASE = "lab"
STORE_SECRET = "store-keys"
ROUNDS = 3
#: Seconds between the operator's status observations (``p2pk operator --observe-interval``).
OBSERVE = 2
#: An applied experiment's Jobs must exist this soon (the issue saw 40-57 s under the chart's RBAC).
JOBS_WITHIN = 15


@dataclass
class Lab:
    plane: object
    agent: object
    namespace: str
    bucket: str
    s3_endpoint: str
    env: dict[str, str]
    tools: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.tools[tool], *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{tool} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("kubectl", "-n", self.namespace, *args, **kw)

    def api(self, kind: str):
        from kubernetes import client

        return getattr(client, kind)(self.plane.api_client())

    def experiment(self, name: str, **spec) -> dict:
        doc = tiny_experiment(name, n_clients=2, **{"rounds": ROUNDS, **spec})
        doc["spec"]["runtime"]["roundTimeoutSeconds"] = 20
        doc["spec"].setdefault("kubernetes", {
            "image": "ghcr.io/p2pk/worker:0.1.0", "backoffLimit": 2,
            "s3": {"endpoint": self.s3_endpoint, "bucket": self.bucket, "credentialsSecret": STORE_SECRET}})
        return doc

    def apply(self, doc: dict) -> None:
        proc = subprocess.run([self.tools["kubectl"], "-n", self.namespace, "apply", "-f", "-"], env=self.env,
                              input=yaml.safe_dump(doc), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr

    def status(self, name: str) -> dict:
        obj = self.api("CustomObjectsApi").get_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL, name)
        return obj.get("status") or {}

    def wait(self, check, timeout: float, what: str, interval: float = 0.5, more=lambda: ""):
        """:func:`wait_for`, failing with the operator's log (and ``more()``)."""
        try:
            return wait_for(check, timeout, what, interval)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{more()}\noperator log:\n{self.operator_log()[-5000:]}") from None

    def wait_status(self, name: str, what: str, holds, timeout: float = 60) -> dict:
        found: dict = {}

        def check():
            found.clear()
            found.update(self.status(name))
            return holds(found)

        self.wait(check, timeout, what, more=lambda: f"status: {json.dumps(found, indent=1)}")
        return found

    def jobs(self, experiment: str) -> list:
        return self.api("BatchV1Api").list_namespaced_job(self.namespace, label_selector=f"{EXPERIMENT_LABEL}={experiment}").items

    def pods(self, selector: str) -> list:
        return self.api("CoreV1Api").list_namespaced_pod(self.namespace, label_selector=selector).items

    def operator_pods(self) -> list:
        return self.pods("app.kubernetes.io/component=operator")

    def operator_logs(self) -> dict[str, str]:
        """The log of every operator pod the node ran, by pod name."""
        runs = [r for r in list(self.agent.history) if r.namespace == self.namespace and "-operator-" in r.name]
        return {r.name: r.log_path.read_text(errors="replace") if r.log_path.exists() else "" for r in runs}

    def operator_log(self) -> str:
        return "".join(f"--- {name}\n{text}" for name, text in self.operator_logs().items())

    def events(self, name: str) -> list:
        return self.api("CoreV1Api").list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}").items


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or () if c["type"] == type_), {})


def worker_events(agent, namespace: str, pod: str) -> list[dict]:
    from p2p_job.telemetry import parse_log_line

    return [e for e in map(parse_log_line, agent.log(namespace, pod).splitlines()) if e]


@pytest.fixture(scope="module")
def lab(control_plane, node_agent, s3_server, tmp_path_factory):
    tools = {tool: require_binary(tool) for tool in ("helm", "kubectl")}  # scripts/get-tools.sh
    work = tmp_path_factory.mktemp("chart-e2e")
    namespace = f"p2pk-{uuid.uuid4().hex[:6]}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "KUBECONFIG": str(control_plane.kubeconfig),
           **{var: str(work / var.lower()) for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}}
    bucket = s3_server.store_url().split("/")[2]
    lab = Lab(control_plane, node_agent, namespace, bucket, s3_server.endpoint, env, tools)
    core = lab.api("CoreV1Api")
    core.create_namespace({"metadata": {"name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": STORE_SECRET, "labels": {CREDENTIALS_LABEL: "true"}},
                                              "stringData": {"accessKey": s3_server.access_key, "secretKey": s3_server.secret_key}})
    values = {
        "operator": {"extraArgs": [f"--observe-interval={OBSERVE}"]},
        "monitoring": {"podMonitor": {"enabled": False}},
        "experiments": [{"name": "of-the-release", "spec": lab.experiment("x", rounds=1)["spec"]}],
    }
    values_file = work / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    started = time.monotonic()
    lab.run("helm", "install", RELEASE, str(CHART), "-n", namespace, "-f", str(values_file), "--wait", "--timeout=120s")
    lab.timings["helm install --wait"] = time.monotonic() - started
    try:
        yield lab
    finally:  # after a failed test: leave no release or namespace behind
        from kubernetes.client.exceptions import ApiException

        lab.run("helm", "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout=120s", check=False)
        try:
            core.delete_namespace(namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise


def test_the_chart_installs_and_its_operator_runs_under_the_charts_service_account(lab):
    (pod,) = lab.operator_pods()
    assert pod.status.phase == "Running"
    assert pod.spec.service_account_name == f"{RELEASE}-p2pk-operator"
    # The operator's first start (imports on a loaded machine) comes before these Jobs.
    jobs = lab.wait(lambda: lab.jobs("of-the-release"), 2 * JOBS_WITHIN, "the release's experiment's Jobs")
    assert sorted(j.metadata.name for j in jobs) == ["of-the-release-ksmote-client-a", "of-the-release-ksmote-client-b"]


def test_an_applied_experiment_survives_a_killed_worker_and_an_operator_restart(lab):
    agent, ns = lab.agent, lab.namespace
    lab.apply(lab.experiment("survivor"))
    applied = time.monotonic()
    lab.wait(lambda: len(lab.jobs("survivor")) == 2, JOBS_WITHIN, "the Jobs of an applied experiment")
    lab.timings["Jobs created after kubectl apply"] = time.monotonic() - applied

    # Kill client-a's worker once it has finished a round, before its last.
    selector = f"{EXPERIMENT_LABEL}=survivor,p2pk.io/client=client-a"

    def mid_run():
        for pod in lab.pods(selector):
            done = [e["round"] for e in worker_events(agent, ns, pod.metadata.name) if e["event"] == "round_end"]
            if done and max(done) < ROUNDS:
                return pod.metadata.name
        return None

    first = lab.wait(mid_run, 120, "client-a's worker to finish a round", interval=0.1)
    agent.kill(ns, first)
    # Restart the operator: its Deployment makes a new pod, which resumes the experiments.
    (operator_pod,) = lab.operator_pods()
    lab.kubectl("delete", "pod", operator_pod.metadata.name, "--wait=false")

    done = lab.wait_status("survivor", "the experiment to succeed", lambda s: s.get("phase") in ("Succeeded", "Failed"), timeout=240)
    assert done["phase"] == "Succeeded", json.dumps(done, indent=1)
    assert done["round"] == {"slowest": ROUNDS, "fastest": ROUNDS, "total": ROUNDS}
    clients = {c["client"]: c for c in done["clients"]}
    assert set(clients) == {"client-a", "client-b"}
    for c in clients.values():
        assert c["rounds"] == ROUNDS and 0 <= c["fnr"] <= 1 and 0 <= c["fpr"] <= 1, c
    assert clients["client-a"]["failures"] == 1

    # The Job replaced the killed pod; the new one resumed from the checkpoint.
    job = next(j for j in lab.jobs("survivor") if j.metadata.name.endswith("client-a"))
    assert (job.status.failed, job.status.succeeded) == (1, 1)
    (second,) = [p.metadata.name for p in lab.pods(selector) if p.metadata.name != first]
    (start,) = [e for e in worker_events(agent, ns, second) if e["event"] == "worker_start"]
    assert start["resume_from"] >= 1

    table = lab.kubectl("get", "p2px", "survivor").stdout.split("\n")
    header, row = table[0].split(), table[1].split()
    assert header[:6] == ["NAME", "PHASE", "CLIENTS", "ROUND", "FNR", "FPR"]
    assert row[:4] == ["survivor", "Succeeded", "2/2", str(ROUNDS)]
    assert float(row[4]) == pytest.approx(done["fnr"]) and float(row[5]) == pytest.approx(done["fpr"])

    # Two operator pods ran (the restart); neither was refused anything nor logged an error.
    logs = lab.operator_logs()
    assert len(logs) == 2
    for text in logs.values():
        assert "forbidden" not in text.lower() and "[ERROR" not in text, text[-4000:]


def test_the_created_event_counts_methods_and_clients(lab):
    events = [e for e in lab.events("survivor") if e.reason == "ResourcesCreated"]
    assert events and "2 Jobs (1 method × 2 clients)" in events[0].message, [e.message for e in events]


def test_a_spec_change_is_refused(lab):
    api = lab.api("CustomObjectsApi")
    api.patch_namespaced_custom_object(API_GROUP, API_VERSION, lab.namespace, PLURAL, "survivor", {"spec": {"rounds": ROUNDS + 5}})
    refused = lab.wait_status("survivor", "SpecChangeRefused", lambda s: condition(s, "Degraded").get("reason") == "SpecChangeRefused")
    assert "spec.rounds" in condition(refused, "Degraded")["message"]
    assert refused["round"]["total"] == ROUNDS


def test_a_store_without_the_minio_admin_api_is_reported_at_once(lab):
    doc = lab.experiment("no-admin")
    doc["spec"]["kubernetes"]["s3"] = {"endpoint": lab.s3_endpoint, "bucket": lab.bucket, "adminSecret": STORE_SECRET}
    lab.apply(doc)
    status = lab.wait_status("no-admin", "a condition naming the missing admin API", lambda s: condition(s, "Failed"), timeout=15)
    failed = condition(status, "Failed")
    assert status["phase"] == "Failed" and failed["reason"] == "StoreAdminUnsupported", failed
    assert "MinIO admin API" in failed["message"] and "credentialsSecret" in failed["message"]
    warnings = wait_for(lambda: [e for e in lab.events("no-admin") if e.type == "Warning"], 10, "a Warning Event")
    assert warnings[0].reason == "StoreAdminUnsupported"
    assert lab.jobs("no-admin") == []


def test_a_missing_credentials_secret_is_reported_at_once_and_retried(lab):
    doc = lab.experiment("no-keys")
    doc["spec"]["kubernetes"]["s3"]["credentialsSecret"] = "not-there"
    lab.apply(doc)
    status = lab.wait_status("no-keys", "the Degraded condition", lambda s: condition(s, "Degraded"), timeout=15)
    degraded = condition(status, "Degraded")
    assert (status["phase"], degraded["reason"]) == ("Pending", "CredentialsUnavailable")
    assert f"Secret {lab.namespace}/not-there (spec.kubernetes.s3.credentialsSecret) not found" in degraded["message"]
    assert lab.jobs("no-keys") == []


def test_deleting_an_experiment_removes_its_objects(lab):
    api = lab.api("CustomObjectsApi")
    for name in ("survivor", "no-admin", "no-keys"):
        api.delete_namespaced_custom_object(API_GROUP, API_VERSION, lab.namespace, PLURAL, name)
    core = lab.api("CoreV1Api")

    def gone():
        left = [o["metadata"]["name"] for o in api.list_namespaced_custom_object(API_GROUP, API_VERSION, lab.namespace, PLURAL)["items"]]
        return (set(left) == {"of-the-release"} and not lab.jobs("survivor") and not lab.pods(f"{EXPERIMENT_LABEL}=survivor")
                and not core.list_namespaced_config_map(lab.namespace, label_selector=f"{EXPERIMENT_LABEL}=survivor").items)

    wait_for(gone, 60, "the experiments and their Jobs, pods and ConfigMap to go")


def test_helm_uninstall_leaves_nothing_behind(lab):
    started = time.monotonic()
    lab.run("helm", "uninstall", RELEASE, "-n", lab.namespace, "--wait", "--timeout=120s")
    lab.timings["helm uninstall --wait"] = time.monotonic() - started
    ns = lab.namespace
    kinds = "p2pexperiments,jobs,pods,deployments,replicasets,configmaps,secrets,serviceaccounts,roles,rolebindings"

    def leftovers():
        names = lab.kubectl("get", kinds, "-o", "name").stdout.split()
        expected = {"configmap/kube-root-ca.crt", f"secret/{STORE_SECRET}", "serviceaccount/default"}
        return [n for n in names if n not in expected]

    try:
        wait_for(lambda: not leftovers(), 60, "the release's objects to go")
    except AssertionError:
        raise AssertionError(f"left behind: {leftovers()}") from None
    core = lab.api("CoreV1Api")
    core.delete_namespace(ns)

    def namespace_gone():
        return ns not in [n.metadata.name for n in core.list_namespace().items]

    wait_for(namespace_gone, 60, f"namespace {ns} to go")
    print("timings:", {k: round(v, 1) for k, v in lab.timings.items()})
