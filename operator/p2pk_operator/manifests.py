"""The Kubernetes objects of one experiment, as pure functions of its spec.

For a P2PExperiment ``<exp>`` the operator makes (DESIGN, "Kubernetes conventions" and the
project amendment "Methods"):

- ConfigMap ``<exp>-spec``: the validated spec as ``spec.yaml``, mounted read-only into every
  worker at ``/etc/p2pk`` (``P2PK_SPEC``);
- with ``kubernetes.s3.adminSecret``: one Secret ``<exp>-<client>-store`` per client holding its
  own MinIO user's ``accessKey``/``secretKey`` (see ``p2pk_operator.policies``); with
  ``credentialsSecret`` the Jobs read that one shared Secret instead;
- one Job ``<exp>-<method>-<client>`` per (method, client), labelled ``p2pk.io/experiment``,
  ``p2pk.io/method`` and ``p2pk.io/client``, running ``p2pk worker`` with the worker
  environment (DESIGN, "Worker environment").

The Job's pod restarts with ``restartPolicy: Never``: each retry (up to ``backoffLimit``) is a
fresh pod that resumes from the client's checkpoint in the store, may land on another node, and
leaves the failed pod's logs for ``kubectl logs``. Evictions and preemptions
(``DisruptionTarget``) do not count against ``backoffLimit``: resuming is cheap. A worker that
exits with a fatal code (``p2p_job.worker.FATAL_EXIT_CODES``: bad spec, data, device, corrupt
checkpoint, refusing store, or a crash loop — the same round failed
``runtime.maxFailuresPerRound`` times, see ``p2p_job.restarts``) fails its Job at once, since no
new pod can help; so ``backoffLimit`` only has to bound the failures spread over a long run.

The handler adds namespace and ownerReferences (``kopf.adopt``); nothing here talks to a cluster.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from p2p_job.spec import GPU_RESOURCE, InvalidSpec, P2PExperiment, dump_experiment, kubernetes_errors, resolved_method_name
from p2p_job.topology import build_topology
from p2p_job.worker import FATAL_EXIT_CODES
from p2pk_operator.status import ExpectedJob

EXPERIMENT_LABEL = "p2pk.io/experiment"
METHOD_LABEL = "p2pk.io/method"
CLIENT_LABEL = "p2pk.io/client"
#: Where the ConfigMap is mounted in the worker, and the spec file in it.
SPEC_DIR = "/etc/p2pk"
SPEC_FILE = "spec.yaml"
#: The worker's container name and user (the image must run as this non-root uid).
CONTAINER = "worker"
WORKER_UID = 10001
#: Longest Job name: the Job controller copies it into a pod label (63 characters at most).
MAX_JOB_NAME = 63
#: The worker's only writable path (an emptyDir; the root filesystem is read-only) and where
#: what it, Python, PyTorch and matplotlib write goes: HOME, caches, temporary files.
SCRATCH_DIR = "/tmp"
SCRATCH_ENV = {
    "HOME": f"{SCRATCH_DIR}/home",
    "TMPDIR": SCRATCH_DIR,
    "XDG_CACHE_HOME": f"{SCRATCH_DIR}/cache",
    "MPLCONFIGDIR": f"{SCRATCH_DIR}/matplotlib",
    "TORCH_HOME": f"{SCRATCH_DIR}/torch",
    "PYTHONDONTWRITEBYTECODE": "1",
}
#: Its size limit (the worker keeps its state in the store, not on disk).
SCRATCH_LIMIT = "1Gi"
#: Keys of a store credentials Secret (the chart's MinIO Secret uses the same).
ACCESS_KEY, SECRET_KEY = "accessKey", "secretKey"


@dataclass(frozen=True)
class Plan:
    """What the operator runs for an experiment: its methods, clients and peer graph."""

    exp: P2PExperiment
    methods: list[str]
    clients: list[str]
    neighbours: dict[str, list[str]]

    @property
    def name(self) -> str:
        return self.exp.name

    @property
    def namespace(self) -> str:
        return self.exp.metadata.namespace or "default"

    @property
    def store_url(self) -> str:
        """``s3://<bucket>/<prefix>/<namespace>``: the store root of the namespace's experiments
        (``P2PK_STORE``); the namespace keeps experiments of one name in two namespaces apart,
        and is part of every per-client policy (``p2pk_operator.policies``)."""
        return f"{self.exp.spec.kubernetes.s3.store_url}/{self.namespace}"

    @property
    def object_prefix(self) -> str:
        """``<prefix>/<namespace>/``: the object-name prefix of :attr:`store_url` in the bucket."""
        s3 = self.exp.spec.kubernetes.s3
        return f"{s3.prefix}/{self.namespace}/" if s3.prefix else f"{self.namespace}/"

    @property
    def scoped(self) -> bool:
        """One MinIO user per client (``adminSecret``), else one shared user (``credentialsSecret``)."""
        return bool(self.exp.spec.kubernetes.s3.admin_secret)

    def expected_jobs(self) -> list[ExpectedJob]:
        return [ExpectedJob(m, c, job_name(self.name, m, c)) for m in self.methods for c in self.clients]


def plan(exp: P2PExperiment) -> Plan:
    """The experiment's methods (resolved names), clients and neighbour sets, after the checks
    only a Kubernetes run needs (:func:`p2p_job.spec.kubernetes_errors`, which ``p2pk validate
    --kubernetes`` runs too). Failures are an :class:`InvalidSpec` naming the fields; the peer
    graph was already built once by the spec model, so it can be built."""
    s = exp.spec
    errors = kubernetes_errors(exp)
    if errors:
        raise InvalidSpec(exp.name, errors)
    clients = [c.name for c in s.scenario.clients]
    neighbours = build_topology(s.topology, clients, s.seed)
    methods = [resolved_method_name(m, s.aggregation.rule) for m in s.methods]
    return Plan(exp=exp, methods=methods, clients=clients, neighbours=neighbours)


# --------------------------------------------------------------------------- names


def job_name(experiment: str, method: str, client: str) -> str:
    """``<experiment>-<method>-<client>``; past 63 characters, cut and suffixed with a hash of
    the full name so that it stays unique."""
    name = f"{experiment}-{method}-{client}"
    if len(name) <= MAX_JOB_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_JOB_NAME - len(digest) - 1].rstrip('-')}-{digest}"


def config_map_name(experiment: str) -> str:
    return f"{experiment}-spec"


def client_secret_name(experiment: str, client: str) -> str:
    return f"{experiment}-{client}-store"


def credentials_secret_name(plan: Plan, client: str) -> str:
    """The Secret a client's Jobs take their store credentials from: its own (scoped mode) or
    the shared ``credentialsSecret``."""
    return client_secret_name(plan.name, client) if plan.scoped else plan.exp.spec.kubernetes.s3.credentials_secret


def labels(experiment: str, **extra: str) -> dict[str, str]:
    """Labels of every object of an experiment (``extra``: method, client)."""
    out = {
        "app.kubernetes.io/name": "p2pk",
        "app.kubernetes.io/managed-by": "p2pk-operator",
        EXPERIMENT_LABEL: experiment,
    }
    keys = {"method": METHOD_LABEL, "client": CLIENT_LABEL}
    out.update({keys[k]: v for k, v in extra.items()})
    return out


# --------------------------------------------------------------------------- objects


def config_map(plan: Plan) -> dict:
    """The spec every worker reads (``P2PK_SPEC``)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(plan.name), "labels": labels(plan.name)},
        "data": {SPEC_FILE: dump_experiment(plan.exp)},
    }


