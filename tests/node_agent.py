"""A test node for the real control plane (``tests/controlplane.py``): registers a Node and runs
every pod bound to it as local processes, as a kubelet would run containers.

No container runtime can run here, so the agent (a thread of the test process) does what the
scheduler and the kubelet do, through the API server:

- **scheduling**: a pending pod without ``spec.nodeName`` is bound to the node (the ``binding``
  subresource; one node, nothing to choose);
- **running**: the pod's one container becomes a process: its ``command`` (else the image's
  entrypoint, from ``images``) and ``args``, with ``$(VAR)`` expanded from its environment as the
  kubelet does; ``env`` and ``envFrom`` resolved (``secretKeyRef``, ``configMapKeyRef``,
  ``fieldRef``); volumes (``configMap``, ``secret``, ``emptyDir``, ``downwardAPI`` and
  ``projected`` — a ServiceAccount token comes from the TokenRequest API, bound to the pod)
  written to a folder per pod, their mount paths rewritten in the command, args and literal env
  values;
  a missing Secret or ConfigMap is the kubelet's ``CreateContainerConfigError`` until it exists;
- **in-cluster configuration**, as a kubelet gives it: every process gets
  ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` (and ``KUBERNETES_PORT``, ``…_HTTPS``)
  naming the API server. A pod with a ServiceAccount token — the API server's ServiceAccount
  admission adds the ``kube-api-access-…`` projected volume (a TokenRequest token bound to the
  pod, ``ca.crt`` from the ``kube-root-ca.crt`` ConfigMap, ``namespace``) unless
  ``automountServiceAccountToken`` is false on the pod or its ServiceAccount — sees that volume at
  the fixed path ``/var/run/secrets/kubernetes.io/serviceaccount``, where client libraries read
  it (``kubernetes.config.load_incluster_config``, kubectl, kopf): its process runs in a private
  mount namespace (``unshare --mount``) with the folder bind-mounted there read-only. Where mount
  namespaces are not allowed (:attr:`NodeAgent.in_cluster_problem` says why) such a pod gets
  ``KUBECONFIG`` naming a kubeconfig with the token instead, which kubeconfig-aware clients use.
  As root the mount point is created on the host once (an empty folder under ``/run``);
- **network**: pods share the host's network; each declared ``containerPort`` gets a free host
  port and the number is rewritten where it stands alone in the args and literal env values (e.g.
  ``--liveness=http://0.0.0.0:8080/healthz``, ``P2PK_METRICS_PORT=9400``); :meth:`NodeAgent.port`
  tells which;
- **status**: phase, ``Ready`` conditions and container states (running, terminated with the exit
  code and reason ``Completed`` or ``Error``) through the ``status`` subresource;
  ``restartPolicy`` Always/OnFailure restarts the process in place (``restartCount``);
- **logs**: the kubelet API's ``/containerLogs/<namespace>/<pod>/<container>`` (``tailLines``,
  ``limitBytes``, ``follow``) over TLS on 127.0.0.1, for callers with a client certificate of
  the cluster's CA (the API server: ``kubectl logs``, ``helm test --logs``);
- **deletion**: a deleted pod's process gets SIGTERM, SIGKILL after its grace period (at most
  :data:`MAX_GRACE` s), its final status is reported, and the deletion is confirmed (grace 0), so
  Jobs, ReplicaSets, the garbage collector and namespace deletion see what they would see.

The real Job, ReplicaSet, garbage-collector and namespace controllers, RBAC and admission do the
rest. Security contexts, resources and probes are not enforced. A pod's output goes to
``<work>/<namespace>/<pod>/<uid>/<container>.log`` (:meth:`NodeAgent.log`; a pod made again under
the same name starts a new log, as on a kubelet).
"""

from __future__ import annotations

import base64
import datetime
import http.server
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from services import free_port

log = logging.getLogger(__name__)

