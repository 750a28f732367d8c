"""``p2pk simulate``'s training engines against a plain per-client PyTorch loop, and the wall
time of the paper-scale experiment.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/bench_simulation.py [--threads 1] [--clients 3,9,27] [--rounds 3] [--repeats 2]

Setting: paper scale (Table 1, N-BaIoT): clients of about 12k benign and a few dozen malicious
training rows each (11,844, 11,855 and 15,820 rows), built-in data with 115 features, the
115→80→50→10→1 network, 5 local epochs, batch 128.

1. **Local training, 3 / 9 / 27 clients** (one round of Algorithm 2 lines 8–10 for every
   client; clients beyond three reuse the three shards' rows in turn):

   * ``plain``: the per-client loop written directly against PyTorch — per client an
     ``nn.Module`` (dropout, BatchNorm) and ``torch.optim.Adam``, 5 epochs of index
     permutations in batches of 128, one client after the other.
   * ``per-peer``: :func:`p2p_job.training.train_many` with one client at a time (what
     ``p2pk worker`` and ``p2pk simulate --engine per-peer`` do).
   * ``batched``: :func:`p2p_job.training.train_many` with every client in one stack (the
     default ``p2pk simulate`` engine).

   Ratios are plain / engine (above 1: the engine is faster), measured in the same run, the
   variants taking turns, best of ``--repeats``; each as wall seconds and as this process's
   CPU seconds (with one thread, about the wall time on an idle core: on a shared machine the
   wall time also counts the time other processes hold the core).

2. **The full experiment**: all five methods of §5.2.2 (none, random-over, random-under,
   SMOTE, K-SMOTE) with 3 clients, ``--rounds`` rounds of :func:`p2p_job.simulate.simulate_methods`
   (batched engine, every peer of every method in one stack) and of ``none`` alone; seconds per
   round, round 1 against the last measured round, and 300 rounds extrapolated from the mean
   of the measured rounds after the first (said so in the output).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch import nn

from p2p_job.model import build_model, initial_state, load_model_state
from p2p_job.scenarios import Shards, build_shards
from p2p_job.simulate import simulate_methods
from p2p_job.spec import P2PExperiment, parse_experiment
from p2p_job.training import TrainingTask, _batches, make_optimizer, resolve_device, set_cpu_threads, train_many

BENIGN, MALICIOUS = (11821, 11821, 15762), (23, 34, 58)  # Table 1's training rows
PAPER_ROUNDS = 300


def experiment(rounds: int) -> P2PExperiment:
    clients = [
        {
            "name": f"client-{c}",
            "benignGroups": [f"device-{i}"],
            "maliciousGroups": [f"device-{i}"],
            "train": {"benign": b, "malicious": m},
            "validation": {"benign": 2000, "malicious": 200},
        }
        for i, (c, b, m) in enumerate(zip("abc", BENIGN, MALICIOUS))
    ]
    doc = {
        "apiVersion": "p2pk.io/v1alpha1",
        "kind": "P2PExperiment",
        "metadata": {"name": "bench-simulation"},
        "spec": {
            "seed": 1,
            "rounds": rounds,
            "dataset": {"kind": "builtin", "builtin": {"devices": 3, "benignPerDevice": 20000, "maliciousPerFamily": 400}},
            "scenario": {"kind": "non-iid", "clients": clients, "globalTest": {"benign": 2000, "malicious": 200}},
            "methods": [{"rebalancing": m} for m in ("none", "random-over", "random-under", "smote", "ksmote")],
        },
    }
    return parse_experiment(doc, "bench_simulation")


def _clients(exp: P2PExperiment, shards: Shards, n: int, device: torch.device):
    """n fresh (model, Adam, X, y) from w0; client i trains on shard i mod 3's rows."""
    data = [shards.clients[name].train for name in shards.clients]
    w0 = initial_state(exp, len(shards.feature_names))
    out = []
    for i in range(n):
        model = build_model(len(shards.feature_names), exp.spec.training).to(device)
        load_model_state(model, w0)
        split = data[i % len(data)]
        out.append((model, make_optimizer(model, exp.spec.training), split.X, split.y))
    return out


def plain_training(exp: P2PExperiment, clients, device: torch.device) -> None:
    """The baseline: each client's local training as a plain PyTorch loop, one after the other."""
    training = exp.spec.training
    loss_fn = nn.BCEWithLogitsLoss()
    for i, (model, optimizer, X, y) in enumerate(clients):
        X_t = torch.as_tensor(X).to(device)
        y_t = torch.as_tensor(y, dtype=torch.float32).to(device).unsqueeze(1)
        generator = torch.Generator().manual_seed(i)
        model.train()
        for _ in range(training.local_epochs):
            for idx in _batches(len(X_t), training.batch_size, torch.randperm(len(X_t), generator=generator)):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(X_t[idx.to(device)]), y_t[idx.to(device)])
                loss.backward()
                optimizer.step()


