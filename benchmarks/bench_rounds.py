"""Does a round cost the same at round 300 as at round 1? Every method of §5.2.2 run for the
paper's 300 rounds, at a reduced data scale, with each round's cost recorded.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/bench_rounds.py [--rounds 300] [--window 10] [--methods none,ksmote]
        [--engine batched] [--threads 1] [--benign 2000]

Setting: the per-round structure of the paper-scale experiment (benchmarks/bench_simulation.py)
at a fraction of its rows, so that 300 rounds of five methods fit on two shared cores: three
clients of built-in non-IID data with 115 features, the paper's minority counts (Table 1: 23, 34
and 58 malicious training rows) against ``--benign`` benign rows each (paper: 11,821–15,762),
the 115→80→50→10→1 network, 5 local epochs, batch 128, full mesh, ``updateProbability`` 1, the
default ``received: balanced`` D_o_syn, a validation and a global test set per client, scores
kept every ``evaluation.scoresEvery`` rounds in a results folder — what ``p2pk simulate`` does,
through :func:`p2p_job.simulate.simulate_methods`.

Each method runs alone (its three peers), one after the other, so that its own per-round cost
is measured: this process's CPU seconds between two rounds (with one thread, about the wall
time on an idle core; wall seconds are printed too). The table compares the first ``--window``
rounds with the last ``--window`` (medians, robust to a neighbour's burst on a shared machine)
and round 1 with the last round, after one unmeasured round of every method (first-use costs of
the process). Above 1.2 is the issue's bar ("round 300 costs no more than
1.2× round 1").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from p2p_job.rebalancing import METHODS
from p2p_job.scenarios import build_shards
from p2p_job.simulate import simulate_methods
from p2p_job.spec import P2PExperiment, parse_experiment
from p2p_job.training import resolve_device, set_cpu_threads

MALICIOUS = (23, 34, 58)  # Table 1's malicious training rows


def experiment(rounds: int, benign: int, methods: list[str]) -> P2PExperiment:
    clients = [
        {
            "name": f"client-{c}",
            "benignGroups": [f"device-{i}"],
            "maliciousGroups": [f"device-{i}"],
            "train": {"benign": benign, "malicious": m},
            "validation": {"benign": benign // 5, "malicious": 40},
        }
        for i, (c, m) in enumerate(zip("abc", MALICIOUS))
    ]
    doc = {
        "apiVersion": "p2pk.io/v1alpha1",
        "kind": "P2PExperiment",
        "metadata": {"name": "bench-rounds"},
        "spec": {
            "seed": 1,
            "rounds": rounds,
            "dataset": {"kind": "builtin", "builtin": {"devices": 3, "benignPerDevice": benign * 2, "maliciousPerFamily": 200}},
            "scenario": {"kind": "non-iid", "clients": clients, "globalTest": {"benign": benign // 5, "malicious": 40}},
            "methods": [{"rebalancing": m} for m in methods],
        },
    }
    return parse_experiment(doc, "bench_rounds")


def per_round_costs(exp: P2PExperiment, method, shards, device, engine: str, keep_in: Path) -> dict[str, np.ndarray]:
    """Wall and CPU seconds of each round of one method run alone."""
    stamps = [(time.perf_counter(), time.process_time())]

    def on_round(name, r, records):
        stamps.append((time.perf_counter(), time.process_time()))

    simulate_methods(exp, [method], shards, device, on_round, engine, keep_in)
    array = np.asarray(stamps)
    return {"wall": np.diff(array[:, 0]), "cpu": np.diff(array[:, 1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--window", type=int, default=10, help="rounds compared at each end")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--benign", type=int, default=2000, help="benign training rows per client (paper: ~12k)")
    parser.add_argument("--engine", default="batched", choices=("batched", "per-peer"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every round's seconds here")
    args = parser.parse_args()
    set_cpu_threads(args.threads)
    names = args.methods.split(",")
    exp = experiment(args.rounds, args.benign, names)
    device = resolve_device("cpu")
    shards = build_shards(exp)
    rows = {name: len(s.train.y) for name, s in shards.clients.items()}
    w = args.window
    print(f"{args.rounds} rounds per method, {args.engine} engine, {torch.get_num_threads()} thread(s); training rows {rows}; "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{'method':>13} {'clock':>5} {'round 1':>8} {f'median 1–{w}':>12} {f'median {args.rounds - w + 1}–{args.rounds}':>14} "
          f"{'round ' + str(args.rounds):>10} {'last/first window':>18} {f'round {args.rounds}/round 1':>18}", flush=True)
    kept: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        # One unmeasured round of every method first: PyTorch's and the samplers' first-use costs
        # are the process's, not the first measured method's round 1.
        simulate_methods(exp.model_copy(update={"spec": exp.spec.model_copy(update={"rounds": 1})}), exp.spec.methods,
                         shards, device, engine=args.engine)
        for method in exp.spec.methods:
            costs = per_round_costs(exp, method, shards, device, args.engine, Path(folder))
            kept[method.rebalancing] = {clock: values.tolist() for clock, values in costs.items()}
            for clock in ("cpu", "wall"):
                s = costs[clock]
                first, last = float(np.median(s[:w])), float(np.median(s[-w:]))
                print(f"{method.rebalancing:>13} {clock:>5} {s[0]:>8.3f} {first:>12.3f} {last:>14.3f} {s[-1]:>10.3f} "
                      f"{last / first:>18.2f} {s[-1] / s[0]:>18.2f}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(kept))


if __name__ == "__main__":
    main()
