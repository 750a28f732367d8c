"""Reconciliation: from a P2PExperiment to its Jobs, and from what runs back to its status.

One entry point serves creation, a restarted operator, a spec change and the periodic check
(:func:`reconcile`); another the deletion (:func:`cleanup`). Both only compose the pure parts —
``manifests`` (spec → objects), ``policies`` (per-client MinIO users), ``progress`` and
``status`` (observations → status and events), ``finalizer`` (how long a deletion may
wait) — with the side effects behind :class:`Services`, so they can be run against fakes.

Creation is idempotent: an object that exists already (HTTP 409) is taken as made, if it is
this experiment's (its ownerReference), and a client's Secret keeps the keys it was created
with, so its MinIO user is granted the same keys again. Creation runs until the Created
condition is true, so an operator stopped half-way finishes the job when it comes back. What
blocks it is shown at once: a missing credentials Secret, MinIO refusing the admin keys or not
answering set the Degraded condition (a Warning Event) and are retried every 30 s; a store
without the MinIO admin API (``adminSecret`` on plain S3) fails the experiment
(StoreAdminUnsupported), as only a spec change can help.

The spec the Jobs run lives in the ConfigMap ``<exp>-spec``; a later change of the resource's
spec is compared with it: changes of ``kubernetes.purgeOnDelete`` are safe (read at deletion),
every other change is refused with the Degraded condition (reason SpecChangeRefused) naming the
fields, and the Jobs go on with the spec they started with. A spec that fails validation before
anything was created gets the InvalidSpec condition and nothing is created; fixing the spec
then creates the experiment.
"""

from __future__ import annotations

import datetime
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

import kopf
from minio.error import MinioAdminException
from urllib3.exceptions import HTTPError

from p2p_job.spec import InvalidSpec, dump_experiment, load_yaml, parse_experiment
from p2p_job.store import RetryingStore, StoreError, metrics_key, metrics_prefix, open_store, spec_key
from p2pk_operator import finalizer, manifests, policies
from p2pk_operator.admission import Admission, secret_refusal
from p2pk_operator.cluster import Cluster, Forbidden, Rejected
from p2pk_operator.manifests import ACCESS_KEY, EXPERIMENT_LABEL, SECRET_KEY, SPEC_FILE, Plan
from p2pk_operator.progress import MAX_METRICS_BYTES, ClientProgress, part_rounds, read_progress
from p2pk_operator.status import (
    ExperimentStatus,
    Problem,
    derive_status,
    invalid_status,
    now_rfc3339,
    set_condition,
    transitions,
)

#: Spec fields that may change while the experiment runs (read only at deletion).
SAFE_CHANGES = frozenset({"spec.kubernetes.purgeOnDelete"})
#: Seconds before retrying when a credentials Secret is missing.
RETRY_DELAY = 30
#: Seconds between checks while Kubernetes removes objects (Jobs before a purge, the leftovers
#: of a deleted experiment of the same name).
WAIT_DELAY = 10
#: Seconds each store call keeps retrying while observing (then StoreUnavailable, and the next
#: check, RETRY_DELAY later, tries again).
STORE_RETRY_SECONDS = 20.0


@dataclass
class Services:
    """Everything the reconciliation touches outside itself, and the operator's settings."""

    cluster: Cluster
    open_store: Callable[..., Any] = field(default=open_store)
    minio_admin: Callable[[str, str, str], Any] = field(default=policies.admin_client)
    #: host:port of the Pushgateway for Jobs whose spec names none (``p2pk operator --pushgateway``).
    pushgateway: str | None = None
    #: Images and ServiceAccounts experiments may use (``p2pk operator --allowed-image …``).
    admission: Admission = field(default_factory=Admission)
    #: Seconds a deletion may wait for the store or the Jobs (``p2pk operator --deletion-timeout``).
    deletion_timeout: float = finalizer.DELETION_TIMEOUT


class NameConflict(Exception):
    """An object with one of the experiment's names exists and belongs to something else."""


class CredentialsUnavailable(Exception):
    """The Secret named by ``spec.kubernetes.s3`` is missing or incomplete."""


class SecretRefused(CredentialsUnavailable):
    """The Secret named by ``spec.kubernetes.s3`` is not meant for the operator (not labelled
    for it, or its RBAC may not read it): the experiment says so in its InvalidSpec condition."""


