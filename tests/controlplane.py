"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager
started as local processes on 127.0.0.1, built once by ``scripts/build-control-plane.sh``.

- certificates (a CA, the API server's serving certificate, client certificates for the admin
  and the controller manager) and the service-account key pair are generated here with
  ``cryptography``;
- the API server reaches the test node's kubelet API (``kubectl logs``) at its InternalIP with a
  client certificate, and verifies the node's serving certificate;
- the API server runs with RBAC (``--authorization-mode=RBAC``), the default admission plugins
  plus ``OwnerReferencesPermissionEnforcement`` (so ``blockOwnerDeletion`` needs the
  ``…/finalizers`` permission, as on hardened clusters), a service-account issuer and signing
  key (TokenRequest works: ``kubectl create token``);
- the controller manager runs every default controller (Job, garbage collector, namespace,
  ReplicaSet/Deployment, service-account and token controllers, TTL-after-finished, …) with
  their own ServiceAccounts (``--use-service-account-credentials``), except the node lifecycle
  and taint-eviction controllers: the test node (``tests/node_agent.py``) is always Ready.

No kube-scheduler runs: ``tests/node_agent.py`` binds pending pods to its node itself (one node,
nothing to choose). :func:`control_plane_bin` finds the binaries: ``$P2PK_CONTROL_PLANE_BIN``,
else ``.tools/control-plane/<version>/bin`` of this checkout (``scripts/test.sh`` builds it);
missing binaries skip the tests that need them (fail under CI).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from node_agent import NODE
from services import free_port, terminate

#: The version scripts/build-control-plane.sh builds by default.
K8S_VERSION = os.environ.get("P2PK_K8S_VERSION", "v1.37.2")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
REPO = Path(__file__).resolve().parents[1]
#: Seconds the control plane gets to become ready.
START_TIMEOUT = 120.0
#: Controllers the controller manager runs: all defaults but the node lifecycle ones.
CONTROLLERS = "*,-node-lifecycle-controller,-taint-eviction-controller"
SERVICE_CIDR = "10.96.0.0/16"


def control_plane_bin() -> tuple[Path | None, str]:
    """The folder holding etcd, kube-apiserver and kube-controller-manager, or ``None`` and why not."""
    given = os.environ.get("P2PK_CONTROL_PLANE_BIN")
    folder = Path(given) if given else REPO / ".tools" / "control-plane" / K8S_VERSION / "bin"
    missing = [b for b in BINARIES if not os.access(folder / b, os.X_OK)]
    if missing:
        return None, f"no control plane binaries ({', '.join(missing)}) in {folder}: run scripts/build-control-plane.sh"
    return folder, ""


def image_entrypoints() -> dict[str, list[str]]:
    """The project's images (``images/*/Dockerfile``) → their ENTRYPOINT, for the test node to
    run containers that give only ``args`` (the operator's Deployment)."""
    from dockerfile_parse import DockerfileParser

    found = {}
    for dockerfile in sorted((REPO / "images").glob("*/Dockerfile")):
        parser = DockerfileParser(str(dockerfile))
        entry = [i["value"] for i in parser.structure if i["instruction"] == "ENTRYPOINT"]
        if entry:
            found[f"ghcr.io/p2pk/{dockerfile.parent.name}"] = json.loads(entry[-1])
    return found


# --------------------------------------------------------------------------- certificates