def engine_training(exp: P2PExperiment, clients, device: torch.device, batched: bool) -> None:
    tasks = [TrainingTask(model, optimizer, X, y, i) for i, (model, optimizer, X, y) in enumerate(clients)]
    if batched:
        train_many(tasks, exp.spec.training, device)
    else:
        for task in tasks:
            train_many([task], exp.spec.training, device)


def best_seconds(variants: dict, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best of ``repeats`` timed runs of each variant: wall seconds and this process's CPU
    seconds. The variants take turns, so a change in the machine's load hits them alike; with
    one thread, CPU seconds are about what the wall time would be on an idle core."""
    best = dict.fromkeys(variants, float("inf"))
    cpu = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for name, run in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return best, cpu


def scaling(exp: P2PExperiment, shards: Shards, counts: list[int], repeats: int, device: torch.device) -> None:
    training = exp.spec.training
    longest = max(len(s.train.y) for s in shards.clients.values())
    steps = training.local_epochs * len(_batches(longest, training.batch_size, torch.arange(longest)))
    print(f"\n1. local training, one round ({training.local_epochs} epochs, batch {training.batch_size}, "
          f"{torch.get_num_threads()} thread(s)), best of {repeats}: seconds, plain / engine, and the batched "
          f"engine's ms per stacked step ({steps} steps: the largest client's)")
    print(f"{'clients':>8} {'':>5} {'plain s':>9} {'per-peer s':>11} {'batched s':>10} {'plain/per-peer':>15} "
          f"{'plain/batched':>14} {'ms/step':>8}")
    for n in counts:
        clients = {name: _clients(exp, shards, n, device) for name in ("plain", "per-peer", "batched")}
        wall, cpu = best_seconds(
            {
                "plain": lambda: plain_training(exp, clients["plain"], device),
                "per-peer": lambda: engine_training(exp, clients["per-peer"], device, batched=False),
                "batched": lambda: engine_training(exp, clients["batched"], device, batched=True),
            },
            repeats,
        )
        for label, best in (("wall", wall), ("cpu", cpu)):
            print(f"{n:>8} {label:>5} {best['plain']:>9.2f} {best['per-peer']:>11.2f} {best['batched']:>10.2f} "
                  f"{best['plain'] / best['per-peer']:>15.2f} {best['plain'] / best['batched']:>14.2f} "
                  f"{1000 * best['batched'] / steps:>8.2f}", flush=True)


def experiment_time(exp: P2PExperiment, shards: Shards, rounds: int, device: torch.device) -> None:
    print(f"\n2. the experiment, {rounds} measured rounds, batched engine (every peer of the methods in one stack), "
          f"{torch.get_num_threads()} thread(s)")
    methods = {m.rebalancing: m for m in exp.spec.methods}
    for label, selected in (("none alone", [methods["none"]]), ("all five methods", list(methods.values()))):
        stamps = [(time.perf_counter(), time.process_time())]

        def on_round(method, r, records, selected=selected, stamps=stamps):
            if method == selected[-1].rebalancing:  # the last method of the round is done
                stamps.append((time.perf_counter(), time.process_time()))

        simulate_methods(exp, selected, shards, device, on_round)
        for clock, column in (("wall", 0), ("cpu", 1)):
            per_round = np.diff([stamp[column] for stamp in stamps])
            later = per_round[1:] if len(per_round) > 1 else per_round
            estimate = per_round[0] + later.mean() * (PAPER_ROUNDS - 1)
            print(f"{label:>17} ({clock}): seconds per round {', '.join(f'{s:.2f}' for s in per_round)}; "
                  f"round {len(per_round)} / round 1 = {per_round[-1] / per_round[0]:.2f}; {PAPER_ROUNDS} rounds "
                  f"≈ {estimate / 60:.1f} min (extrapolated from rounds 2–{len(per_round)})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="3,9,27", help="client counts of the local-training table")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of the full experiment")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each training variant (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of PyTorch and numpy's BLAS (p2pk simulate's default is 1)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: scaling, experiment")
    args = parser.parse_args()
    set_cpu_threads(args.threads)
    device = resolve_device(args.device)
    exp = experiment(args.rounds)
    shards = build_shards(exp)
    rows = {name: len(s.train.y) for name, s in shards.clients.items()}
    print(f"training rows {rows}, {len(shards.feature_names)} features, {exp.spec.training.local_epochs} local epochs, "
          f"batch {exp.spec.training.batch_size}, on {device} ({torch.get_num_threads()} threads); "
          f"load average {_load()} on {os.cpu_count()} cores")
    skip = set(args.skip.split(","))
    if "scaling" not in skip:
        scaling(exp, shards, [int(n) for n in args.clients.split(",")], args.repeats, device)
    if "experiment" not in skip:
        experiment_time(exp, shards, args.rounds, device)
    print(f"\nload average at the end {_load()}")


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
