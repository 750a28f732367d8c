"""The experiment's status: what ``kubectl get p2px`` and ``kubectl describe`` show.

Pure functions from what the operator observes — the experiment's Jobs (one per method and
client) and each client's progress in the store (``p2pk_operator.progress``) — to the status
(DESIGN, "Kubernetes conventions", modelled on Kubeflow's training operator):

- ``phase``: Pending (no Job started yet), Running, Succeeded (every Job succeeded) or Failed
  (every Job finished and one failed, or the spec is invalid);
- ``conditions``: Created, Running, Succeeded, Failed, InvalidSpec and Degraded, each with
  ``status``, ``reason``, ``message`` and a ``lastTransitionTime`` that moves only when the
  status does; a condition appears the first time it is true;
- ``clients``: one entry per (method, client) Job: its state, pod failures, rounds, FNR/FPR;
- ``round``: rounds completed by the slowest and the fastest client, of ``spec.rounds``;
- ``fnr``/``fpr``: the latest rates, mean over honest clients (not those spec.adversaries names), of the spec's first method
  (``methods`` has them per method);
- ``observedGeneration``: the generation this status describes.

A Job that reached Succeeded or Failed keeps that state after ``ttlSecondsAfterFinished``
deletes it; progress keeps its last known values while the store cannot be read.
:func:`transitions` turns the difference between two statuses into Kubernetes Events.

The pydantic models below also generate the CRD's status schema (``p2pk_operator.crd``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from p2pk_operator.progress import ClientProgress

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
JobState = Literal["Pending", "Running", "Succeeded", "Failed", "Missing"]
ConditionType = Literal["Created", "Running", "Succeeded", "Failed", "InvalidSpec", "Degraded"]

#: Phases (and Job states) that never change again.
TERMINAL = ("Succeeded", "Failed")
#: Conditions that are bad news when true (their events are Warnings).
WARNING_CONDITIONS = ("Failed", "InvalidSpec", "Degraded")
#: Conditions in the order they are listed.
_ORDER = list(ConditionType.__args__)
#: Digits kept in the rates shown (printer columns stay readable).
RATE_DIGITS = 4


class StatusModel(BaseModel):
    """camelCase in the API, snake_case in Python; unknown fields of an older status ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Condition(StatusModel):
    """One condition, Kubeflow style."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(description="CamelCase cause, e.g. JobsRunning, InvalidSpec, SpecChangeRefused.")
    message: str = ""
    last_transition_time: str = Field(description="RFC 3339 time the status last changed.")


class RoundProgress(StatusModel):
    """Rounds completed (rounds with metrics in the store), over a set of clients."""

    slowest: int = Field(ge=0, description="Rounds completed by the slowest client.")
    fastest: int = Field(ge=0, description="Rounds completed by the fastest client.")
    total: int = Field(ge=1, description="spec.rounds.")


class ClientStatus(StatusModel):
    """One (method, client) Job."""

    method: str
    client: str
    job: str = Field(description="Job name.")
    state: JobState
    failures: int = Field(0, description="Failed pods so far (each retry resumes from the checkpoint).")
    message: str | None = Field(None, description="Why the Job failed or is missing.")
    rounds: int | None = Field(None, description="Rounds completed.")
    eval: str | None = Field(None, description="Evaluation set of fnr/fpr: global (test set) or local (validation).")
    fnr: float | None = None
    fpr: float | None = None


class MethodStatus(StatusModel):
    """One method's run of the peers."""

    name: str
    round: RoundProgress
    fnr: float | None = Field(None, description="Latest false negative rate, mean over honest clients.")
    fpr: float | None = Field(None, description="Latest false positive rate, mean over honest clients.")


class ExperimentStatus(StatusModel):
    """``status`` of a P2PExperiment (written by the operator)."""

    phase: Phase | None = None
    observed_generation: int | None = Field(None, description="metadata.generation this status describes.")
    ready_clients: str | None = Field(None, description="Clients whose Jobs are all running or succeeded / clients.")
    round: RoundProgress | None = None
    fnr: float | None = Field(None, description="Latest false negative rate, mean over honest clients, of the first method.")
    fpr: float | None = Field(None, description="Latest false positive rate, mean over honest clients, of the first method.")
    methods: list[MethodStatus] | None = None
    clients: list[ClientStatus] | None = None
    conditions: list[Condition] | None = None
    start_time: str | None = Field(None, description="When the operator created the experiment's Jobs.")
    completion_time: str | None = Field(None, description="When the phase became Succeeded or Failed.")

    def condition(self, type: ConditionType) -> Condition | None:
        return next((c for c in self.conditions or () if c.type == type), None)

    def is_true(self, type: ConditionType) -> bool:
        cond = self.condition(type)
        return cond is not None and cond.status == "True"

    def to_patch(self) -> dict:
        """The status as a JSON merge patch: every top-level field, null where absent (so a merge
        removes it); nested objects without their null fields."""
        present = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {f.alias: present.get(f.alias) for f in type(self).model_fields.values()}


