"""A Helm release of the chart on the suite's control plane, for tests/cluster: ``helm`` and
``kubectl`` (from ``.tools/bin``, ``scripts/get-tools.sh``) as the admin, with their own HELM_*
homes; the operator's Deployment pod runs on the node agent under the chart's ServiceAccount
token, so the chart's RBAC is what is tested, and its log is read from the agent."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from services import require_binary

from p2pk_operator.admission import CREDENTIALS_LABEL

CHART = Path(__file__).resolve().parents[2] / "charts" / "p2pk"
STORE_SECRET = "store-keys"


@dataclass
class Release:
    name: str
    namespace: str
    plane: object
    agent: object
    env: dict[str, str]
    tools: dict[str, str]

    def run(self, tool: str, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 240) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.tools[tool], *args], env=self.env, input=input, capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{tool} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def kubectl(self, *args: str, namespace: str | None = None, **kw) -> subprocess.CompletedProcess:
        return self.run("kubectl", "-n", namespace or self.namespace, *args, **kw)

    def apply(self, doc: dict, namespace: str | None = None) -> None:
        """``kubectl apply`` a document, as a user would."""
        self.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(doc))

    def uninstall(self, timeout: str = "400s") -> float:
        """``helm uninstall --wait``; returns the seconds it took."""
        started = time.monotonic()
        self.run("helm", "uninstall", self.name, "-n", self.namespace, "--wait", f"--timeout={timeout}", timeout=600)
        return time.monotonic() - started

    def operator_logs(self) -> dict[str, str]:
        """The log of every operator pod the node ran for this release, by pod name."""
        runs = [r for r in list(self.agent.history) if r.namespace == self.namespace and "-operator-" in r.name]
        return {r.name: r.log_path.read_text(errors="replace") if r.log_path.exists() else "" for r in runs}

    def operator_log(self) -> str:
        return "".join(f"--- {name}\n{text}" for name, text in self.operator_logs().items())


def create_namespace(plane, name: str, s3_server, labels: dict | None = None) -> None:
    """A namespace with the store's keys in Secret :data:`STORE_SECRET`, labelled for the operator."""
    from kubernetes import client

    core = client.CoreV1Api(plane.api_client())
    core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    core.create_namespaced_secret(name, {"metadata": {"name": STORE_SECRET, "labels": {CREDENTIALS_LABEL: "true"}},
                                         "stringData": {"accessKey": s3_server.access_key, "secretKey": s3_server.secret_key}})


def install(plane, agent, work: Path, name: str, namespace: str, values: dict) -> Release:
    """``helm install --wait`` the chart into ``namespace`` (which must exist) with ``values``."""
    tools = {tool: require_binary(tool) for tool in ("helm", "kubectl")}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "KUBECONFIG": str(plane.kubeconfig),
           **{var: str(work / var.lower()) for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}}
    release = Release(name, namespace, plane, agent, env, tools)
    values_file = work / f"{name}-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    release.run("helm", "install", name, str(CHART), "-n", namespace, "-f", str(values_file), "--wait", "--timeout=180s")
    return release


def namespace_gone(plane, name: str) -> bool:
    from kubernetes import client

    return name not in [n.metadata.name for n in client.CoreV1Api(plane.api_client()).list_namespace().items]
