"""``helm test`` and the chart's NetworkPolicy on the suite's real control plane.

One release, installed with an experiment, the Pushgateway (a real one) and the NetworkPolicy on:

- ``helm test`` runs the chart's test Pod on the node agent, which gives it its ServiceAccount's
  in-cluster configuration as a kubelet would (``tests/node_agent.py``); it passes once the
  experiment runs. After an upgrade adds an experiment the operator refuses (an image outside
  ``operator.allowedImages``), ``helm test`` fails, and its output names the experiment and why.
- Worker pods get no ServiceAccount token, the operator's pod gets one.
- The NetworkPolicy the API server stores (server-side validation; a server-side dry run accepts
  it and refuses a malformed peer) lets exactly the worker pods reach exactly the store, the
  Pushgateway and DNS the values name, and the endpoints the workers are given lie inside it. No
  CNI runs here, so nothing enforces it (docs/deploy.md says how to check that on a cluster).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helm_release import CHART, STORE_SECRET, Release, create_namespace, install
from node_agent import SERVICE_ACCOUNT_DIR
from services import tiny_experiment, wait_for

from p2p_job.spec import API_GROUP, API_VERSION
from p2pk_operator.crd import PLURAL
from p2pk_operator.manifests import EXPERIMENT_LABEL

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RELEASE = "checked"
ALLOWED_IMAGE = "ghcr.io/p2pk/worker:0.1.0"


@dataclass
class Checked:
    """The release, the values it was installed with, and the store its experiments use."""

    release: Release
    values: dict
    work: Path
    bucket: str
    endpoint: str

    @property
    def namespace(self) -> str:
        return self.release.namespace

    @property
    def agent(self):
        return self.release.agent

    @property
    def plane(self):
        return self.release.plane

    def helm(self, *args: str, values: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
        """``helm ARGS -n NS`` (``-f`` a file of ``values`` when given), not asserted."""
        if values is not None:
            path = self.work / f"values-{uuid.uuid4().hex[:6]}.yaml"
            path.write_text(yaml.safe_dump(values))
            args = (*args, "-f", str(path))
        return self.release.run("helm", *args, "-n", self.namespace, check=False, timeout=timeout)

    def api(self, kind: str):
        from kubernetes import client

        return getattr(client, kind)(self.plane.api_client())

    def pods(self, selector: str) -> list:
        return self.api("CoreV1Api").list_namespaced_pod(self.namespace, label_selector=selector).items

    def phase(self, name: str) -> str | None:
        obj = self.api("CustomObjectsApi").get_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL, name)
        return (obj.get("status") or {}).get("phase")


def experiment_spec(endpoint: str, bucket: str, image: str = ALLOWED_IMAGE) -> dict:
    spec = tiny_experiment("x", n_clients=2, rounds=2)["spec"]
    spec["kubernetes"] = {"image": image, "backoffLimit": 1,
                          "s3": {"endpoint": endpoint, "bucket": bucket, "credentialsSecret": STORE_SECRET}}
    return spec


@pytest.fixture(scope="module")
def release(control_plane, node_agent, s3_server, pushgateway, tmp_path_factory):
    from kubernetes.client.exceptions import ApiException

    work = tmp_path_factory.mktemp("helm-test")
    namespace = f"checked-{uuid.uuid4().hex[:6]}"
    store_port, pushgateway_port = (int(a.rsplit(":", 1)[1]) for a in (s3_server.endpoint, pushgateway.address))
    bucket = s3_server.store_url().split("/")[2]
    values = {
        "operator": {"extraArgs": ["--observe-interval=2"], "allowedImages": ["ghcr.io/p2pk/worker:*"]},
        "monitoring": {"podMonitor": {"enabled": False}, "pushgateway": pushgateway.address},
        "networkPolicy": {"enabled": True,
                          "store": {"to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}], "ports": [store_port]},
                          "pushgateway": {"to": [{"ipBlock": {"cidr": "127.0.0.0/30"}}], "ports": [pushgateway_port]}},
        "tests": {"timeoutSeconds": 180},
        "experiments": [{"name": "fine", "spec": experiment_spec(s3_server.endpoint, bucket)}],
    }
    create_namespace(control_plane, namespace, s3_server, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    checked = Checked(install(control_plane, node_agent, work, RELEASE, namespace, values), values, work, bucket,
                      s3_server.endpoint)
    try:
        yield checked
    finally:
        checked.helm("uninstall", RELEASE, "--wait", "--timeout=120s")
        try:
            checked.api("CoreV1Api").delete_namespace(namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise


def helm_test(release: Checked) -> subprocess.CompletedProcess:
    return release.helm("test", RELEASE, "--logs", "--timeout=240s", timeout=300)


def test_helm_test_passes_once_the_experiment_runs(release):
    done = helm_test(release)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "OK: fine reached Running" in output
    assert release.phase("fine") in ("Running", "Succeeded")
    # The check ran with its ServiceAccount's in-cluster files and env, no kubeconfig handed to it
    # (unless this machine allows no mount namespaces: then the node gives it KUBECONFIG).
    run = release.agent.run_of(release.namespace, f"{RELEASE}-p2pk-test")
    assert run.env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    if not release.agent.in_cluster_problem:
        assert SERVICE_ACCOUNT_DIR in run.argv and "KUBECONFIG" not in run.env


def test_workers_get_no_token_and_the_operator_does(release):
    workers = wait_for(lambda: release.pods(f"{EXPERIMENT_LABEL}=fine"), 60, "the experiment's worker pods")
    (operator,) = release.pods("app.kubernetes.io/component=operator")

    def token_volumes(pod) -> list[str]:
        return [v.name for v in pod.spec.volumes or () if v.projected and any(s.service_account_token for s in v.projected.sources)]

    def bound(pod) -> bool:
        run = wait_for(lambda: release.agent.run_of(release.namespace, pod.metadata.name), 60, f"{pod.metadata.name} to run")
        wait_for(lambda: run.argv, 60, f"{pod.metadata.name} to start")
        return SERVICE_ACCOUNT_DIR in run.argv or "KUBECONFIG" in run.env

    for pod in workers:
        assert pod.spec.automount_service_account_token is False and token_volumes(pod) == [], pod.metadata.name
        assert not bound(pod), pod.metadata.name
    assert token_volumes(operator) and bound(operator)


def test_helm_test_fails_naming_an_experiment_the_operator_refused(release):
    values = {**release.values, "experiments": [
        *release.values["experiments"],
        {"name": "miner", "spec": experiment_spec(release.endpoint, release.bucket, image="docker.io/evil/miner:1")}]}
    upgraded = release.helm("upgrade", RELEASE, str(CHART), "--wait", "--timeout=120s", values=values)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    done = helm_test(release)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert ("FAIL miner: Failed: spec.kubernetes.image: image 'docker.io/evil/miner:1' is not allowed by this operator; "
            "allowed: ghcr.io/p2pk/worker:*") in output
    assert f"{RELEASE}-p2pk-test" in output  # helm names the failed test pod
    assert "OK:" not in output  # the log is this test pod's, not the one before it of the same name


# --------------------------------------------------------------------------- the NetworkPolicy


def _rules(policy: dict) -> set[tuple[str, str, int]]:
    """(peer as JSON, protocol, port) for every egress rule of a NetworkPolicy as the API returns it."""
    return {(json.dumps(peer, sort_keys=True), port["protocol"], port["port"])
            for rule in policy["spec"]["egress"] for peer in rule["to"] for port in rule["ports"]}


def test_the_stored_network_policy_allows_exactly_the_store_the_pushgateway_and_dns(release):
    api = release.plane.api_client()
    stored = api.sanitize_for_serialization(
        release.api("NetworkingV1Api").read_namespaced_network_policy(f"{RELEASE}-p2pk-workers", release.namespace))
    np = release.values["networkPolicy"]
    dns = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]["dns"]
    expected = {(json.dumps(peer, sort_keys=True), protocol, port)
                for peers, ports, protocols in ((dns["to"], dns["ports"], ("UDP", "TCP")),
                                                (np["store"]["to"], np["store"]["ports"], ("TCP",)),
                                                (np["pushgateway"]["to"], np["pushgateway"]["ports"], ("TCP",)))
                for peer in peers for port in ports for protocol in protocols}
    assert _rules(stored) == expected
    assert stored["spec"]["policyTypes"] == ["Egress"] and not stored["spec"].get("ingress")

    # It selects exactly the worker pods (the API server evaluates the selector): not the operator.
    selector = stored["spec"]["podSelector"]
    assert selector == {"matchExpressions": [{"key": EXPERIMENT_LABEL, "operator": "Exists"}]}
    workers = wait_for(lambda: release.pods(f"{EXPERIMENT_LABEL}=fine"), 60, "the experiment's worker pods")
    selected = {p.metadata.name for p in release.pods(EXPERIMENT_LABEL)}
    assert {p.metadata.name for p in workers} <= selected
    assert not [name for name in selected if "-operator-" in name or name.endswith("-test")]

    # The store and Pushgateway the operator gave the workers lie inside the policy's rules.
    allowed = [(ipaddress.ip_network(json.loads(peer)["ipBlock"]["cidr"]), port)
               for peer, protocol, port in _rules(stored) if "ipBlock" in peer and protocol == "TCP"]
    for pod in workers:
        env = {e.name: e.value for e in pod.spec.containers[0].env or ()}
        for variable in ("P2PK_S3_ENDPOINT", "P2PK_PUSHGATEWAY"):
            host, port = env[variable].split("//")[-1].rsplit(":", 1)
            assert any(ipaddress.ip_address(host) in net and int(port) == p for net, p in allowed), (variable, env[variable])


def test_a_server_side_dry_run_accepts_the_policy_and_refuses_a_malformed_peer(release):
    def dry_run(values: dict) -> subprocess.CompletedProcess:
        rendered = release.helm("template", RELEASE, str(CHART), "--show-only", "templates/networkpolicy.yaml", values=values)
        assert rendered.returncode == 0, rendered.stderr
        return release.release.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered.stdout, check=False)

    accepted = dry_run(release.values)
    assert accepted.returncode == 0 and "(server dry run)" in accepted.stdout, accepted.stderr
    bad = json.loads(json.dumps(release.values))
    bad["networkPolicy"]["store"]["to"] = [{"ipBlock": {"cidr": "10.0.5.0/33"}}]
    refused = dry_run(bad)
    assert refused.returncode != 0
    assert "spec.egress[1].to[0].ipBlock.cidr" in refused.stderr and "10.0.5.0/33" in refused.stderr, refused.stderr
