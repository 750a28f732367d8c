"""Telemetry: the DESIGN metric names and labels, fed by the peer's observer hooks; JSON logs;
a real Prometheus scraping real workers; a real Pushgateway keeping the final values."""

from __future__ import annotations

import io
import json
import logging

import pytest
import services
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from p2p_job.metrics import METRIC_NAMES
from p2p_job.peer import Merged, Trained
from p2p_job.results import TUNED_METRICS, RoundRecord
from p2p_job.telemetry import METRIC_GAUGES, JsonFormatter, Telemetry, configure_logging, parse_log_line

LABELS = {"experiment": "exp", "client": "client-a", "method": "ksmote"}

#: DESIGN "Prometheus metrics", as exposed (counters with their _total suffix).
DESIGN_NAMES = {
    "p2pk_round", "p2pk_false_negative_rate", "p2pk_false_positive_rate", "p2pk_precision", "p2pk_recall",
    "p2pk_f1", "p2pk_auc", "p2pk_precision_at_recall_75", "p2pk_recall_at_precision_75", "p2pk_train_loss",
    "p2pk_round_duration_seconds", "p2pk_exchange_wait_seconds", "p2pk_exchange_bytes_total",
    "p2pk_synthetic_points_total", "p2pk_neighbours_missing_total", "p2pk_payloads_rejected_total",
    "p2pk_points_rejected_total", "p2pk_false_negative_rate_by_kind", "p2pk_store_retries_total", "p2pk_store_wait_seconds", "p2pk_operating_threshold", "p2pk_tuned_false_negative_rate",
    "p2pk_tuned_false_positive_rate", "p2pk_tuned_precision", "p2pk_tuned_recall", "p2pk_tuned_f1",
}


def record(r: int, fnr: float) -> RoundRecord:
    metrics = {e: {m: (fnr if m == "fnr" else 0.5) for m in METRIC_NAMES} for e in ("local", "global")}
    return RoundRecord("exp", "ksmote", "client-a", r, metrics, train_loss=0.3, n_train=100, n_synthetic=40,
                       n_received=8, neighbours_used=1, neighbours_missing=1, payloads_rejected=1,
                       aggregated=True, round_seconds=1.5,
                       fnr_by_kind={"global": {"gafgyt/udp": fnr / 2, "gafgyt/scan": 1.0}, "local": {"gafgyt/udp": fnr}},
                       train_kinds=("gafgyt/udp",), threshold=0.25 + r / 100,
                       tuned={e: {m: fnr / 4 if m == "fnr" else 0.75 for m in TUNED_METRICS} for e in ("local", "global")})


