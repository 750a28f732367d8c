"""Helpers of the operator tests: small experiments, and recording FAKES of the Kubernetes API
and of MinIO's admin API (no API server or MinIO can run here). The store is real: the
project's DirectoryStore in a temporary directory, standing in for the S3 bucket."""

from __future__ import annotations

import base64
import copy
import uuid
from pathlib import Path

import kopf
from minio.error import MinioAdminException

from p2p_job.store import DirectoryStore
from p2pk_operator.admission import CREDENTIALS_LABEL
from p2pk_operator.cluster import Forbidden
from p2pk_operator.reconcile import Services

NAMESPACE = "lab"
ADMIN_SECRET = "minio-admin"
SHARED_SECRET = "p2pk-s3"


def experiment(name: str = "exp", *, clients=("a", "b", "c"), methods=("ksmote", "none"), **kubernetes) -> dict:
    """A small valid P2PExperiment document (scoped credentials unless ``kubernetes`` says otherwise)."""
    kube = {"s3": {"endpoint": "minio.lab.svc:9000", "bucket": "p2pk", "adminSecret": ADMIN_SECRET}, **kubernetes}
    return {
        "apiVersion": "p2pk.io/v1alpha1",
        "kind": "P2PExperiment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "seed": 3,
            "rounds": 4,
            "scenario": {
                "kind": "imbalanced-iid",
                "clients": [
                    {"name": c, "train": {"benign": 300, "malicious": 30}, "validation": {"benign": 60, "malicious": 6}}
                    for c in clients
                ],
            },
            "topology": {"kind": "ring"},
            "methods": [{"rebalancing": m} for m in methods],
            "kubernetes": kube,
        },
    }


def resource(doc: dict, *, generation: int = 1, status: dict | None = None, uid: str | None = None) -> dict:
    """``doc`` as the API server returns it: namespace, uid, generation (and a status)."""
    body = copy.deepcopy(doc)
    body["metadata"].update(namespace=NAMESPACE, uid=uid or str(uuid.uuid4()), generation=generation)
    if status is not None:
        body["status"] = status
    return body


def with_status(body: dict, patch: kopf.Patch) -> dict:
    """The resource after kopf applied the handler's status patch (a JSON merge patch)."""
    new = copy.deepcopy(body)
    status = dict(new.get("status") or {})
    for key, value in (patch.get("status") or {}).items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = copy.deepcopy(value)
    new["status"] = status
    return new


class FakeCluster:
    """A recording FAKE of the Kubernetes API, not a cluster: objects live in a dict keyed by
    (kind, namespace, name); ``create`` of an existing name answers like HTTP 409 (the
    existing object), Secrets' ``stringData`` is stored base64-encoded under ``data`` as the API
    server does, and every call is appended to ``calls``; Events land in ``events``."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.forbidden: set[tuple[str, str]] = set()  # (kind, name) its RBAC may not read: 403
        self.status_patches: list[tuple[str, dict]] = []

    def create(self, obj: dict) -> dict | None:
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        self.calls.append(("create", obj["kind"], obj["metadata"]["name"]))
        if key in self.objects:
            return copy.deepcopy(self.objects[key])
        stored = copy.deepcopy(obj)
        if "stringData" in stored:
            data = stored.setdefault("data", {})
            data.update({k: base64.b64encode(v.encode()).decode() for k, v in stored.pop("stringData").items()})
        self.objects[key] = stored
        return None

    def read(self, kind: str, namespace: str, name: str) -> dict | None:
        self.calls.append(("read", kind, name))
        if (kind, name) in self.forbidden:
            raise Forbidden(f"{kind} {namespace}/{name}: forbidden")
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def list(self, kind: str, namespace: str, labels: dict[str, str]) -> list[dict]:
        self.calls.append(("list", kind, ",".join(f"{k}={v}" for k, v in labels.items())))
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in sorted(self.objects.items())
            if k == kind and ns == namespace and labels.items() <= (o["metadata"].get("labels") or {}).items()
        ]

    def event(self, body, type: str, reason: str, message: str) -> None:
        self.events.append((type, reason, message))

    def patch_status(self, body, status: dict) -> None:
        self.status_patches.append((body["metadata"]["name"], copy.deepcopy(status)))

    # What the cluster itself would do -----------------------------------------------------

    def put(self, obj: dict) -> None:
        """An object made by someone else (a user, a Helm chart)."""
        self.objects[(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])] = copy.deepcopy(obj)

    def set_job_status(self, name: str, status: dict) -> None:
        self.objects[("Job", NAMESPACE, name)]["status"] = status

    def remove(self, kind: str, name: str) -> None:
        """Garbage collection or a TTL deleting an object."""
        del self.objects[(kind, NAMESPACE, name)]

    def creates(self, kind: str | None = None) -> list[str]:
        return [name for verb, k, name in self.calls if verb == "create" and kind in (None, k)]


class FakeMinioAdmin:
    """A recording FAKE of ``minio.MinioAdmin``: users and canned policies in dicts, with
    MinIO's errors for attaching an attached policy and removing what is not there."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {}
        self.policies: dict[str, dict] = {}
        self.attached: dict[str, list[str]] = {}
        self.logins: list[tuple[str, str, str]] = []

    def policy_add(self, name: str, policy: dict) -> None:
        self.policies[name] = copy.deepcopy(policy)

    def user_add(self, access_key: str, secret_key: str) -> None:
        self.users[access_key] = secret_key

    def attach_policy(self, policies: list[str], user: str) -> None:
        if set(policies) <= set(self.attached.get(user, [])):
            raise MinioAdminException("400", '{"Code":"XMinioAdminPolicyChangeAlreadyApplied"}')
        self.attached[user] = sorted(set(self.attached.get(user, [])) | set(policies))

    def user_remove(self, access_key: str) -> None:
        if access_key not in self.users:
            raise MinioAdminException("404", '{"Code":"XMinioAdminNoSuchUser"}')
        del self.users[access_key]
        self.attached.pop(access_key, None)

    def policy_remove(self, name: str) -> None:
        if name not in self.policies:
            raise MinioAdminException("404", '{"Code":"XMinioAdminNoSuchPolicy"}')
        del self.policies[name]


