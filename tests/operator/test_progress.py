"""A client's progress from its metrics parts: completed rounds (the parts listed) and the
latest round's FNR/FPR (from that round's part)."""

from __future__ import annotations

import io
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from operator_fakes import metrics_part

from p2pk_operator.progress import MAX_PART_ROWS, ClientProgress, part_rounds, read_progress

PREFIX = "exp/ksmote/metrics/a/"


def test_latest_round_prefers_the_global_test_set():
    data = metrics_part(2, {"local": (0.3, 0.05), "global": (0.25, 0.04)})
    assert read_progress([1, 2], data) == ClientProgress(rounds=2, round=2, eval="global", fnr=0.25, fpr=0.04)


def test_without_a_global_test_set_the_validation_set_counts():
    assert read_progress([1, 2, 3], metrics_part(3, {"local": (0.2, 0.01)})) == ClientProgress(rounds=3, round=3, eval="local", fnr=0.2, fpr=0.01)


def test_rounds_done_are_the_parts_listed_each_once():
    keys = [f"{PREFIX}{r:05d}.parquet" for r in (3, 1, 2)]
    assert part_rounds(keys, PREFIX, 3) == [1, 2, 3]
    assert part_rounds([], PREFIX, 3) == []


@pytest.mark.parametrize(
    "name, words",
    [("00004.parquet", "no metrics part of rounds 1..3"), ("00000.parquet", "no metrics part"), ("1.parquet", "no metrics part"),
     ("00001.parquet.tmp", "no metrics part"), ("x/00001.parquet", "no metrics part")],
)
def test_a_listed_name_that_is_no_part_of_the_rounds_is_refused(name, words):
    with pytest.raises(ValueError, match=words):
        part_rounds([PREFIX + name], PREFIX, 3)


def test_more_parts_than_rounds_are_refused():
    keys = [f"{PREFIX}{r:05d}.parquet" for r in range(1, 5)]
    with pytest.raises(ValueError, match="more than the 3 parts"):
        part_rounds(keys, PREFIX, 3)


def test_no_part_means_no_round_yet():
    assert read_progress([], b"") == ClientProgress(rounds=0)


def test_non_finite_rates_are_reported_as_missing():
    progress = read_progress([1], metrics_part(1, {"local": (math.nan, math.inf)}))
    assert (progress.rounds, progress.fnr, progress.fpr) == (1, None, None)


def test_a_part_holding_another_rounds_rows_is_refused():
    with pytest.raises(ValueError, match=r"the part of round 2 holds rows of round\(s\) \[1\]"):
        read_progress([1, 2], metrics_part(1, {"local": (0.1, 0.1)}))


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
        read_progress([1], data)


def test_a_part_with_more_rows_than_a_round_writes_is_refused_before_decoding():
    n = MAX_PART_ROWS + 1
    with pytest.raises(ValueError, match=f"{n} rows, more than the {MAX_PART_ROWS}"):
        read_progress([1], parquet({"round": [1] * n, "eval": ["local"] * n, "fnr": [0.1] * n, "fpr": [0.1] * n}))


def test_columns_that_decode_past_the_cap_are_refused(monkeypatch):
    import p2pk_operator.progress as progress

    monkeypatch.setattr(progress, "MAX_METRICS_BYTES", 100)
    data = parquet({"round": [1] * 8, "eval": ["local"] * 8, "fnr": [0.1] * 8, "fpr": [0.1] * 8})
    with pytest.raises(ValueError, match="decode to .* bytes, over the cap of 100"):
        read_progress([1], data)