def client_secret(plan: Plan, client: str, access_key: str, secret_key: str) -> dict:
    """A client's own store credentials (scoped mode)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": client_secret_name(plan.name, client), "labels": labels(plan.name, client=client)},
        "type": "Opaque",
        "stringData": {ACCESS_KEY: access_key, SECRET_KEY: secret_key},
    }


def secret_values(secret: dict) -> dict[str, str]:
    """A Secret's values as text, from ``data`` (base64, as the API returns them) and ``stringData``."""
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


def worker_env(plan: Plan, method: str, client: str, default_pushgateway: str | None = None) -> list[dict]:
    """The worker environment (DESIGN, "Worker environment"; P2PK_METHOD from the amendments).
    P2PK_PUSHGATEWAY is ``spec.runtime.pushgateway``, else the operator's ``default_pushgateway``."""
    s = plan.exp.spec
    s3 = s.kubernetes.s3
    secret = credentials_secret_name(plan, client)
    env = [
        {"name": "P2PK_SPEC", "value": f"{SPEC_DIR}/{SPEC_FILE}"},
        {"name": "P2PK_CLIENT", "value": client},
        {"name": "P2PK_METHOD", "value": method},
        {"name": "P2PK_STORE", "value": plan.store_url},
        {"name": "P2PK_S3_ENDPOINT", "value": s3.endpoint_url},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": secret, "key": ACCESS_KEY}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": SECRET_KEY}}},
        {"name": "P2PK_METRICS_PORT", "value": str(s.runtime.metrics_port)},
    ]
    pushgateway = s.runtime.pushgateway or default_pushgateway
    if pushgateway:
        env.append({"name": "P2PK_PUSHGATEWAY", "value": pushgateway})
    if s.kubernetes.gpus > 0:
        env.append({"name": "P2PK_DEVICE", "value": "cuda"})
    env += [{"name": k, "value": v} for k, v in SCRATCH_ENV.items()]
    return env


