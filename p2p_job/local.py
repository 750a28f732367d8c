"""``p2pk run``: the experiment on one machine, one OS process per client.

Each client is a ``p2pk worker`` subprocess (``python -m p2p_job.cli worker``) configured
through the worker environment of DESIGN.md, exactly as a Kubernetes Job would be; peers
exchange through a directory store (``<out>/store`` by default) or S3 (``--store s3://…``).

- **Methods** run one after the other: all clients of the first method, then all clients of
  the next. Each method is its own run of the peers on identical shards and seeds, and running
  them in turn keeps one process per client (not per client × method) competing for the cores.
- **Progress** comes from the workers' JSON log lines (``round_end``), which are also kept in
  ``<out>/logs/<method>/<client>.log``.
- **Failures**: a worker that exits non-zero is started again with the same arguments (it
  resumes from its checkpoint) while its :class:`~p2p_job.restarts.RestartBudget` allows:
  ``retries`` failures at the same round (scattered kills over a long run are ridden out, a
  crash loop stops quickly); after that the run stops every worker and fails. A fatal cause (bad spec, data,
  device, a corrupt checkpoint, a refusing store, a crash loop the worker noticed itself: the
  worker's ``FATAL_EXIT_CODES``) is not retried.
- **Stopping**: Ctrl-C or SIGTERM sends SIGTERM to every worker, then SIGKILL after a grace
  period. Workers run in their own session (the terminal's Ctrl-C reaches only the runner) and,
  on Linux, die with the runner if it is killed outright (``PR_SET_PDEATHSIG``): no orphans.
- **Shards** are cut once per experiment, before any worker starts, into the run's store
  (``<experiment>/shards/``, reused while the spec's seed, dataset and scenario stay the same);
  every worker of every method reads only its own (``P2PK_SHARDS=store``).
- **Results**: every client's metrics parts (``metrics/<client>/<r:05d>.parquet``) from the store, written as
  ``results.parquet``, summary and figures by ``p2p_job.results``, as ``p2pk simulate`` does.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from p2p_job.restarts import RestartBudget
from p2p_job.spec import P2PExperiment, resolved_method_name, select_methods
from p2p_job.store import checkpoint_key, open_store
from p2p_job.telemetry import parse_log_line
from p2p_job.worker import FATAL_EXIT_CODES

#: Seconds between SIGTERM and SIGKILL when stopping workers.
GRACE_SECONDS = 10.0
#: Seconds between two looks at the workers.
POLL_SECONDS = 0.2

_PR_SET_PDEATHSIG = 1


class WorkerFailed(RuntimeError):
    """A worker exited non-zero after every restart it was allowed."""


@dataclass
class RunSettings:
    """How ``p2pk run`` starts its workers (flags of the command)."""

    out: Path
    store: str | None = None            # default: file://<out>/store
    s3_endpoint: str | None = None
    metrics_port: int = 0               # first worker's /metrics port, next ones +1; 0 = none
    pushgateway: str | None = None
    device: str | None = None
    retries: int = 3                    # failures per worker at the same round (p2p_job.restarts)
    grace_seconds: float = GRACE_SECONDS

    def store_url(self) -> str:
        return self.store or (self.out.resolve() / "store").as_uri()


@dataclass
class Worker:
    """One worker process and what its log has told so far."""

    method: str
    client: str
    env: dict[str, str]
    log_path: Path
    budget: RestartBudget
    process: subprocess.Popen | None = None
    restarts: int = 0
    last: dict = field(default_factory=dict)  # the latest round_end event
    resumed_from: int = 0                       # rounds already done when it (re)started (worker_start)
    waiting: dict = field(default_factory=dict)  # the latest store_wait event since the last round_end
    failure: str = ""                           # the cause its output last named (worker_failed, or a traceback's last line)

    def round_reached(self) -> int:
        """The round it was working on: one past the last it completed."""
        return max(self.resumed_from, int(self.last.get("round", 0))) + 1

    def cause(self, code: int) -> str:
        """One line: what ended the worker's last run, from its own report."""
        line = self.failure.removeprefix("p2pk worker: ") or f"exited with code {code} and named no cause"
        return f"{self.method}/{self.client}: {line} (exit {code}; log: {self.log_path})"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _follow(worker: Worker, stream) -> None:
    """Copy a worker's output to its log file and keep its latest ``round_end`` event and the
    round it resumed from (``worker_start``), so progress shows rounds done before a restart."""
    with open(worker.log_path, "a", encoding="utf-8") as log:
        for line in stream:
            log.write(line)
            log.flush()
            event = parse_log_line(line)
            if event and event["event"] == "round_end":
                worker.last, worker.waiting = event, {}
            elif event and event["event"] == "store_wait":
                worker.waiting = event
            elif event and event["event"] == "worker_start":
                worker.resumed_from = int(event.get("resume_from", 0))
                worker.failure = ""
            elif event and event["event"] in ("worker_failed", "store_failed"):
                worker.failure = str(event.get("error") or event["event"])
            elif event is None and _TRACEBACK_END.match(line):
                worker.failure = line.strip()


