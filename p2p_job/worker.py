"""``p2pk worker``: one peer (one client of one method) as its own process.

The local runner (``p2pk run``) and the Kubernetes Jobs both run exactly this. It drives
:class:`p2p_job.peer.Peer` — the round logic written once — against a
:class:`~p2p_job.store_exchange.StoreExchange`, and after every round:

1. writes the round's rows as ``metrics/<client>/<r:05d>.parquet`` (results schema; one part
   per round, never rewritten, so the cost is the same at round 300 as at round 1), and keeps its
   scores (``scores/<client>/<r>.parquet`` at the rounds ``evaluation.scoresEvery`` picks) and,
   after the last round, its model (``models/<client>.safetensors``; ``p2p_job.scores``),
2. saves a checkpoint (``p2p_job.checkpoints``),
3. pushes its metrics to the Pushgateway (when given) and logs a ``round_end`` JSON line.

Restarted with the same arguments, a worker restores its last checkpoint and continues with the
next round; a metrics part of a later round (written before a crash that came ahead of the
checkpoint) is written again when that round is done again, under the same key, so every round
has exactly one part. Its publication of that
round is not re-written (see ``p2p_job.store_exchange``), so no neighbour ever sees two
versions of one round, and on the CPU the re-done round is bit-identical anyway.

Configuration comes from the worker environment of DESIGN.md (``P2PK_*``), overridden by flags.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from p2p_job.store import (Store, StoreDenied, StoreError, metrics_key, metrics_prefix, metrics_round, model_key, scores_key,
                           spec_key)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs; see :func:`config_from_env` for the environment names."""

    spec: Path
    client: str
    store: str
    method: str | None = None           # resolved method name; default: the spec's first method
    s3_endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    metrics_port: int | None = None     # 0: do not serve /metrics; default spec.runtime.metricsPort (9400)
    pushgateway: str | None = None
    device: str | None = None           # overrides spec.runtime.device
    shards: str | None = None           # "store" or a shards folder (default spec.dataset.shards): see _client_shard
    linger_seconds: float = 0.0         # keep serving /metrics this long after the last round


#: Worker environment variable → WorkerConfig field.
ENVIRONMENT = {
    "P2PK_SPEC": "spec",
    "P2PK_CLIENT": "client",
    "P2PK_STORE": "store",
    "P2PK_METHOD": "method",
    "P2PK_S3_ENDPOINT": "s3_endpoint",
    "AWS_ACCESS_KEY_ID": "access_key",
    "AWS_SECRET_ACCESS_KEY": "secret_key",
    "P2PK_METRICS_PORT": "metrics_port",
    "P2PK_PUSHGATEWAY": "pushgateway",
    "P2PK_DEVICE": "device",
    "P2PK_SHARDS": "shards",
}


class ConfigError(ValueError):
    """A missing or malformed worker setting (names the variable or flag)."""


def config_from(env: Mapping[str, str], overrides: Mapping[str, object]) -> WorkerConfig:
    """Build the configuration from the environment, then the flags (``overrides``, by field
    name; ``None`` means "not given")."""
    values: dict[str, object] = {field: env[var] for var, field in ENVIRONMENT.items() if env.get(var)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    missing = [f"{var} / --{field.replace('_', '-')}" for var, field in ENVIRONMENT.items()
               if field in ("spec", "client", "store") and field not in values]
    if missing:
        raise ConfigError(f"worker setting(s) missing: {', '.join(missing)}")
    if "metrics_port" in values:
        try:
            values["metrics_port"] = int(values["metrics_port"])
        except ValueError:
            raise ConfigError(f"P2PK_METRICS_PORT must be an integer, got {values['metrics_port']!r}") from None
        if not 0 <= values["metrics_port"] <= 65535:
            raise ConfigError(f"P2PK_METRICS_PORT must be 0..65535, got {values['metrics_port']}")
    values["spec"] = Path(values["spec"])
    return WorkerConfig(**values)


# --------------------------------------------------------------------------- metrics parts

#: Parts of one client read at once (store calls wait on I/O: S3 round trips, file reads).
READ_THREADS = 8


def metrics_tables(store: Store, experiment: str, method: str, client: str) -> list:
    """A client's metrics parts (``metrics/<client>/<r:05d>.parquet``) as Arrow tables of the
    results schema, in round order (none when it has none yet); other names under its prefix
    are not read."""
    from concurrent.futures import ThreadPoolExecutor

    from p2p_job.results import decode_table

    prefix = metrics_prefix(experiment, method, client)
    keys = [key for key in store.list(prefix) if metrics_round(key, prefix) is not None]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        parts = list(pool.map(store.get_bytes, keys))
    return [decode_table(data) for data in parts if data is not None]


def read_metrics(store: Store, experiment: str, method: str, client: str) -> list[dict]:
    """A client's rows from its metrics parts, in round order (empty when it has none yet)."""
    return [row for table in metrics_tables(store, experiment, method, client) for row in table.to_pylist()]


# --------------------------------------------------------------------------- the worker


#: Where this process counted its start (``p2p_job.restarts``), so that :func:`main` can note
#: why it ended: the error of a failure, or that a stop was not a failure at all.
_started: dict = {}


def _note_end(error: str | None) -> None:
    """Best effort: record the error that ends this start (the next start names it if the round
    keeps failing), or take the start back when the worker was only stopped (SIGTERM, Ctrl-C)."""
    from p2p_job.restarts import StartRecord, write_start_record

    if not _started:
        return
    record: StartRecord = _started["record"]
    if error is None:
        record = StartRecord(record.round, record.starts - 1, record.last_error)
    else:
        record = StartRecord(record.round, record.starts, error[:2000])
    try:
        write_start_record(_started["store"], _started["experiment"], _started["method"], _started["client"], record)
    except StoreError:
        pass


def _terminate(signum, frame):
    """SIGTERM (Kubernetes, ``p2pk run``): leave through ``finally`` blocks like Ctrl-C does."""
    raise SystemExit(128 + signum)


def run_worker(cfg: WorkerConfig) -> int:
    """Run the peer's remaining rounds; 0 when the experiment's last round is done."""
    import torch

    from p2p_job.checkpoints import Checkpoints
    from p2p_job.payloads import state_layout
    from p2p_job.peer import Peer, neighbourhoods
    from p2p_job.restarts import record_start
    from p2p_job.results import decode_rows, encode_rows
    from p2p_job.scores import keep_round
    from p2p_job.spec import dump_experiment, load_experiment, resolved_method_name, select_methods
    from p2p_job.store import RetryingStore, open_store
    from p2p_job.store_exchange import StoreExchange
    from p2p_job.telemetry import Telemetry
    from p2p_job.training import resolve_device

    exp = load_experiment(cfg.spec)
    spec = exp.spec
    try:
        method = select_methods(exp, [cfg.method] if cfg.method else None)[0]
    except ValueError as exc:
        raise ConfigError(f"{cfg.spec}: P2PK_METHOD / --method: {exc}") from None
    method_name = resolved_method_name(method, spec.aggregation.rule)
    clients = [c.name for c in spec.scenario.clients]
    if cfg.client not in clients:
        raise ConfigError(f"{cfg.spec}: no client {cfg.client!r} in the scenario (clients: {clients})")
    neighbours = neighbourhoods(exp, method, clients)[cfg.client]
    device = resolve_device(cfg.device or spec.runtime.device)

    telemetry = Telemetry(exp.name, method_name, cfg.client, pushgateway=cfg.pushgateway or spec.runtime.pushgateway)
    store = RetryingStore(open_store(cfg.store, endpoint=cfg.s3_endpoint, access_key=cfg.access_key,
                                     secret_key=cfg.secret_key),
                          budget_seconds=spec.runtime.store_retry_seconds, on_wait=telemetry.store_waiting)
    shard, feature_names = _client_shard(exp, cfg, store)
    port = spec.runtime.metrics_port if cfg.metrics_port is None else cfg.metrics_port
    if port:
        telemetry.serve(port)
    _check_spec(store, exp.name, method_name, dump_experiment(exp))

    peer = Peer(exp, method, shard, neighbours, device, observer=telemetry)
    exchange = StoreExchange(
        store, experiment=exp.name, method=method_name, client=cfg.client, feature_names=feature_names,
        layout=state_layout(peer.w0), max_payload_bytes=int(spec.runtime.max_payload_mb * 2**20),
        timeout=spec.runtime.round_timeout_seconds, max_points=peer.point_caps, on_bytes=telemetry.moved_bytes,
    )
    done = 0
    checkpoints = Checkpoints(store, exp.name, method_name, cfg.client)
    checkpoint = checkpoints.load()
    if checkpoint is not None:
        done, state = checkpoint
        peer.restore(state)
    if done < spec.rounds:
        _started.update(store=store, experiment=exp.name, method=method_name, client=cfg.client,
                        record=record_start(store, exp.name, method_name, cfg.client, done + 1,
                                            spec.runtime.max_failures_per_round))
    last_part = store.get_bytes(metrics_key(exp.name, method_name, cfg.client, done)) if done else None
    if last_part is not None:
        telemetry.set_gauges(decode_rows(last_part))
    log.info("worker_start", extra={"fields": {
        "experiment": exp.name, "method": method_name, "client": cfg.client, "rounds": spec.rounds,
        "resume_from": done, "neighbours": neighbours, "store": repr(store.store), "device": str(device),
        "torch_threads": torch.get_num_threads(), "pid": os.getpid()}})
    try:
        for r in range(done + 1, spec.rounds + 1):
            peer.train_and_publish(r, exchange)
            record = peer.merge_and_evaluate(r, exchange)
            store.put_bytes(metrics_key(exp.name, method_name, cfg.client, r), encode_rows(record.rows()))
            keep_round(peer, r,
                       lambda data: store.put_bytes(scores_key(exp.name, method_name, cfg.client, r), data),
                       lambda data: store.put_bytes(model_key(exp.name, method_name, cfg.client), data))
            checkpoints.save(r, peer.state())
            telemetry.push()
            log.info("round_end", extra={"fields": _round_fields(record, store, checkpoints.last_bytes)})
        log.info("worker_done", extra={"fields": {"rounds": spec.rounds, "store_seconds": round(store.seconds, 3)}})
        _linger(cfg.linger_seconds)
    finally:
        telemetry.push()
    return 0


def _client_shard(exp, cfg: WorkerConfig, store: Store):
    """This client's shard and the feature names. From ``P2PK_SHARDS``/``--shards``, else
    ``spec.dataset.shards``: ``store`` reads only ``<experiment>/shards/<client>/`` of the
    run's store, a folder only ``<client>/`` of it (both checked against this spec's
    fingerprint); unset, the shards are cut from the dataset like every other runner does
    (``build_shards`` is deterministic in the seed; the spec's folder resolves dataset paths)."""
    from p2p_job.shards import fingerprint, read_client_shard
    from p2p_job.store import shards_prefix

    source = cfg.shards or exp.spec.dataset.shards
    if source == "store":
        return read_client_shard(store, cfg.client, shards_prefix(exp.name), fingerprint=fingerprint(exp))
    if source:
        return read_client_shard(cfg.spec.resolve().parent / source, cfg.client, fingerprint=fingerprint(exp))
    from p2p_job.scenarios import build_shards

    shards = build_shards(exp, cfg.spec.resolve().parent)
    return shards.clients[cfg.client], shards.feature_names


def _check_spec(store: Store, experiment: str, method: str, text: str) -> None:
    """``spec.yaml`` as submitted, written by whichever worker comes first; a store that holds
    a different spec under the same experiment name is refused (its checkpoints and rounds
    belong to that other experiment). Scoped credentials may forbid touching it (a client
    writes only its own names): then it is the operator's job."""
    key = spec_key(experiment, method)
    try:
        stored = store.get_bytes(key)
        if stored is None:
            store.put_bytes(key, text.encode("utf-8"))
            return
    except StoreDenied as exc:
        log.info("spec_not_checked", extra={"fields": {"key": key, "error": str(exc)}})
        return
    if stored.decode("utf-8", errors="replace") != text:
        raise ConfigError(f"{store}: {key} holds a different experiment named {experiment!r}; "
                          "use another store (or --out), or delete that experiment's folder first")


def _round_fields(record, store, checkpoint_bytes: int) -> dict:
    """The ``round_end`` log line: what ``p2pk run`` shows, the store's running totals and the
    bytes of this round's checkpoint."""
    eval_set = "global" if "global" in record.metrics else "local"
    return {
        "round": record.round, "method": record.method, "client": record.client, "eval": eval_set,
        "fnr": record.metrics[eval_set]["fnr"], "fpr": record.metrics[eval_set]["fpr"],
        "train_loss": record.train_loss, "round_seconds": round(record.round_seconds, 3),
        "neighbours_used": record.neighbours_used, "neighbours_missing": record.neighbours_missing,
        "payloads_rejected": record.payloads_rejected, "points_rejected": record.points_rejected, "store_seconds": round(store.seconds, 3),
        "bytes_written": store.bytes_written, "bytes_read": store.bytes_read, "checkpoint_bytes": checkpoint_bytes,
    }


def _linger(seconds: float) -> None:
    """Keep the process (and its /metrics server) alive for a final scrape; SIGTERM ends it."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))


#: Exit codes of ``p2pk worker`` (docs/DESIGN.md "Worker exit codes"). 1 is the only failure a
#: restart can mend (the store was unreachable); every code in :data:`FATAL_EXIT_CODES` names a
#: cause a restart would meet again, so ``p2pk run`` and the Kubernetes Job do not retry it.
EXIT_DONE = 0
EXIT_RESTARTABLE = 1
EXIT_CONFIG = 2        # invalid spec or worker setting (incl. a store that holds another experiment)
EXIT_DATA = 3          # the dataset or the prepared shards do not fit the spec
EXIT_DEVICE = 4        # the requested device cannot be used (no CUDA device, out of device memory)
EXIT_CHECKPOINT = 5    # this client's own checkpoint is corrupt
EXIT_STORE_DENIED = 6  # the store refuses for good (credentials, permissions, no such bucket)
EXIT_CRASH_LOOP = 7    # the same round failed runtime.maxFailuresPerRound times (p2p_job.restarts)
FATAL_EXIT_CODES = frozenset({EXIT_CONFIG, EXIT_DATA, EXIT_DEVICE, EXIT_CHECKPOINT, EXIT_STORE_DENIED, EXIT_CRASH_LOOP})
#: Where a fatal cause is written besides stderr (one line). Kubernetes shows the container's
#: ``/dev/termination-log`` as ``state.terminated.message``; any runner may set its own path.
TERMINATION_LOG_ENV = "P2PK_TERMINATION_LOG"
KUBERNETES_TERMINATION_LOG = Path("/dev/termination-log")


def classify(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and cause name of an error no restart can mend, or None (restartable or
    unexpected: exit 1 and let the runner restart the worker from its checkpoint)."""
    import torch

    from p2p_job.checkpoints import CorruptCheckpoint
    from p2p_job.datasets import DataError
    from p2p_job.restarts import CrashLoop
    from p2p_job.spec import InvalidSpec
    from p2p_job.training import DeviceError

    device_errors = (DeviceError, torch.cuda.OutOfMemoryError, getattr(torch, "AcceleratorError", DeviceError))
    for types, code, cause in (
        ((ConfigError, InvalidSpec), EXIT_CONFIG, "spec"),
        ((DataError,), EXIT_DATA, "data"),
        (device_errors, EXIT_DEVICE, "device"),
        ((CorruptCheckpoint,), EXIT_CHECKPOINT, "checkpoint"),
        ((StoreDenied,), EXIT_STORE_DENIED, "store-denied"),
        ((CrashLoop,), EXIT_CRASH_LOOP, "crash-loop"),
    ):
        if isinstance(exc, types):
            return code, cause
    return None


def fatal_line(cause: str, exc: BaseException) -> str:
    """The one line that names a fatal cause: ``p2pk worker: fatal <cause>: <message>``."""
    message = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"p2pk worker: fatal {cause}: {message}"


def _report_fatal(line: str, env: Mapping[str, str]) -> None:
    """Print the fatal line on stderr and write it where the runner or Kubernetes reads it."""
    import sys

    print(line, file=sys.stderr, flush=True)
    path = env.get(TERMINATION_LOG_ENV)
    target = Path(path) if path else (KUBERNETES_TERMINATION_LOG if KUBERNETES_TERMINATION_LOG.exists() else None)
    if target is None:
        return
    try:
        target.write_text(line + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("termination_log_unwritable", extra={"fields": {"path": str(target), "error": str(exc)}})


def main(cfg: WorkerConfig, env: Mapping[str, str] | None = None) -> int:
    """Entry point of ``p2pk worker``: JSON logs on stdout; exit 0 when done, 1 on a failure a
    restart can mend (the store was unavailable), or a code of :data:`FATAL_EXIT_CODES` with one
    line naming the cause on stderr and in the termination log (:func:`classify`)."""
    from p2p_job.telemetry import configure_logging

    configure_logging()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run_worker(cfg)
    except SystemExit as exc:
        log.info("worker_stopped", extra={"fields": {"code": exc.code}})
        _note_end(None)
        return int(exc.code or 0)
    except KeyboardInterrupt:
        log.info("worker_stopped", extra={"fields": {"code": 130}})
        _note_end(None)
        return 130
    except Exception as exc:
        fatal = classify(exc)
        if fatal is None:
            _note_end(f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, StoreError):
                raise  # a bug: the traceback is the report; exit 1, restarted from the checkpoint
            log.error("store_failed", extra={"fields": {"error": str(exc)}})
            return EXIT_RESTARTABLE
        code, cause = fatal
        line = fatal_line(cause, exc)
        log.error("worker_failed", extra={"fields": {"cause": cause, "exit_code": code, "error": line}})
        _report_fatal(line, os.environ if env is None else env)
        return code