@dataclass(frozen=True)
class Problem:
    """Something that makes a running experiment Degraded (reason is CamelCase)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the experiment."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class ExpectedJob:
    method: str
    client: str
    job: str


def needs_observation(body: Any) -> bool:
    """Whether the periodic observation should re-derive this experiment's status: it was
    created (its Jobs exist), has not finished at its current generation, and is not being
    deleted."""
    if body["metadata"].get("deletionTimestamp"):
        return False
    status = ExperimentStatus.model_validate(body.get("status") or {})
    finished = status.phase in TERMINAL and status.observed_generation == body["metadata"].get("generation")
    return status.is_true("Created") and not finished


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(status: ExperimentStatus, type: ConditionType, value: bool, reason: str, message: str, now: str) -> ExperimentStatus:
    """``status`` with condition ``type`` set; its transition time moves only when its status
    does. A condition that never was true is not added as false."""
    new_status = "True" if value else "False"
    old = status.condition(type)
    if old is None and not value:
        return status
    moved = old is None or old.status != new_status
    cond = Condition(type=type, status=new_status, reason=reason, message=message, last_transition_time=now if moved else old.last_transition_time)
    others = [c for c in status.conditions or () if c.type != type]
    return status.model_copy(update={"conditions": sorted([*others, cond], key=lambda c: _ORDER.index(c.type))})


def job_state(job: dict) -> tuple[JobState, str | None, int]:
    """A Job's (state, failure message, failed pods) from its ``status``: its Complete/Failed
    condition when finished, else Running once a pod is ready (``status.ready``), else Pending."""
    status = job.get("status") or {}
    failures = int(status.get("failed") or 0)
    for cond in status.get("conditions") or ():
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "Succeeded", None, failures
        if cond.get("type") == "Failed":
            return "Failed", ": ".join(filter(None, (cond.get("reason"), cond.get("message")))) or "failed", failures
    if status.get("ready"):
        return "Running", None, failures
    return "Pending", None, failures


def invalid_status(previous: ExperimentStatus, errors: list[tuple[str, str]], generation: int, now: str) -> ExperimentStatus:
    """Phase Failed with the InvalidSpec condition listing every error by field path."""
    message = "; ".join(f"{path}: {msg}" for path, msg in errors)
    status = previous.model_copy(update={"phase": "Failed", "observed_generation": generation})
    return set_condition(status, "InvalidSpec", True, "InvalidSpec", message, now)


def derive_status(
    *,
    expected: list[ExpectedJob],
    methods: list[str],
    rounds: int,
    jobs: list[dict],
    progress: dict[tuple[str, str], ClientProgress],
    problems: list[Problem],
    previous: ExperimentStatus,
    generation: int,
    now: str,
    adversaries: frozenset[str] = frozenset(),
) -> ExperimentStatus:
    """The status from the observed Jobs (matched by name) and progress (by (method, client)).
    Rates are means over honest clients: those ``adversaries`` names (``spec.adversaries``) are
    left out of them.

    ``problems`` are found by the caller (unreadable metrics, a refused spec change) and make
    the Degraded condition true together with failed Jobs of a still running experiment and
    Jobs that are missing.
    """
    observed = {job["metadata"]["name"]: job for job in jobs}
    before = {(c.method, c.client): c for c in previous.clients or ()}
    clients = [_client_status(e, observed.get(e.job), before.get((e.method, e.client)), progress.get((e.method, e.client))) for e in expected]

    states = [c.state for c in clients]
    if all(s == "Succeeded" for s in states):
        phase: Phase = "Succeeded"
    elif all(s in TERMINAL for s in states):
        phase = "Failed"
    elif any(s in ("Running", *TERMINAL) for s in states):
        phase = "Running"
    else:
        phase = "Pending"

    by_client: dict[str, list[str]] = {}
    for c in clients:
        by_client.setdefault(c.client, []).append(c.state)
    ready = sum(all(s in ("Running", "Succeeded") for s in ss) for ss in by_client.values())

    per_method = [_method_status(m, [c for c in clients if c.method == m], rounds, adversaries) for m in methods]
    status = previous.model_copy(
        update={
            "phase": phase,
            "observed_generation": generation,
            "ready_clients": f"{ready}/{len(by_client)}",
            "round": _round(clients, rounds),
            "fnr": per_method[0].fnr,
            "fpr": per_method[0].fpr,
            "methods": per_method,
            "clients": clients,
            "start_time": previous.start_time or now,
            "completion_time": previous.completion_time or (now if phase in TERMINAL else None),
        }
    )

    failed = [c for c in clients if c.state == "Failed"]
    failed_text = "; ".join(f"{c.job}: {c.message}" for c in failed)
    running = sum(s == "Running" for s in states)
    status = set_condition(status, "Running", phase == "Running", "JobsRunning" if phase == "Running" else f"Jobs{phase}",
                           f"{running} of {len(states)} Jobs running", now)
    status = set_condition(status, "Succeeded", phase == "Succeeded", "JobsSucceeded", f"all {len(states)} Jobs succeeded", now)
    status = set_condition(status, "Failed", phase == "Failed", "JobsFailed", f"{len(failed)} of {len(states)} Jobs failed: {failed_text}", now)

    degraded = list(problems)
    if failed and phase not in TERMINAL:
        degraded.append(Problem("JobsFailed", f"the other clients go on without them: {failed_text}"))
    missing = [c.job for c in clients if c.state == "Missing"]
    if missing:
        degraded.append(Problem("JobsMissing", f"Jobs deleted before they finished: {', '.join(missing)}"))
    if degraded:
        return set_condition(status, "Degraded", True, degraded[0].reason, "; ".join(p.message for p in degraded), now)
    return set_condition(status, "Degraded", False, "Healthy", "", now)


def _client_status(e: ExpectedJob, job: dict | None, before: ClientStatus | None, progress: ClientProgress | None) -> ClientStatus:
    if job is not None:
        state, message, failures = job_state(job)
    elif before is not None and before.state in TERMINAL:
        state, message, failures = before.state, before.message, before.failures  # deleted by its TTL
    else:
        state, message, failures = "Missing", "Job not found", before.failures if before else 0
    if progress is not None:
        measured = {"rounds": progress.rounds, "eval": progress.eval, "fnr": _rate(progress.fnr), "fpr": _rate(progress.fpr)}
    elif before is not None:
        measured = {"rounds": before.rounds, "eval": before.eval, "fnr": before.fnr, "fpr": before.fpr}
    else:
        measured = {}
    return ClientStatus(method=e.method, client=e.client, job=e.job, state=state, failures=failures, message=message, **measured)


def _method_status(method: str, clients: list[ClientStatus], rounds: int, adversaries: frozenset[str]) -> MethodStatus:
    honest = [c for c in clients if c.client not in adversaries]
    return MethodStatus(name=method, round=_round(clients, rounds), fnr=_mean([c.fnr for c in honest]), fpr=_mean([c.fpr for c in honest]))


def _round(clients: list[ClientStatus], total: int) -> RoundProgress:
    done = [c.rounds or 0 for c in clients]
    return RoundProgress(slowest=min(done), fastest=max(done), total=total)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return _rate(sum(known) / len(known)) if known else None


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, RATE_DIGITS)


def transitions(previous: ExperimentStatus, new: ExperimentStatus) -> list[Event]:
    """One Event per condition that became true or changed status or reason, and one per Job
    that failed since ``previous``."""
    events = []
    for cond in new.conditions or ():
        old = previous.condition(cond.type)
        if (old is None and cond.status != "True") or (old is not None and (old.status, old.reason) == (cond.status, cond.reason)):
            continue
        kind = "Warning" if cond.type in WARNING_CONDITIONS and cond.status == "True" else "Normal"
        events.append(Event(kind, cond.reason, cond.message or f"{cond.type} is {cond.status}"))
    was = {(c.method, c.client): c.state for c in previous.clients or ()}
    for c in new.clients or ():
        if c.state == "Failed" and was.get((c.method, c.client)) != "Failed":
            events.append(Event("Warning", "JobFailed", f"Job {c.job} (method {c.method}, client {c.client}) failed: {c.message}"))
    return events
