"""The kopf handlers, called directly with ``patch=kopf.Patch()`` against recording fakes of the
Kubernetes and MinIO admin APIs and a real directory store (see conftest): create, idempotence,
resume after a restart, status from Job states and metrics, failure, bad and changed specs,
and deletion."""

from __future__ import annotations

import copy
import datetime
import re

import kopf
import pytest
import yaml
import operator_fakes
from minio.error import MinioAdminException
from operator_fakes import NAMESPACE, SHARED_SECRET, World, experiment, metrics_part, put_metrics, resource, with_status
from urllib3.exceptions import MaxRetryError

from p2p_job.spec import parse_experiment
from p2p_job.store import StoreError
from p2pk_operator import handlers, policies
from p2pk_operator.admission import Admission
from p2pk_operator.manifests import plan, secret_values
from p2pk_operator.reconcile import DeletionWaits, admin_failure, changed_fields, cleanup, counted

JOBS = [f"exp-{m}-{c}" for m in ("ksmote", "none") for c in ("a", "b", "c")]
RUNNING = {"active": 1, "ready": 1}
SUCCEEDED = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
FAILED = {"failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "backoff limit"}]}


def call(handler, world: World, body: dict) -> dict:
    """Run a handler as kopf would, and return the resource with the status patch applied."""
    patch = kopf.Patch()
    handler(body=body, patch=patch, memo=world.memo)
    return with_status(body, patch)


def created(world: World, doc: dict | None = None) -> dict:
    return call(handlers.created, world, resource(doc or experiment()))


def condition(body: dict, type: str) -> dict | None:
    return next((c for c in body["status"].get("conditions") or () if c["type"] == type), None)


def test_create_makes_the_spec_secrets_users_and_one_job_per_method_and_client(world):
    body = created(world)
    cluster = world.cluster
    assert cluster.creates("Job") == JOBS
    assert cluster.creates("Secret") == ["exp-a-store", "exp-b-store", "exp-c-store"]
    assert cluster.creates("ConfigMap") == ["exp-spec"]
    uid = body["metadata"]["uid"]
    for (kind, ns, name), obj in cluster.objects.items():
        if name.startswith("exp-"):
            assert [r["uid"] for r in obj["metadata"]["ownerReferences"]] == [uid], name
            assert ns == NAMESPACE

    # One MinIO user per client, its keys in its Secret, its policy the client's.
    p = plan(parse_experiment(experiment()))
    assert world.admin.logins[0] == ("http://minio.lab.svc:9000", "root", "rootsecret")
    for client in p.clients:
        keys = secret_values(cluster.objects[("Secret", NAMESPACE, f"exp-{client}-store")])
        user = policies.user_name(NAMESPACE, "exp", client)
        assert keys["accessKey"] == user and world.admin.users[user] == keys["secretKey"]
        assert world.admin.policies[user] == policies.client_policy(p, client)
        assert world.admin.attached[user] == [user]

    # The spec as submitted, in the store for each method and in the ConfigMap.
    assert world.store.list("") == ["exp/ksmote/spec.yaml", "exp/none/spec.yaml"]
    assert parse_experiment(yaml.safe_load(world.store.get_bytes("exp/none/spec.yaml"))).spec == p.exp.spec
    assert world.store_opened[0] == ("s3://p2pk/experiments/lab", {  # the namespace is part of the store root
        "endpoint": "http://minio.lab.svc:9000", "access_key": "root", "secret_key": "rootsecret", "create_bucket": True})

    status = body["status"]
    assert (status["phase"], status["observedGeneration"], status["readyClients"]) == ("Pending", 1, "0/3")
    assert condition(body, "Created")["status"] == "True"
    assert "6 Jobs (2 methods × 3 clients)" in condition(body, "Created")["message"]
    assert [c["state"] for c in status["clients"]] == ["Pending"] * 6
    assert world.cluster.events == [("Normal", "ResourcesCreated", condition(body, "Created")["message"])]


def test_jobs_get_the_operators_default_pushgateway(world, monkeypatch):
    world.memo.services.pushgateway = "pg.monitoring:9091"
    created(world)
    for name in JOBS:
        (container,) = world.cluster.objects[("Job", NAMESPACE, name)]["spec"]["template"]["spec"]["containers"]
        assert {"name": "P2PK_PUSHGATEWAY", "value": "pg.monitoring:9091"} in container["env"]

    # At startup the operator's memo.pushgateway (p2pk operator --pushgateway) becomes that default.
    monkeypatch.setattr(handlers, "KubeCluster", lambda: world.cluster)
    memo = kopf.Memo(pushgateway="pg.monitoring:9091")
    handlers.configure(settings=kopf.OperatorSettings(), memo=memo)
    assert memo.services.pushgateway == "pg.monitoring:9091" and memo.services.cluster is world.cluster


def test_running_a_handler_twice_creates_nothing_twice(world):
    body = resource(experiment())
    call(handlers.created, world, body)  # kopf retries when the status patch was lost
    first = copy.deepcopy(world.cluster.objects)
    users = dict(world.admin.users)
    call(handlers.created, world, body)
    assert world.cluster.objects == first, "no object changed or was added"
    assert world.admin.users == users, "the users keep the keys in their Secrets"
    assert len(world.cluster.creates("Job")) == 12  # asked twice, answered 409 the second time


def test_a_restarted_operator_resumes_from_what_runs(world):
    body = created(world)
    for name in JOBS:
        world.cluster.set_job_status(name, RUNNING)
    put_metrics(world.store, {1: {"local": (0.5, 0.1)}, 2: {"local": (0.3, 0.1)}})

    restarted = World.__new__(World)  # a fresh operator process: new memo, same cluster and store
    restarted.__dict__.update(world.__dict__)
    restarted.memo = kopf.Memo(services=copy.copy(world.memo.services))
    world.cluster.calls.clear()
    body = call(handlers.resumed, restarted, body)

    assert world.cluster.creates() == [], "a created experiment is only observed"
    status = body["status"]
    assert (status["phase"], status["readyClients"]) == ("Running", "3/3")
    assert status["clients"][0] == {"method": "ksmote", "client": "a", "job": "exp-ksmote-a", "state": "Running",
                                    "failures": 0, "rounds": 2, "eval": "local", "fnr": 0.3, "fpr": 0.1}
    assert (status["round"], status["fnr"]) == ({"slowest": 0, "fastest": 2, "total": 4}, 0.3)


def test_a_restart_half_way_through_creation_finishes_it(world):
    body = resource(experiment())
    call(handlers.created, world, body)
    for name in JOBS[3:]:  # the operator died after the first three Jobs
        world.cluster.remove("Job", name)
    body = call(handlers.resumed, world, body)  # status never patched: Created is not true
    assert condition(body, "Created")["status"] == "True"
    assert world.cluster.creates("Job")[-6:] == JOBS
    assert all(("Job", NAMESPACE, n) in world.cluster.objects for n in JOBS)


def test_status_follows_jobs_and_metrics_until_success(world):
    body = created(world)
    world.cluster.events.clear()
    for name in JOBS:
        world.cluster.set_job_status(name, RUNNING)
    body = call(handlers.observe, world, body)
    assert body["status"]["phase"] == "Running"
    assert world.cluster.events == [("Normal", "JobsRunning", "6 of 6 Jobs running")]

    for c, fnr in zip("abc", (0.1, 0.2, 0.6)):
        rounds = {r: {"local": (0.9, 0.9), "global": (fnr, fnr / 10)} for r in range(1, 5)}
        put_metrics(world.store, rounds, c)
        put_metrics(world.store, {1: {"global": (1.0, 0.0)}}, c, "none")
        for m in ("ksmote", "none"):
            world.cluster.set_job_status(f"exp-{m}-{c}", SUCCEEDED)
    world.cluster.events.clear()
    body = call(handlers.observe, world, body)
    status = body["status"]
    assert status["phase"] == "Succeeded" and status["completionTime"]
    assert (status["round"], status["fnr"], status["fpr"]) == ({"slowest": 1, "fastest": 4, "total": 4}, 0.3, 0.03)
    assert [(m["name"], m["fnr"]) for m in status["methods"]] == [("ksmote", 0.3), ("none", 1.0)]
    assert ("Normal", "JobsSucceeded", "all 6 Jobs succeeded") in world.cluster.events

    world.cluster.calls.clear()
    call(handlers.observe, world, body)  # finished: the observation has nothing to do
    assert world.cluster.calls == []


def test_a_failed_job_degrades_then_fails_the_experiment(world):
    body = created(world)
    for name in JOBS:
        world.cluster.set_job_status(name, RUNNING)
    world.cluster.set_job_status("exp-none-b", FAILED)
    world.cluster.events.clear()
    body = call(handlers.observe, world, body)
    assert body["status"]["phase"] == "Running"
    assert condition(body, "Degraded")["reason"] == "JobsFailed"
    assert ("Warning", "JobFailed", "Job exp-none-b (method none, client b) failed: BackoffLimitExceeded: backoff limit") in world.cluster.events

    for name in JOBS:
        if name != "exp-none-b":
            world.cluster.set_job_status(name, SUCCEEDED)
    body = call(handlers.observe, world, body)
    assert body["status"]["phase"] == "Failed"
    assert condition(body, "Failed")["message"].startswith("1 of 6 Jobs failed: exp-none-b")


def test_unreadable_metrics_degrade_and_name_the_file(world):
    body = created(world)
    world.store.put_bytes("exp/ksmote/metrics/b/00001.parquet", b"garbage")
    body = call(handlers.observe, world, body)
    degraded = condition(body, "Degraded")
    assert degraded["reason"] == "MetricsUnreadable" and degraded["message"].startswith("exp/ksmote/metrics/b/00001.parquet: unreadable")


def test_a_metrics_listing_past_the_rounds_degrades_without_reading_it_whole(world, monkeypatch):
    """A client's metrics prefix is untrusted: a name that is no part, or more parts than the
    experiment has rounds, is refused from at most rounds + 1 listed names."""
    body = created(world)
    rounds = experiment()["spec"]["rounds"]
    for r in range(1, rounds + 1):
        world.store.put_bytes(f"exp/ksmote/metrics/a/{r:05d}.parquet", metrics_part(r, {"local": (0.5, 0.1)}))
    world.store.put_bytes("exp/ksmote/metrics/a/99999.parquet", metrics_part(1, {"local": (0.5, 0.1)}))
    world.store.put_bytes("exp/none/metrics/b/notes.txt", b"x")
    listed = []
    original = type(world.store).list
    monkeypatch.setattr(type(world.store), "list", lambda self, prefix, limit=None: listed.append(limit) or original(self, prefix, limit))
    body = call(handlers.observe, world, body)
    message = condition(body, "Degraded")["message"]
    assert f"exp/ksmote/metrics/a/: more than the {rounds} parts" in message
    assert "exp/none/metrics/b/: 'notes.txt' is no metrics part" in message
    assert set(listed) == {rounds + 1}


def test_the_operator_survives_oversized_metrics_files(world):
    """A worker's metrics file is untrusted: one over the byte cap is not fetched whole, and a
    small one that would decode to millions of rows is refused from its metadata; the others
    still count."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from p2pk_operator.progress import MAX_METRICS_BYTES

    body = created(world)
    put_metrics(world.store, {1: {"local": (0.5, 0.1)}})
    world.store.put_bytes("exp/ksmote/metrics/b/00001.parquet", b"\0" * (MAX_METRICS_BYTES + 1))
    n = 5_000_000
    bomb = pa.BufferOutputStream()
    pq.write_table(pa.table({"round": pa.array(np.ones(n, np.int64)), "eval": pa.array(["local"] * 1).take(np.zeros(n, np.int64)),
                             "fnr": pa.array(np.zeros(n)), "fpr": pa.array(np.zeros(n))}), bomb, compression="zstd")
    bomb = bomb.getvalue().to_pybytes()
    assert len(bomb) < 2**20
    world.store.put_bytes("exp/none/metrics/a/00001.parquet", bomb)
    body = call(handlers.observe, world, body)
    degraded = condition(body, "Degraded")
    assert degraded["reason"] == "MetricsUnreadable"
    assert "exp/ksmote/metrics/b/00001.parquet" in degraded["message"] and "exp/none/metrics/a/00001.parquet" in degraded["message"]
    assert body["status"]["round"]["fastest"] == 1


def test_the_observation_leaves_experiments_it_did_not_create_and_those_being_deleted(world):
    body = resource(experiment())
    assert call(handlers.observe, world, body)["status"] == {}
    running = created(world)
    world.cluster.calls.clear()
    assert call(handlers.observe, world, deleted_long_ago(running, 1))["status"] == running["status"]
    assert world.cluster.calls == []


def test_one_task_observes_every_indexed_experiment_and_patches_its_status(world):
    """The operator's observation loop over kopf's index (a mapping of stores of bodies): each
    created, unfinished experiment's status is patched; one that fails is logged, not fatal."""
    import asyncio

    first = created(world)
    other = created(world, experiment("other"))
    for name in JOBS:
        world.cluster.set_job_status(name, RUNNING)
    listing = world.cluster.list

    def failing_for_other(kind, namespace, labels):
        if labels.get("p2pk.io/experiment") == "other":
            raise RuntimeError("API server hiccup")
        return listing(kind, namespace, labels)

    world.cluster.list = failing_for_other  # observing "other" fails: the others still get observed
    index = {("lab", "exp"): [first], ("lab", "other"): [other], ("lab", "new"): [resource(experiment("new"))]}

    async def two_rounds():
        task = asyncio.create_task(handlers.observe_forever(world.memo, index, 0.01))
        while len(world.cluster.status_patches) < 2:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(asyncio.wait_for(two_rounds(), 30))
    names = {name for name, _ in world.cluster.status_patches}
    assert names == {"exp"}
    assert world.cluster.status_patches[0][1]["phase"] == "Running"


@pytest.mark.parametrize(
    "change, path, words",
    [
        ({"topology": {"kind": "k-regular", "degree": 5}}, "spec.topology", "degree"),  # passes the model, not the plan
        ({"methods": [{"rebalancing": "ksmote"}, {"rebalancing": "ksmote"}]}, "spec: methods", "duplicate method names"),
        ({"kubernetes": {"s3": {"endpoint": "minio:9000"}}}, "spec.kubernetes.s3", "adminSecret"),
    ],
)
def test_an_invalid_spec_creates_nothing_and_says_which_field(world, change, path, words):
    doc = experiment()
    doc["spec"].update(change)
    body = created(world, doc)
    assert world.cluster.creates() == [] and world.admin.users == {}
    assert body["status"]["phase"] == "Failed"
    cond = condition(body, "InvalidSpec")
    assert cond["status"] == "True" and path in cond["message"] and words in cond["message"]
    ((kind, reason, message),) = world.cluster.events
    assert (kind, reason) == ("Warning", "InvalidSpec") and path in message


def test_fixing_an_invalid_spec_creates_the_experiment(world):
    bad = experiment()
    bad["spec"]["topology"] = {"kind": "k-regular", "degree": 5}
    body = created(world, bad)
    body["spec"] = experiment()["spec"]
    body["metadata"]["generation"] = 2
    body = call(handlers.spec_changed, world, body)
    assert world.cluster.creates("Job") == JOBS
    assert condition(body, "InvalidSpec")["status"] == "False"
    assert body["status"]["phase"] == "Pending" and body["status"]["observedGeneration"] == 2


def test_a_spec_change_while_running_is_refused_except_purge_on_delete(world):
    body = created(world)
    world.cluster.calls.clear()
    world.cluster.events.clear()
    body["spec"]["rounds"] = 40
    body["spec"]["training"] = {"learningRate": 0.01}
    body["metadata"]["generation"] = 2
    body = call(handlers.spec_changed, world, body)
    assert world.cluster.creates() == []
    degraded = condition(body, "Degraded")
    assert degraded["reason"] == "SpecChangeRefused"
    assert degraded["message"].startswith("spec.rounds, spec.training.learningRate changed while the experiment runs")
    assert world.cluster.events[0][:2] == ("Warning", "SpecChangeRefused")
    assert body["status"]["round"]["total"] == 4, "the Jobs' spec still counts"

    body["spec"] = experiment(purgeOnDelete=True)["spec"]  # back to the running spec, but purge
    body["metadata"]["generation"] = 3
    body = call(handlers.spec_changed, world, body)
    assert condition(body, "Degraded")["status"] == "False"


def test_changed_fields_lists_leaf_paths():
    old = {"rounds": 4, "training": {"learningRate": 0.1, "batchSize": 8}, "methods": [{"a": 1}]}
    new = {"rounds": 4, "training": {"learningRate": 0.2, "batchSize": 8}, "methods": [{"a": 2}], "seed": 1}
    assert changed_fields(old, new, "spec") == ["spec.methods", "spec.seed", "spec.training.learningRate"]


def test_a_name_taken_by_something_else_fails_the_experiment(world):
    world.cluster.put({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "exp-ksmote-b", "namespace": NAMESPACE}})
    body = created(world)
    assert body["status"]["phase"] == "Failed"
    failed = condition(body, "Failed")
    assert failed["reason"] == "NameConflict" and "Job exp-ksmote-b exists already" in failed["message"]