def job(plan: Plan, method: str, client: str, default_pushgateway: str | None = None) -> dict:
    """The Job running one client's peer for one method (``default_pushgateway``: see :func:`worker_env`)."""
    s = plan.exp.spec
    k = s.kubernetes
    port = s.runtime.metrics_port
    resources = k.resources.model_dump(mode="json", exclude_none=True) if k.resources else {}
    if k.gpus:
        resources.setdefault("limits", {})[GPU_RESOURCE] = k.gpus
    container = {
        "name": CONTAINER,
        "image": k.image,
        "imagePullPolicy": k.image_pull_policy,
        "command": ["p2pk", "worker"],
        "env": worker_env(plan, method, client, default_pushgateway),
        "ports": [{"name": "metrics", "containerPort": port, "protocol": "TCP"}],
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": SCRATCH_DIR},
        ],
    }
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # workers never call the Kubernetes API
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "spec", "configMap": {"name": config_map_name(plan.name)}},
            {"name": "scratch", "emptyDir": {"sizeLimit": SCRATCH_LIMIT}},
        ],
    }
    if k.data_volume:
        mount = {"name": "data", "mountPath": k.data_volume.mount_path, "readOnly": True}
        if k.data_volume.sub_path:
            mount["subPath"] = k.data_volume.sub_path
        container["volumeMounts"].append(mount)
        pod_spec["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": k.data_volume.claim_name, "readOnly": True}})
    if k.service_account_name:
        pod_spec["serviceAccountName"] = k.service_account_name
    if k.node_selector:
        pod_spec["nodeSelector"] = dict(k.node_selector)
    if k.tolerations:
        pod_spec["tolerations"] = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in k.tolerations]

    job_labels = labels(plan.name, method=method, client=client)
    spec = {
        "backoffLimit": k.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": sorted(FATAL_EXIT_CODES)}},
        ]},
        "template": {
            "metadata": {
                "labels": job_labels,
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"},
            },
            "spec": pod_spec,
        },
    }
    if k.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = k.active_deadline_seconds
    if k.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = k.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(plan.name, method, client), "labels": job_labels},
        "spec": spec,
    }
