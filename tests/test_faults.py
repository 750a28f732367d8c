"""Riding out faults at default settings: random worker kills and a store outage (connections
refused for 30 s) during one ``p2pk run`` over S3 end with every round once and results equal
to a clean run (``p2pk simulate``, bit for bit on the CPU)."""

from __future__ import annotations

import pandas as pd
import pytest
from faults import run_with_faults
from test_run import comparable, one_thread, simulated  # noqa: F401 (one_thread: a fixture)

from p2p_job.results import read_parquet


@pytest.mark.slow
def test_ten_kills_and_a_30_s_outage_lose_and_duplicate_nothing(tmp_path, tiny_spec, s3_server, one_thread):
    spec = tiny_spec("faults", n_clients=3, rounds=14, runtime={"device": "cpu"})  # default timeouts and retries
    report = run_with_faults(spec, tmp_path / "out", s3_server, kills=10, outage_seconds=30, outage_after_rounds=6)
    summary = (f"kills at {report.kills}; outage {report.outage}; rounds redone {report.rounds_redone()}; "
               f"{report.wall_seconds:.0f} s\n{report.output[-3000:]}")
    assert report.returncode == 0, summary
    assert len(report.kills) == 10 and report.outage is not None, summary
    results = comparable(read_parquet(tmp_path / "out/results.parquet"))
    assert results["neighbours_missing"].sum() == 0 and results["payloads_rejected"].sum() == 0, summary
    # No round lost or duplicated: every (client, eval) has rounds 1..14 exactly once.
    assert results.groupby(["client", "eval"])["round"].apply(list).tolist() == [list(range(1, 15))] * 6, summary
    pd.testing.assert_frame_equal(results, simulated(spec))
    print(summary)
