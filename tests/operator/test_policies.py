"""Per-client MinIO policies grant exactly the neighbour set's prefixes, and nothing more.

The policies are evaluated with a small S3 policy matcher (IAM semantics: default deny, Allow
statements only, ``*``/``?`` wildcards in actions, resources and ``StringLike`` conditions) over
every (client, key, action) of a store holding every key the layout allows, plus keys of
another experiment and outside the prefix. The expected answer is computed from the design's
rule, independently of the policy code."""

from __future__ import annotations

import itertools
from fnmatch import fnmatchcase

import pytest
from operator_fakes import FakeMinioAdmin, experiment

from p2p_job.spec import parse_experiment
from p2pk_operator import policies
from p2pk_operator.manifests import plan

# Client names sharing prefixes ("a" / "a-b") catch patterns that match too much.
CLIENTS = ("a", "a-b", "b", "c")
METHODS = ("ksmote", "none")
OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")


def allowed(policy: dict, action: str, resource: str, prefix: str | None = None) -> bool:
    """IAM evaluation for an Allow-only policy: some statement matches action and resource,
    and its StringLike conditions (``s3:prefix`` of a ListBucket) hold."""
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        if not any(fnmatchcase(action, a) for a in st["Action"]):
            continue
        if not any(fnmatchcase(resource, r) for r in st["Resource"]):
            continue
        cond = st.get("Condition", {}).get("StringLike", {})
        if "s3:prefix" in cond and not (prefix is not None and any(fnmatchcase(prefix, p) for p in cond["s3:prefix"])):
            continue
        assert set(st.get("Condition", {})) <= {"StringLike"} and set(cond) <= {"s3:prefix"}
        return True
    return False


def layout_keys(exp: str) -> list[str]:
    """Every key the store layout allows for ``exp``, relative to the store root."""
    keys = []
    for method in METHODS:
        run = f"{exp}/{method}/"
        keys.append(run + "spec.yaml")
        for client in CLIENTS:
            for r in (0, 7, 12345):
                keys += [f"{run}rounds/{r:05d}/{client}/{f}" for f in ("model.safetensors", "synthetic.parquet", "manifest.json")]
            keys += [f"{run}checkpoints/{client}/state.safetensors", f"{run}checkpoints/{client}/sub/opt.bin", f"{run}metrics/{client}.parquet"]
    return keys


def expected(client: str, neighbours: list[str], key: str) -> tuple[bool, bool]:
    """(may read, may write) by the design's rule, from the key's own parts."""
    parts = key.split("/")
    if parts[0] != "exp" or parts[1] not in METHODS:
        return False, False
    rest = parts[2:]
    own = (
        (rest[0] == "rounds" and rest[2] == client)
        or (rest[0] == "checkpoints" and rest[1] == client)
        or rest == ["metrics", f"{client}.parquet"]
    )
    readable = own or (rest[0] == "rounds" and rest[2] in neighbours) or rest == ["spec.yaml"]
    return readable, own


@pytest.fixture(scope="module")
def experiment_plan():
    doc = experiment(clients=CLIENTS, methods=METHODS)
    doc["spec"]["kubernetes"]["s3"]["prefix"] = "runs/lab"
    return plan(parse_experiment(doc))


def test_ring_neighbours_of_the_test_layout(experiment_plan):
    assert experiment_plan.neighbours == {"a": ["a-b", "c"], "a-b": ["a", "b"], "b": ["a-b", "c"], "c": ["a", "b"]}


def test_each_client_may_read_and_write_exactly_what_the_design_allows(experiment_plan):
    keys = layout_keys("exp") + layout_keys("exp2") + ["exp/ksmote/other.bin", "elsewhere/exp/ksmote/spec.yaml"]
    checked = 0
    for client in CLIENTS:
        policy = policies.client_policy(experiment_plan, client)
        neighbours = experiment_plan.neighbours[client]
        for key, action in itertools.product(keys, OBJECT_ACTIONS):
            may_read, may_write = expected(client, neighbours, key)
            want = may_read if action == "s3:GetObject" else may_write
            got = allowed(policy, action, f"arn:aws:s3:::p2pk/runs/lab/{key}")
            assert got == want, f"{client} {action} {key}: policy says {got}, design says {want}"
            checked += 1
        # The same keys outside the bucket's prefix or in another bucket: never.
        assert not allowed(policy, "s3:GetObject", f"arn:aws:s3:::p2pk/{keys[0]}")
        assert not allowed(policy, "s3:GetObject", f"arn:aws:s3:::other/runs/lab/{keys[0]}")
    assert checked == len(CLIENTS) * len(keys) * len(OBJECT_ACTIONS)


def test_listing_is_allowed_only_under_readable_prefixes(experiment_plan):
    policy = policies.client_policy(experiment_plan, "a")  # neighbours a-b and c
    bucket = "arn:aws:s3:::p2pk"
    for prefix, ok in [
        ("runs/lab/exp/ksmote/rounds/00003/a/", True),
        ("runs/lab/exp/none/rounds/00003/c/", True),
        ("runs/lab/exp/ksmote/checkpoints/a/", True),
        ("runs/lab/exp/ksmote/rounds/00003/b/", False),  # not a neighbour
        ("runs/lab/exp/ksmote/checkpoints/c/", False),  # a neighbour's checkpoints are private
        ("runs/lab/exp/ksmote/rounds/", False),  # would reveal every client's keys
        ("runs/lab/", False),
        (None, False),  # listing the whole bucket
    ]:
        assert allowed(policy, "s3:ListBucket", bucket, prefix) is ok, prefix
    assert allowed(policy, "s3:GetBucketLocation", bucket)
    assert not allowed(policy, "s3:DeleteBucket", bucket)
    assert not allowed(policy, "s3:PutBucketPolicy", bucket)


def test_user_names_are_stable_distinct_and_short():
    names = {policies.user_name(ns, exp, c) for ns in ("lab", "prod") for exp in ("exp", "exp-a") for c in ("a", "a-b", "b")}
    assert len(names) == 12
    assert all(len(n) == 20 and n.startswith("p2pk") for n in names)
    assert policies.user_name("lab", "exp", "a") == policies.user_name("lab", "exp", "a")
    # "exp-a"/"b" and "exp"/"a-b" would collide if names were joined with "-".
    assert policies.user_name("lab", "exp-a", "b") != policies.user_name("lab", "exp", "a-b")


def test_grant_and_revoke_are_idempotent():
    admin = FakeMinioAdmin()
    user = policies.ClientUser("p2pkuser", "s3cr3t-1", {"Version": "2012-10-17", "Statement": []})
    policies.grant(admin, user)
    policies.grant(admin, policies.ClientUser("p2pkuser", "s3cr3t-2", user.policy))  # attach says "already applied"
    assert admin.users == {"p2pkuser": "s3cr3t-2"} and admin.attached == {"p2pkuser": ["p2pkuser"]}
    policies.revoke(admin, "p2pkuser")
    policies.revoke(admin, "p2pkuser")  # "no such user / policy": already done
    assert admin.users == {} and admin.policies == {}


def test_other_admin_errors_are_not_swallowed():
    from minio.error import MinioAdminException

    class Down(FakeMinioAdmin):
        def user_remove(self, access_key):
            raise MinioAdminException("503", '{"Code":"XMinioServerNotInitialized"}')

    with pytest.raises(MinioAdminException):
        policies.revoke(Down(), "p2pkuser")