def blocked(world: World, doc: dict | None = None) -> tuple[kopf.TemporaryError, dict]:
    """Run the create handler where creation is blocked: the retry kopf is asked for, and the
    resource with the status the handler patched before asking."""
    patch = kopf.Patch()
    body = resource(doc or experiment())
    with pytest.raises(kopf.TemporaryError) as info:
        handlers.created(body=body, patch=patch, memo=world.memo)
    return info.value, with_status(body, patch)


def test_a_missing_admin_secret_is_shown_at_once_and_retried(world):
    world.cluster.remove("Secret", "minio-admin")
    retry, body = blocked(world)
    assert "Secret lab/minio-admin (spec.kubernetes.s3.adminSecret) not found" in str(retry) and retry.delay == 30
    degraded = condition(body, "Degraded")
    assert (body["status"]["phase"], degraded["reason"]) == ("Pending", "CredentialsUnavailable")
    assert degraded["message"].endswith("not found; retrying every 30 s")
    assert world.cluster.events == [("Warning", "CredentialsUnavailable", degraded["message"])]
    assert world.cluster.creates() == []


def refused(world: World, doc: dict | None = None) -> tuple[dict, str]:
    """Run the create handler expecting a refused Secret: the status it published, and the retry's message."""
    body = resource(doc or experiment())
    patch = kopf.Patch()
    with pytest.raises(kopf.TemporaryError) as retry:
        handlers.created(body=body, patch=patch, memo=world.memo)
    return with_status(body, patch), str(retry.value)


