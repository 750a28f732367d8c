"""A client's progress from its metrics file: completed rounds and the latest FNR/FPR."""

from __future__ import annotations

import io
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from operator_fakes import metrics_file

from p2pk_operator.progress import ClientProgress, read_progress


def test_latest_round_prefers_the_global_test_set():
    data = metrics_file({1: {"local": (0.5, 0.1), "global": (0.4, 0.2)}, 2: {"local": (0.3, 0.05), "global": (0.25, 0.04)}})
    assert read_progress(data) == ClientProgress(rounds=2, round=2, eval="global", fnr=0.25, fpr=0.04)


def test_without_a_global_test_set_the_validation_set_counts():
    data = metrics_file({1: {"local": (0.5, 0.1)}, 2: {"local": (0.3, 0.05)}, 3: {"local": (0.2, 0.01)}})
    assert read_progress(data) == ClientProgress(rounds=3, round=3, eval="local", fnr=0.2, fpr=0.01)


def test_a_round_done_again_after_a_restart_counts_once():
    rows = metrics_file({1: {"local": (0.5, 0.1)}, 2: {"local": (0.4, 0.1)}})
    again = metrics_file({2: {"local": (0.3, 0.1)}})
    table = pa.concat_tables([pq.read_table(io.BytesIO(rows)), pq.read_table(io.BytesIO(again))])
    sink = io.BytesIO()
    pq.write_table(table, sink)
    assert read_progress(sink.getvalue()).rounds == 2


def test_an_empty_file_means_no_round_yet():
    assert read_progress(metrics_file({})) == ClientProgress(rounds=0)


def test_non_finite_rates_are_reported_as_missing():
    progress = read_progress(metrics_file({1: {"local": (math.nan, math.inf)}}))
    assert (progress.rounds, progress.fnr, progress.fpr) == (1, None, None)


def parquet(columns: dict) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


@pytest.mark.parametrize(
    "data, words",
    [
        (b"not parquet at all", "unreadable Parquet"),
        (parquet({"round": [1], "eval": ["local"], "fnr": [0.1]}), "unreadable Parquet"),  # no fpr column
        (parquet({"round": ["1"], "eval": ["local"], "fnr": [0.1], "fpr": [0.1]}), "column 'round' has type string"),
        (parquet({"round": [1], "eval": ["train"], "fnr": [0.1], "fpr": [0.1]}), "no row with eval in"),
    ],
    ids=["garbage", "missing-column", "mistyped-column", "unknown-eval-set"],
)
def test_bad_files_are_errors_saying_what_is_wrong(data, words):
    with pytest.raises(ValueError, match=words):
        read_progress(data)


def test_a_file_with_more_rows_than_the_experiment_writes_is_refused_before_decoding():
    data = metrics_file({r: {"local": (0.1, 0.1)} for r in range(1, 31)})
    assert read_progress(data, 30).rounds == 30
    with pytest.raises(ValueError, match="30 rows, more than the 20"):
        read_progress(data, 20)


def test_columns_that_decode_past_the_cap_are_refused(monkeypatch):
    import p2pk_operator.progress as progress

    monkeypatch.setattr(progress, "MAX_METRICS_BYTES", 100)
    data = parquet({"round": list(range(50)), "eval": ["local"] * 50, "fnr": [0.1] * 50, "fpr": [0.1] * 50})
    with pytest.raises(ValueError, match="decode to .* bytes, over the cap of 100"):
        read_progress(data)
