"""``p2pk run``: one worker process per client; the same results as ``p2pk simulate``; a killed
worker is restarted and resumes; Ctrl-C leaves no worker behind; a worker failing for good
fails the run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import services
import torch

from p2p_job.local import RunSettings, run_local
from p2p_job.results import read_parquet
from p2p_job.scores import read_scores
from p2p_job.simulate import simulate
from p2p_job.spec import load_experiment
from test_simulate import _assert_agree_to_rounding as assert_agree_to_rounding

KEY = ["method", "client", "round", "eval"]


@pytest.fixture
def one_thread(monkeypatch):
    """PyTorch on one thread here and in the workers: sums are then reduced in one order, so
    ``simulate`` and the workers compute the same bits."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["round_seconds"]).sort_values(KEY).reset_index(drop=True)


def simulated(spec: Path, engine: str = "per-peer") -> pd.DataFrame:
    """``p2pk simulate``'s results; its per-peer engine trains each peer alone as a worker does."""
    return comparable(simulate(load_experiment(spec), base_dir=spec.parent, engine=engine))


def events(log: Path) -> list[dict]:
    from p2p_job.telemetry import parse_log_line

    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [e for e in map(parse_log_line, lines) if e]


def p2pk(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "p2p_job.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return True
    return state == "Z"


@pytest.mark.slow
def test_run_gives_the_same_results_as_simulate(tmp_path, tiny_spec, one_thread):
    """Two methods run one after the other over the directory store: every metric of every
    (method, client, round, eval) equals the in-process simulation's — to the bit with its
    per-peer engine, to float rounding with the batched one (tests/test_simulate.py)."""
    spec = tiny_spec("same", n_clients=2, methods=[{"rebalancing": "ksmote"}, {"rebalancing": "none", "aggregation": "fedavg"}])
    frame = run_local(load_experiment(spec), spec, RunSettings(out=tmp_path / "out"))
    pd.testing.assert_frame_equal(comparable(frame), simulated(spec))
    assert_agree_to_rounding(comparable(frame), simulated(spec, "batched"))
    assert sorted(frame["method"].unique()) == ["ksmote", "none-fedavg"]
    pd.testing.assert_frame_equal(comparable(read_parquet(tmp_path / "out/results.parquet")), comparable(frame))
    assert (tmp_path / "out/summary.md").read_text().count("| ksmote | global |") == 2  # final round, last rounds
    assert {"ksmote-global.png", "ksmote-local.png", "kinds-global.png"} <= {p.name for p in (tmp_path / "out/figures").iterdir()}
    assert (tmp_path / "out/store/same/none-fedavg/spec.yaml").exists()
    assert (tmp_path / "out/logs/ksmote/client-b.log").exists()
    # Scores of the last round and the final models, copied from the store; ROC curves drawn from them.
    kept = read_scores(tmp_path / "out")
    assert sorted(set(zip(kept["method"], kept["client"], kept["round"]))) == [
        (m, c, 2) for m in ("ksmote", "none-fedavg") for c in ("client-a", "client-b")]
    assert all((tmp_path / f"out/models/{m}/{c}.safetensors").is_file() for m in ("ksmote", "none-fedavg") for c in ("client-a", "client-b"))
    assert (tmp_path / "out/figures/roc-global.png").is_file()


@pytest.mark.slow
def test_a_killed_worker_resumes_and_the_run_completes_on_s3(tmp_path, tiny_spec, s3_server, one_thread):
    """SIGKILL client-a after its first round, mid-run: ``p2pk run`` restarts it, it resumes from
    its last checkpoint, and the results hold every round once, equal to simulate's. (Rounds of
    the tiny spec take a tenth of a second: 40 of them, so that the kill finds it working.)"""
    spec = tiny_spec("killed", n_clients=2, rounds=40)
    out = tmp_path / "out"
    log = out / "logs/ksmote/client-a.log"
    env = {**os.environ, **s3_server.env}
    run = p2pk("run", str(spec), "--out", str(out), "--store", s3_server.store_url(),
               "--s3-endpoint", s3_server.endpoint, env=env)
    try:
        services.wait_for(lambda: any(e["event"] == "round_end" for e in events(log)), 120, "client-a's round 1")
        pid = next(e["pid"] for e in events(log) if e["event"] == "worker_start")
        os.kill(pid, signal.SIGKILL)
        output, _ = run.communicate(timeout=240)
    finally:
        run.kill()
    assert run.returncode == 0, output
    starts = [e for e in events(log) if e["event"] == "worker_start"]
    assert len(starts) == 2 and starts[1]["resume_from"] >= 1
    results = comparable(read_parquet(out / "results.parquet"))
    assert results.groupby(["client", "eval"])["round"].apply(list).tolist() == [list(range(1, 41))] * 4
    pd.testing.assert_frame_equal(results, simulated(spec))
    # Piped, the runner says so in a plain line (a terminal shows "(1 restart(s))" on the bar).
    assert re.search(r"worker ksmote/client-a: .*; restarting it at round \d+ \(restart 1\)", output), output


@pytest.mark.slow
def test_ctrl_c_stops_every_worker(tmp_path, tiny_spec):
    # Rounds of the tiny spec take a tenth of a second: 50 of them (and the results after) could
    # finish on a loaded machine between two looks at the logs, before the Ctrl-C is sent.
    spec = tiny_spec("stopped", n_clients=2, rounds=2000)
    out = tmp_path / "out"
    run = p2pk("run", str(spec), "--out", str(out), preexec_fn=services.default_sigint)
    logs = [out / f"logs/ksmote/client-{c}.log" for c in "ab"]
    try:
        pids = services.wait_for(
            lambda: [e["pid"] for log in logs for e in events(log) if e["event"] == "worker_start"][:2]
            if all(any(e["event"] == "round_end" for e in events(log)) for log in logs) else None,
            120, "both workers to finish a round")
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, output
    assert "interrupted" in output
    assert all(gone(pid) for pid in pids)
    assert any(e["event"] == "worker_stopped" for log in logs for e in events(log))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_the_machine_lacks_fails_the_run_at_once_naming_it(tmp_path, tiny_spec):
    """Checked by the runner before any worker starts: one line, no worker, no retry."""
    run = p2pk("run", str(tiny_spec("nocuda", n_clients=2)), "--out", str(tmp_path / "out"), "--device", "cuda")
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 1, output
    assert output.strip().splitlines()[-1] == (
        "p2pk run: fatal device: runtime.device is 'cuda' but PyTorch sees no CUDA device (use 'auto' or 'cpu')")
    assert not (tmp_path / "out/logs").exists()
    assert json.loads((tmp_path / "out/run.json").read_text())["status"] == "failed"


def test_an_s3_store_without_credentials_fails_the_run_at_once(tmp_path, tiny_spec):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run = p2pk("run", str(tiny_spec("nocreds")), "--out", str(tmp_path / "out"), "--store", "s3://lab/runs",
               "--s3-endpoint", "127.0.0.1:9", env=env)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 1, output
    assert output.strip().splitlines()[-1] == ("p2pk run: fatal store-denied: s3://lab/runs: no S3 credentials; "
                                               "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_a_dataset_the_runner_cannot_read_fails_the_run_at_once_naming_it(tmp_path, tiny_spec):
    """The runner cuts the shards once, before any worker starts: a file that is not BoT-IoT
    ends the run in one line naming file and line, with no worker started."""
    (tmp_path / "botiot.csv").write_text("hello\nthis is not bot-iot\n")
    spec = tiny_spec("baddata", n_clients=2, dataset={"kind": "botiot", "path": "botiot.csv"})
    run = p2pk("run", str(spec), "--out", str(tmp_path / "out"))
    output, _ = run.communicate(timeout=240)
    assert run.returncode == 1, output
    assert output.strip().splitlines()[-1].startswith(f"p2pk run: fatal data: {tmp_path / 'botiot.csv'}: cannot tell the "
                                                      "delimiter (comma, semicolon or tab)"), output
    assert not (tmp_path / "out/logs").exists()


@pytest.mark.slow
def test_a_workers_fatal_error_reaches_the_console_in_one_line_without_retries(tmp_path, tiny_spec):
    """client-a's own checkpoint in the store is corrupt: its worker exits 5 (fatal checkpoint)
    and ``p2pk run`` stops at once with that worker's own line; nothing is restarted."""
    from p2p_job.store import DirectoryStore, checkpoint_key

    spec, store = tiny_spec("corrupt", n_clients=2), tmp_path / "store"
    DirectoryStore(str(store)).put_bytes(checkpoint_key("corrupt", "ksmote", "client-a", "latest.json"), b"{not json")
    run = p2pk("run", str(spec), "--out", str(tmp_path / "out"), "--store", store.as_uri(), "--resume")
    output, _ = run.communicate(timeout=240)
    assert run.returncode == 1, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("p2pk run: worker ksmote/client-a: fatal checkpoint: "), output
    assert last.endswith(f"(exit 5; log: {tmp_path / 'out/logs/ksmote/client-a.log'})")
    assert "restarting" not in output
    log = events(tmp_path / "out/logs/ksmote/client-a.log")
    assert [e["cause"] for e in log if e["event"] == "worker_failed"] == ["checkpoint"]


def test_unknown_method_is_a_usage_error(tmp_path, tiny_spec):
    run = p2pk("run", str(tiny_spec("bad")), "--out", str(tmp_path / "out"), "--methods", "nope")
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 2
    assert "unknown method(s) ['nope']" in output


def test_a_workers_log_gives_the_runner_its_progress(tmp_path):
    """``p2pk run``'s progress comes from the workers' JSON lines: the latest ``round_end``, and
    the round a restarted worker resumed from (so a resumed, finished worker is not shown at 0);
    every line is kept in the worker's log file."""
    import io
    import json

    from p2p_job.local import Worker, _follow
    from p2p_job.restarts import RestartBudget

    worker = Worker("ksmote", "client-a", {}, tmp_path / "a.log", RestartBudget(3))
    lines = [
        json.dumps({"event": "worker_start", "resume_from": 3}),
        "not json: a stray line",
        json.dumps({"event": "store_wait", "call": "get k", "waited": 12.5, "error": "connection refused"}),
        json.dumps({"event": "round_end", "round": 4, "eval": "global", "fnr": 0.25, "fpr": 0.1}),
    ]
    _follow(worker, io.StringIO("".join(line + "\n" for line in lines[:3])))
    assert (worker.resumed_from, worker.last) == (3, {})
    assert worker.waiting["waited"] == 12.5 and worker.round_reached() == 4  # waiting for the store in round 4
    _follow(worker, io.StringIO(lines[3] + "\n"))
    assert worker.last["round"] == 4 and worker.resumed_from == 3
    assert worker.waiting == {} and worker.round_reached() == 5
    assert worker.log_path.read_text().splitlines() == lines


@pytest.mark.slow
def test_a_rerun_into_the_same_folder_resumes_or_is_refused(tmp_path, tiny_spec):
    """``--rounds`` reaches the workers (through the spec as run, ``<out>/spec.yaml``); piped,
    the console gets a line per worker round; running again with the same spec and code
    resumes and says so (no worker is started: every round is done), with another spec it is
    refused, naming the field and the choice."""
    spec, out = tiny_spec("again", n_clients=2, rounds=3), tmp_path / "out"
    first = p2pk("run", str(spec), "--out", str(out), "--rounds", "1")
    output, _ = first.communicate(timeout=240)
    assert first.returncode == 0, output
    assert set(read_parquet(out / "results.parquet")["round"]) == {1}
    assert "ksmote/client-a round 1: global FNR" in output and f"drawing figures in {out / 'figures'}" in output
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "done" and record["store"] == (out / "store").resolve().as_uri()

    again = p2pk("run", str(spec), "--out", str(out), "--rounds", "1")
    output, _ = again.communicate(timeout=240)
    assert again.returncode == 0, output
    assert f"resuming the run in {out}" in output
    assert "ksmote: every client has finished its 1 rounds already (in the store)" in output
    assert len([e for e in events(out / "logs/ksmote/client-a.log") if e["event"] == "worker_start"]) == 1

    refused = p2pk("run", str(spec), "--out", str(out))
    output, _ = refused.communicate(timeout=240)
    assert refused.returncode == 2, output
    assert output.strip().splitlines()[-1] == (
        f"p2pk run: {out} holds results of a different spec (spec.rounds: 1 → 3); run into a fresh folder (--out), "
        "or add --force to delete its results and start again")


def test_rounds_done_are_the_checkpoints_commit_points(tmp_path, tiny_spec):
    """A method is skipped on a rerun only when every client's checkpoint (the worker's commit
    point) reached the last round; metrics rows alone do not count, an unreadable record is 0."""
    from p2p_job.local import rounds_done
    from p2p_job.store import DirectoryStore, checkpoint_key

    exp = load_experiment(tiny_spec("done", n_clients=2, methods=[{"rebalancing": "ksmote"}, {"rebalancing": "none"}]))
    store = DirectoryStore(str(tmp_path / "store"))
    for method, client, body in (("ksmote", "client-a", b'{"round": 2}'), ("ksmote", "client-b", b'{"round": 1}'),
                                 ("none", "client-a", b'{"round": 2}'), ("none", "client-b", b"[not a record")):
        store.put_bytes(checkpoint_key("done", method, client, "latest.json"), body)
    assert rounds_done(exp, store) == {"ksmote": 1, "none": 0}


@pytest.mark.slow
def test_an_attack_runs_the_same_in_worker_processes_as_in_simulate(tmp_path, tiny_spec, one_thread):
    """spec.adversaries acts on the publishing side of the one Peer: worker processes over the
    directory store give the simulation's results to the bit, with the adversary's rows marked
    and its points dropped by its neighbours (out-of-range), one by one and counted."""
    spec = tiny_spec("attacked", adversaries=[{"client": "client-c", "attack": "out-of-range"}])  # as many as it shares
    frame = comparable(run_local(load_experiment(spec), spec, RunSettings(out=tmp_path / "out")))
    pd.testing.assert_frame_equal(frame, simulated(spec))
    assert set(frame.loc[frame["adversarial"], "client"]) == {"client-c"}
    honest = frame.loc[~frame["adversarial"]]
    assert (honest["payloads_rejected"] == 0).all() and (honest["points_rejected"] > 0).all()  # a and b drop c's points every round
    assert (honest["neighbours_used"] == 2).all()  # and use its (honest) model
    assert "honest clients only; adversarial, left out: client-c" in (tmp_path / "out/summary.md").read_text()


@pytest.mark.slow
def test_the_validation_rule_runs_the_same_in_worker_processes_as_in_simulate(tmp_path, tiny_spec, one_thread):
    """The validation rule scores neighbours inside the one Peer (its own validation split, no
    store or process in it): worker processes give the simulation's results to the bit, and
    each honest peer leaves the replaced model out every round (robust-rule) as an outlier, and
    its points with it (hostile-sender)."""
    spec = tiny_spec("validated", adversaries=[{"client": "client-c", "attack": "model-replacement"}],
                     aggregation={"robustRule": "validation"})
    frame = comparable(run_local(load_experiment(spec), spec, RunSettings(out=tmp_path / "out")))
    pd.testing.assert_frame_equal(frame, simulated(spec))
    honest = frame.loc[~frame["adversarial"]]
    assert (honest["payloads_rejected"] == 1).all() and (honest["neighbours_used"] == 1).all()
    assert (honest["points_rejected"] > 0).all() and (honest["n_received"] > 0).all()


def test_the_runner_itself_imports_no_pytorch():
    """``p2pk run``'s own process plans, cuts shards, collects the metrics parts and writes
    results without PyTorch (its workers import it): its start is not delayed by the import."""
    modules = ["p2p_job.commands.run", "p2p_job.local", "p2p_job.collect", "p2p_job.results", "p2p_job.scores",
               "p2p_job.shards", "p2p_job.runrecord", "p2p_job.choices", "p2p_job.figures"]
    code = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