@pytest.mark.parametrize("field, secret", [("adminSecret", "minio-admin"), ("credentialsSecret", SHARED_SECRET)])
def test_a_secret_not_labelled_for_the_operator_is_refused_in_a_condition_and_an_event(world, field, secret):
    """The spec may name any Secret of the namespace (the MinIO root keys, another client's
    keys); the operator reads only those labelled p2pk.io/store-credentials=true, says so, makes
    nothing, and goes on once the Secret is labelled."""
    world.cluster.put(operator_fakes.secret(secret, labelled=False, accessKey="root", secretKey="rootsecret"))
    doc = experiment(s3={"endpoint": "minio:9000", field: secret})
    body, retry = refused(world, doc)
    assert body["status"]["phase"] == "Failed"
    invalid = condition(body, "InvalidSpec")
    assert (invalid["status"], invalid["reason"]) == ("True", "SecretNotPermitted")
    assert f"Secret lab/{secret} (spec.kubernetes.s3.{field}) is not meant for the p2pk operator" in invalid["message"]
    assert "p2pk.io/store-credentials=true" in invalid["message"] and invalid["message"] in retry
    assert [(t, r) for t, r, _ in world.cluster.events] == [("Warning", "SecretNotPermitted")]
    assert world.cluster.creates() == [] and world.admin.logins == [] and world.store_opened == []
    world.cluster.put(operator_fakes.secret(secret, accessKey="root", secretKey="rootsecret"))  # labelled now
    again = call(handlers.created, world, body)
    assert condition(again, "Created")["status"] == "True"
    assert (condition(again, "InvalidSpec")["status"], condition(again, "InvalidSpec")["reason"]) == ("False", "SpecValid")
    assert len(world.cluster.creates("Job")) == 6