def samples(telemetry: Telemetry) -> dict[tuple, float]:
    text = generate_latest(telemetry.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def feed(telemetry: Telemetry) -> None:
    for r, fnr in ((1, 0.4), (2, 0.1)):
        telemetry.trained(Trained("ksmote", "client-a", r, 1.0, 0.3, 100, n_generated=40, n_shared=4))
        telemetry.merged(Merged("ksmote", "client-a", r, True, wait_seconds=0.25, used=["b"], missing=["c"],
                                rejected=[("d", "hash-mismatch"), ("e", "model-mismatch: model tensors differ")],
                                n_received=8, dropped=[("d", "out-of-range: beyond 10 of this peer's feature ranges", 7)]))
        telemetry.evaluated(record(r, fnr))
    telemetry.moved_bytes("sent", 1000)
    telemetry.moved_bytes("received", 300)


def test_every_design_metric_with_its_labels():
    telemetry = Telemetry("exp", "ksmote", "client-a")
    feed(telemetry)
    got = samples(telemetry)
    names = {f.name for f in text_string_to_metric_families(generate_latest(telemetry.registry).decode())}
    assert {n + "_total" if n + "_total" in DESIGN_NAMES else n for n in names} == DESIGN_NAMES
    lab = tuple(sorted(LABELS.items()))

    def value(name, **extra):
        return got[(name, tuple(sorted({**LABELS, **extra}.items())))]

    assert value("p2pk_round") == 2
    assert value("p2pk_false_negative_rate", eval="global") == 0.1  # the last round's value
    assert value("p2pk_false_negative_rate", eval="local") == 0.1
    assert value("p2pk_auc", eval="local") == 0.5
    assert value("p2pk_operating_threshold") == 0.27  # the client's own threshold of round 2
    assert value("p2pk_tuned_false_negative_rate", eval="global") == 0.025
    assert value("p2pk_tuned_false_positive_rate", eval="local") == 0.75
    assert value("p2pk_false_negative_rate_by_kind", eval="global", kind="gafgyt/udp") == 0.05
    assert value("p2pk_false_negative_rate_by_kind", eval="global", kind="gafgyt/scan") == 1.0
    assert value("p2pk_false_negative_rate_by_kind", eval="local", kind="gafgyt/udp") == 0.1
    assert ("p2pk_false_negative_rate_by_kind", tuple(sorted({**LABELS, "eval": "local", "kind": "gafgyt/scan"}.items()))) not in got
    assert value("p2pk_train_loss") == 0.3
    assert value("p2pk_synthetic_points_total", kind="generated") == 80
    assert value("p2pk_synthetic_points_total", kind="shared") == 8
    assert value("p2pk_synthetic_points_total", kind="received") == 16
    assert value("p2pk_neighbours_missing_total") == 2
    assert value("p2pk_payloads_rejected_total", reason="hash-mismatch") == 2
    assert value("p2pk_payloads_rejected_total", reason="model-mismatch") == 2
    assert value("p2pk_points_rejected_total", reason="out-of-range") == 14  # points, not publications
    assert value("p2pk_exchange_bytes_total", direction="sent") == 1000
    assert value("p2pk_round_duration_seconds_count") == 2
    assert value("p2pk_round_duration_seconds_sum") == 3.0
    assert value("p2pk_exchange_wait_seconds_sum") == 0.5
    assert ("p2pk_round", lab) in got
    assert set(METRIC_GAUGES) == set(METRIC_NAMES)


def test_unselected_rounds_do_not_count_a_wait():
    telemetry = Telemetry("exp", "ksmote", "client-a")
    telemetry.merged(Merged("ksmote", "client-a", 1, False, 0.0, [], [], [], 0))
    assert samples(telemetry)[("p2pk_exchange_wait_seconds_count", tuple(sorted(LABELS.items())))] == 0


def test_push_keeps_the_values_in_the_pushgateway(pushgateway):
    telemetry = Telemetry("pushed", "ksmote", "client-a", pushgateway=pushgateway.address)
    feed(telemetry)
    telemetry.push()
    text = services.http_get(f"{pushgateway.url}/metrics").decode()
    pushed = {(s.name, s.labels.get("eval")): (s.value, s.labels)
              for f in text_string_to_metric_families(text) for s in f.samples if s.labels.get("experiment") == "pushed"}
    value, labels = pushed[("p2pk_false_negative_rate", "global")]
    assert value == 0.1
    assert labels["job"] == "p2pk" and labels["method"] == "ksmote" and labels["client"] == "client-a"


def test_a_failed_push_is_logged_not_raised(caplog):
    telemetry = Telemetry("exp", "ksmote", "client-a", pushgateway=f"127.0.0.1:{services.free_port()}")
    telemetry.push()
    assert [r.getMessage() for r in caplog.records] == ["push_failed"]


def test_json_log_lines():
    stream = io.StringIO()
    configure_logging(stream)
    try:
        logging.getLogger("p2p_job.worker").info("round_end", extra={"fields": {"round": 3, "fnr": 0.25}})
        logging.getLogger("p2p_job.x").warning("plain")
    finally:
        logging.getLogger("p2p_job").handlers[:] = []
        logging.getLogger("p2p_job").propagate = True
    first, second = stream.getvalue().splitlines()
    entry = json.loads(first)
    assert {k: entry[k] for k in ("level", "logger", "event", "round", "fnr")} == \
        {"level": "info", "logger": "p2p_job.worker", "event": "round_end", "round": 3, "fnr": 0.25}
    assert parse_log_line(second)["level"] == "warning"
    assert parse_log_line("Traceback (most recent call last):") is None
    assert parse_log_line("[1, 2]") is None


def test_exceptions_are_part_of_the_json_line():
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("p2p_job", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    assert "ValueError: boom" in json.loads(formatter.format(rec))["exception"]


# --------------------------------------------------------------------------- real Prometheus


@pytest.mark.slow
def test_prometheus_scrapes_every_worker(scraped_experiment):
    run = scraped_experiment
    result = run.query('p2pk_false_negative_rate{job="p2pk-workers"}')
    by = {(r["metric"]["client"], r["metric"]["eval"]): r for r in result}
    assert set(by) == {(c, e) for c in run.clients for e in ("local", "global")}
    assert all(r["metric"]["experiment"] == "scraped" and r["metric"]["method"] == "ksmote" for r in result)
    assert all(0.0 <= r["value"] <= 1.0 for r in result)
    rounds = run.query('p2pk_round{job="p2pk-workers"}')
    assert sorted((r["metric"]["client"], r["value"]) for r in rounds) == [(c, 2.0) for c in run.clients]
    sent = run.query('sum by (client) (p2pk_exchange_bytes_total{job="p2pk-workers",direction="sent"})')
    assert len(sent) == 3 and all(r["value"] > 0 for r in sent)


@pytest.mark.slow
def test_pushgateway_keeps_the_final_values_after_the_workers_exit(scraped_experiment):
    run = scraped_experiment
    for worker in run.workers:
        worker.stop()
    assert all(services.WorkerProcess.events(w)[-1]["event"] == "worker_stopped" for w in run.workers)
    text = services.http_get(f"{run.pushgateway.url}/metrics").decode()
    final = {s.labels["client"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == "p2pk_round" and s.labels.get("experiment") == "scraped"}
    assert final == {c: 2.0 for c in run.clients}
    fnr = services.wait_for(lambda: run.query('p2pk_false_negative_rate{job="p2pk",experiment="scraped"}'),
                            30, "Prometheus to scrape the Pushgateway")
    assert {r["metric"]["client"] for r in fnr} == set(run.clients)
