"""Store overhead of ``p2pk run``: the share of a round that workers spend in store calls, and
the bytes each client moves per round, for the directory store and for S3 (moto's server over
HTTP with the minio client).

Runs a K-SMOTE experiment on the built-in data with the paper's network (115 features,
115→80→50→10→1) as real worker processes through ``p2p_job.local.run_method``, then reads the
workers' ``round_end`` log lines: each carries the worker's running totals of seconds spent in
store calls (``RetryingStore.seconds``: publish, gather polls, payload reads, metrics file,
checkpoint) and of bytes written and read. Per client and round:

    store share = Δ store seconds / Δ wall time between two round_end lines

Round 1 is left out (it also waits for the other workers to start). It also prints the bytes
each client's checkpoint wrote in round 2 and in the last round (``checkpoint_bytes`` of
``round_end``): incremental checkpoints keep them flat. ``--received unbounded`` runs Algorithm 2
line 16 as written (D_o_syn grows every round), the hardest case for that. Usage::

    .venv/bin/python benchmarks/bench_store.py [--clients 3] [--rounds 5] [--epochs 5] [--stores directory,s3] [--received balanced|unbounded]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from p2p_job.local import RunSettings, open_run_store, run_method
from p2p_job.shards import ensure_shards
from p2p_job.spec import load_experiment
from p2p_job.telemetry import parse_log_line


def experiment(clients: int, rounds: int, epochs: int, received: str = "balanced") -> dict:
    names = [f"client-{chr(ord('a') + i)}" for i in range(clients)]
    return {
        "apiVersion": "p2pk.io/v1alpha1",
        "kind": "P2PExperiment",
        "metadata": {"name": "bench-store"},
        "spec": {
            "seed": 1,
            "rounds": rounds,
            "dataset": {"kind": "builtin", "builtin": {"devices": clients, "families": 2, "features": 115,
                                                       "benignPerDevice": 2000, "maliciousPerFamily": 150}},
            "scenario": {"kind": "non-iid", "globalTest": {"benign": 300, "malicious": 60}, "clients": [
                {"name": n, "benignGroups": [f"device-{i}"], "maliciousGroups": [f"device-{i}"],
                 "train": {"benign": 1500, "malicious": 40}, "validation": {"benign": 300, "malicious": 40}}
                for i, n in enumerate(names)]},
            "methods": [{"rebalancing": "ksmote"}],
            "rebalancing": {"received": received},
            "training": {"localEpochs": epochs, "learningRate": 0.001},
            "runtime": {"device": "cpu", "roundTimeoutSeconds": 300},
        },
    }


def per_round(log: Path) -> list[dict]:
    """(store seconds, wall seconds, bytes written, bytes read) of each round after the first."""
    events = [e for e in map(parse_log_line, log.read_text().splitlines()) if e and e["event"] == "round_end"]
    return [
        {
            "store_s": b["store_seconds"] - a["store_seconds"],
            "wall_s": b["ts"] - a["ts"],
            "written": b["bytes_written"] - a["bytes_written"],
            "read": b["bytes_read"] - a["bytes_read"],
            "round": b["round"],
            "checkpoint": b["checkpoint_bytes"],
        }
        for a, b in zip(events, events[1:])
    ]


def start_moto() -> tuple[subprocess.Popen, str]:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def bench(kind: str, spec_path: Path, work: Path) -> list[dict]:
    exp = load_experiment(spec_path)
    moto = None
    settings = RunSettings(out=work / kind)
    if kind == "s3":
        moto, endpoint = start_moto()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        settings = RunSettings(out=work / kind, store="s3://bench/experiments", s3_endpoint=endpoint)
    try:
        ensure_shards(exp, open_run_store(settings), spec_path.parent)  # creates the bucket, cuts the shards once
        run_method(exp, spec_path, "ksmote", settings)
    finally:
        if moto:
            moto.kill()
    return [row for log in sorted((settings.out / "logs/ksmote").glob("*.log")) for row in per_round(log)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5, help="local epochs per round (the paper's 5)")
    parser.add_argument("--stores", default="directory,s3")
    parser.add_argument("--received", default="balanced", choices=("balanced", "unbounded"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec_path = work / "bench.yaml"
        spec_path.write_text(yaml.safe_dump(experiment(args.clients, args.rounds, args.epochs, args.received), sort_keys=False))
        print(f"{args.clients} clients, {args.epochs} local epochs, rounds 2..{args.rounds} (mean over clients and rounds)")
        print("| store | store s/round | round s | store share | KiB written/round/client | KiB read/round/client "
              "| checkpoint KiB round 2 | last round | ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        for kind in args.stores.split(","):
            rows = bench(kind, spec_path, work)
            store_s = statistics.mean(r["store_s"] for r in rows)
            wall_s = statistics.mean(r["wall_s"] for r in rows)
            share = statistics.mean(r["store_s"] / r["wall_s"] for r in rows)
            written = statistics.mean(r["written"] for r in rows) / 1024
            read = statistics.mean(r["read"] for r in rows) / 1024
            first = statistics.mean(r["checkpoint"] for r in rows if r["round"] == 2) / 1024
            last = statistics.mean(r["checkpoint"] for r in rows if r["round"] == args.rounds) / 1024
            print(f"| {kind} | {store_s:.3f} | {wall_s:.2f} | {share:.1%} | {written:.0f} | {read:.0f} "
                  f"| {first:.0f} | {last:.0f} | {last / first:.2f} |", flush=True)


if __name__ == "__main__":
    main()