def test_a_secret_the_operators_rbac_may_not_read_is_refused_the_same_way(world):
    world.cluster.forbidden.add(("Secret", "minio-admin"))
    body, _ = refused(world)
    invalid = condition(body, "InvalidSpec")
    assert invalid["reason"] == "SecretNotPermitted" and "the operator may not read it (Secret lab/minio-admin: forbidden)" in invalid["message"]
    assert world.cluster.creates() == []


@pytest.mark.parametrize("kubernetes, path, words", [
    ({"image": "docker.io/evil/miner:1"}, "spec.kubernetes.image", "image 'docker.io/evil/miner:1' is not allowed by this operator; allowed: registry.lab/p2pk/worker:*"),
    ({"serviceAccountName": "cluster-admin-sa"}, "spec.kubernetes.serviceAccountName", "ServiceAccount 'cluster-admin-sa' is not allowed by this operator; allowed: p2pk-worker (or none)"),
])
def test_images_and_service_accounts_outside_the_allowlists_are_invalid_specs(world, kubernetes, path, words):
    world.memo.services.admission = Admission(images=("registry.lab/p2pk/worker:*",), service_accounts=("p2pk-worker",))
    doc = experiment(**{"image": "registry.lab/p2pk/worker:0.1.0", **kubernetes})
    body = created(world, doc)
    invalid = condition(body, "InvalidSpec")
    assert body["status"]["phase"] == "Failed" and invalid["reason"] == "InvalidSpec"
    assert f"{path}: {words}" in invalid["message"]
    assert world.cluster.creates() == []
    fine = experiment(image="registry.lab/p2pk/worker:0.2.0", serviceAccountName="p2pk-worker")
    assert condition(created(world, fine), "Created")["status"] == "True"


