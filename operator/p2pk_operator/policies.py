"""Store credentials scoped to the neighbour set: one MinIO user and policy per client.

DESIGN, "Store layout": a client writes only under its own names and reads only its
neighbours'. With ``spec.kubernetes.s3.adminSecret`` the operator turns that rule into one IAM
policy per client, for every method's run ``<exp>/<method>/`` under the bucket's prefix:

- write (``PutObject``, ``DeleteObject``, ``AbortMultipartUpload``) its own
  ``rounds/*/<client>/*``, ``checkpoints/<client>/*`` and ``metrics/<client>.parquet``;
- read (``GetObject``) those, each neighbour's ``rounds/*/<n>/*`` (the publications it
  averages over, equation 5, and the shared points it takes in, equation 7) and ``spec.yaml``;
- list (``ListBucket``) only under prefixes it may read, and locate the bucket.

Nothing else: not other clients' checkpoints or metrics, not non-neighbours' rounds, not other
experiments. The policy documents are pure functions (:func:`client_policy`); :func:`grant` and
:func:`revoke` apply them through the ``minio`` package's ``MinioAdmin`` client and are
idempotent (granting twice updates, revoking what is gone succeeds).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlparse

from p2p_job.spec import S3Spec
from p2p_job.store import checkpoint_key, metrics_key, run_prefix, spec_key
from p2pk_operator.manifests import Plan

WRITE_ACTIONS = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
READ_ACTIONS = ["s3:GetObject"]
#: MinIO admin API error codes meaning "already done".
_ALREADY = ("XMinioAdminPolicyChangeAlreadyApplied", "XMinioAdminNoSuchUser", "XMinioAdminNoSuchPolicy")


def user_name(namespace: str, experiment: str, client: str) -> str:
    """The client's MinIO access key (also its policy's name): ``p2pk`` + 16 hex digits of a
    hash of namespace/experiment/client — unique, stable across operator restarts, and within
    MinIO's customary 20-character access-key length."""
    return "p2pk" + hashlib.sha256(f"{namespace}/{experiment}/{client}".encode()).hexdigest()[:16]


def writable_keys(plan: Plan, client: str) -> list[str]:
    """Key patterns (relative to the store root) the client writes, for every method."""
    out = []
    for method in plan.methods:
        out += [
            f"{run_prefix(plan.name, method)}rounds/*/{client}/*",
            checkpoint_key(plan.name, method, client, "*"),
            metrics_key(plan.name, method, client),
        ]
    return out


def readable_keys(plan: Plan, client: str) -> list[str]:
    """Its own keys, its neighbours' publications and the stored spec, for every method."""
    out = writable_keys(plan, client)
    for method in plan.methods:
        out += [f"{run_prefix(plan.name, method)}rounds/*/{n}/*" for n in plan.neighbours[client]]
        out.append(spec_key(plan.name, method))
    return out


def _object_name(s3: S3Spec, key: str) -> str:
    return f"{s3.prefix}/{key}" if s3.prefix else key


def client_policy(plan: Plan, client: str) -> dict:
    """The IAM policy document of one client's MinIO user."""
    s3 = plan.exp.spec.kubernetes.s3
    bucket = f"arn:aws:s3:::{s3.bucket}"
    readable = [_object_name(s3, k) for k in readable_keys(plan, client)]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "WriteOwn", "Effect": "Allow", "Action": WRITE_ACTIONS,
             "Resource": [f"{bucket}/{_object_name(s3, k)}" for k in writable_keys(plan, client)]},
            {"Sid": "ReadOwnNeighboursSpec", "Effect": "Allow", "Action": READ_ACTIONS, "Resource": [f"{bucket}/{k}" for k in readable]},
            {"Sid": "ListReadable", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket],
             "Condition": {"StringLike": {"s3:prefix": readable}}},
            {"Sid": "LocateBucket", "Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": [bucket]},
        ],
    }


@dataclass(frozen=True)
class ClientUser:
    """A client's MinIO user: its keys and its policy (named like the user)."""

    access_key: str
    secret_key: str
    policy: dict


def admin_client(endpoint_url: str, access_key: str, secret_key: str):
    """A ``MinioAdmin`` for ``http(s)://host:port`` with the admin Secret's keys."""
    from minio import MinioAdmin
    from minio.credentials import StaticProvider

    url = urlparse(endpoint_url)
    return MinioAdmin(endpoint=url.netloc, credentials=StaticProvider(access_key, secret_key), secure=url.scheme == "https")


def grant(admin, user: ClientUser) -> None:
    """Create or update the user and its policy, and attach the policy to the user."""
    admin.policy_add(user.access_key, policy=user.policy)
    admin.user_add(user.access_key, user.secret_key)
    _tolerating_done(lambda: admin.attach_policy([user.access_key], user=user.access_key))


def revoke(admin, access_key: str) -> None:
    """Remove the user and its policy (either may be gone already)."""
    _tolerating_done(lambda: admin.user_remove(access_key))
    _tolerating_done(lambda: admin.policy_remove(access_key))


def _tolerating_done(call) -> None:
    from minio.error import MinioAdminException

    try:
        call()
    except MinioAdminException as exc:
        if not any(code in str(exc) for code in _ALREADY):
            raise

