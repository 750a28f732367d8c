"""Store credentials scoped to the neighbour set: one MinIO user and policy per client.

DESIGN, "Store layout": a client writes only under its own names and reads only its
neighbours'. With ``spec.kubernetes.s3.adminSecret`` the operator turns that rule into one IAM
policy per client. Its store root is ``<bucket>/<prefix>/<namespace>/`` (two experiments of one
name in two namespaces never share a key; :attr:`p2pk_operator.manifests.Plan.store_url`), and the
policy names **exact objects**, for every method's run ``<exp>/<method>/``:

- write (``PutObject``, ``DeleteObject``, ``AbortMultipartUpload``): its own
  ``rounds/?????/<client>/{model.safetensors,synthetic.parquet,manifest.json}``,
  ``checkpoints/<client>/{?????.safetensors,received-?????.safetensors,latest.json,starts.json}``,
  its metrics parts ``metrics/<client>/?????.parquet``, its kept scores ``scores/<client>/?????.parquet`` and its final
  model ``models/<client>.safetensors`` (``p2p_job.scores``);
- read (``GetObject``): those, each neighbour's ``rounds/?????/<n>/…`` objects (the
  publications it averages over, equation 5, and the shared points it takes in, equation 7),
  ``spec.yaml``, and its own shard ``<exp>/shards/<client>/{manifest.json,train.parquet,
  validation.parquet,global_test.parquet}`` (no other client's shard, not the shards' top manifest);
- list (``ListBucket``) exactly its own ``checkpoints/<client>/`` (``StringEquals`` on
  ``s3:prefix``: the checkpoint clean-up lists it), and locate the bucket.

Why ``?????`` and no ``*``: in IAM (AWS and MinIO alike) ``*`` matches any run of characters,
``/`` included, so ``rounds/*/a/*`` also matches ``rounds/00003/b/a/x`` — inside client b's
prefix. ``?`` matches exactly one character; round directories are always five digits
(``spec.rounds`` ≤ 99,999) and every pattern ends in a fixed object name, so a pattern of client
``a`` matches only a key whose client segment is exactly ``a`` (``?`` may also match a ``/``,
as in ``rounds/0/b/a/manifest.json``, a key inside no client's prefix that no worker reads; MinIO's
engine refuses even that). Nothing else: not other clients'
checkpoints, metrics or shards, not non-neighbours' rounds, not other experiments or namespaces.

The policy documents are pure functions (:func:`client_policy`); :func:`grant` and
:func:`revoke` apply them through the ``minio`` package's ``MinioAdmin`` client and are
idempotent (granting twice updates, revoking what is gone succeeds). The object names below are
the ones ``p2p_job.payloads``, ``p2p_job.checkpoints``, ``p2p_job.restarts``, ``p2p_job.scores`` and
``p2p_job.shards`` write (a test keeps them equal; the operator does not import those modules).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlparse

from p2p_job.store import checkpoint_key, metrics_key, model_key, round_key, scores_key, shards_prefix, spec_key
from p2pk_operator.manifests import Plan

WRITE_ACTIONS = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
READ_ACTIONS = ["s3:GetObject"]
#: A round directory: five characters (``rounds/<r:05d>/``).
ROUND = "?????"
#: What a client publishes each round (``p2p_job.payloads``).
ROUND_FILES = ("model.safetensors", "synthetic.parquet", "manifest.json")
#: Its checkpoint objects (``p2p_job.checkpoints``: a round's state, the points received in a
#: round, latest.json; ``p2p_job.restarts``: starts.json).
CHECKPOINT_FILES = (f"{ROUND}.safetensors", f"received-{ROUND}.safetensors", "latest.json", "starts.json")
#: Its shard (``p2p_job.shards``).
SHARD_FILES = ("manifest.json", "train.parquet", "validation.parquet", "global_test.parquet")
#: MinIO admin API error codes meaning "already done".
_ALREADY = ("XMinioAdminPolicyChangeAlreadyApplied", "XMinioAdminNoSuchUser", "XMinioAdminNoSuchPolicy")


def user_name(namespace: str, experiment: str, client: str) -> str:
    """The client's MinIO access key (also its policy's name): ``p2pk`` + 16 hex digits of a
    hash of namespace/experiment/client — unique, stable across operator restarts, and within
    MinIO's customary 20-character access-key length."""
    return "p2pk" + hashlib.sha256(f"{namespace}/{experiment}/{client}".encode()).hexdigest()[:16]


def _round_objects(plan: Plan, method: str, client: str) -> list[str]:
    return [round_key(plan.name, method, 0, client, name).replace("/00000/", f"/{ROUND}/") for name in ROUND_FILES]


def writable_keys(plan: Plan, client: str) -> list[str]:
    """Keys and key patterns (relative to the experiment's store root) the client writes."""
    out = []
    for method in plan.methods:
        out += _round_objects(plan, method, client)
        out += [checkpoint_key(plan.name, method, client, name) for name in CHECKPOINT_FILES]
        out.append(metrics_key(plan.name, method, client, 0).replace("/00000.", f"/{ROUND}."))
        out.append(scores_key(plan.name, method, client, 0).replace("/00000.", f"/{ROUND}."))
        out.append(model_key(plan.name, method, client))
    return out


def readable_keys(plan: Plan, client: str) -> list[str]:
    """Its own keys, its neighbours' publications, the stored spec and its own shard."""
    out = writable_keys(plan, client)
    for method in plan.methods:
        out += [key for n in plan.neighbours[client] for key in _round_objects(plan, method, n)]
        out.append(spec_key(plan.name, method))
    out += [f"{shards_prefix(plan.name)}{client}/{name}" for name in SHARD_FILES]
    return out


def listable_prefixes(plan: Plan, client: str) -> list[str]:
    """Exact prefixes the client lists: its own checkpoints (the clean-up of old arrays)."""
    return [checkpoint_key(plan.name, method, client, "") for method in plan.methods]


def client_policy(plan: Plan, client: str) -> dict:
    """The IAM policy document of one client's MinIO user."""
    s3 = plan.exp.spec.kubernetes.s3
    bucket = f"arn:aws:s3:::{s3.bucket}"
    root = plan.object_prefix
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "WriteOwn", "Effect": "Allow", "Action": WRITE_ACTIONS,
             "Resource": [f"{bucket}/{root}{k}" for k in writable_keys(plan, client)]},
            {"Sid": "ReadOwnNeighboursSpecShard", "Effect": "Allow", "Action": READ_ACTIONS,
             "Resource": [f"{bucket}/{root}{k}" for k in readable_keys(plan, client)]},
            {"Sid": "ListOwnCheckpoints", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket],
             "Condition": {"StringEquals": {"s3:prefix": [f"{root}{p}" for p in listable_prefixes(plan, client)]}}},
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

