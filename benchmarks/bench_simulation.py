"""Seconds per round of p2pk's peers against a plain PyTorch loop doing the same arithmetic.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/bench_simulation.py [--rounds 3] [--device cpu] [--threads 1]

Setting: paper scale (Table 1, N-BaIoT): three clients of about 12k benign and a few dozen
malicious training rows each, built-in data with 115 features, the 115→80→50→10→1 network,
5 local epochs, batch 128, fully connected, every peer aggregating every round (eq. 5–6) and
evaluating on its validation set and the global test set.

* ``p2pk``: :func:`p2p_job.simulate.simulate_method` — every ``Peer`` through a
  ``MemoryExchange`` (rebalancing method ``none``, so both sides train on the same rows).
* ``plain``: the same per-client work written directly against PyTorch: one model and Adam per
  client, the same number of batches (index permutations of 128), the same eq. 5 average over
  the same p_k, the same scoring and metrics; no peer, exchange, publication or delta.

The ratio p2pk / plain is p2pk's overhead. Also printed: a K-SMOTE round (rebalancing and
sharing included), for scale.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from p2p_job.aggregation import data_variance, mixing_weights, weighted_average
from p2p_job.metrics import evaluate
from p2p_job.model import build_model, initial_state, load_model_state, model_state
from p2p_job.scenarios import Shards, build_shards
from p2p_job.simulate import simulate_method
from p2p_job.spec import P2PExperiment, parse_experiment

BENIGN, MALICIOUS = (11821, 11821, 15762), (23, 34, 58)  # Table 1's training rows


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
            "methods": [{"rebalancing": "none"}, {"rebalancing": "ksmote"}],
        },
    }
    return parse_experiment(doc, "bench_simulation")


def plain_rounds(exp: P2PExperiment, shards: Shards, device: torch.device) -> None:
    """The baseline: the same arithmetic per round, written directly against PyTorch."""
    spec = exp.spec
    training, names = spec.training, list(shards.clients)
    n_features = len(shards.feature_names)
    w0 = initial_state(exp, n_features)
    data = [shards.clients[name] for name in names]
    models, optimizers = [], []
    for _ in names:
        model = build_model(n_features, training).to(device)
        load_model_state(model, w0)
        models.append(model)
        optimizers.append(torch.optim.Adam(model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay))
    weights = mixing_weights(
        [data_variance(s.train.X) for s in data], [len(s.train.y) for s in data], spec.aggregation.lambda_
    )
    loss_fn = nn.BCEWithLogitsLoss()
    for r in range(spec.rounds):
        for i, (model, optimizer, shard) in enumerate(zip(models, optimizers, data)):
            X = torch.as_tensor(shard.train.X).to(device)
            y = torch.as_tensor(shard.train.y, dtype=torch.float32).to(device).unsqueeze(1)
            generator = torch.Generator().manual_seed(1000 * r + i)
            model.train()
            for _ in range(training.local_epochs):
                order = torch.randperm(len(X), generator=generator).to(device)
                for start in range(0, len(X), training.batch_size):
                    idx = order[start : start + training.batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model(X[idx]), y[idx])
                    loss.backward()
                    optimizer.step()
        states = [model_state(model) for model in models]
        merged = weighted_average(states, weights)  # full topology: every peer gets the same average
        for model, shard in zip(models, data):
            load_model_state(model, merged)
            model.eval()
            with torch.inference_mode():
                for split in (shard.validation, shard.global_test):
                    scores = torch.sigmoid(model(torch.as_tensor(split.X).to(device))).squeeze(1).cpu().numpy()
                    evaluate(split.y, scores, training.threshold)


def best_seconds_per_round(variants: dict, rounds: int, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` timed runs of each variant, per round. The variants take turns, so
    a change in the machine's load hits them alike; the first turn also warms PyTorch up."""
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], (time.perf_counter() - start) / rounds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (p2pk simulate's default is 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    exp = experiment(args.rounds)
    shards = build_shards(exp)
    none, ksmote = exp.spec.methods
    rows = {name: len(s.train.y) for name, s in shards.clients.items()}
    print(f"{len(rows)} clients, training rows {rows}, {len(shards.feature_names)} features, "
          f"{exp.spec.training.local_epochs} local epochs, batch {exp.spec.training.batch_size}, "
          f"{args.rounds} rounds on {device} ({torch.get_num_threads()} threads), best of {args.repeats}")

    best = best_seconds_per_round(
        {
            "plain": lambda: plain_rounds(exp, shards, device),
            "p2pk": lambda: simulate_method(exp, none, shards, device),
            "ksmote": lambda: simulate_method(exp, ksmote, shards, device),
        },
        args.rounds,
        args.repeats,
    )
    print(f"plain PyTorch loop      {best['plain']:8.2f} s/round")
    print(f"p2pk peers (none)       {best['p2pk']:8.2f} s/round   ratio p2pk/plain = {best['p2pk'] / best['plain']:.3f}")
    print(f"p2pk peers (ksmote)     {best['ksmote']:8.2f} s/round   (rebalancing to r = 1 doubles the rows)")


if __name__ == "__main__":
    main()
