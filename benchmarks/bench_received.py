"""What K-SMOTE costs against no rebalancing over a whole run, under each D_o_syn policy.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/bench_received.py [--rounds 100] [--threads 1] [--spec exp.yaml] [--policies balanced]

Setting: ``--spec``, by default ``examples/nbaiot-real-5.2.4.yaml`` (real N-BaIoT rows from the fixtures, three
clients, full mesh). For each policy of ``rebalancing.received`` (``balanced``, the default, and
``unbounded``, Algorithm 2 line 16 as written), ``p2pk simulate``'s engine runs ``none`` and
``ksmote`` on their own, one after the other, for ``--rounds`` rounds on the same shards; the
shards are cut once, outside the timing. Printed per run: this process's CPU seconds (with one
thread about the wall time on an idle core; on a shared machine the wall time also counts other
processes), the wall seconds, and the rows a client trained on in the last round; then the ratio
ksmote / none of each (the peer it is measured against: ``none`` in the same process).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from p2p_job.scenarios import build_shards
from p2p_job.simulate import simulate
from p2p_job.spec import load_experiment, parse_experiment
from p2p_job.training import set_cpu_threads

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "nbaiot-real-5.2.4.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--spec", type=Path, default=EXAMPLE, help="experiment file (default: the real N-BaIoT example)")
    parser.add_argument("--policies", default="balanced,unbounded", help="rebalancing.received policies to run, comma-separated")
    args = parser.parse_args()
    set_cpu_threads(args.threads)
    base = load_experiment(args.spec)
    shards = build_shards(base, args.spec.resolve().parent)
    for policy in args.policies.split(","):
        doc = base.model_dump(mode="json", by_alias=True, exclude_none=True)
        doc["spec"]["rounds"] = args.rounds
        doc["spec"]["rebalancing"] = {**doc["spec"].get("rebalancing", {}), "received": policy}
        exp = parse_experiment(doc, f"bench_received ({policy})")
        measured = {}
        for method in ("none", "ksmote"):
            cpu, wall = time.process_time(), time.perf_counter()
            frame = simulate(exp, methods=[method], device="cpu", base_dir=args.spec.resolve().parent, shards=shards)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            rows = int(frame[frame["round"] == frame["round"].max()]["n_train"].max())
            measured[method] = (cpu, wall)
            print(f"{policy:9s} {method:6s} {args.rounds} rounds: {cpu:7.1f} s CPU, {wall:7.1f} s wall, {rows} training rows in the last round")
        (cpu_n, wall_n), (cpu_k, wall_k) = measured["none"], measured["ksmote"]
        print(f"{policy:9s} ksmote / none: {cpu_k / cpu_n:.2f}x CPU, {wall_k / wall_n:.2f}x wall")


if __name__ == "__main__":
    main()