NODE = "p2pk-test-node"
HOST_IP = "127.0.0.1"
#: Seconds between two looks at the pods.
POLL = 0.3
#: Longest grace period given to a deleted pod's process (its own may be longer).
MAX_GRACE = 10.0
#: Seconds before a restartPolicy Always/OnFailure container is started again.
RESTART_DELAY = 1.0
#: Seconds before a container whose configuration failed (a missing Secret) is tried again.
CONFIG_RETRY = 2.0
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: ``sh -c`` script run inside the pod's mount namespace: bind ``$1`` (the pod's volume folder)
#: read-only at ``$2``, then exec the container's command (same pid: signals reach it).
_BIND = 'mkdir -p "$2" && mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"'
#: How to get a private mount namespace: as root, else in a user namespace.
_UNSHARE = (("--mount", "--propagation", "private"),
            ("--user", "--map-root-user", "--mount", "--propagation", "private"))
TERMINAL = ("Succeeded", "Failed")
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: known variables are replaced, ``$$`` is ``$``,
    unknown references stay as they are."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(one, text)


def service_account_mount(work: Path) -> tuple[list[str], str]:
    """The argv prefix that runs a command with a folder bound at :data:`SERVICE_ACCOUNT_DIR`
    (append the folder, then the command), tried once on a probe folder under ``work``; or an
    empty prefix and why none works here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return [], "no unshare (util-linux) on PATH"
    probe = work / "mount-probe"
    probe.mkdir(parents=True, exist_ok=True)
    (probe / "token").write_text("probe")
    problems = []
    for flags in _UNSHARE:
        prefix = [unshare, *flags, "--", "/bin/sh", "-c", _BIND, "sh"]
        check = ["/bin/sh", "-c", f'test "$(cat {SERVICE_ACCOUNT_DIR}/token)" = probe']
        try:
            proc = subprocess.run([*prefix, str(probe), SERVICE_ACCOUNT_DIR, *check], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"unshare {' '.join(flags)}: {exc}")
            continue
        if proc.returncode == 0:
            return prefix, ""
        problems.append(f"unshare {' '.join(flags)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return [], "; ".join(problems)


class _KubeletAPI(http.server.BaseHTTPRequestHandler):
    """The one kubelet endpoint the API server proxies here: a container's log."""

    agent: NodeAgent  # set on the subclass made per agent

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        run = self.agent.run_of(parts[1], parts[2]) if len(parts) == 4 and parts[0] == "containerLogs" else None
        if run is None or run.container != parts[3]:
            self.send_error(404, f"no container {url.path.removeprefix('/containerLogs/')} on this node")
            return
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        data = run.log_path.read_bytes() if run.log_path.exists() else b""
        if "tailLines" in query:
            data = b"".join(data.splitlines(keepends=True)[-int(query["tailLines"]):]) if int(query["tailLines"]) else b""
        if "limitBytes" in query:
            data = data[:int(query["limitBytes"])]
        self.wfile.write(data)
        if query.get("follow") == "true" and "limitBytes" not in query:
            offset = run.log_path.stat().st_size if run.log_path.exists() else 0
            while True:
                done = run.finished or self.agent.stopping  # before the read: a finished process wrote all
                if run.log_path.exists():
                    with open(run.log_path, "rb") as log_file:
                        log_file.seek(offset)
                        more = log_file.read()
                    offset += len(more)
                    self.wfile.write(more)
                    self.wfile.flush()
                if done:
                    break
                time.sleep(POLL)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        log.debug("kubelet API: " + format, *args)


class ConfigError(Exception):
    """The container cannot be configured yet (the kubelet's CreateContainerConfigError)."""


@dataclass
class Run:
    """A pod this agent runs: its folder, process and what was reported."""

    namespace: str
    name: str
    uid: str
    root: Path
    restart_policy: str
    container: str = ""
    image: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ports: dict[int, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    started_at: str = ""
    restarts: int = 0
    last_state: dict = field(default_factory=dict)
    restart_at: float = 0.0
    finished: bool = False
    kill_at: float | None = None
    confirmed: bool = False
    waiting: str = ""

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.container}.log"


