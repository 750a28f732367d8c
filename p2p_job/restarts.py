"""Restart budgets that mean something: failures are counted per round reached.

A worker resumes from its checkpoint, so a restart costs at most the round in progress. What a
runner must stop is a worker that fails again and again at the same point (a crash loop), not
one that was killed a few times over a long run on preemptible machines. A budget therefore
counts the failures at the round a worker was working on; reaching a new round starts the
count afresh.

One rule, used in two places:

* ``p2pk run`` keeps a :class:`RestartBudget` per worker process and restarts a failed worker
  while the budget allows (``--retries``, failures per round);
* the worker itself keeps its count in the store (:func:`record_start`), because a Kubernetes
  Job counts every pod failure against ``backoffLimit`` since the Job began: a worker that finds
  it has already failed ``runtime.maxFailuresPerRound`` times at the round it is about to
  start stops for good with exit code 2 (the Job's ``podFailurePolicy`` fails the Job at once),
  naming the round and the last error it recorded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from p2p_job.store import Store, checkpoint_key

#: ``checkpoints/<client>/<START_RECORD>``: the worker's own count of starts at one round.
START_RECORD = "starts.json"


@dataclass
class RestartBudget:
    """At most ``limit`` failures while working on the same round (``round`` = the round the
    worker was on when it failed: one past the last it completed)."""

    limit: int
    round: int = 0
    failures: int = 0

    def failed(self, round: int) -> bool:
        """Count a failure at ``round``; True while another try is allowed."""
        if round != self.round:
            self.round, self.failures = round, 0
        self.failures += 1
        return self.failures <= self.limit


@dataclass
class StartRecord:
    """What a worker keeps under its checkpoints: how many times it started ``round`` without
    finishing it, and the last error it could record before dying (empty when it was killed)."""

    round: int = 0
    starts: int = 0
    last_error: str = ""


class CrashLoop(RuntimeError):
    """This worker failed at the same round more often than ``runtime.maxFailuresPerRound``."""


def read_start_record(store: Store, experiment: str, method: str, client: str) -> StartRecord:
    raw = store.get_bytes(checkpoint_key(experiment, method, client, START_RECORD), max_bytes=64 * 1024)
    if raw is None:
        return StartRecord()
    try:
        data = json.loads(raw)
        return StartRecord(round=int(data["round"]), starts=int(data["starts"]), last_error=str(data.get("last_error", "")))
    except (ValueError, KeyError, TypeError):
        return StartRecord()  # the worker's own bookkeeping, not its model: start counting afresh


def write_start_record(store: Store, experiment: str, method: str, client: str, record: StartRecord) -> None:
    store.put_bytes(checkpoint_key(experiment, method, client, START_RECORD), json.dumps(asdict(record)).encode())


def record_start(store: Store, experiment: str, method: str, client: str, round: int, limit: int) -> StartRecord:
    """Count a start at ``round`` (one past the checkpoint). Each earlier start at the same round
    that did not get past it was a failure; past ``limit`` of them this raises :class:`CrashLoop`."""
    previous = read_start_record(store, experiment, method, client)
    budget = RestartBudget(limit)
    if previous.round == round:
        for _ in range(previous.starts):
            if not budget.failed(round):
                cause = f"; last error: {previous.last_error}" if previous.last_error else " (killed or crashed without a word)"
                raise CrashLoop(f"round {round} failed {previous.starts} times "
                                f"(runtime.maxFailuresPerRound is {limit}){cause}")
    record = StartRecord(round=round, starts=(previous.starts if previous.round == round else 0) + 1,
                         last_error=previous.last_error if previous.round == round else "")
    write_start_record(store, experiment, method, client, record)
    return record