class RefusingAdmin:
    """A MinIO admin endpoint answering every call with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def policy_add(self, *args, **kwargs):
        raise self.error

    user_remove = policy_add


S3_NOT_MINIO = MinioAdminException("404", '<?xml version="1.0"?><Error><Code>NoSuchBucket</Code><BucketName>minio</BucketName></Error>')
BAD_KEYS = MinioAdminException("403", '{"Code":"InvalidAccessKeyId","Message":"The Access Key Id you provided does not exist"}')


def test_a_store_without_the_minio_admin_api_fails_the_experiment_at_once(world):
    world.memo.services.minio_admin = lambda *args: RefusingAdmin(S3_NOT_MINIO)
    body = created(world)
    failed = condition(body, "Failed")
    assert (body["status"]["phase"], failed["reason"]) == ("Failed", "StoreAdminUnsupported")
    assert "minio.lab.svc:9000 does not serve the MinIO admin API (HTTP 404 <?xml" in failed["message"]
    assert "use credentialsSecret" in failed["message"]
    assert world.cluster.events == [("Warning", "StoreAdminUnsupported", failed["message"])]
    assert world.cluster.creates("Job") == []


def test_refused_admin_keys_are_shown_and_retried(world):
    world.memo.services.minio_admin = lambda *args: RefusingAdmin(BAD_KEYS)
    retry, body = blocked(world)
    degraded = condition(body, "Degraded")
    assert degraded["reason"] == "StoreAdminRefused" and body["status"]["phase"] == "Pending"
    assert "keys of Secret lab/minio-admin: HTTP 403 InvalidAccessKeyId" in degraded["message"]
    assert world.cluster.creates("Job") == []
    world.memo.services.minio_admin = world._admin  # the keys fixed: the retry creates it, healthy
    body = call(handlers.created, world, body)
    assert condition(body, "Created")["status"] == "True" and condition(body, "Degraded")["status"] == "False"


def test_deleting_an_experiment_on_a_store_without_the_admin_api_is_not_held_up(world):
    world.memo.services.minio_admin = lambda *args: RefusingAdmin(S3_NOT_MINIO)
    body = created(world)
    cleanup(body, world.memo.services)  # no wait: the finalizer goes
    assert world.cluster.events[-1][:2] == ("Warning", "StoreUsersKept")
    assert "does not serve the MinIO admin API" in world.cluster.events[-1][2]


def test_deletion_retries_while_minio_refuses_the_admin_keys(world):
    body = created(world)
    world.memo.services.minio_admin = lambda *args: RefusingAdmin(BAD_KEYS)
    with pytest.raises(DeletionWaits, match="cannot remove the clients' MinIO users yet: .*InvalidAccessKeyId"):
        cleanup(body, world.memo.services)


@pytest.mark.parametrize(("error", "reason", "permanent"), [
    (S3_NOT_MINIO, "StoreAdminUnsupported", True),
    (MinioAdminException("501", "Not Implemented"), "StoreAdminUnsupported", True),
    (BAD_KEYS, "StoreAdminRefused", False),
    (MaxRetryError(None, "/minio/admin/v3/add-canned-policy", "Connection refused"), "StoreUnreachable", False),
])
def test_admin_failures_are_told_apart(error, reason, permanent):
    found = admin_failure(error, "http://s3:9000", "Secret lab/admin")
    assert (found.reason, found.permanent) == (reason, permanent)
    assert "http://s3:9000" in str(found)


@pytest.mark.parametrize(("n", "noun", "text"), [(0, "Job", "0 Jobs"), (1, "method", "1 method"), (3, "client", "3 clients")])
def test_counted(n, noun, text):
    assert counted(n, noun) == text


def test_shared_credentials_make_no_secrets_or_users(world):
    doc = experiment(s3={"endpoint": "minio:9000", "credentialsSecret": SHARED_SECRET})
    body = created(world, doc)
    assert world.cluster.creates("Secret") == [] and world.admin.logins == []
    assert world.store_opened[0][1]["access_key"] == "shared"
    assert "shared Secret p2pk-s3" in condition(body, "Created")["message"]


def test_deletion_removes_the_users_and_keeps_the_store(world):
    body = created(world)
    world.store.put_bytes("exp/ksmote/metrics/a/00001.parquet", b"kept")
    cleanup(body, world.memo.services)
    assert world.admin.users == {} and world.admin.policies == {}
    assert world.store.get_bytes("exp/ksmote/metrics/a/00001.parquet") == b"kept"
    assert world.cluster.events[-1] == ("Normal", "StoreUsersRemoved", "removed the MinIO users of 3 clients")
    cleanup(body, world.memo.services)  # again (a restarted operator): nothing left to remove, no error


def test_deletion_with_purge_waits_for_the_jobs_then_purges_the_prefix(world):
    body = created(world, experiment(purgeOnDelete=True))
    world.store.put_bytes("exp/ksmote/rounds/00001/a/manifest.json", b"{}")
    world.store.put_bytes("exp2/ksmote/spec.yaml", b"another experiment")
    world.cluster.set_job_status("exp-ksmote-a", RUNNING)
    with pytest.raises(DeletionWaits, match="waiting for 1 Jobs to stop before purging the store: exp-ksmote-a"):
        cleanup(body, world.memo.services)
    assert world.store.list("exp/") and world.admin.users, "nothing purged or revoked while a Job runs"
    for name in JOBS:  # garbage collection deletes the owned Jobs
        world.cluster.remove("Job", name)
    cleanup(body, world.memo.services)
    assert world.store.list("") == ["exp2/ksmote/spec.yaml"]
    assert world.admin.users == {}
    assert world.cluster.events[-2:] == [
        ("Normal", "StorePurged", "deleted 3 objects under s3://p2pk/experiments/lab/exp/"),
        ("Normal", "StoreUsersRemoved", "removed the MinIO users of 3 clients"),
    ]


def test_deleting_an_experiment_that_never_was_valid_touches_nothing(world):
    doc = experiment()
    doc["spec"]["topology"] = {"kind": "k-regular", "degree": 5}
    cleanup(resource(doc), world.memo.services)
    assert world.admin.logins == [] and world.cluster.events == []


def test_a_recreated_experiment_waits_for_its_predecessors_leftovers(world):
    old = created(world)
    new = resource(experiment())  # same name, new uid: re-applied before garbage collection ran
    with pytest.raises(kopf.TemporaryError, match="Secret exp-a-store of the deleted experiment of this name is still there"):
        call(handlers.created, world, new)
    for kind, name in [("Secret", f"exp-{c}-store") for c in "abc"] + [("ConfigMap", "exp-spec")] + [("Job", j) for j in JOBS]:
        world.cluster.remove(kind, name)  # garbage collection of the old experiment's objects
    body = call(handlers.created, world, new)
    assert condition(body, "Created")["status"] == "True"
    owners = {o["metadata"]["ownerReferences"][0]["uid"] for (k, ns, n), o in world.cluster.objects.items() if n.startswith("exp-")}
    assert owners == {new["metadata"]["uid"]} != {old["metadata"]["uid"]}


def deleted_long_ago(body: dict, seconds: float = 3600) -> dict:
    """``body`` as the API server shows it ``seconds`` after it was deleted."""
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
    return {**body, "metadata": {**body["metadata"], "deletionTimestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ")}}


def test_a_deletion_waiting_for_minio_retries_no_later_than_its_deadline(world):
    body = deleted_long_ago(created(world), seconds=100)
    world.memo.services.minio_admin = lambda *args: RefusingAdmin(BAD_KEYS)
    with pytest.raises(DeletionWaits) as retry:
        cleanup(body, world.memo.services)
    assert 15 <= retry.value.delay <= 20  # the default timeout is 120 s: the last retry lands on it


def test_a_deletion_past_its_timeout_releases_the_finalizer_naming_the_users_left(world):
    body = deleted_long_ago(created(world))
    world.memo.services.minio_admin = lambda *args: RefusingAdmin(BAD_KEYS)
    cleanup(body, world.memo.services)  # no wait: the finalizer goes
    kind, reason, message = world.cluster.events[-1]
    assert (kind, reason) == ("Warning", "CleanupAbandoned")
    assert re.match(r"released the finalizer 360[01] s after deletion \(p2pk operator --deletion-timeout 120\)", message)
    users = ", ".join(policies.user_name(NAMESPACE, "exp", c) for c in "abc")
    assert f"the MinIO users {users} at http://minio.lab.svc:9000 (cannot remove the clients' MinIO users yet: " in message
    assert "InvalidAccessKeyId" in message


def test_a_purge_past_its_timeout_keeps_the_prefix_but_still_removes_the_users(world):
    world.memo.services.deletion_timeout = 30
    body = deleted_long_ago(created(world, experiment(purgeOnDelete=True)), seconds=31)
    world.store.put_bytes("exp/ksmote/rounds/00001/a/manifest.json", b"{}")
    world.cluster.set_job_status("exp-ksmote-a", RUNNING)
    cleanup(body, world.memo.services)
    assert world.store.list("exp/") and world.admin.users == {}
    assert world.cluster.events[-2][:3] == ("Normal", "StoreUsersRemoved", "removed the MinIO users of 3 clients")
    kind, reason, message = world.cluster.events[-1]
    assert (kind, reason) == ("Warning", "CleanupAbandoned")
    assert re.fullmatch(r"released the finalizer 3[12] s after deletion \(p2pk operator --deletion-timeout 30\); "
                        r"left in the store: everything under s3://p2pk/experiments/lab/exp/ "
                        r"\(waiting for 1 Jobs to stop before purging the store: exp-ksmote-a\)", message), message


def test_a_store_that_fails_the_purge_is_waited_for_not_an_exception(world):
    body = created(world, experiment(purgeOnDelete=True))

    class Down:
        def delete_prefix(self, prefix):
            raise StoreError("s3://p2pk/experiments/lab: connection refused")

    world.memo.services.open_store = lambda url, **kw: Down()
    with pytest.raises(DeletionWaits, match="cannot purge the store yet: .*connection refused"):
        cleanup(body, world.memo.services)
    assert world.admin.users, "the users stay while the purge waits"


def test_the_deletion_handler_waits_quietly_until_the_jobs_stop_then_purges(world, monkeypatch, caplog):
    """kopf's handler: each wait is logged as information and slept here (not a
    kopf.TemporaryError, which kopf logs as an ERROR), then the purge runs."""
    import asyncio
    import logging

    body = created(world, experiment(purgeOnDelete=True))
    world.cluster.set_job_status("exp-ksmote-a", RUNNING)
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds):
        slept.append(seconds)
        for name in JOBS:  # meanwhile, the garbage collector deletes the Jobs
            world.cluster.objects.pop(("Job", NAMESPACE, name), None)
        await real_sleep(0)

    monkeypatch.setattr(handlers.asyncio, "sleep", sleep)
    logger = logging.getLogger("test-deletion")
    with caplog.at_level(logging.INFO, logger="test-deletion"):
        asyncio.run(handlers.deleted(body=body, memo=world.memo, logger=logger))
    assert slept == [10]
    assert caplog.records[0].levelname == "INFO"
    assert "waiting for 1 Jobs to stop before purging the store: exp-ksmote-a; trying again in 10 s" in caplog.text
    assert world.cluster.events[-2][1] == "StorePurged" and world.admin.users == {}
