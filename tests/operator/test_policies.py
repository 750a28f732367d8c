"""Per-client MinIO policies grant exactly the design's objects, and nothing more.

Two evaluators judge every policy: a small matcher here (IAM semantics: default deny, Allow
statements only, ``*`` any run of characters and ``?`` any one character — both match ``/`` —
in actions and resources, ``StringEquals`` on ``s3:prefix``) and, independently, **MinIO's own
policy engine** (``github.com/minio/pkg/v3/policy``, what a MinIO server enforces for the user),
built from ``tests/operator/minio_policy`` with Go. Every (client, key, action) of a store holding
every key the layout allows — plus keys of another experiment, another namespace, and keys
crafted to lie inside another client's prefixes — is checked against the answer computed from
the design's rule, independently of the policy code."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from iam import allowed
from operator_fakes import NAMESPACE, FakeMinioAdmin, experiment

from p2p_job.spec import parse_experiment
from p2pk_operator import policies
from p2pk_operator.manifests import plan

# Client names sharing prefixes ("a" / "a-b") catch patterns that match too much.
CLIENTS = ("a", "a-b", "b", "c")
METHODS = ("ksmote", "none")
OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")
BUCKET = "p2pk"
ROOT = f"runs/lab/{NAMESPACE}/"  # <prefix>/<namespace>/
ROUND_FILES = ("model.safetensors", "synthetic.parquet", "manifest.json")
SHARD_FILES = ("manifest.json", "train.parquet", "validation.parquet", "global_test.parquet")
MINIO_EVAL_SOURCE = Path(__file__).parent / "minio_policy"
BUILD_ROOT = Path(__file__).resolve().parents[2] / "build" / "minio-policy-eval"


# --------------------------------------------------------------------------- evaluators


class MinioEvaluator:
    """MinIO's policy engine as a process: one policy, many queries in one call."""

    def __init__(self, binary: Path, work: Path) -> None:
        self.binary, self.work = binary, work

    def __call__(self, policy: dict, queries: list[tuple[str, str, str, str | None]]) -> list[bool]:
        path = self.work / f"policy-{hashlib.sha256(json.dumps(policy).encode()).hexdigest()[:12]}.json"
        path.write_text(json.dumps(policy))
        lines = [json.dumps({"action": a, "bucket": b, "object": k, **({"prefix": p} if p is not None else {})}) for a, b, k, p in queries]
        done = subprocess.run([str(self.binary), str(path)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        answers = done.stdout.split()
        assert len(answers) == len(queries)
        return [a == "true" for a in answers]


@pytest.fixture(scope="module")
def minio_eval(tmp_path_factory) -> MinioEvaluator:
    """Build the evaluator once per source version (cached under build/); skip without Go
    (fail under CI, like every missing real component)."""
    import services

    go = shutil.which("go") or services.require_binary("go")
    digest = hashlib.sha256(b"".join((MINIO_EVAL_SOURCE / f).read_bytes() for f in ("go.mod", "go.sum", "main.go"))).hexdigest()[:16]
    binary = BUILD_ROOT / digest / "minio-policy-eval"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        built = subprocess.run([go, "build", "-trimpath", "-o", str(binary) + ".tmp", "."], cwd=MINIO_EVAL_SOURCE,
                               capture_output=True, text=True, timeout=900)
        assert built.returncode == 0, built.stderr
        Path(str(binary) + ".tmp").rename(binary)
    return MinioEvaluator(binary, tmp_path_factory.mktemp("policies"))


# --------------------------------------------------------------------------- the design's rule


def layout_keys(exp: str) -> list[str]:
    """Every key the store layout allows for ``exp``, relative to the store root."""
    keys = [f"{exp}/shards/manifest.json"]
    for client in CLIENTS:
        keys += [f"{exp}/shards/{client}/{f}" for f in SHARD_FILES]
    for method in METHODS:
        run = f"{exp}/{method}/"
        keys.append(run + "spec.yaml")
        for client in CLIENTS:
            for r in (1, 7, 99999):
                keys += [f"{run}rounds/{r:05d}/{client}/{f}" for f in ROUND_FILES]
            keys += [f"{run}checkpoints/{client}/{f}" for f in ("00007.safetensors", "received-00003.safetensors", "latest.json", "starts.json")]
            keys += [f"{run}metrics/{client}/{r:05d}.parquet" for r in (1, 99999)]
            keys += [f"{run}scores/{client}/{r:05d}.parquet" for r in (1, 99999)] + [f"{run}models/{client}.safetensors"]
    return keys


def expected(client: str, neighbours: list[str], key: str) -> tuple[bool, bool]:
    """(may read, may write) by the design's rule, from the key's own parts."""
    parts = key.split("/")
    if parts[0] != "exp":
        return False, False
    if parts[1] == "shards":
        return parts[2:] in ([client, f] for f in SHARD_FILES), False
    if parts[1] not in METHODS:
        return False, False

    def publication(rest: list[str], who: str) -> bool:
        return len(rest) == 4 and rest[0] == "rounds" and re.fullmatch(r"\d{5}", rest[1]) is not None and rest[2] == who and rest[3] in ROUND_FILES

    rest = parts[2:]
    own = (
        publication(rest, client)
        or (len(rest) == 3 and rest[:2] == ["checkpoints", client] and re.fullmatch(r"(received-)?\d{5}\.safetensors|latest\.json|starts\.json", rest[2]) is not None)
        or (len(rest) == 3 and rest[:2] == ["metrics", client] and re.fullmatch(r"\d{5}\.parquet", rest[2]) is not None)
        or (len(rest) == 3 and rest[:2] == ["scores", client] and re.fullmatch(r"\d{5}\.parquet", rest[2]) is not None)
        or rest == ["models", f"{client}.safetensors"]
    )
    readable = own or any(publication(rest, n) for n in neighbours) or rest == ["spec.yaml"]
    return readable, own


def others_prefixes(client: str) -> list[str]:
    """Key prefixes that belong to every client but ``client`` (relative to the store root)."""
    out = []
    for other in CLIENTS:
        if other == client:
            continue
        out += [f"exp/shards/{other}/"]
        for method in METHODS:
            out += [f"exp/{method}/checkpoints/{other}/", f"exp/{method}/metrics/{other}/"]
            out += [f"exp/{method}/rounds/{r:05d}/{other}/" for r in range(1, 100_000, 7919)]
    return out


def crafted_keys(client: str) -> list[str]:
    """Keys inside other clients' prefixes that embed ``client``'s own names — what ``*`` in
    ``rounds/*/<client>/*`` used to allow."""
    keys = []
    for other in CLIENTS:
        if other == client:
            continue
        for method in METHODS:
            run = f"exp/{method}/"
            keys += [f"{run}rounds/00003/{other}/{client}/{f}" for f in ROUND_FILES]
            keys += [f"{run}rounds/00003/{other}/x/{client}/manifest.json"]
            keys += [f"{run}checkpoints/{other}/{client}/latest.json", f"{run}metrics/{other}/{client}/00001.parquet"]
            keys += [f"{run}scores/{other}/{client}/00001.parquet", f"{run}models/{other}/{client}.safetensors"]
            keys += [f"{run}rounds/00003/{client}/../{other}/manifest.json"]
        keys += [f"exp/shards/{other}/{client}/train.parquet"]
    return keys


@pytest.fixture(scope="module")
def experiment_plan():
    doc = experiment(clients=CLIENTS, methods=METHODS)
    doc["spec"]["kubernetes"]["s3"]["prefix"] = "runs/lab"
    return plan(parse_experiment(doc))


# --------------------------------------------------------------------------- tests


def test_ring_neighbours_of_the_test_layout(experiment_plan):
    assert experiment_plan.neighbours == {"a": ["a-b", "c"], "a-b": ["a", "b"], "b": ["a-b", "c"], "c": ["a", "b"]}
    assert experiment_plan.object_prefix == ROOT


def test_policies_name_exact_objects_with_no_star_in_a_key(experiment_plan):
    """No ``*`` anywhere in an object resource: ``*`` crosses ``/``. The only wildcard is the
    five-character round (a directory of rounds, a checkpoint's or kept scores' file name)."""
    for client in CLIENTS:
        policy = policies.client_policy(experiment_plan, client)
        for st in policy["Statement"]:
            for resource in st["Resource"]:
                assert "*" not in resource, resource
                assert resource.startswith(f"arn:aws:s3:::{BUCKET}")
                assert resource == f"arn:aws:s3:::{BUCKET}" or resource.startswith(f"arn:aws:s3:::{BUCKET}/{ROOT}exp/"), resource
                assert re.sub(r"/(received-)?\?{5}(/|\.safetensors$|\.parquet$)", "/", resource).count("?") == 0, resource


def test_each_client_may_read_and_write_exactly_what_the_design_allows(experiment_plan, minio_eval):
    keys = layout_keys("exp") + layout_keys("exp2") + ["exp/ksmote/other.bin", "elsewhere/exp/ksmote/spec.yaml"]
    checked = 0
    for client in CLIENTS:
        policy = policies.client_policy(experiment_plan, client)
        neighbours = experiment_plan.neighbours[client]
        queries, wants = [], []
        for key, action in itertools.product(keys, OBJECT_ACTIONS):
            may_read, may_write = expected(client, neighbours, key)
            want = may_read if action == "s3:GetObject" else may_write
            got = allowed(policy, action, BUCKET, ROOT + key)
            assert got == want, f"{client} {action} {key}: policy says {got}, design says {want}"
            queries.append((action, BUCKET, ROOT + key, None))
            wants.append(want)
        # The same keys in another namespace, outside the prefix, or in another bucket: never.
        for key in keys[:40]:
            for elsewhere in (f"runs/lab/prod/{key}", key, f"runs/lab/{key}"):
                assert not allowed(policy, "s3:GetObject", BUCKET, elsewhere)
                queries.append(("s3:GetObject", BUCKET, elsewhere, None))
                wants.append(False)
            assert not allowed(policy, "s3:GetObject", "other", ROOT + key)
            queries.append(("s3:GetObject", "other", ROOT + key, None))
            wants.append(False)
        minio = minio_eval(policy, queries)
        disagree = [(q, w) for q, w, m in zip(queries, wants, minio) if w != m]
        assert not disagree, f"{client}: MinIO's engine disagrees with the design on {len(disagree)} requests, e.g. {disagree[:3]}"
        checked += len(queries)
    assert checked > len(CLIENTS) * len(keys) * len(OBJECT_ACTIONS)


def test_no_client_may_touch_a_key_inside_another_clients_prefix(experiment_plan, minio_eval):
    """Keys crafted to sit inside another client's prefixes, and random keys made of the layout's
    own words, digits and slashes: whatever either evaluator allows a client, it never lies under
    another client's rounds, checkpoints, metrics or shard."""
    rng = random.Random(7)
    words = ["exp", "ksmote", "none", "rounds", "checkpoints", "metrics", "shards", *CLIENTS, *ROUND_FILES, *SHARD_FILES,
             "00003", "0000", "3", "latest.json", "00001.safetensors", "a.parquet", "b.parquet"]
    for client in CLIENTS:
        policy = policies.client_policy(experiment_plan, client)
        keys = crafted_keys(client)
        keys += ["/".join(rng.choice(words) for _ in range(rng.randint(3, 7))) for _ in range(3000)]
        queries = [(action, BUCKET, ROOT + key, None) for key in keys for action in OBJECT_ACTIONS]
        minio = minio_eval(policy, queries)
        for (action, _, full, _), by_minio in zip(queries, minio):
            key = full[len(ROOT):]
            ours = allowed(policy, action, BUCKET, full)
            if ours or by_minio:
                assert not any(key.startswith(p) for p in others_prefixes(client)), f"{client} may {action} {key} (ours {ours}, MinIO {by_minio})"
        for key in crafted_keys(client):
            for action in OBJECT_ACTIONS:
                assert not allowed(policy, action, BUCKET, ROOT + key), (client, action, key)


def test_listing_is_allowed_only_for_its_own_checkpoints(experiment_plan, minio_eval):
    policy = policies.client_policy(experiment_plan, "a")  # neighbours a-b and c
    cases = [
        (f"{ROOT}exp/ksmote/checkpoints/a/", True),
        (f"{ROOT}exp/none/checkpoints/a/", True),
        (f"{ROOT}exp/ksmote/checkpoints/a-b/", False),
        (f"{ROOT}exp/ksmote/checkpoints/", False),
        (f"{ROOT}exp/ksmote/checkpoints/a/x", False),
        (f"{ROOT}exp/ksmote/rounds/00003/a/", False),
        (f"{ROOT}exp/shards/", False),
        (f"{ROOT}", False),
        (None, False),  # listing the whole bucket
    ]
    for prefix, ok in cases:
        assert allowed(policy, "s3:ListBucket", BUCKET, prefix=prefix) is ok, prefix
    assert minio_eval(policy, [("s3:ListBucket", BUCKET, "", p) for p, _ in cases]) == [ok for _, ok in cases]
    assert allowed(policy, "s3:GetBucketLocation", BUCKET)
    for action in ("s3:DeleteBucket", "s3:PutBucketPolicy", "s3:ListAllMyBuckets"):
        assert not allowed(policy, action, BUCKET)
    assert minio_eval(policy, [("s3:GetBucketLocation", BUCKET, "", None), ("s3:DeleteBucket", BUCKET, "", None),
                               ("s3:PutBucketPolicy", BUCKET, "", None)]) == [True, False, False]


def test_object_names_are_the_ones_the_workers_write():
    """The operator spells the names without importing the worker's modules; they must agree."""
    from p2p_job import checkpoints, payloads, restarts, shards

    assert policies.ROUND_FILES == (payloads.MODEL_FILE, payloads.SYNTHETIC_FILE, payloads.MANIFEST_FILE)
    assert set(policies.CHECKPOINT_FILES) == {"?????.safetensors", checkpoints._received_name(0).replace("00000", "?????"),
                                              checkpoints.LATEST, restarts.START_RECORD}
    assert policies.SHARD_FILES == (shards.MANIFEST, *(f"{s}.parquet" for s in shards.SPLITS))


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
