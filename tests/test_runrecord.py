"""Output folders that say what they hold: the run record (``run.json``), re-running into a
folder (refused, resumed or forced), progress as plain lines when the output is not a terminal,
repeats over seeds, and Ctrl-C in ``p2pk simulate`` keeping the finished methods."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pandas as pd
import pytest
import services
import torch

from p2p_job import runrecord
from p2p_job.cli import main
from p2p_job.results import read_parquet


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def spec(tmp_path):
    return services.write_spec(tmp_path / "exp.yaml", services.tiny_experiment("rec", n_clients=2, rounds=1))


def simulate(capsys, *args) -> tuple[int, str]:
    code = main(["simulate", *map(str, args)])
    return code, capsys.readouterr().err


def test_the_run_record_says_what_ran(tmp_path, spec, capsys):
    out = tmp_path / "out"
    code, err = simulate(capsys, spec, "--out", out, "--set", "training.learningRate=0.01")
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())
    assert record["format"] == "p2pk.run/v1" and record["runner"] == "simulate" and record["status"] == "done"
    assert record["spec"]["spec"]["training"]["learningRate"] == 0.01 and record["seed"] == 7
    assert record["sets"] == ["training.learningRate=0.01"] and record["resumed"] is False
    assert record["command"] == ["p2pk", "simulate", str(spec), "--out", str(out), "--set", "training.learningRate=0.01"]
    assert record["code"]["sources_sha256"] == runrecord.source_digest() and record["code"]["package"]
    assert {"python", "torch", "numpy", "pandas", "scikit-learn"} <= set(record["packages"])
    assert record["started"] <= record["finished"]
    assert (out / "spec.yaml").read_text().count("learningRate: 0.01") == 1
    # progress, piped: plain lines as it goes, and the figures announced
    assert re.search(r"^\[\d\d:\d\d\] ksmote round 1: global FNR \d\.\d{4} FPR \d\.\d{4} \[1/1\]$", err, re.M), err
    assert f"drawing figures in {out / 'figures'}" in err


@pytest.mark.slow
def test_rerunning_into_a_folder_resumes_or_is_refused_naming_the_choice(tmp_path, spec, capsys, monkeypatch):
    out = tmp_path / "out"
    assert simulate(capsys, spec, "--out", out)[0] == 0
    first = read_parquet(out / "results.parquet")

    code, err = simulate(capsys, spec, "--out", out, "--rounds", "2")
    assert code == 2
    assert err.strip() == (f"p2pk simulate: {out} holds results of a different spec (spec.rounds: 1 → 2); run into a "
                           "fresh folder (--out), or add --force to delete its results and start again")

    code, err = simulate(capsys, spec, "--out", out)  # same spec, same code: resumed, nothing recomputed
    assert code == 0 and f"resuming the run in {out}" in err and "kept from the earlier run: ksmote" in err
    pd.testing.assert_frame_equal(read_parquet(out / "results.parquet"), first)  # round_seconds too: not rerun
    record = json.loads((out / "run.json").read_text())
    assert record["resumed"] is True and len(record["history"]) == 1

    monkeypatch.setattr(runrecord, "source_digest", lambda: "0" * 64)  # the code changed
    code, err = simulate(capsys, spec, "--out", out)
    assert code == 2 and f"{out} holds results of other code (" in err
    assert "add --resume to continue them with this code, --force to delete them and start again" in err
    code, err = simulate(capsys, spec, "--out", out, "--resume")
    assert code == 0 and "resuming" in err
    assert json.loads((out / "run.json").read_text())["history"][-1]["code"]["sources_sha256"] != "0" * 64

    (out / "run.json").unlink()
    code, err = simulate(capsys, spec, "--out", out)
    assert code == 2 and "holds results without a run record (run.json)" in err

    code, err = simulate(capsys, spec, "--out", out, "--force", "--rounds", "2")
    assert code == 0 and "resuming" not in err
    assert set(read_parquet(out / "results.parquet")["round"]) == {1, 2}
    assert json.loads((out / "run.json").read_text())["resumed"] is False


@pytest.mark.slow
def test_seeds_repeat_the_run_and_the_summary_gives_mean_and_spread(tmp_path, spec, capsys):
    out = tmp_path / "rep"
    code = main(["simulate", str(spec), "--out", str(out), "--seeds", "1-2,5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for seed in (1, 2, 5):
        assert json.loads((out / f"seed-{seed}/run.json").read_text())["seed"] == seed
        assert read_parquet(out / f"seed-{seed}/results.parquet")["round"].max() == 1
    assert json.loads((out / "run.json").read_text())["seeds"] == [1, 2, 5]
    markdown = (out / "summary.md").read_text()
    assert "## Final round, mean over clients, mean ± std across 3 seeds" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| ksmote | global | 1 |"))
    fnr = [read_parquet(out / f"seed-{s}/results.parquet").query("eval == 'global'")["fnr"].mean() for s in (1, 2, 5)]
    assert row.split(" | ")[3] == f"{pd.Series(fnr).mean():.4f} ± {pd.Series(fnr).std():.4f}"
    assert "mean ± std across 3 seeds" in captured.out
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["methods-global.png", "methods-local.png"]


@pytest.mark.slow
def test_seeds_repeat_a_local_run_with_worker_processes(tmp_path, spec, capsys):
    """``p2pk run --seeds``: each seed is a whole run of worker processes in its own folder,
    and the top summary gives mean ± std across the seeds."""
    out = tmp_path / "rep"
    code = main(["run", str(spec), "--out", str(out), "--seeds", "3,4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for seed in (3, 4):
        assert json.loads((out / f"seed-{seed}/run.json").read_text())["seed"] == seed
        assert (out / f"seed-{seed}/logs").is_dir()  # workers ran as processes
    fnr = [read_parquet(out / f"seed-{s}/results.parquet").query("eval == 'global'")["fnr"].mean() for s in (3, 4)]
    markdown = (out / "summary.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| ksmote | global | 1 |"))
    assert row.split(" | ")[3] == f"{pd.Series(fnr).mean():.4f} ± {pd.Series(fnr).std():.4f}"


@pytest.mark.slow
def test_ctrl_c_in_simulate_keeps_the_finished_rounds(tmp_path):
    """The methods advance round by round together: Ctrl-C writes every round they finished."""
    # Rounds of the tiny spec take a tenth of a second: 60 of them could all finish on a loaded
    # machine before the Ctrl-C sent on reading round 2 arrives.
    document = services.tiny_experiment("stop", n_clients=2, rounds=2000,
                                        methods=[{"name": "quick", "rebalancing": "none"}, {"rebalancing": "ksmote"}])
    spec = services.write_spec(tmp_path / "exp.yaml", document)
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "p2p_job.cli", "simulate", str(spec), "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=services.default_sigint)
    try:
        for line in run.stderr:  # plain progress lines, as they come
            if "ksmote round 2:" in line:
                break
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 130, err
    assert f"interrupted: writing the rounds every method finished to {out}" in err
    kept = read_parquet(out / "results.parquet")
    assert set(kept["method"]) == {"quick", "ksmote"} and 2 <= kept["round"].max() < 2000
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
