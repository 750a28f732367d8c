"""Restart budgets count failures per round reached (p2p_job.restarts)."""

from __future__ import annotations

import pytest

from p2p_job.restarts import CrashLoop, RestartBudget, read_start_record, record_start, write_start_record, StartRecord
from p2p_job.store import DirectoryStore


def test_scattered_failures_are_ridden_out_a_crash_loop_is_not():
    budget = RestartBudget(limit=2)
    # Killed once in each of rounds 3, 5, 6, 9 and twice in round 12: every try allowed.
    assert all(budget.failed(r) for r in (3, 5, 6, 9, 12, 12))
    # A third failure at round 12 is one too many.
    assert not budget.failed(12)


def test_reaching_a_new_round_starts_the_count_afresh():
    budget = RestartBudget(limit=1)
    assert budget.failed(4)
    assert budget.failed(5) and not budget.failed(5)


def test_a_zero_budget_allows_no_restart():
    assert not RestartBudget(limit=0).failed(1)


def test_the_worker_counts_its_starts_per_round_in_the_store(tmp_path):
    store = DirectoryStore(tmp_path)
    assert record_start(store, "exp", "m", "a", 3, limit=2).starts == 1
    assert record_start(store, "exp", "m", "a", 3, limit=2).starts == 2   # 1 failure at round 3
    assert record_start(store, "exp", "m", "a", 3, limit=2).starts == 3   # 2 failures: still allowed
    rec = read_start_record(store, "exp", "m", "a")
    write_start_record(store, "exp", "m", "a", StartRecord(rec.round, rec.starts, "RuntimeError: boom"))
    with pytest.raises(CrashLoop, match=r"round 3 failed 3 times .*maxFailuresPerRound is 2.*RuntimeError: boom"):
        record_start(store, "exp", "m", "a", 3, limit=2)
    # Once the round is done, the next one starts with a clean slate.
    assert record_start(store, "exp", "m", "a", 4, limit=2).starts == 1


def test_a_garbled_start_record_starts_the_count_afresh(tmp_path):
    store = DirectoryStore(tmp_path)
    store.put_bytes("exp/m/checkpoints/a/starts.json", b"{not json")
    assert read_start_record(store, "exp", "m", "a") == StartRecord()
    assert record_start(store, "exp", "m", "a", 1, limit=0).starts == 1
