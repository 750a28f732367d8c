"""The tables (p2p_job.summary), the figures (p2p_job.figures) and ``p2pk compare``, on
hand-made result rows whose means and spreads are known."""

from __future__ import annotations

import json
import math

import matplotlib
import pandas as pd
import pytest

from p2p_job.cli import main
from p2p_job.metrics import METRIC_NAMES
from p2p_job.results import RoundRecord, results_frame, write_results
from p2p_job.summary import curves, summarize, summary_markdown

matplotlib.use("Agg")


def _frame(rounds=6, offset=0.0, clients=("a", "b"), methods=("ksmote", "none")) -> pd.DataFrame:
    """FNR = 0.1·r/rounds + 0.2 for client b + 0.3 for method none + offset; every other metric 0.5."""
    records = []
    for m_i, method in enumerate(methods):
        for c_i, client in enumerate(clients):
            for r in range(1, rounds + 1):
                fnr = 0.1 * r / rounds + 0.2 * c_i + 0.3 * m_i + offset
                values = {name: 0.5 for name in METRIC_NAMES}
                records.append(RoundRecord("exp", method, client, r, {"global": {**values, "fnr": fnr}}, 0.1, 10, 0, 0,
                                           1, 0, 0, True, 0.1))
    return results_frame(records)


def test_last_rounds_mean_is_over_clients_and_the_last_rounds():
    summary = summarize(_frame(rounds=6), last=3)
    # ksmote: rounds 4..6, clients a and b: mean of 0.1·r/6 is 0.1·5/6, plus 0.1 (b's 0.2 over two clients).
    assert summary.last.loc[("ksmote", "global"), "fnr"] == pytest.approx(0.1 * 5 / 6 + 0.1)
    assert summary.final.loc[("ksmote", "global"), "fnr"] == pytest.approx(0.1 + 0.1)
    assert tuple(summary.last.loc[("none", "global"), ["first", "round"]]) == (4, 6)
    assert math.isnan(summary.final_std.loc[("ksmote", "global"), "fnr"])


def test_last_rounds_clip_to_the_rounds_there_are():
    summary = summarize(_frame(rounds=2), last=5)
    assert summary.last.loc[("ksmote", "global"), "first"] == 1


def test_seeds_give_the_mean_and_sample_std_across_seeds():
    frame = pd.concat([_frame(offset=o).assign(seed=s) for s, o in ((1, 0.0), (2, 0.1), (3, 0.2))], ignore_index=True)
    summary = summarize(frame, last=1)
    assert summary.seeds == 3
    assert summary.final.loc[("ksmote", "global"), "fnr"] == pytest.approx(0.2 + 0.1)
    assert summary.final_std.loc[("ksmote", "global"), "fnr"] == pytest.approx(0.1)
    markdown = summary_markdown(frame, last=1)
    assert "mean ± std across 3 seeds" in markdown
    assert "| ksmote | global | 6 | 0.3000 ± 0.1000 | 0.5000 ± 0.0000 |" in markdown


def test_curves_band_spans_clients_or_seeds():
    one = curves(_frame(rounds=3))["global"]["ksmote"]
    assert one.across == "clients"
    assert one.low.loc[3, "fnr"] == pytest.approx(0.1) and one.high.loc[3, "fnr"] == pytest.approx(0.3)
    seeds = pd.concat([_frame(rounds=3, offset=o).assign(seed=s) for s, o in ((1, 0.0), (2, 0.1))], ignore_index=True)
    two = curves(seeds)["global"]["ksmote"]
    assert two.across == "seeds"
    # per seed: mean over clients 0.2 (+0.1 for seed 2) at round 3
    assert (two.low.loc[3, "fnr"], two.mean.loc[3, "fnr"], two.high.loc[3, "fnr"]) == pytest.approx((0.2, 0.25, 0.3))


def test_figures_have_rate_axes_0_to_1_integer_round_ticks_and_a_band(tmp_path, monkeypatch):
    """A short run (3 rounds) with a tiny FPR: the axes stay 0..1 (not zoomed onto the noise),
    the round ticks are whole numbers, and the spread across clients is drawn as a band."""
    import matplotlib.pyplot as plt

    from p2p_job import figures

    seen = []
    monkeypatch.setattr(plt, "close", lambda fig: seen.append(fig))
    frame = _frame(rounds=3)
    frame["fpr"] = 1 / 400
    figures.plot_figures(frame, tmp_path)
    fig = seen[0]  # methods-global.png
    fnr_ax, fpr_ax = fig.axes[0], fig.axes[1]
    assert fpr_ax.get_ylim() == pytest.approx((-0.02, 1.02))
    ticks = [t for t in fnr_ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert len(fnr_ax.collections) == 2  # a band per method (clients differ in FNR)
    assert len(fpr_ax.collections) == 0  # no spread, no band
    seen.clear()
    figures.plot_figures(frame, tmp_path, autoscale=True)
    assert seen[0].axes[1].get_ylim()[1] < 0.1


def test_figures_of_methods_no_longer_in_the_results_are_removed(tmp_path):
    write_results(_frame(rounds=2), tmp_path)
    assert (tmp_path / "figures/none-global.png").exists()
    write_results(_frame(rounds=2, methods=("ksmote",)), tmp_path)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["ksmote-global.png", "methods-global.png"]


def test_compare_writes_one_table_and_figures_for_several_folders(tmp_path, capsys):
    write_results(_frame(), tmp_path / "a")
    write_results(_frame(offset=0.1, methods=("ksmote",)), tmp_path / "b")
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--last", "2"]) == 0
    markdown = (out / "comparison.md").read_text()
    assert "| a | ksmote | global | 6 |" in markdown and "| b | ksmote | global | 6 |" in markdown
    assert "| a | none | global |" in markdown and "| b | none |" not in markdown
    assert "last 2 rounds" in markdown
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["methods-global.png"]
    assert not (out / "results.parquet").exists()
    record = json.loads((out / "comparison.json").read_text())
    assert [f["folder"] for f in record["folders"]] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert record["command"][:2] == ["p2pk", "compare"] and record["code"]["sources_sha256"]
    assert "a/ksmote" not in capsys.readouterr().err


def test_compare_of_a_seeds_folder_shows_the_spread_across_seeds(tmp_path):
    for seed, offset in ((1, 0.0), (2, 0.2)):
        write_results(_frame(offset=offset), tmp_path / "rep" / f"seed-{seed}")
    assert main(["compare", str(tmp_path / "rep"), "--out", str(tmp_path / "cmp"), "--last", "1"]) == 0
    assert "| ksmote | global | 6 | 0.3000 ± 0.1414 |" in (tmp_path / "cmp/comparison.md").read_text()


def test_compare_names_a_folder_without_results(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "cmp")]) == 1
    assert f"{tmp_path}: no results.parquet" in capsys.readouterr().err
