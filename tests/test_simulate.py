"""``p2pk simulate``: all peers in one process, on built-in data."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from p2p_job.cli import main
from p2p_job.results import read_parquet
from p2p_job.spec import parse_experiment
from p2p_job.simulate import simulate

QUICKSTART = Path(__file__).parent.parent / "examples" / "quickstart.yaml"


def _document(seed: int = 3, rounds: int = 2) -> dict:
    """Three non-IID clients, one built-in device each, a few dozen rows: seconds per run."""
    clients = [
        {
            "name": f"client-{c}",
            "benignGroups": [f"device-{i}"],
            "maliciousGroups": [f"device-{i}"],
            "train": {"benign": 120, "malicious": 12},
            "validation": {"benign": 40, "malicious": 10},
        }
        for i, c in enumerate("abc")
    ]
    return {
        "apiVersion": "p2pk.io/v1alpha1",
        "kind": "P2PExperiment",
        "metadata": {"name": "tiny"},
        "spec": {
            "seed": seed,
            "rounds": rounds,
            "dataset": {"kind": "builtin", "builtin": {"devices": 3, "families": 2, "features": 12, "benignPerDevice": 250, "maliciousPerFamily": 20}},
            "scenario": {"kind": "non-iid", "clients": clients, "globalTest": {"benign": 60, "malicious": 24}},
            "methods": [{"rebalancing": "none"}, {"rebalancing": "ksmote"}],
            "rebalancing": {"k": 4, "neighbours": 5},
            "training": {"hiddenLayers": [16, 8], "localEpochs": 2, "batchSize": 32, "learningRate": 0.003},
            "runtime": {"device": "cpu"},
        },
    }


@pytest.fixture(autouse=True)
def one_thread():
    """As ``p2pk simulate`` does by default (the test machine's cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _without_timing(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="round_seconds", errors="ignore")


def test_rows_cover_every_method_client_round_and_evaluation_set():
    frame = simulate(parse_experiment(_document()))
    assert len(frame) == 2 * 3 * 2 * 2
    assert set(frame.groupby(["method", "client", "round", "eval"]).size()) == {1}
    assert list(frame["method"].unique()) == ["none", "ksmote"]
    ksmote, none = frame[frame["method"] == "ksmote"], frame[frame["method"] == "none"]
    assert (ksmote["n_received"] > 0).all() and (none["n_received"] == 0).all()
    assert frame["aggregated"].all() and (frame["neighbours_used"] == 2).all() and (frame["neighbours_missing"] == 0).all()


def test_same_seed_is_identical_to_the_bit_and_another_seed_is_not():
    first = simulate(parse_experiment(_document(seed=3)))
    second = simulate(parse_experiment(_document(seed=3)))
    other = simulate(parse_experiment(_document(seed=4)))
    pd.testing.assert_frame_equal(_without_timing(first), _without_timing(second), check_exact=True)
    assert not _without_timing(first).equals(_without_timing(other))


def _assert_agree_to_rounding(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Two runs whose weights differ by float rounding (tests/test_training.py: < 1e-5): the
    same rows, counts and kinds; training losses within 1e-5 relative; and the metrics, which
    rank and threshold scores, equal to 1e-5 in at least 90% of the rows — rounding may move a
    score past a nearly equal one or past a threshold, which changes a rate by one row. The
    operating point's ``threshold`` (p2p_job.operating: the midpoint between two adjacent
    validation scores) is not compared: rounding that merges or splits two nearly tied scores
    moves it to another midpoint; the metrics at it (``tuned_*``) are compared."""
    a, b = _without_timing(a).reset_index(drop=True), _without_timing(b).reset_index(drop=True)
    loose = ("train_loss", "fnr_by_kind", "threshold")
    scored = [c for c in a.columns if a[c].dtype == float and c not in loose]
    exact = [c for c in a.columns if c not in scored and c not in loose]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
    # Rates and thresholds are in [0, 1]: 1e-6 absolute is rounding, one row of an evaluation set is ≥ 1e-3.
    close = np.isclose(a[scored].to_numpy(float), b[scored].to_numpy(float), rtol=1e-5, atol=1e-6, equal_nan=True)
    differing = {c: int((~close[:, i]).sum()) for i, c in enumerate(scored) if not close[:, i].all()}
    assert close.all(axis=1).mean() >= 0.9, f"rows differing: {(~close.all(axis=1)).sum()} of {len(a)}; by column: {differing}"


def test_a_method_gives_the_same_results_alone_or_beside_others():
    """Every method runs on identical shards and seeds: running one alone changes nothing — to
    the bit with the per-peer engine, to float rounding when the methods' peers train stacked."""
    exp = parse_experiment(_document())
    both = simulate(exp, engine="per-peer")
    alone = simulate(exp, methods=["ksmote"], engine="per-peer")
    pd.testing.assert_frame_equal(
        _without_timing(both[both["method"] == "ksmote"]).reset_index(drop=True), _without_timing(alone), check_exact=True
    )
    both = simulate(exp, engine="batched")
    _assert_agree_to_rounding(both[both["method"] == "ksmote"], simulate(exp, methods=["ksmote"], engine="batched"))


def test_batched_and_per_peer_engines_agree_to_float_rounding():
    """The stated tolerance of tests/test_training.py carried through rounds of merging and
    evaluation."""
    exp = parse_experiment(_document())
    _assert_agree_to_rounding(simulate(exp, engine="batched"), simulate(exp, engine="per-peer"))


def test_unknown_method_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['smote'\]; the spec's methods are \['none', 'ksmote'\]"):
        simulate(parse_experiment(_document()), methods=["smote"])


def _spec_file(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_cli_writes_results_summary_and_figures(tmp_path, capsys):
    spec = _spec_file(tmp_path, _document(rounds=3))
    out = tmp_path / "out"
    assert main(["simulate", str(spec), "--out", str(out), "--rounds", "1", "--methods", "ksmote"]) == 0
    frame = read_parquet(out / "results.parquet")
    assert set(frame["round"]) == {1} and set(frame["method"]) == {"ksmote"} and len(frame) == 3 * 2
    assert "ksmote" in (out / "summary.md").read_text()
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "kinds-global.png", "kinds-local.png", "ksmote-global.png", "ksmote-local.png", "methods-global.png", "methods-local.png",
        "roc-global.png", "roc-local.png",
    ]
    captured = capsys.readouterr()
    assert "Final round, mean over clients" in captured.out
    # A progress line per figure, in the order they are drawn.
    assert re.findall(r"figure \d+/\d+: \S+", captured.err + captured.out) == [
        "figure 1/4: methods-local.png", "figure 2/4: methods-global.png", "figure 3/4: ksmote-local.png",
        "figure 4/4: ksmote-global.png",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "smote"], "unknown method(s) ['smote']"),
        (["--rounds", "0"], "rounds must be at least 1, got 0"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--threads", "many"], "--threads must be a number or 'auto', got 'many'"),
    ],
)
def test_cli_rejects_bad_arguments_with_exit_2(tmp_path, capsys, args, message):
    spec = _spec_file(tmp_path, _document())
    assert main(["simulate", str(spec), "--out", str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_exits_2_on_an_invalid_spec(tmp_path, capsys):
    document = _document()
    document["spec"]["training"]["learningRate"] = -1
    assert main(["simulate", str(_spec_file(tmp_path, document))]) == 2
    assert "spec.training.learningRate" in capsys.readouterr().err


def test_cli_reports_unusable_data_with_exit_1(tmp_path, capsys):
    """Counts that each fit the built-in data (so the spec is valid) but not one after the other:
    client-b's device-0 rows were taken by client-a."""
    document = _document()
    document["spec"]["scenario"]["clients"][1]["benignGroups"] = ["device-0"]
    assert main(["simulate", str(_spec_file(tmp_path, document)), "--out", str(tmp_path / "out")]) == 1
    assert "client 'client-b', train: needs 120 benign rows but only 90 are available" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_ksmote_lowers_the_global_test_fnr_against_no_rebalancing(tmp_path):
    """The quickstart (built-in non-IID data, §5.2.4's structure): K-SMOTE's shared synthetic
    attacks let each client recognise the other devices' attacks on the global test set."""
    assert main(["simulate", str(QUICKSTART), "--out", str(tmp_path), "--methods", "none,ksmote"]) == 0
    frame = read_parquet(tmp_path / "results.parquet")
    final = frame[(frame["eval"] == "global") & (frame["round"] == frame["round"].max())]
    fnr = final.groupby("method")["fnr"].mean()
    assert fnr["ksmote"] < fnr["none"], (
        f"final-round global FNR (mean over clients): ksmote {fnr['ksmote']:.4f}, none {fnr['none']:.4f}"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_reports_a_missing_cuda_device_with_exit_1(tmp_path, capsys):
    assert main(["simulate", str(_spec_file(tmp_path, _document())), "--device", "cuda", "--out", str(tmp_path / "out")]) == 1
    assert "PyTorch sees no CUDA device" in capsys.readouterr().err