#: The last line of a Python traceback: ``SomeError: message`` (an unexpected failure, exit 1).
_TRACEBACK_END = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


def start_worker(worker: Worker) -> None:
    """Start (or restart) the worker's process and follow its output."""
    worker.log_path.parent.mkdir(parents=True, exist_ok=True)
    worker.process = subprocess.Popen(
        [sys.executable, "-m", "p2p_job.cli", "worker"],
        env=worker.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    threading.Thread(target=_follow, args=(worker, worker.process.stdout), daemon=True).start()


def stop_all(workers: list[Worker], grace_seconds: float) -> None:
    """SIGTERM every running worker, wait up to ``grace_seconds``, then SIGKILL the rest."""
    running = [w.process for w in workers if w.process and w.process.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for p in running:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def worker_env(exp_path: Path, method: str, client: str, index: int, settings: RunSettings, n_clients: int) -> dict[str, str]:
    """The worker environment of DESIGN.md for one client (plus the caller's environment, which
    carries ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``). Each worker gets an equal share
    of the cores for PyTorch's threads unless ``OMP_NUM_THREADS`` is set."""
    env = dict(os.environ)
    env.update({
        "P2PK_SPEC": str(exp_path.resolve()),
        "P2PK_CLIENT": client,
        "P2PK_METHOD": method,
        "P2PK_STORE": settings.store_url(),
        "P2PK_METRICS_PORT": str(settings.metrics_port + index if settings.metrics_port else 0),
        "P2PK_SHARDS": "store",  # cut once by run_local
    })
    optional = {"P2PK_S3_ENDPOINT": settings.s3_endpoint, "P2PK_PUSHGATEWAY": settings.pushgateway,
                "P2PK_DEVICE": settings.device}
    env.update({k: v for k, v in optional.items() if v})
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n_clients)))
    return env


def run_method(exp: P2PExperiment, exp_path: Path, method: str, settings: RunSettings,
               on_tick: Callable[[list[Worker]], None] = lambda workers: None,
               say: Callable[[str], None] = lambda message: None) -> None:
    """All clients of one method as worker processes, until every one is done. A worker that
    exits with a fatal code (``worker.FATAL_EXIT_CODES``) fails the run at once; one that
    exits 1 is restarted (``say`` tells why) while its restart budget allows. Raises
    :class:`WorkerFailed` naming the cause; on any exception (Ctrl-C too) every worker is
    stopped first."""
    clients = [c.name for c in exp.spec.scenario.clients]
    workers = [
        Worker(method, c, worker_env(exp_path, method, c, i, settings, len(clients)),
               settings.out / "logs" / method / f"{c}.log", RestartBudget(settings.retries))
        for i, c in enumerate(clients)
    ]
    try:
        for w in workers:
            start_worker(w)
        say(f"{method}: {len(workers)} worker processes started ({', '.join(clients)}); logs in "
            f"{settings.out / 'logs' / method}")
        while True:
            on_tick(workers)
            codes = {w.client: w.process.poll() for w in workers}
            if all(code == 0 for code in codes.values()):
                say(f"{method}: every worker finished its {exp.spec.rounds} rounds")
                return
            for w in workers:
                code = codes[w.client]
                if code in (None, 0):
                    continue
                if code in FATAL_EXIT_CODES:
                    raise WorkerFailed(f"worker {w.cause(code)}")
                if not w.budget.failed(w.round_reached()):
                    raise WorkerFailed(f"worker {w.cause(code)}, at round {w.round_reached()} after {w.restarts} restart(s)")
                w.restarts += 1
                w.waiting = {}
                say(f"worker {w.cause(code)}; restarting it at round {w.round_reached()} (restart {w.restarts})")
                start_worker(w)
            time.sleep(POLL_SECONDS)
    finally:
        stop_all(workers, settings.grace_seconds)