def _key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _certificate(subject_cn: str, key, issuer=None, issuer_key=None, *, ca: bool = False, org: str | None = None,
                 dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), server: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    name = x509.Name(attrs)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if dns or ips:
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def write_pki(folder: Path) -> dict[str, Path]:
    """CA, serving and client certificates and the service-account key pair, as PEM files."""
    from cryptography.hazmat.primitives import serialization

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def save(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(data)
        files[name].chmod(0o600)

    ca_key = _key()
    ca = _certificate("p2pk-test-ca", ca_key, ca=True)
    save("ca.crt", _pem_cert(ca))
    save("ca.key", _pem_key(ca_key))
    first_service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    server_key = _key()
    server = _certificate("kube-apiserver", server_key, ca, ca_key, server=True,
                          dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                               "kubernetes.default.svc.cluster.local"),
                          ips=("127.0.0.1", first_service_ip))
    save("apiserver.crt", _pem_cert(server))
    save("apiserver.key", _pem_key(server_key))
    # The test node's kubelet API (container logs), which the API server calls as its client.
    kubelet_key = _key()
    save("kubelet.crt", _pem_cert(_certificate(NODE, kubelet_key, ca, ca_key, server=True, dns=(NODE,), ips=("127.0.0.1",))))
    save("kubelet.key", _pem_key(kubelet_key))
    for name, cn, org in (("admin", "p2pk-test-admin", "system:masters"),
                          ("controller-manager", "system:kube-controller-manager", None),
                          ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", None)):
        key = _key()
        save(f"{name}.crt", _pem_cert(_certificate(cn, key, ca, ca_key, org=org)))
        save(f"{name}.key", _pem_key(key))
    sa_key = _key()
    save("sa.key", _pem_key(sa_key))
    save("sa.pub", sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    return files


def kubeconfig(server: str, ca: Path, user: dict, name: str = "p2pk-test") -> dict:
    """A kubeconfig document for ``server`` with one user (client certificate files or a token)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def write_kubeconfig(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- processes


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver + kube-controller-manager; ``kubeconfig`` is the admin's
    (``system:masters``), ``server`` the API server's URL, ``start_seconds`` how long it took
    until the API server answered ``/readyz`` and the default ServiceAccount existed."""

    work: Path
    server: str
    ca: Path
    kubeconfig: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    start_seconds: float = 0.0

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")[-6000:]

    def api_client(self):
        """A ``kubernetes.client.ApiClient`` as the admin."""
        from kubernetes import config

        return config.new_client_from_config(str(self.kubeconfig))

    def kubelet_tls(self) -> tuple[Path, Path, Path]:
        """Certificate, key and client CA for the test node's kubelet API (:data:`NODE`)."""
        pki = self.work / "pki"
        return pki / "kubelet.crt", pki / "kubelet.key", self.ca

    def kubeconfig_for_token(self, path: Path, token: str) -> Path:
        """A kubeconfig authenticating with ``token`` (e.g. a ServiceAccount's)."""
        return write_kubeconfig(path, kubeconfig(self.server, self.ca, {"token": token}))

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.processes:
                terminate(self.processes[name], grace=15)


def _spawn(bin_dir: Path, work: Path, name: str, args: list[str]) -> subprocess.Popen:
    with open(work / f"{name}.log", "wb") as log:
        return subprocess.Popen([str(bin_dir / name), *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _wait(what: str, check, plane: ControlPlane, deadline: float) -> None:
    while True:
        for name, process in plane.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} while waiting for {what}:\n{plane.log(name)}")
        try:
            if check():
                return
        except Exception:  # not up yet: connection refused, 403 before RBAC bootstrap, …
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _get(plane: ControlPlane, path: str) -> bytes:
    """GET ``path`` of the API server as the admin."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(plane.ca))
    context.load_cert_chain(str(plane.work / "pki" / "admin.crt"), str(plane.work / "pki" / "admin.key"))
    with urllib.request.urlopen(plane.server + path, timeout=5, context=context) as response:
        return response.read()


def start_control_plane(bin_dir: Path, work: Path) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager in ``work`` (certificates, data,
    logs, kubeconfigs); ready once the API server is ready and the controllers serve
    ServiceAccounts (the ``default`` ServiceAccount of ``default`` exists)."""
    started = time.monotonic()
    deadline = started + START_TIMEOUT
    work.mkdir(parents=True, exist_ok=True)
    pki = write_pki(work / "pki")
    etcd_client, etcd_peer, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    admin = write_kubeconfig(work / "admin.kubeconfig", kubeconfig(server, pki["ca.crt"], {
        "client-certificate": str(pki["admin.crt"]), "client-key": str(pki["admin.key"])}))
    kcm_config = write_kubeconfig(work / "controller-manager.kubeconfig", kubeconfig(server, pki["ca.crt"], {
        "client-certificate": str(pki["controller-manager.crt"]), "client-key": str(pki["controller-manager.key"])}))
    plane = ControlPlane(work=work, server=server, ca=pki["ca.crt"], kubeconfig=admin)
    try:
        plane.processes["etcd"] = _spawn(bin_dir, work, "etcd", [
            f"--data-dir={work / 'etcd'}", "--name=p2pk-test",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}", f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=p2pk-test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--quota-backend-bytes=1073741824", "--log-level=warn",
        ])
        plane.processes["kube-apiserver"] = _spawn(bin_dir, work, "kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--cert-dir={work / 'apiserver-certs'}",
            f"--tls-cert-file={pki['apiserver.crt']}", f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}",
            "--authorization-mode=RBAC",
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            f"--service-account-key-file={pki['sa.pub']}", f"--service-account-signing-key-file={pki['sa.key']}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",  # 127.0.0.1 cannot be the kubernetes Service's endpoint
            # `kubectl logs`, `helm test --logs`: the node agent's kubelet API, verified both ways.
            f"--kubelet-certificate-authority={pki['ca.crt']}", "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki['apiserver-kubelet-client.crt']}",
            f"--kubelet-client-key={pki['apiserver-kubelet-client.key']}",
            "--allow-privileged=false", "--profiling=false", "--v=1",
        ])
        _wait("kube-apiserver /readyz", lambda: _get(plane, "/readyz") == b"ok", plane, deadline)
        plane.processes["kube-controller-manager"] = _spawn(bin_dir, work, "kube-controller-manager", [
            f"--kubeconfig={kcm_config}", f"--authentication-kubeconfig={kcm_config}", f"--authorization-kubeconfig={kcm_config}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", f"--cert-dir={work / 'kcm-certs'}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki['sa.key']}", f"--root-ca-file={pki['ca.crt']}",
            f"--controllers={CONTROLLERS}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--concurrent-gc-syncs=5", "--profiling=false", "--v=1",
        ])
        from kubernetes import client

        core = client.CoreV1Api(plane.api_client())
        _wait("the default ServiceAccount (controller manager up)",
              lambda: core.read_namespaced_service_account("default", "default", _request_timeout=5), plane, deadline)
    except BaseException:
        plane.stop()
        raise
    plane.start_seconds = time.monotonic() - started
    return plane