def secret(name: str, *, labelled: bool = True, **values: str) -> dict:
    """A Secret with store keys, labelled for the operator unless ``labelled`` is False."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE, **({"labels": {CREDENTIALS_LABEL: "true"}} if labelled else {})},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


class World:
    """A fake cluster holding the admin and shared Secrets, a fake MinIO admin, a real
    directory store, and the kopf memo wiring them into the handlers."""

    def __init__(self, root: Path) -> None:
        self.cluster = FakeCluster()
        self.cluster.put(secret(ADMIN_SECRET, accessKey="root", secretKey="rootsecret"))
        self.cluster.put(secret(SHARED_SECRET, accessKey="shared", secretKey="sharedsecret"))
        self.admin = FakeMinioAdmin()
        self.store = DirectoryStore(root / "bucket")
        self.store_opened: list[tuple[str, dict]] = []
        self.memo = kopf.Memo(services=Services(cluster=self.cluster, open_store=self._open_store, minio_admin=self._admin))

    def _open_store(self, url: str, **kwargs):
        self.store_opened.append((url, kwargs))
        return self.store

    def _admin(self, endpoint_url: str, access_key: str, secret_key: str):
        self.admin.logins.append((endpoint_url, access_key, secret_key))
        return self.admin


def metrics_part(r: int, evals: dict[str, tuple[float, float]], client: str = "a", method: str = "ksmote") -> bytes:
    """A metrics part of round ``r`` as workers write it (``metrics/<client>/<r:05d>.parquet``,
    results schema, via RoundRecord): ``evals`` maps eval set → (fnr, fpr)."""
    from p2p_job.metrics import METRIC_NAMES
    from p2p_job.results import RoundRecord, encode_rows

    metrics = {e: {**{m: 0.5 for m in METRIC_NAMES}, "fnr": fnr, "fpr": fpr} for e, (fnr, fpr) in evals.items()}
    return encode_rows(RoundRecord("exp", method, client, r, metrics, 0.1, 100, 10, 5, 2, 0, 0, True, 1.5).rows())


def put_metrics(store, rounds: dict[int, dict[str, tuple[float, float]]], client: str = "a", method: str = "ksmote") -> None:
    """Each round's part of ``rounds`` (round → eval set → (fnr, fpr)) into ``store`` under experiment ``exp``."""
    from p2p_job.store import metrics_key

    for r, evals in rounds.items():
        store.put_bytes(metrics_key("exp", method, client, r), metrics_part(r, evals, client, method))