class CreationBlocked(Exception):
    """Creation cannot go on, for ``reason`` (the condition's reason). A ``permanent`` cause
    fails the experiment; the others are shown as the Degraded condition (and its Warning
    Event) at once and retried every :data:`RETRY_DELAY` seconds."""

    def __init__(self, reason: str, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.permanent = permanent


def admin_failure(exc: Exception, endpoint: str, secret: str) -> CreationBlocked:
    """What a failed MinIO admin call means. An HTTP error whose body is not a MinIO admin
    error (JSON with a ``Code``) comes from a store without the MinIO admin API (an S3 store
    answers ``/minio/admin/...`` as a missing bucket ``minio``): permanent, since only a spec
    change can help. MinIO refusing the keys, or no answer at all, may pass: retried."""
    if isinstance(exc, MinioAdminException):
        status, body = str(exc._code), str(exc._body)
        try:
            code = json.loads(body).get("Code")
        except (ValueError, AttributeError):
            code = None
        if not code:
            return CreationBlocked(
                "StoreAdminUnsupported",
                f"the store at {endpoint} does not serve the MinIO admin API (HTTP {status} {_first_line(body)}); "
                "spec.kubernetes.s3.adminSecret needs MinIO: use credentialsSecret (one shared user) with other S3 stores",
                permanent=True,
            )
        return CreationBlocked("StoreAdminRefused", f"MinIO at {endpoint} refused the admin request with the keys of {secret}: HTTP {status} {code}")
    return CreationBlocked("StoreUnreachable", f"cannot reach the MinIO admin API at {endpoint}: {_first_line(str(exc))}")


def _first_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --------------------------------------------------------------------------- entry points


def reconcile(body: Any, patch: kopf.Patch, services: Services, now: str | None = None) -> None:
    """Create what is missing (until Created), then write the status observed into ``patch``
    and post an Event for each transition."""
    meta = body["metadata"]
    generation = meta.get("generation", 1)
    now = now or now_rfc3339()
    previous = ExperimentStatus.model_validate(body.get("status") or {})
    desired, errors = _desired(body, services.admission)

    running = _stored_plan(body, services.cluster)
    status = previous
    if running is None:
        if errors:
            return _publish(body, patch, services, previous, invalid_status(previous, errors, generation, now))
        running = desired
        status = set_condition(status, "InvalidSpec", False, "SpecValid", "the spec is valid", now)

    if not status.is_true("Created"):
        try:
            created = _create(running, body, services)
        except SecretRefused as exc:
            # Said in the status and an Event, and tried again: labelling the Secret (or granting
            # the RBAC) changes no spec, so no update would bring the experiment back.
            refused = status.model_copy(update={"phase": "Failed", "observed_generation": generation})
            _publish(body, patch, services, previous, set_condition(refused, "InvalidSpec", True, "SecretNotPermitted", str(exc), now))
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from None
        except CreationBlocked as exc:
            if exc.permanent:
                failed = status.model_copy(update={"phase": "Failed", "observed_generation": generation})
                return _publish(body, patch, services, previous, set_condition(failed, "Failed", True, exc.reason, str(exc), now))
            waiting = status.model_copy(update={"phase": status.phase or "Pending", "observed_generation": generation})
            message = f"{exc}; retrying every {RETRY_DELAY} s"
            _publish(body, patch, services, previous, set_condition(waiting, "Degraded", True, exc.reason, message, now))
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from None
        except (NameConflict, Rejected) as exc:
            failed = status.model_copy(update={"phase": "Failed", "observed_generation": generation})
            reason = "NameConflict" if isinstance(exc, NameConflict) else "ManifestRejected"
            return _publish(body, patch, services, previous, set_condition(failed, "Failed", True, reason, str(exc), now))
        status = set_condition(status, "Created", True, "ResourcesCreated", created, now)

    problems = _spec_drift(running, desired, errors)
    status = _observe(running, body, services, status, problems, generation, now)
    _publish(body, patch, services, previous, status)


def cleanup(body: Any, services: Services, now: datetime.datetime | None = None) -> None:
    """On deletion: with ``purgeOnDelete``, delete the experiment's store prefix once its Jobs
    have stopped; then remove the clients' MinIO users (scoped mode). The Jobs, Secrets and
    ConfigMap go with their owner (ownerReferences).

    A step that must wait (Jobs still running, the store or the MinIO admin API not answering)
    raises :class:`DeletionWaits` (the caller tries again after its ``delay``) until
    ``services.deletion_timeout`` seconds after the deletionTimestamp; then each step is tried
    once more, and what could not be done is named in a Warning Event (CleanupAbandoned) as the
    finalizer is released (``finalizer``)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    desired, _ = _desired(body, services.admission)
    running = _stored_plan(body, services.cluster) or desired
    if running is None:
        return  # invalid from the start: nothing was made

    timeout = services.deletion_timeout
    age = finalizer.deletion_age(meta.get("deletionTimestamp"), now or datetime.datetime.now(datetime.timezone.utc))
    delay = finalizer.retry_delay(age, timeout, RETRY_DELAY)
    left: list[str] = []

    def waiting(step: Callable[[], None], leftover: str, wait_delay: float) -> None:
        """Run ``step``; a :class:`_Wait` is retried while time is left, else noted in ``left``."""
        try:
            step()
        except _Wait as wait:
            if delay is not None:
                raise DeletionWaits(str(wait), min(delay, wait_delay)) from None
            left.append(f"{leftover} ({wait})")

    s3 = running.exp.spec.kubernetes.s3
    if (desired or running).exp.spec.kubernetes.purge_on_delete:
        waiting(lambda: _purge(running, body, services), f"everything under {running.store_url}/{name}/", WAIT_DELAY)
    if running.scoped:
        previous = ExperimentStatus.model_validate(body.get("status") or {})
        clients = sorted(set(running.clients) | {c.client for c in previous.clients or ()})
        users = ", ".join(policies.user_name(namespace, name, c) for c in clients)
        waiting(lambda: _remove_users(running, body, clients, services), f"the MinIO users {users} at {s3.endpoint_url}", RETRY_DELAY)
    if left:
        services.cluster.event(body, "Warning", "CleanupAbandoned", finalizer.abandoned_message(age, timeout, left))


class _Wait(Exception):
    """A deletion step cannot finish yet; the message says why."""


class DeletionWaits(Exception):
    """The deletion must wait: try again in ``delay`` seconds (an ordinary wait, not an error)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


def _purge(plan: Plan, body: Any, services: Services) -> None:
    """Delete the experiment's store prefix, once no Job of it is active."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    jobs = services.cluster.list("Job", namespace, {EXPERIMENT_LABEL: name})
    active = [j["metadata"]["name"] for j in jobs if (j.get("status") or {}).get("active")]
    if active:
        raise _Wait(f"waiting for {len(active)} Jobs to stop before purging the store: {', '.join(active)}")
    try:
        deleted = _operator_store(plan, namespace, services).delete_prefix(f"{name}/")
    except CredentialsUnavailable as exc:
        services.cluster.event(body, "Warning", "StoreKept", f"cannot purge the store: {exc}")
    except StoreError as exc:
        raise _Wait(f"cannot purge the store yet: {_first_line(str(exc))}") from None
    else:
        services.cluster.event(body, "Normal", "StorePurged", f"deleted {counted(deleted, 'object')} under {plan.store_url}/{name}/")


def _remove_users(plan: Plan, body: Any, clients: list[str], services: Services) -> None:
    """Remove the clients' MinIO users and policies (scoped mode)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    s3 = plan.exp.spec.kubernetes.s3
    try:
        admin = services.minio_admin(s3.endpoint_url, *_operator_keys(plan, namespace, services.cluster))
        for client in clients:
            policies.revoke(admin, policies.user_name(namespace, name, client))
    except CredentialsUnavailable as exc:
        services.cluster.event(body, "Warning", "StoreUsersKept", f"cannot remove the clients' MinIO users: {exc}")
    except (MinioAdminException, HTTPError, OSError) as exc:
        failure = admin_failure(exc, s3.endpoint_url, f"Secret {namespace}/{s3.admin_secret}")
        if not failure.permanent:
            raise _Wait(f"cannot remove the clients' MinIO users yet: {failure}") from None
        # No MinIO admin API there, so no users were made: nothing to keep the deletion for.
        services.cluster.event(body, "Warning", "StoreUsersKept", f"cannot remove the clients' MinIO users: {failure}")
    else:
        services.cluster.event(body, "Normal", "StoreUsersRemoved", f"removed the MinIO users of {counted(len(clients), 'client')}")


# --------------------------------------------------------------------------- parts


def _desired(body: Any, admission: Admission) -> tuple[Plan | None, list[tuple[str, str]]]:
    """The resource's spec as a plan, or the validation errors by field path (the operator's
    allowlists included)."""
    meta = body["metadata"]
    document = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": {"name": meta["name"], "namespace": meta["namespace"]}, "spec": body.get("spec")}
    try:
        exp = parse_experiment(document, f"{meta['namespace']}/{meta['name']}")
        desired = manifests.plan(exp)
    except InvalidSpec as exc:
        return None, exc.errors
    refused = admission.errors(exp)
    return (None, refused) if refused else (desired, [])


def _stored_plan(owner: Any, cluster: Cluster) -> Plan | None:
    """The plan the Jobs run: the spec in this experiment's ConfigMap ``<exp>-spec``, once it
    was created."""
    meta = owner["metadata"]
    stored = cluster.read("ConfigMap", meta["namespace"], manifests.config_map_name(meta["name"]))
    if stored is None or not _owned_by(stored, owner):
        return None
    source = f"ConfigMap {meta['namespace']}/{stored['metadata']['name']}"
    return manifests.plan(parse_experiment(load_yaml(stored["data"][SPEC_FILE], source), source))


def _owned_by(obj: dict, owner: Any) -> bool:
    return any(ref.get("uid") == owner["metadata"]["uid"] for ref in obj["metadata"].get("ownerReferences") or ())


def _create(plan: Plan, owner: Any, services: Services) -> str:
    """Make (or find) every object of the experiment; returns a summary for the Created condition."""
    namespace = owner["metadata"]["namespace"]
    s3 = plan.exp.spec.kubernetes.s3
    try:
        keys = _operator_keys(plan, namespace, services.cluster)
    except SecretRefused:
        raise  # reconcile says so in the status
    except CredentialsUnavailable as exc:
        raise CreationBlocked("CredentialsUnavailable", str(exc)) from None
    if plan.scoped:
        admin = services.minio_admin(s3.endpoint_url, *keys)
        for client in plan.clients:
            fresh = manifests.client_secret(plan, client, policies.user_name(namespace, plan.name, client), secrets.token_urlsafe(30))
            values = manifests.secret_values(_ensure(services.cluster, fresh, owner))
            user = policies.ClientUser(values[ACCESS_KEY], values[SECRET_KEY], policies.client_policy(plan, client))
            try:
                policies.grant(admin, user)
            except (MinioAdminException, HTTPError, OSError) as exc:
                raise admin_failure(exc, s3.endpoint_url, f"Secret {namespace}/{s3.admin_secret}") from exc
    _ensure(services.cluster, manifests.config_map(plan), owner)
    store = services.open_store(plan.store_url, endpoint=s3.endpoint_url, access_key=keys[0], secret_key=keys[1], create_bucket=True)
    text = dump_experiment(plan.exp).encode()
    for method in plan.methods:
        store.put_bytes(spec_key(plan.name, method), text)
    jobs = plan.expected_jobs()
    for e in jobs:
        _ensure(services.cluster, manifests.job(plan, e.method, e.client, services.pushgateway), owner)
    secrets_made = f"{counted(len(plan.clients), 'client Secret')} with scoped MinIO users" if plan.scoped else f"shared Secret {s3.credentials_secret}"
    return (
        f"ConfigMap {manifests.config_map_name(plan.name)}, {secrets_made}, {counted(len(jobs), 'Job')} "
        f"({counted(len(plan.methods), 'method')} × {counted(len(plan.clients), 'client')})"
    )


def counted(n: int, noun: str) -> str:
    """``1 method``, ``3 methods``: a count for an Event or condition message."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ensure(cluster: Cluster, obj: dict, owner: Any) -> dict:
    """Create ``obj`` owned by ``owner``; an existing object of that name must be owned by it
    too. One left by a deleted experiment of the same name (garbage collection has not got to
    it yet) is waited for."""
    kopf.adopt(obj, owner=owner)
    existing = cluster.create(obj)
    if existing is None or _owned_by(existing, owner):
        return existing or obj
    what = f"{obj['kind']} {obj['metadata']['name']}"
    refs = existing["metadata"].get("ownerReferences") or ()
    if any((r.get("kind"), r.get("name")) == (owner["kind"], owner["metadata"]["name"]) for r in refs):
        raise kopf.TemporaryError(f"{what} of the deleted experiment of this name is still there; waiting for it to go", delay=WAIT_DELAY)
    raise NameConflict(f"{what} exists already and belongs to something else; rename the experiment or delete it")


def _operator_keys(plan: Plan, namespace: str, cluster: Cluster) -> tuple[str, str]:
    """The operator's own store keys: the MinIO admin's (scoped mode) or the shared ones."""
    s3 = plan.exp.spec.kubernetes.s3
    field_name, secret_name = ("adminSecret", s3.admin_secret) if plan.scoped else ("credentialsSecret", s3.credentials_secret)
    where = f"Secret {namespace}/{secret_name} (spec.kubernetes.s3.{field_name})"
    try:
        secret = cluster.read("Secret", namespace, secret_name)
    except Forbidden as exc:
        raise SecretRefused(f"{where}: the operator may not read it ({exc})") from None
    if secret is None:
        raise CredentialsUnavailable(f"{where} not found")
    refusal = secret_refusal(secret, where)
    if refusal:
        raise SecretRefused(refusal)
    values = manifests.secret_values(secret)
    missing = [k for k in (ACCESS_KEY, SECRET_KEY) if not values.get(k)]
    if missing:
        raise CredentialsUnavailable(f"{where} has no {' or '.join(missing)}")
    return values[ACCESS_KEY], values[SECRET_KEY]


def _operator_store(plan: Plan, namespace: str, services: Services) -> RetryingStore:
    """The store with the operator's keys; a passing hiccup is retried rather than reported."""
    s3 = plan.exp.spec.kubernetes.s3
    access_key, secret_key = _operator_keys(plan, namespace, services.cluster)
    store = services.open_store(plan.store_url, endpoint=s3.endpoint_url, access_key=access_key, secret_key=secret_key)
    return RetryingStore(store, budget_seconds=STORE_RETRY_SECONDS)


def _spec_drift(running: Plan, desired: Plan | None, errors: list[tuple[str, str]]) -> list[Problem]:
    """A refused spec change, as a problem naming the fields."""
    keep = "the Jobs keep the spec they started with; delete and re-create the experiment to change it"
    if desired is None:
        listed = "; ".join(f"{path}: {msg}" for path, msg in errors)
        return [Problem("SpecChangeRefused", f"the changed spec is invalid ({listed}); {keep}")]
    old = running.exp.model_dump(mode="json", by_alias=True)["spec"]
    new = desired.exp.model_dump(mode="json", by_alias=True)["spec"]
    changed = sorted(set(changed_fields(old, new, "spec")) - SAFE_CHANGES)
    if changed:
        return [Problem("SpecChangeRefused", f"{', '.join(changed)} changed while the experiment runs; {keep}")]
    return []


def changed_fields(old: Any, new: Any, path: str) -> list[str]:
    """Paths (``spec.training.learningRate``, ``spec.methods``) where two documents differ;
    lists count as one field."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [p for key in sorted(set(old) | set(new), key=str) for p in changed_fields(old.get(key), new.get(key), f"{path}.{key}")]
    return [] if old == new else [path]


def _observe(plan: Plan, body: Any, services: Services, status: ExperimentStatus, problems: list[Problem], generation: int, now: str) -> ExperimentStatus:
    """Status from the experiment's Jobs and the clients' metrics parts in the store: each
    client's parts listed (names only, at most rounds + 1), the latest one fetched."""
    namespace = body["metadata"]["namespace"]
    jobs = services.cluster.list("Job", namespace, {EXPERIMENT_LABEL: plan.name})
    expected = plan.expected_jobs()
    progress: dict[tuple[str, str], ClientProgress] = {}
    problems = list(problems)
    try:
        store = _operator_store(plan, namespace, services)
        rounds = plan.exp.spec.rounds
        for e in expected:
            where = prefix = metrics_prefix(plan.name, e.method, e.client)
            try:
                done = part_rounds(store.list(prefix, limit=rounds + 1), prefix, rounds)
                if not done:
                    continue
                where = metrics_key(plan.name, e.method, e.client, done[-1])
                data = store.get_bytes(where, max_bytes=MAX_METRICS_BYTES)
                if data is None:  # deleted since it was listed
                    continue
                progress[(e.method, e.client)] = read_progress(done, data)
            except ValueError as exc:  # ObjectTooLarge (over MAX_METRICS_BYTES) is one too
                problems.append(Problem("MetricsUnreadable", f"{where}: {exc}"))
    except (CredentialsUnavailable, StoreError) as exc:
        problems.append(Problem("StoreUnavailable", f"cannot read the clients' metrics: {exc}"))
    return derive_status(
        expected=expected,
        methods=plan.methods,
        rounds=plan.exp.spec.rounds,
        jobs=jobs,
        progress=progress,
        problems=problems,
        previous=status,
        generation=generation,
        now=now,
        adversaries=frozenset(a.client for a in plan.exp.spec.adversaries),
    )


def _publish(body: Any, patch: kopf.Patch, services: Services, previous: ExperimentStatus, status: ExperimentStatus) -> None:
    patch.status.update(status.to_patch())
    for event in transitions(previous, status):
        services.cluster.event(body, event.type, event.reason, event.message)
