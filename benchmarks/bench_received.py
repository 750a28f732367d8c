"""What K-SMOTE costs against no rebalancing over a whole run, under each D_o_syn policy.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/bench_received.py [--rounds 100] [--threads 1] [--spec exp.yaml]
        [--set PATH=VALUE ...] [--policies balanced] [--repeat 1] [--processes]

Setting: ``--spec``, by default ``examples/nbaiot-real-5.2.4.yaml`` (real N-BaIoT rows from the
fixtures, three clients, full mesh), with ``--set`` overrides as ``p2pk simulate`` takes them (the
issue-12 scale: ``examples/flowlike-5.2.4.yaml`` with ``scenario.clients[i].train.benign=1500``,
docs/real-data.md). For each policy of ``rebalancing.received`` (``balanced``, the default, and
``unbounded``, Algorithm 2 line 16 as written), ``none`` and ``ksmote`` run on their own for
``--rounds`` rounds; the peer each is measured against is ``none`` in the same run.

* In one process (default): ``p2pk simulate``'s engine on the same shards (cut once, outside the
  timing), after an untimed two-round warm-up of both methods (one-time imports and lazy
  set-ups would otherwise fall on whichever method runs first). Timed: this process's CPU
  seconds (with one thread about the wall time on an idle core; on a shared machine the wall
  time also counts other processes) and the wall seconds.
* ``--processes``: each method as its own ``p2pk simulate --methods M`` process, start to exit
  (imports, data, shards, results, summary and figures included), as a user would time it:
  wall seconds and the child's CPU seconds.

``--repeat N`` runs each pair N times, the order alternating (none first, then ksmote first), so
that a change in the machine's load falls on both; the ratio is of the sums, and of each
method's fastest run (the one other work disturbed least). Printed per run:
CPU and wall seconds and the rows a client trained on in the last round (in one process); then
ksmote / none for CPU and wall, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from p2p_job.overrides import experiment_as_run
from p2p_job.scenarios import build_shards
from p2p_job.simulate import simulate
from p2p_job.training import set_cpu_threads

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "nbaiot-real-5.2.4.yaml"
METHODS = ("none", "ksmote")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _in_process(args, sets: list[str], shards, method: str) -> tuple[float, float, str]:
    exp = experiment_as_run(args.spec, sets, rounds=args.rounds)
    cpu, wall = time.process_time(), time.perf_counter()
    frame = simulate(exp, methods=[method], device="cpu", base_dir=args.spec.resolve().parent, shards=shards)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rows = int(frame[frame["round"] == frame["round"].max()]["n_train"].max())
    return cpu, wall, f"{rows} training rows in the last round"


def _as_process(args, sets: list[str], method: str, out: Path) -> tuple[float, float, str]:
    command = [sys.executable, "-m", "p2p_job.cli", "simulate", str(args.spec), "--methods", method,
               "--rounds", str(args.rounds), "--threads", str(args.threads), "--force", "--out", str(out)]
    for text in sets:
        command += ["--set", text]
    cpu, wall = _child_cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return _child_cpu() - cpu, time.perf_counter() - wall, "p2pk simulate, start to exit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--spec", type=Path, default=EXAMPLE, help="experiment file (default: the real N-BaIoT example)")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="sets",
                        help="override a spec field, as p2pk simulate --set (repeat for more)")
    parser.add_argument("--policies", default="balanced,unbounded", help="rebalancing.received policies to run, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each method per policy, the order alternating")
    parser.add_argument("--processes", action="store_true", help="time each method as its own p2pk simulate process")
    args = parser.parse_args()
    set_cpu_threads(args.threads)
    print(f"load average before: {_load()}")
    shards = None
    if not args.processes:
        exp = experiment_as_run(args.spec, args.sets, rounds=2)
        shards = build_shards(exp, args.spec.resolve().parent)
        simulate(exp, methods=list(METHODS), device="cpu", base_dir=args.spec.resolve().parent, shards=shards)  # warm-up
    with tempfile.TemporaryDirectory(prefix="bench_received-") as scratch:
        for policy in args.policies.split(","):
            sets = [*args.sets, f"rebalancing.received={policy}"]
            total = {method: [0.0, 0.0] for method in METHODS}
            fastest = {method: [float("inf"), float("inf")] for method in METHODS}
            for repeat in range(args.repeat):
                for method in METHODS if repeat % 2 == 0 else METHODS[::-1]:
                    if args.processes:
                        cpu, wall, what = _as_process(args, sets, method, Path(scratch) / method)
                    else:
                        cpu, wall, what = _in_process(args, sets, shards, method)
                    total[method][0] += cpu
                    total[method][1] += wall
                    fastest[method] = [min(fastest[method][0], cpu), min(fastest[method][1], wall)]
                    print(f"{policy:9s} {method:6s} {args.rounds} rounds: {cpu:7.1f} s CPU, {wall:7.1f} s wall, {what}")
            (cpu_n, wall_n), (cpu_k, wall_k) = total["none"], total["ksmote"]
            print(f"{policy:9s} ksmote / none: {cpu_k / cpu_n:.2f}x CPU, {wall_k / wall_n:.2f}x wall "
                  f"(sums over {args.repeat} run(s) each; load average now {_load()})")
            if args.repeat > 1:
                (cpu_n, wall_n), (cpu_k, wall_k) = fastest["none"], fastest["ksmote"]
                print(f"{policy:9s} ksmote / none, fastest run of each: {cpu_k / cpu_n:.2f}x CPU, {wall_k / wall_n:.2f}x wall")


if __name__ == "__main__":
    main()
