"""The results schema, its Parquet file, the summary table and the figures (p2p_job.results)."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from p2p_job.metrics import METRIC_NAMES
from p2p_job.results import (COLUMNS, RoundRecord, decode_rows, decode_table, encode_rows, read_parquet, results_frame, rows_frame,
                             tables_frame, write_parquet, write_results)
from p2p_job.summary import final_round_summary, summary_markdown


def _record(method: str, client: str, r: int, fnr: float, with_global: bool = True) -> RoundRecord:
    values = {name: 0.5 for name in METRIC_NAMES}
    metrics = {"local": {**values, "fnr": fnr}}
    if with_global:
        metrics["global"] = {**values, "fnr": fnr / 2, "auc": float("nan")}
    return RoundRecord(
        experiment="exp",
        method=method,
        client=client,
        round=r,
        metrics=metrics,
        train_loss=0.1 * r,
        n_train=100 + r,
        n_synthetic=10,
        n_received=3,
        neighbours_used=1,
        neighbours_missing=1,
        payloads_rejected=0,
        aggregated=True,
        round_seconds=0.25,
    )


def _frame() -> pd.DataFrame:
    records = [
        _record(method, client, r, fnr=base + 0.1 * r + (0.2 if client == "b" else 0.0))
        for method, base in (("ksmote", 0.0), ("none", 0.5))
        for client in ("a", "b")
        for r in (1, 2)
    ]
    return results_frame(records)


def test_a_record_gives_one_row_per_evaluation_set_in_the_schema():
    rows = _record("ksmote", "a", 3, fnr=0.2).rows()
    assert [row["eval"] for row in rows] == ["local", "global"]
    assert all(list(row) == list(COLUMNS) for row in rows)
    assert rows[0]["fnr"] == 0.2 and rows[1]["fnr"] == 0.1
    assert rows[1]["n_train"] == 103 and rows[1]["aggregated"] is True


def test_frame_has_the_schema_columns_and_types():
    frame = _frame()
    assert tuple(frame.columns) == COLUMNS
    assert len(frame) == 2 * 2 * 2 * 2
    assert frame["round"].dtype == "int64" and frame["aggregated"].dtype == bool
    assert frame["fnr"].dtype == "float64"


def test_parquet_round_trip(tmp_path):
    frame = _frame()
    write_parquet(frame, tmp_path / "m" / "results.parquet")
    back = read_parquet(tmp_path / "m" / "results.parquet")
    pd.testing.assert_frame_equal(back, frame)
    assert pq.read_schema(tmp_path / "m" / "results.parquet").names == list(COLUMNS)


def test_writing_rows_without_a_schema_column_fails(tmp_path):
    with pytest.raises(KeyError, match="round_seconds"):
        write_parquet(_frame().drop(columns="round_seconds"), tmp_path / "results.parquet")


def test_summary_is_the_final_round_mean_over_clients():
    summary = final_round_summary(_frame())
    assert list(summary.index) == [("ksmote", "local"), ("ksmote", "global"), ("none", "local"), ("none", "global")]
    # ksmote, round 2, local: clients a (0.2) and b (0.4).
    assert summary.loc[("ksmote", "local"), "fnr"] == pytest.approx(0.3)
    assert summary.loc[("none", "global"), "fnr"] == pytest.approx((0.7 + 0.9) / 4)
    assert summary.loc[("none", "local"), "round"] == 2
    assert math.isnan(summary.loc[("ksmote", "global"), "auc"])


def test_output_folder(tmp_path):
    frame = _frame()
    write_results(frame, tmp_path)
    assert len(read_parquet(tmp_path / "results.parquet")) == len(frame)
    text = (tmp_path / "summary.txt").read_text()
    assert "ksmote" in text and "0.3000" in text and "FNR" in text
    markdown = summary_markdown(frame)
    assert (tmp_path / "summary.md").read_text() == markdown
    assert markdown.splitlines()[4] == "| ksmote | local | 2 | 0.3000 | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 0.5000 | — | — |"  # no own thresholds given
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == sorted(
        f"{name}-{eval_set}.png" for name in ("methods", "ksmote", "none") for eval_set in ("local", "global")
    )
    assert all((tmp_path / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in figures)


def test_metrics_parts_read_back_every_row_in_the_schema():
    """A worker's metrics: one part per round (encode_rows); the parts read back as tables and
    put together give the frame of the records, column types included."""
    records = [_record("ksmote", "a", r, fnr=0.1 * r) for r in (1, 2, 3)]
    parts = [encode_rows(record.rows()) for record in records]
    assert [row["round"] for row in decode_rows(parts[1])] == [2, 2]
    pd.testing.assert_frame_equal(tables_frame(decode_table(part) for part in parts), results_frame(records))
    pd.testing.assert_frame_equal(tables_frame([]), results_frame([]))