"""The Grafana dashboard against a real Prometheus: every panel's PromQL and every variable's
label_values query, with the variables set to the label values of a real run.

The run is the shared ``scraped_experiment`` fixture (tests/conftest.py): real ``p2pk worker``
processes exchanging through moto's S3, serving /metrics to a Prometheus that also scrapes the
Pushgateway they push to, so each worker's series arrive twice (scraped: job p2pk-workers;
pushed: job p2pk), as on a cluster with both the PodMonitor and a Pushgateway."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

import services
from helmchart import CHART
from p2p_job.telemetry import PUSH_JOB

DASHBOARD = json.loads((CHART / "dashboards" / "p2pk.json").read_text())
#: Stands in for Grafana's $__rate_interval: a window holding the whole (short) run.
RATE_WINDOW = "5m"
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")

pytestmark = pytest.mark.slow


def panel_queries() -> list[tuple[str, str]]:
    """(panel title + refId, expression) of every query target of every panel."""
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in DASHBOARD["panels"]
        for target in panel.get("targets", [])
    ]


def variables() -> dict[str, dict]:
    return {v["name"]: v for v in DASHBOARD["templating"]["list"]}


def substitute(expr: str, chosen: dict[str, list[str]]) -> str:
    """Grafana's interpolation for a Prometheus query: a multi-value variable becomes the
    regex alternation (a|b) of its values with regex characters escaped (a backslash inside a
    PromQL string is written twice), a single value itself; $__rate_interval a time window."""
    expr = expr.replace("$__rate_interval", RATE_WINDOW)
    for name, picked in chosen.items():
        escaped = [re.sub(r"([\\$^*+?.()|{}\[\]])", r"\\\\\1", v) for v in picked]
        value = picked[0] if len(picked) == 1 else "(" + "|".join(escaped) + ")"
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, f"unsubstituted variable left in {expr}"
    return expr


def label_values(run: services.ScrapedExperiment, query: str, chosen: dict[str, list[str]]) -> list[str]:
    """What Grafana does for label_values(selector, label): the label values API."""
    match = LABEL_VALUES.match(query)
    assert match, f"not a label_values query: {query}"
    params = urllib.parse.urlencode({"match[]": substitute(match["selector"], chosen)})
    body = json.loads(services.http_get(f"{run.prometheus.url}/api/v1/label/{match['label']}/values?{params}"))
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture(scope="module")
def chosen(scraped_experiment) -> dict[str, list[str]]:
    """The variables as a user picks them: this run's experiment, then all its methods and
    clients (each list resolved from the previous choices, as Grafana chains them)."""
    run = scraped_experiment
    picked: dict[str, list[str]] = {}
    for name in ("experiment", "method", "client"):
        found = label_values(run, variables()[name]["definition"], picked)
        picked[name] = [run.experiment] if name == "experiment" else found
    return picked


def test_variables_resolve_to_the_run(scraped_experiment, chosen):
    run = scraped_experiment
    assert run.experiment in label_values(run, variables()["experiment"]["definition"], {})
    assert chosen == {"experiment": [run.experiment], "method": [run.method], "client": sorted(run.clients)}
    assert variables()["datasource"]["query"] == "prometheus"


def test_every_panel_queries_through_the_datasource_variable():
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


@pytest.mark.parametrize("expr", [e for _, e in panel_queries()], ids=[i for i, _ in panel_queries()])
def test_panel_query_returns_series_for_every_client(scraped_experiment, chosen, expr):
    result = scraped_experiment.query(substitute(expr, chosen))
    assert result, f"no series for {substitute(expr, chosen)}"
    assert {r["metric"]["client"] for r in result} == set(scraped_experiment.clients)
    assert {r["metric"]["method"] for r in result} == {scraped_experiment.method}


def test_rates_and_gauges_hold_the_run_values(scraped_experiment, chosen):
    queries = dict(panel_queries())
    run = scraped_experiment
    for title in ("False negative rate per client A", "False positive rate per client A", "Precision A", "Recall A"):
        values = [r["value"] for r in run.query(substitute(queries[title], chosen))]
        assert all(0.0 <= v <= 1.0 for v in values), (title, values)
    # Every worker has finished the tiny experiment's 2 rounds; Prometheus sees it within a scrape or two.
    services.wait_for(
        lambda: [r["value"] for r in run.query(substitute(queries["Round progress A"], chosen))] == [2.0] * len(run.clients),
        30, "the round progress panel to show round 2 for every client",
    )
    directions = {r["metric"]["direction"] for r in run.query(substitute(queries["Bytes exchanged A"], chosen))}
    assert directions == {"sent", "received"}
    rejected = run.query(substitute(queries["Rejected payloads A"], chosen))
    assert [r["value"] for r in rejected] == [0.0] * len(run.clients)  # no bad payloads in this run


def test_two_collection_paths_are_not_double_counted(scraped_experiment, chosen):
    run = scraped_experiment
    raw = run.query(substitute('p2pk_false_negative_rate{experiment=~"$experiment"}', chosen))
    assert {r["metric"]["job"] for r in raw} == {"p2pk-workers", PUSH_JOB}  # scraped, pushed
    fnr = run.query(substitute(dict(panel_queries())["False negative rate per client A"], chosen))
    assert len(fnr) * 2 == len(raw)
    assert len({(r["metric"]["client"], r["metric"]["eval"]) for r in fnr}) == len(fnr)