class NodeAgent:
    """Registers node :data:`NODE` and runs its pods (see the module docstring).

    ``api_client``: an admin ``kubernetes.client.ApiClient`` factory (called once per thread);
    ``server``/``ca``: the API server's URL and CA file, for the pods' kubeconfigs;
    ``base_env``: the environment every process starts from (PATH to ``p2pk`` and ``kubectl``,
    PYTHONPATH, …) before the pod's own; ``images``: image repository → entrypoint argv, for
    containers without ``command``; ``kubelet_tls``: certificate, key and client CA of the
    kubelet API serving container logs (none: no logs through the API server).
    """

    def __init__(self, api_client_factory, work: Path, server: str, ca: Path, base_env: dict[str, str],
                 images: dict[str, list[str]] | None = None, node: str = NODE,
                 kubelet_tls: tuple[Path, Path, Path] | None = None) -> None:
        self._factory = api_client_factory
        self.work = work
        self.server = server
        self.ca = ca
        self.base_env = dict(base_env)
        self.images = dict(images or {})
        self.node = node
        self.runs: dict[str, Run] = {}  # by pod uid, while the pod exists
        self.history: list[Run] = []  # every pod run, in start order (logs outlive pods)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []
        #: argv prefix binding the service-account folder (:func:`service_account_mount`), and
        #: why there is none (then pods get ``KUBECONFIG``); set by :meth:`start`.
        self.bind_prefix: list[str] = []
        self.in_cluster_problem = "not started"
        self.kubelet_tls = kubelet_tls
        self._kubelet: http.server.ThreadingHTTPServer | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> NodeAgent:
        from kubernetes import client

        self.work.mkdir(parents=True, exist_ok=True)
        self.bind_prefix, self.in_cluster_problem = service_account_mount(self.work)
        if self.in_cluster_problem:
            log.warning("no mount namespaces (%s): pods get KUBECONFIG instead of in-cluster files", self.in_cluster_problem)
        core = client.CoreV1Api(self._factory())
        core.create_node({"metadata": {"name": self.node, "labels": {
            "kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}})
        # The TaintNodesByCondition admission adds node.kubernetes.io/not-ready until a node
        # lifecycle controller sees it Ready; none runs here.
        core.patch_node(self.node, {"spec": {"taints": None}})
        if self.kubelet_tls is not None:
            self._kubelet = self._serve_kubelet_api(*self.kubelet_tls)
        core.patch_node_status(self.node, {"status": self._node_status()})
        self._thread = threading.Thread(target=self._loop, name="node-agent", daemon=True)
        self._thread.start()
        return self

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _serve_kubelet_api(self, cert: Path, key: Path, client_ca: Path) -> http.server.ThreadingHTTPServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(str(cert), str(key))
        handler = type("KubeletAPI", (_KubeletAPI,), {"agent": self})
        server = http.server.ThreadingHTTPServer((HOST_IP, 0), handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, name="kubelet-api", daemon=True).start()
        return server

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._kubelet is not None:
            self._kubelet.shutdown()
            self._kubelet.server_close()
        with self._lock:
            runs = list(self.runs.values())
        for run in runs:
            self._signal(run, signal.SIGKILL)
            if run.process is not None:
                run.process.wait()

    def _node_status(self) -> dict:
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "p2pk test node agent", "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
            "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self._kubelet.server_address[1] if self._kubelet else 0}},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.37.2",
                         "kubeProxyVersion": "", "containerRuntimeVersion": "p2pk-test://1", "kernelVersion": "",
                         "osImage": "p2pk test node", "machineID": "", "systemUUID": "", "bootID": ""},
        }

    # ----------------------------------------------------------------- test helpers

    def run_of(self, namespace: str, name: str) -> Run | None:
        """The latest run of the pod ``namespace/name`` (also after the pod is gone)."""
        with self._lock:
            return next((r for r in reversed(self.history) if (r.namespace, r.name) == (namespace, name)), None)

    def log(self, namespace: str, name: str) -> str:
        run = self.run_of(namespace, name)
        return run.log_path.read_text(errors="replace") if run and run.log_path.exists() else ""

    def port(self, namespace: str, name: str, container_port: int) -> int:
        """The host port standing for a pod's ``containerPort``."""
        return self.run_of(namespace, name).ports[container_port]

    def kill(self, namespace: str, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a pod's process (e.g. to crash it mid-run)."""
        self._signal(self.run_of(namespace, name), sig)

    # ----------------------------------------------------------------- the loop

    def _loop(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self._factory())
        while not self._stop.is_set():
            try:
                self._sync(core)
            except Exception as exc:  # an API hiccup: log it and look again
                self.errors.append(repr(exc))
                log.exception("node agent")
            self._stop.wait(POLL)

    def _sync(self, core) -> None:
        pods = core.list_pod_for_all_namespaces(_request_timeout=10).items
        seen = set()
        for pod in pods:
            meta, spec = pod.metadata, pod.spec
            phase = (pod.status.phase if pod.status else None) or "Pending"
            if not spec.node_name:
                if phase == "Pending" and not meta.deletion_timestamp and spec.scheduler_name in (None, "default-scheduler"):
                    self._bind(core, pod)
                continue
            if spec.node_name != self.node:
                continue
            seen.add(meta.uid)
            run = self.runs.get(meta.uid)
            if run is None:
                if phase in TERMINAL:
                    if meta.deletion_timestamp:
                        self._confirm_deletion(core, pod, None)
                    continue
                run = Run(meta.namespace, meta.name, meta.uid, self.work / meta.namespace / meta.name / meta.uid,
                          spec.restart_policy or "Always")
                with self._lock:
                    self.runs[meta.uid] = run
                    self.history.append(run)
            self._drive(core, pod, run)
        with self._lock:
            gone = [r for uid, r in self.runs.items() if uid not in seen]
        for run in gone:  # deleted behind our back (force delete): stop the process
            self._signal(run, signal.SIGKILL)
            with self._lock:
                self.runs.pop(run.uid, None)

    def _bind(self, core, pod) -> None:
        from kubernetes.client.exceptions import ApiException

        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod.metadata.name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}}
        try:
            core.create_namespaced_pod_binding(pod.metadata.name, pod.metadata.namespace, body, _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or bound meanwhile
                raise

    def _drive(self, core, pod, run: Run) -> None:
        meta = pod.metadata
        if meta.deletion_timestamp:
            return self._terminate(core, pod, run)
        if run.finished:
            return
        if run.process is None:
            if time.monotonic() < run.restart_at:
                return
            return self._start(core, pod, run)
        code = run.process.poll()
        if code is None:
            return
        restart = run.restart_policy == "Always" or (run.restart_policy == "OnFailure" and code != 0)
        terminated = self._terminated(run, code)
        run.process = None
        if restart:
            run.restarts += 1
            run.last_state = {"terminated": terminated}
            run.restart_at = time.monotonic() + RESTART_DELAY
            self._report(core, pod, run, "Running", {"waiting": {"reason": "CrashLoopBackOff",
                                                                 "message": f"exited with {code}; restarting"}}, ready=False)
        else:
            run.finished = True
            self._report(core, pod, run, "Succeeded" if code == 0 else "Failed", {"terminated": terminated}, ready=False)

    def _terminate(self, core, pod, run: Run) -> None:
        if run.process is not None and run.process.poll() is None:
            if run.kill_at is None:
                grace = pod.metadata.deletion_grace_period_seconds
                run.kill_at = time.monotonic() + min(MAX_GRACE, grace if grace is not None else 30)
                self._signal(run, signal.SIGTERM)
            elif time.monotonic() > run.kill_at:
                self._signal(run, signal.SIGKILL)
            return
        if not run.finished:
            run.finished = True
            if run.process is not None:
                code = run.process.returncode
                self._report(core, pod, run, "Succeeded" if code == 0 else "Failed",
                             {"terminated": self._terminated(run, code)}, ready=False)
            else:
                self._report(core, pod, run, "Failed", {"terminated": {
                    "exitCode": 137, "reason": "ContainerStatusUnknown", "message": "deleted before it started",
                    "startedAt": None, "finishedAt": now()}}, ready=False)
        self._confirm_deletion(core, pod, run)

    def _confirm_deletion(self, core, pod, run: Run | None) -> None:
        from kubernetes.client.exceptions import ApiException

        if run is not None and run.confirmed:
            return
        try:
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace,
                                       body={"gracePeriodSeconds": 0, "preconditions": {"uid": pod.metadata.uid}})
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
        if run is not None:
            run.confirmed = True

    # ----------------------------------------------------------------- starting a container

    def _start(self, core, pod, run: Run) -> None:
        try:
            if not run.argv:
                self._prepare(core, pod, run)
        except ConfigError as exc:
            run.restart_at = time.monotonic() + CONFIG_RETRY
            if str(exc) != run.waiting:
                run.waiting = str(exc)
                self._report(core, pod, run, "Pending", {"waiting": {"reason": "CreateContainerConfigError",
                                                                     "message": str(exc)}}, ready=False)
            return
        run.root.mkdir(parents=True, exist_ok=True)
        with open(run.log_path, "ab") as out:
            run.process = subprocess.Popen(run.argv, env=run.env, cwd=run.cwd, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
        run.started_at = now()
        run.kill_at = None
        self._report(core, pod, run, "Running", {"running": {"startedAt": run.started_at}}, ready=True)

    def _prepare(self, core, pod, run: Run) -> None:
        spec = pod.spec
        if len(spec.containers) != 1 or spec.init_containers:
            raise ConfigError("the test node runs pods of exactly one container and no init containers")
        c = spec.containers[0]
        run.container, run.image = c.name, c.image
        fs = run.root / "fs"
        mounts = self._volumes(core, pod, run, fs)
        env = {"HOSTNAME": pod.metadata.name, **self._service_env(), **self._env(core, pod, c)}
        literal = {v.name for v in c.env or () if v.value_from is None}
        command = list(c.command or ())
        args = list(c.args or ())
        if not command:
            repository = re.sub(r"(@.*|:[^/:]*)$", "", c.image)
            if repository not in self.images:
                raise ConfigError(f"the test node knows no entrypoint for image {c.image} (NodeAgent images)")
            command = list(self.images[repository])
        argv = [expand(a, env) for a in command + args]
        run.ports = {p.container_port: free_port() for p in c.ports or ()}

        # The service-account folder is bound at its own path when the node can (clients read it
        # there); every other mount path is rewritten to its folder. One pass, so that a
        # rewritten path is not rewritten again (a volume at /tmp).
        sa_dir = mounts.get(SERVICE_ACCOUNT_DIR)
        bind = [*self.bind_prefix, str(sa_dir), SERVICE_ACCOUNT_DIR] if sa_dir and self.bind_prefix else []
        rewritten = {path: local for path, local in mounts.items() if not (bind and path == SERVICE_ACCOUNT_DIR)}
        replacements = {path: str(local) for path, local in rewritten.items()}
        replacements.update({str(c): str(h) for c, h in run.ports.items()})
        alternatives = [rf"(?<![\w./-]){re.escape(path)}(?=/|$|[^\w.-])" for path in sorted(rewritten, key=len, reverse=True)]
        alternatives += [rf"(?<![\w.]){port}(?!\d)" for port in run.ports]
        pattern = re.compile("|".join(alternatives)) if alternatives else None

        def rewrite(text: str) -> str:
            return pattern.sub(lambda m: replacements[m.group(0)], text) if pattern else text

        # The "image" is this host: an executable given by an absolute host path (a checkout or
        # virtual environment under /tmp, say) is the host's, never a volume's.
        keep_executable = argv[0].startswith("/") and Path(argv[0]).is_file()
        argv = [argv[0] if keep_executable else rewrite(argv[0]), *(rewrite(a) for a in argv[1:])]
        env = {k: rewrite(v) if k in literal else v for k, v in env.items()}
        if sa_dir and not bind and "KUBECONFIG" not in env:
            env["KUBECONFIG"] = str(self._pod_kubeconfig(run, sa_dir))
        executable = shutil.which(argv[0], path=self.base_env.get("PATH")) if "/" not in argv[0] else argv[0]
        if executable is None:
            raise ConfigError(f"{argv[0]}: executable not found on the test node's PATH")
        run.argv = [*bind, executable, *argv[1:]]
        run.env = {**self.base_env, "HOME": str(fs), **env}
        workdir = c.working_dir or "/"
        run.cwd = mounts.get(workdir) or fs / workdir.lstrip("/")
        run.cwd.mkdir(parents=True, exist_ok=True)

    def _service_env(self) -> dict[str, str]:
        """The ``kubernetes`` Service's variables a kubelet gives every container (the API
        server's address here, not a Service IP no process could reach)."""
        address = urllib.parse.urlsplit(self.server)
        host, port = address.hostname, str(address.port)
        return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port, "KUBERNETES_SERVICE_PORT_HTTPS": port,
                "KUBERNETES_PORT": f"tcp://{host}:{port}"}

    def _pod_kubeconfig(self, run: Run, sa_dir: Path) -> Path:
        token = (sa_dir / "token").read_text()
        doc = {"apiVersion": "v1", "kind": "Config",
               "clusters": [{"name": "in-cluster", "cluster": {"server": self.server, "certificate-authority": str(self.ca)}}],
               "users": [{"name": "sa", "user": {"token": token}}],
               "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "sa",
                                                               "namespace": run.namespace}}],
               "current-context": "in-cluster"}
        path = run.root / "kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        return path

    # ----------------------------------------------------------------- env and volumes

    def _read(self, core, kind: str, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            if kind == "Secret":
                obj = core.read_namespaced_secret(name, namespace)
                return {k: base64.b64decode(v).decode() for k, v in (obj.data or {}).items()}
            obj = core.read_namespaced_config_map(name, namespace)
            return {**(obj.data or {}), **{k: base64.b64decode(v).decode() for k, v in (obj.binary_data or {}).items()}}
        except ApiException as exc:
            if exc.status == 404:
                if optional:
                    return None
                raise ConfigError(f'{kind.lower()} "{name}" not found') from None
            raise

    def _field(self, pod, path: str) -> str:
        meta = pod.metadata
        simple = {"metadata.name": meta.name, "metadata.namespace": meta.namespace, "metadata.uid": meta.uid,
                  "spec.nodeName": self.node, "spec.serviceAccountName": pod.spec.service_account_name or "default",
                  "status.podIP": HOST_IP, "status.hostIP": HOST_IP}
        if path in simple:
            return simple[path]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return (getattr(meta, match.group(1)) or {}).get(match.group(2), "")
        raise ConfigError(f"fieldRef {path} is not supported by the test node")

    def _env(self, core, pod, c) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in c.env_from or ():
            ref, kind = (source.secret_ref, "Secret") if source.secret_ref else (source.config_map_ref, "ConfigMap")
            values = self._read(core, kind, pod.metadata.namespace, ref.name, bool(ref.optional)) or {}
            env.update({f"{source.prefix or ''}{k}": v for k, v in values.items()})
        for var in c.env or ():
            if var.value_from is None:
                env[var.name] = expand(var.value or "", env)
                continue
            vf = var.value_from
            if vf.secret_key_ref or vf.config_map_key_ref:
                ref, kind = (vf.secret_key_ref, "Secret") if vf.secret_key_ref else (vf.config_map_key_ref, "ConfigMap")
                values = self._read(core, kind, pod.metadata.namespace, ref.name, bool(ref.optional))
                if values is None:
                    continue
                if ref.key not in values:
                    if ref.optional:
                        continue
                    raise ConfigError(f"couldn't find key {ref.key} in {kind} {pod.metadata.namespace}/{ref.name}")
                env[var.name] = values[ref.key]
            elif vf.field_ref:
                env[var.name] = self._field(pod, vf.field_ref.field_path)
            else:
                raise ConfigError(f"env {var.name}: only secretKeyRef, configMapKeyRef and fieldRef are supported")
        return env

    def _volumes(self, core, pod, run: Run, fs: Path) -> dict[str, Path]:
        """Write every volume under ``<root>/volumes/<name>``; mount path → local path."""
        folders: dict[str, Path] = {}
        for volume in pod.spec.volumes or ():
            folder = run.root / "volumes" / volume.name
            folder.mkdir(parents=True, exist_ok=True)
            files = self._volume_files(core, pod, volume)
            for rel, (data, mode) in files.items():
                target = folder / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                target.chmod(mode)
            folders[volume.name] = folder
        mounts: dict[str, Path] = {}
        for mount in pod.spec.containers[0].volume_mounts or ():
            if mount.name not in folders:
                raise ConfigError(f"volumeMount {mount.name}: no such volume")
            source = folders[mount.name] / (mount.sub_path or "")
            mounts[mount.mount_path.rstrip("/") or "/"] = source
        return mounts

    def _items(self, values: dict[str, str], items, default_mode: int | None) -> dict[str, tuple[bytes, int]]:
        mode = default_mode if default_mode is not None else 0o644
        if items:
            return {i.path: (values[i.key].encode(), i.mode or mode) for i in items if i.key in values}
        return {k: (v.encode(), mode) for k, v in values.items()}

    def _volume_files(self, core, pod, volume) -> dict[str, tuple[bytes, int]]:
        ns = pod.metadata.namespace
        if volume.empty_dir is not None:
            return {}
        if volume.config_map is not None:
            v = volume.config_map
            return self._items(self._read(core, "ConfigMap", ns, v.name, bool(v.optional)) or {}, v.items, v.default_mode)
        if volume.secret is not None:
            v = volume.secret
            return self._items(self._read(core, "Secret", ns, v.secret_name, bool(v.optional)) or {}, v.items, v.default_mode)
        if volume.downward_api is not None:
            return {i.path: (self._field(pod, i.field_ref.field_path).encode(), 0o644) for i in volume.downward_api.items}
        if volume.projected is not None:
            files: dict[str, tuple[bytes, int]] = {}
            mode = volume.projected.default_mode
            for source in volume.projected.sources:
                if source.service_account_token is not None:
                    files[source.service_account_token.path] = (self._token(core, pod, source.service_account_token).encode(), mode or 0o644)
                elif source.config_map is not None:
                    v = source.config_map
                    files.update(self._items(self._read(core, "ConfigMap", ns, v.name, bool(v.optional)) or {}, v.items, mode))
                elif source.secret is not None:
                    v = source.secret
                    files.update(self._items(self._read(core, "Secret", ns, v.name, bool(v.optional)) or {}, v.items, mode))
                elif source.downward_api is not None:
                    files.update({i.path: (self._field(pod, i.field_ref.field_path).encode(), mode or 0o644)
                                  for i in source.downward_api.items})
            return files
        raise ConfigError(f"volume {volume.name}: only configMap, secret, emptyDir, downwardAPI and projected volumes are supported")

    def _token(self, core, pod, source) -> str:
        spec = {"expirationSeconds": source.expiration_seconds or 3607,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid}}
        if source.audience:
            spec["audiences"] = [source.audience]
        answer = core.create_namespaced_service_account_token(pod.spec.service_account_name or "default",
                                                              pod.metadata.namespace, {"spec": spec})
        return answer.status.token

    # ----------------------------------------------------------------- status

    def _signal(self, run: Run | None, sig: int) -> None:
        if run is not None and run.process is not None and run.process.poll() is None:
            try:
                os.killpg(run.process.pid, sig)
            except ProcessLookupError:
                pass

    def _terminated(self, run: Run, code: int) -> dict:
        exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a runtime says
        return {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": run.started_at or None, "finishedAt": now(),
                "containerID": f"p2pk://{run.process.pid if run.process else 0}"}

    def _report(self, core, pod, run: Run, phase: str, state: dict, ready: bool) -> None:
        from kubernetes.client.exceptions import ApiException

        stamp = now()
        ours = {"PodScheduled": "True", "Initialized": "True", "PodReadyToStartContainers": "True",
                "ContainersReady": "True" if ready else "False", "Ready": "True" if ready else "False"}
        previous = {c.type: c for c in (pod.status.conditions or ())} if pod.status else {}
        conditions = [{"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
                       "lastTransitionTime": c.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ") if c.last_transition_time else stamp}
                      for c in previous.values() if c.type not in ours]
        for type_, status in ours.items():
            old = previous.get(type_)
            same = old is not None and old.status == status and old.last_transition_time is not None
            conditions.append({"type": type_, "status": status,
                               "lastTransitionTime": old.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ") if same else stamp})
        container = {"name": run.container or pod.spec.containers[0].name, "image": run.image or pod.spec.containers[0].image,
                     "imageID": "", "ready": ready, "started": "running" in state, "restartCount": run.restarts, "state": state}
        if run.process is not None:
            container["containerID"] = f"p2pk://{run.process.pid}"
        if run.last_state:
            container["lastState"] = run.last_state
        status = {"phase": phase, "conditions": conditions, "containerStatuses": [container],
                  "hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}], "startTime": run.started_at or stamp}
        if phase != "Pending":
            status.update(podIP=HOST_IP, podIPs=[{"ip": HOST_IP}])
        try:
            core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise
