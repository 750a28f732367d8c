"""What a worker tells the outside world: Prometheus metrics and structured JSON logs.

DESIGN "Prometheus metrics": every metric carries the labels ``experiment``, ``client`` and
``method`` (project amendment "Methods"); the evaluation gauges carry ``eval`` = local | global
too. A worker serves them on ``:P2PK_METRICS_PORT/metrics`` from its own
:class:`~prometheus_client.CollectorRegistry` and, when a Pushgateway is given, pushes them at
every round end and at exit (job ``p2pk``, grouping key experiment/method/client), because
Kubernetes Jobs end before a scrape may have caught their last round.

Logs are one JSON object per line on the worker's standard output
(``{"ts", "level", "logger", "event", …fields}``), so that ``p2pk run`` and ``kubectl logs`` can
follow a worker's progress and a log pipeline can index them.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    push_to_gateway,
    start_http_server,
)

from p2p_job.metrics import METRIC_NAMES
from p2p_job.results import TUNED_METRICS, kind_rates

#: Prometheus gauge of each metric of ``p2p_job.metrics`` (§5.1.2), labelled with ``eval``.
METRIC_GAUGES = {
    "fnr": "p2pk_false_negative_rate",
    "fpr": "p2pk_false_positive_rate",
    "precision": "p2pk_precision",
    "recall": "p2pk_recall",
    "f1": "p2pk_f1",
    "auc": "p2pk_auc",
    "precision_at_recall_75": "p2pk_precision_at_recall_75",
    "recall_at_precision_75": "p2pk_recall_at_precision_75",
}
assert tuple(METRIC_GAUGES) == METRIC_NAMES
#: The threshold-dependent metrics again at the client's own operating point (p2p_job.operating).
TUNED_GAUGES = {name: METRIC_GAUGES[name].replace("p2pk_", "p2pk_tuned_", 1) for name in TUNED_METRICS}

LABELS = ("experiment", "client", "method")
#: Pushgateway job name; the grouping key adds experiment, method and client.
PUSH_JOB = "p2pk"

log = logging.getLogger(__name__)


class Telemetry:
    """The metrics of one worker (one client of one method's run)."""

    def __init__(self, experiment: str, method: str, client: str, *, pushgateway: str | None = None):
        disable_created_metrics()  # no *_created series: they only add noise to every counter and histogram
        self.labels = {"experiment": experiment, "client": client, "method": method}
        self.pushgateway = pushgateway
        self.registry = CollectorRegistry()
        reg = self.registry
        self.round = Gauge("p2pk_round", "Last completed communication round", LABELS, registry=reg)
        self.metric = {
            name: Gauge(gauge, f"{name} of the last completed round (§5.1.2)", (*LABELS, "eval"), registry=reg)
            for name, gauge in METRIC_GAUGES.items()
        }
        self.tuned = {
            name: Gauge(gauge, f"{name} of the last completed round at the client's own threshold (evaluation.operatingPoint)",
                        (*LABELS, "eval"), registry=reg)
            for name, gauge in TUNED_GAUGES.items()
        }
        self.threshold = Gauge(
            "p2pk_operating_threshold", "The client's own decision threshold, chosen on its validation set in the last completed round",
            LABELS, registry=reg,
        )
        self.fnr_by_kind = Gauge(
            "p2pk_false_negative_rate_by_kind", "False negative rate of one attack kind in the last completed round",
            (*LABELS, "eval", "kind"), registry=reg,
        )
        self.train_loss = Gauge("p2pk_train_loss", "Mean training loss of the last local epoch", LABELS, registry=reg)
        self.round_duration = Histogram(
            "p2pk_round_duration_seconds", "Wall time of one round (train, publish, gather, merge, evaluate)",
            LABELS, registry=reg, buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
        )
        self.exchange_wait = Histogram(
            "p2pk_exchange_wait_seconds", "Time spent waiting for neighbours' publications in one round",
            LABELS, registry=reg, buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
        )
        self.exchange_bytes = Counter(
            "p2pk_exchange_bytes", "Publication bytes written (sent) and read (received)",
            (*LABELS, "direction"), registry=reg,
        )
        self.synthetic_points = Counter(
            "p2pk_synthetic_points", "Synthetic points generated, shared with neighbours, received from them",
            (*LABELS, "kind"), registry=reg,
        )
        self.neighbours_missing = Counter(
            "p2pk_neighbours_missing", "Neighbour publications that did not arrive within roundTimeoutSeconds",
            LABELS, registry=reg,
        )
        self.payloads_rejected = Counter(
            "p2pk_payloads_rejected", "Neighbour publications, models or point sets rejected by validation", (*LABELS, "reason"), registry=reg,
        )
        self.points_rejected = Counter(
            "p2pk_points_rejected", "Neighbours' shared points dropped one by one by the point checks", (*LABELS, "reason"),
            registry=reg,
        )
        self.store_retries = Counter(
            "p2pk_store_retries", "Store calls that failed and were tried again after a pause (backoff with jitter)",
            (*LABELS, "operation"), registry=reg,
        )
        self.store_wait = Gauge(
            "p2pk_store_wait_seconds", "How long the store call in progress has been failing (0: the store answers)",
            LABELS, registry=reg,
        )
        # Series that exist from the start (at zero), so rate() and dashboards see them at once.
        for metric in (self.round_duration, self.exchange_wait, self.neighbours_missing, self.store_wait):
            metric.labels(**self.labels)
        for direction in ("sent", "received"):
            self.exchange_bytes.labels(**self.labels, direction=direction)
        for kind in ("generated", "shared", "received"):
            self.synthetic_points.labels(**self.labels, kind=kind)

    # ------------------------------------------------------------------ updates
    # trained / merged / evaluated make this a p2p_job.peer.PeerObserver.

    def trained(self, event) -> None:
        """End of phase 1: count the points generated (|D_syn|) and shared (α·|D_syn|)."""
        self.synthetic_points.labels(**self.labels, kind="generated").inc(event.n_generated)
        self.synthetic_points.labels(**self.labels, kind="shared").inc(event.n_shared)

    def merged(self, event) -> None:
        """End of the exchange: the wait, missing neighbours, rejected payloads and dropped
        points by reason (the reason's code before any ``:`` detail), points received into D_o_syn."""
        if event.selected:
            self.exchange_wait.labels(**self.labels).observe(event.wait_seconds)
        self.neighbours_missing.labels(**self.labels).inc(len(event.missing))
        for _client, reason in event.rejected:
            self.payloads_rejected.labels(**self.labels, reason=reason.split(":", 1)[0]).inc()
        for _client, reason, points in event.dropped:
            self.points_rejected.labels(**self.labels, reason=reason.split(":", 1)[0]).inc(points)
        self.synthetic_points.labels(**self.labels, kind="received").inc(event.n_received)

    def evaluated(self, record) -> None:
        """End of the round: its duration, and the gauges from its evaluation."""
        self.round_duration.labels(**self.labels).observe(record.round_seconds)
        self.store_wait.labels(**self.labels).set(0)
        self.set_gauges(record.rows())

    def set_gauges(self, rows: Iterable[dict]) -> None:
        """Set the gauges from one round's rows of the results schema (one row per eval set);
        also used by a resumed worker to show its last completed round again."""
        for row in rows:
            self.round.labels(**self.labels).set(row["round"])
            self.train_loss.labels(**self.labels).set(row["train_loss"])
            for name in METRIC_NAMES:
                self.metric[name].labels(**self.labels, eval=row["eval"]).set(row[name])
            if "threshold" in row:
                self.threshold.labels(**self.labels).set(row["threshold"])
                for name in TUNED_METRICS:
                    self.tuned[name].labels(**self.labels, eval=row["eval"]).set(row[f"tuned_{name}"])
            for kind, rate in kind_rates(row.get("fnr_by_kind")).items():
                self.fnr_by_kind.labels(**self.labels, eval=row["eval"], kind=kind).set(rate)

    def store_waiting(self, wait) -> None:
        """A store call failed and will be tried again (a :class:`p2p_job.store.StoreWait`): the
        peer is waiting for its store, not dead. Logged as ``store_wait`` (``p2pk run`` shows it)."""
        self.store_retries.labels(**self.labels, operation=wait.what.split(" ", 1)[0]).inc()
        self.store_wait.labels(**self.labels).set(wait.waited + wait.pause)
        log.warning("store_wait", extra={"fields": {
            "call": wait.what, "failures": wait.failures, "waited": round(wait.waited, 1),
            "pause": round(wait.pause, 2), "error": wait.error}})

    def moved_bytes(self, direction: str, n: int) -> None:
        """Publication bytes ``sent`` (written) or ``received`` (read) through the exchange."""
        self.exchange_bytes.labels(**self.labels, direction=direction).inc(n)

    # ------------------------------------------------------------------ export

    def serve(self, port: int) -> None:
        """Serve ``/metrics`` on ``port`` (all interfaces: a pod's port must be reachable)."""
        start_http_server(port, registry=self.registry)
        log.info("metrics_served", extra={"fields": {"port": port}})

    def push(self) -> None:
        """Push every metric to the Pushgateway, if one is configured. A failed push is logged,
        never fatal: training does not depend on monitoring."""
        if not self.pushgateway:
            return
        try:
            push_to_gateway(self.pushgateway, job=PUSH_JOB, registry=self.registry, grouping_key=self.labels, timeout=10)
        except OSError as exc:
            log.warning("push_failed", extra={"fields": {"pushgateway": self.pushgateway, "error": str(exc)}})


# --------------------------------------------------------------------------- logs


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event (the message) and the record's
    ``fields`` (passed as ``extra={"fields": {...}}``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(stream=None, level: int = logging.INFO) -> None:
    """Send the ``p2p_job`` loggers to ``stream`` (stdout by default) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("p2p_job")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def parse_log_line(line: str) -> dict | None:
    """The event of a worker's JSON log line, or ``None`` for any other output."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "event" in entry else None
