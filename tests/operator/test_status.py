"""Observed Jobs and progress → status, conditions and events (pure functions)."""

from __future__ import annotations

import pytest

from p2pk_operator.progress import ClientProgress
from p2pk_operator.status import (
    Event,
    ExpectedJob,
    ExperimentStatus,
    Problem,
    derive_status,
    invalid_status,
    job_state,
    set_condition,
    transitions,
)

T0, T1, T2 = "2024-05-01T10:00:00Z", "2024-05-01T10:01:00Z", "2024-05-01T10:02:00Z"
METHODS = ["ksmote", "none"]
EXPECTED = [ExpectedJob(m, c, f"exp-{m}-{c}") for m in METHODS for c in ("a", "b")]

PENDING = {"active": 1}
RUNNING = {"active": 1, "ready": 1}
SUCCEEDED = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
FAILED = {"failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}


def jobs(**states: dict) -> list[dict]:
    """Jobs by name suffix: jobs(ksmote_a=RUNNING, ...); the others absent."""
    return [{"metadata": {"name": "exp-" + key.replace("_", "-")}, "status": status} for key, status in states.items()]


def observe(job_list, previous=None, progress=None, problems=(), now=T1) -> ExperimentStatus:
    return derive_status(
        expected=EXPECTED, methods=METHODS, rounds=10, jobs=job_list, progress=progress or {},
        problems=list(problems), previous=previous or ExperimentStatus(), generation=1, now=now,
    )


@pytest.mark.parametrize(
    "status, expected",
    [
        ({}, ("Pending", None, 0)),
        (PENDING, ("Pending", None, 0)),  # a pod exists but is not ready (scheduling, pulling)
        (RUNNING, ("Running", None, 0)),
        ({"active": 1, "ready": 1, "failed": 2}, ("Running", None, 2)),  # third pod, resumed
        (SUCCEEDED, ("Succeeded", None, 0)),
        (FAILED, ("Failed", "BackoffLimitExceeded: Job has reached the specified backoff limit", 4)),
        ({"conditions": [{"type": "Failed", "status": "False"}], "active": 1}, ("Pending", None, 0)),
    ],
)
def test_job_state(status, expected):
    assert job_state({"metadata": {"name": "j"}, "status": status}) == expected


def test_rates_are_means_over_honest_clients_but_rounds_count_everyone():
    progress = {("ksmote", "a"): ClientProgress(3, 3, "global", 0.2, 0.01), ("ksmote", "b"): ClientProgress(1, 1, "global", 1.0, 0.5)}
    status = derive_status(
        expected=EXPECTED, methods=METHODS, rounds=10, jobs=jobs(ksmote_a=RUNNING, ksmote_b=RUNNING), progress=progress,
        problems=[], previous=ExperimentStatus(), generation=1, now=T1, adversaries=frozenset({"b"}),
    )
    assert (status.fnr, status.fpr) == (0.2, 0.01)  # b, the adversary, is left out of the rates
    assert status.methods[0].round.slowest == 1 and [c.fnr for c in status.clients[:2]] == [0.2, 1.0]


def test_nothing_started_is_pending_and_adds_no_false_conditions():
    status = observe(jobs(ksmote_a=PENDING, ksmote_b=PENDING, none_a=PENDING, none_b=PENDING))
    assert (status.phase, status.ready_clients, status.conditions) == ("Pending", "0/2", None)
    assert [c.state for c in status.clients] == ["Pending"] * 4
    assert status.start_time == T1 and status.completion_time is None


def test_running_with_progress_rounds_and_mean_rates():
    progress = {
        ("ksmote", "a"): ClientProgress(3, 3, "global", 0.2, 0.01),
        ("ksmote", "b"): ClientProgress(2, 2, "global", 0.4, 0.03),
        ("none", "a"): ClientProgress(4, 4, "global", 0.9, 0.0),
    }
    status = observe(jobs(ksmote_a=RUNNING, ksmote_b=RUNNING, none_a=RUNNING, none_b=PENDING), progress=progress)
    assert status.phase == "Running"
    assert status.ready_clients == "1/2"  # b's "none" Job is still pending
    assert (status.round.slowest, status.round.fastest, status.round.total) == (0, 4, 10)  # none/b: nothing yet
    assert (status.fnr, status.fpr) == (0.3, 0.02)  # the first method, ksmote: mean over a and b
    ksmote, none = status.methods
    assert (ksmote.round.slowest, ksmote.round.fastest) == (2, 3)
    assert (none.fnr, none.fpr) == (0.9, 0.0)  # only a has rates
    running = status.condition("Running")
    assert (running.status, running.reason, running.message, running.last_transition_time) == ("True", "JobsRunning", "3 of 4 Jobs running", T1)
    assert status.condition("Degraded") is None


def test_a_failed_job_degrades_a_running_experiment_and_fails_it_at_the_end():
    status = observe(jobs(ksmote_a=FAILED, ksmote_b=RUNNING, none_a=RUNNING, none_b=RUNNING))
    assert status.phase == "Running" and status.ready_clients == "1/2"
    degraded = status.condition("Degraded")
    assert (degraded.status, degraded.reason) == ("True", "JobsFailed")
    assert "exp-ksmote-a: BackoffLimitExceeded" in degraded.message

    done = observe(jobs(ksmote_a=FAILED, ksmote_b=SUCCEEDED, none_a=SUCCEEDED, none_b=SUCCEEDED), previous=status, now=T2)
    assert done.phase == "Failed" and done.completion_time == T2
    failed = done.condition("Failed")
    assert (failed.status, failed.reason, failed.message) == (
        "True", "JobsFailed", "1 of 4 Jobs failed: exp-ksmote-a: BackoffLimitExceeded: Job has reached the specified backoff limit")
    assert done.condition("Running").status == "False" and done.condition("Running").reason == "JobsFailed"
    assert done.condition("Degraded").status == "False"  # a finished experiment is Failed, not Degraded


def test_all_succeeded_and_the_jobs_deleted_by_their_ttl_stay_succeeded():
    running = observe(jobs(ksmote_a=RUNNING, ksmote_b=RUNNING, none_a=RUNNING, none_b=RUNNING), now=T0)
    done = observe(jobs(ksmote_a=SUCCEEDED, ksmote_b=SUCCEEDED, none_a=SUCCEEDED, none_b=SUCCEEDED), previous=running, now=T1)
    assert done.phase == "Succeeded" and done.ready_clients == "2/2"
    assert done.condition("Succeeded").status == "True" and done.condition("Succeeded").message == "all 4 Jobs succeeded"
    later = observe([], previous=done, now=T2)  # ttlSecondsAfterFinished deleted every Job
    assert later.phase == "Succeeded" and [c.state for c in later.clients] == ["Succeeded"] * 4
    assert later.completion_time == T1 and later.start_time == T0
    assert later.condition("Succeeded").last_transition_time == T1


def test_a_job_deleted_before_it_finished_is_missing_and_degrades():
    status = observe(jobs(ksmote_a=RUNNING, ksmote_b=RUNNING, none_a=RUNNING))
    assert status.clients[-1].state == "Missing"
    degraded = status.condition("Degraded")
    assert (degraded.reason, degraded.message) == ("JobsMissing", "Jobs deleted before they finished: exp-none-b")


def test_problems_found_by_the_caller_degrade_and_recover():
    problem = Problem("StoreUnavailable", "cannot read the clients' metrics: connection refused")
    bad = observe(jobs(ksmote_a=RUNNING, ksmote_b=RUNNING, none_a=RUNNING, none_b=RUNNING), problems=[problem], now=T0)
    assert (bad.condition("Degraded").reason, bad.condition("Degraded").message) == (problem.reason, problem.message)
    good = observe(jobs(ksmote_a=RUNNING, ksmote_b=RUNNING, none_a=RUNNING, none_b=RUNNING), previous=bad, now=T1)
    degraded = good.condition("Degraded")
    assert (degraded.status, degraded.reason, degraded.last_transition_time) == ("False", "Healthy", T1)


def test_progress_keeps_its_last_values_while_the_store_cannot_be_read():
    first = observe(jobs(ksmote_a=RUNNING), progress={("ksmote", "a"): ClientProgress(5, 5, "local", 0.1, 0.2)})
    second = observe(jobs(ksmote_a=RUNNING), previous=first, progress={})
    a = second.clients[0]
    assert (a.rounds, a.eval, a.fnr, a.fpr) == (5, "local", 0.1, 0.2)


def test_transition_time_moves_only_when_the_status_does():
    s = set_condition(ExperimentStatus(), "Running", True, "JobsRunning", "1 of 2", T0)
    s = set_condition(s, "Running", True, "JobsRunning", "2 of 2", T1)
    assert (s.condition("Running").message, s.condition("Running").last_transition_time) == ("2 of 2", T0)
    s = set_condition(s, "Running", False, "JobsSucceeded", "", T2)
    assert s.condition("Running").last_transition_time == T2
    assert set_condition(ExperimentStatus(), "Degraded", False, "Healthy", "", T0).conditions is None


def test_invalid_spec_status_lists_every_field():
    status = invalid_status(ExperimentStatus(), [("spec.topology", "degree too large"), ("spec.rounds", "too small")], 3, T0)
    assert (status.phase, status.observed_generation) == ("Failed", 3)
    cond = status.condition("InvalidSpec")
    assert (cond.status, cond.reason, cond.message) == ("True", "InvalidSpec", "spec.topology: degree too large; spec.rounds: too small")


def test_events_for_each_transition():
    created = set_condition(ExperimentStatus(), "Created", True, "ResourcesCreated", "6 Jobs", T0)
    running = observe(jobs(ksmote_a=RUNNING, ksmote_b=RUNNING, none_a=RUNNING, none_b=RUNNING), previous=created)
    assert transitions(ExperimentStatus(), created) == [Event("Normal", "ResourcesCreated", "6 Jobs")]
    assert transitions(created, running) == [Event("Normal", "JobsRunning", "4 of 4 Jobs running")]
    assert transitions(running, running) == []  # nothing changed, nothing posted
    degraded = observe(jobs(ksmote_a=FAILED, ksmote_b=RUNNING, none_a=RUNNING, none_b=RUNNING), previous=running)
    assert [(e.type, e.reason) for e in transitions(running, degraded)] == [("Warning", "JobsFailed"), ("Warning", "JobFailed")]
    done = observe(jobs(ksmote_a=FAILED, ksmote_b=SUCCEEDED, none_a=SUCCEEDED, none_b=SUCCEEDED), previous=degraded)
    assert [(e.type, e.reason) for e in transitions(degraded, done)] == [
        ("Normal", "JobsFailed"),  # Running → False
        ("Warning", "JobsFailed"),  # Failed → True
        ("Normal", "Healthy"),  # Degraded → False
    ]


def test_status_patch_removes_absent_fields_and_nested_nulls():
    patch = observe(jobs(ksmote_a=RUNNING)).to_patch()
    assert patch["completionTime"] is None and patch["fnr"] is None  # removed by the merge patch
    assert "fnr" not in patch["clients"][0] and patch["clients"][0]["state"] == "Running"
    assert patch["observedGeneration"] == 1