def collect_results(exp: P2PExperiment, methods: list[str], settings: RunSettings) -> pd.DataFrame:
    """Every client's metrics parts of every method named, as one results frame
    (``p2p_job.collect``, which ``p2pk collect`` uses too)."""
    from p2p_job.collect import store_frame

    return store_frame(open_run_store(settings), exp.name, methods, [c.name for c in exp.spec.scenario.clients])


def open_run_store(settings: RunSettings):
    """The run's store as the runner sees it; creates the S3 bucket when it is missing."""
    return open_store(settings.store_url(), endpoint=settings.s3_endpoint, access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
                      secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"), create_bucket=True)


def rounds_done(exp: P2PExperiment, store) -> dict[str, int]:
    """Per method of the spec: the rounds every client has committed (the least over clients),
    from each client's ``checkpoints/<client>/latest.json`` (the worker's commit point: a metrics
    part past it is written again on a restart); 0 where a client has none or it is unreadable (its
    worker then says why)."""
    from p2p_job.checkpoints import LATEST

    def committed(method: str, client: str) -> int:
        try:
            return int(json.loads(store.get_bytes(checkpoint_key(exp.name, method, client, LATEST)) or b"{}").get("round", 0))
        except (ValueError, TypeError, AttributeError):
            return 0

    return {name: min(committed(name, c.name) for c in exp.spec.scenario.clients)
            for name in (resolved_method_name(m, exp.spec.aggregation.rule) for m in exp.spec.methods)}


def preflight(exp: P2PExperiment, exp_path: Path, settings: RunSettings) -> None:
    """Causes every worker would meet, found here in milliseconds rather than by starting them:
    the device asked for (``DeviceError``), a dataset path that does not exist (``DataError``),
    an S3 store without credentials (``StoreDenied``)."""
    from p2p_job.datasets import DataError, parts
    from p2p_job.store import StoreDenied

    device = settings.device or exp.spec.runtime.device
    if device == "cuda":  # cpu and auto always resolve: the runner imports PyTorch only to check this
        from p2p_job.training import resolve_device

        resolve_device(device)
    for field, path in (("dataset.path", exp.spec.dataset.path), ("dataset.columnNamesFile", exp.spec.dataset.column_names_file)):
        if path and not parts.exists(exp_path.resolve().parent / Path(path).expanduser()):
            raise DataError(f"{field} {path}: no such file or folder (or no file matches the pattern)")
    if settings.store_url().startswith("s3://") and not (
            os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")):
        raise StoreDenied(f"{settings.store_url()}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def run_local(exp: P2PExperiment, exp_path: Path, settings: RunSettings, methods: list[str] | None = None,
              on_tick: Callable[[list[Worker]], None] = lambda workers: None,
              say: Callable[[str], None] = lambda message: None,
              on_notes: Callable[[list[str]], None] = lambda notes: None) -> pd.DataFrame:
    """Check what every worker needs (:func:`preflight`), then run the spec's methods (all, or
    those named) one after the other, skipping any whose every client has already finished
    its rounds in the store (``say`` tells); return the results rows (those methods, and any
    other of the spec the store holds complete) and write them with summary and figures to
    ``settings.out``. The run's choices (``p2p_job.choices``) are said before the workers start,
    handed to ``on_notes`` (the run record) and end ``summary.md``."""
    from p2p_job.choices import data_notes, spec_notes
    from p2p_job.results import write_results
    from p2p_job.scores import collect_kept
    from p2p_job.shards import ensure_shards, read_load_report
    from p2p_job.store import shards_prefix

    names = [resolved_method_name(m, exp.spec.aggregation.rule) for m in select_methods(exp, methods)]
    preflight(exp, exp_path, settings)
    store = open_run_store(settings)  # creates the bucket once, before the workers (whose credentials may not allow it)
    ensure_shards(exp, store, exp_path.resolve().parent)
    notes = spec_notes(exp) + data_notes(read_load_report(store, shards_prefix(exp.name)))
    for note in notes:
        say(note)
    on_notes(notes)
    done = rounds_done(exp, store)
    for name in names:
        if done[name] >= exp.spec.rounds:
            say(f"{name}: every client has finished its {exp.spec.rounds} rounds already (in the store)")
            continue
        run_method(exp, exp_path, name, settings, on_tick, say)
    complete = [n for n, r in done.items() if r >= exp.spec.rounds or n in names]
    frame = collect_results(exp, complete, settings)
    clients = [c.name for c in exp.spec.scenario.clients]
    for name in complete:
        collect_kept(store, exp.name, name, clients, settings.out)
    write_results(frame, settings.out, title=exp.name, notes=notes, say=say)
    return frame
