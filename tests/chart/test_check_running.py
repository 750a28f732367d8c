"""The `helm test` hook's check (charts/p2pk/files/check_running.py), driven with scripted
experiment statuses and a fake clock: no cluster, no sleeping."""

from __future__ import annotations

import importlib.util

import pytest

from helmchart import CHART

spec = importlib.util.spec_from_file_location("check_running", CHART / "files" / "check_running.py")
check_running = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_running)


class Cluster:
    """Scripted statuses: each experiment walks through its list, one step per poll, then stays."""

    def __init__(self, script: dict[str, list[dict]]):
        self.script = script
        self.polls = {name: 0 for name in script}
        self.now = 0.0

    def get_status(self, name: str) -> dict:
        steps = self.script[name]
        status = steps[min(self.polls[name], len(steps) - 1)]
        self.polls[name] += 1
        return status

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def wait(self, names, timeout=60.0):
        return check_running.wait_until_running(
            self.get_status, names, timeout, sleep=self.sleep, clock=lambda: self.now, poll=5.0
        )


def test_passes_once_every_experiment_is_running_or_done():
    cluster = Cluster({
        "a": [{}, {"phase": "Created"}, {"phase": "Running"}],
        "b": [{"phase": "Succeeded"}],
    })
    assert cluster.wait(["a", "b"]) == []
    # a was polled until Running (3 polls); b passed on its first poll and was not asked again.
    assert cluster.polls == {"a": 3, "b": 1}
    assert cluster.now == 10.0


def test_fails_at_once_on_invalid_spec_with_the_condition_message():
    cluster = Cluster({
        "a": [{"phase": "Running"}],
        "b": [{"phase": "Created"}, {"phase": "InvalidSpec", "conditions": [
            {"type": "Created", "status": "True"},
            {"type": "InvalidSpec", "status": "True", "message": "spec.rounds: Input should be greater than or equal to 1"},
        ]}],
    })
    assert cluster.wait(["a", "b"]) == ["b: InvalidSpec: spec.rounds: Input should be greater than or equal to 1"]
    assert cluster.now == 5.0


def test_failed_without_a_condition_message_names_the_phase():
    assert Cluster({"a": [{"phase": "Failed"}]}).wait(["a"]) == ["a: Failed: Failed"]


@pytest.mark.parametrize("timeout, polls", [(0.0, 1), (12.0, 4)])
def test_deadline_reports_each_experiment_still_waiting(timeout, polls):
    cluster = Cluster({"a": [{"phase": "Created"}], "b": [{}], "c": [{"phase": "Running"}]})
    assert cluster.wait(["a", "b", "c"], timeout=timeout) == [
        f"a: not Running after {timeout:g} s (phase: Created)",
        f"b: not Running after {timeout:g} s (phase: none yet)",
    ]
    assert cluster.polls == {"a": polls, "b": polls, "c": 1}
