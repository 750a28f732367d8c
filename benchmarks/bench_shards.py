"""Worker start-up data cost: every worker cutting every client's shards from the dataset (what
``p2pk run`` workers did before) against each worker reading only its own prepared shard from
the store (``dataset.shards: store``; ``p2pk run`` cuts once per experiment).

Paper scale: three clients with N-BaIoT's Table 3 counts (11.8k–15.8k benign training rows, a
few dozen attacks, a global test set), 115 features, from the built-in generator (the real
dataset is not shipped). Measured in one process, so PyTorch's import — the same either way —
is left out. Usage::

    .venv/bin/python benchmarks/bench_shards.py [--repeats 3] [--methods 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from p2p_job.scenarios import build_shards
from p2p_job.shards import ensure_shards, fingerprint, read_client_shard
from p2p_job.spec import parse_experiment
from p2p_job.store import DirectoryStore, shards_prefix

COUNTS = {  # (train benign, train malicious, validation benign, validation malicious)
    "client-a": (11821, 23, 2955, 6),
    "client-b": (15823, 31, 3956, 8),
    "client-c": (12000, 30, 3000, 8),
}


def experiment() -> dict:
    clients = [
        {"name": name, "benignGroups": [f"device-{i}"], "maliciousGroups": [f"device-{i}"],
         "train": {"benign": tb, "malicious": tm}, "validation": {"benign": vb, "malicious": vm}}
        for i, (name, (tb, tm, vb, vm)) in enumerate(COUNTS.items())
    ]
    return {
        "apiVersion": "p2pk.io/v1alpha1", "kind": "P2PExperiment", "metadata": {"name": "bench-shards"},
        "spec": {
            "seed": 42, "rounds": 300,
            "dataset": {"kind": "builtin", "builtin": {"devices": 3, "families": 3, "features": 115,
                                                       "benignPerDevice": 22000, "maliciousPerFamily": 200}},
            "scenario": {"kind": "non-iid", "clients": clients, "globalTest": {"benign": 5067, "malicious": 37}},
        },
    }


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", type=int, default=5, help="methods of the experiment (each starts every client's worker)")
    args = parser.parse_args()
    exp = parse_experiment(experiment())
    clients = list(COUNTS)
    with tempfile.TemporaryDirectory() as tmp:
        store = DirectoryStore(tmp)
        cut = timed(lambda: build_shards(exp), args.repeats)
        once = timed(lambda: (store.delete_prefix(""), ensure_shards(exp, store)), args.repeats)
        own = {c: timed(lambda c=c: read_client_shard(store, c, shards_prefix(exp.name), fingerprint=fingerprint(exp)), args.repeats)
               for c in clients}
    workers = len(clients) * args.methods
    read = statistics.mean(own.values())
    print(f"paper scale: {len(clients)} clients, {sum(sum(v) for v in COUNTS.values())} client rows, 115 features; "
          f"median of {args.repeats}")
    print(f"  peer  (each worker cuts every shard):  {cut:7.3f} s per worker")
    print(f"  p2pk  (each worker reads its own):     {read:7.3f} s per worker  "
          f"({', '.join(f'{c} {t:.3f}' for c, t in own.items())})")
    print(f"  ratio peer / p2pk per worker:          {cut / read:7.1f}x")
    print(f"  one experiment, {args.methods} methods × {len(clients)} clients = {workers} worker starts: "
          f"{workers * cut:.1f} s cutting before, {once:.1f} s cutting once + {workers * read:.1f} s reading now "
          f"({workers * cut / (once + workers * read):.1f}x)")


if __name__ == "__main__":
    main()
