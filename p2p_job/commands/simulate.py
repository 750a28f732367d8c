"""``p2pk simulate exp.yaml``: run every peer of every method in one process, then write
``results.parquet``, ``summary.txt``/``summary.md`` and ``figures/*.png`` to the output folder.

Exit status: 0 done, 2 invalid spec or arguments, 1 unusable data or device."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from p2p_job.commands import EXIT_INVALID
from p2p_job.spec import load_experiment

EXIT_FAILED = 1


def register(sub) -> None:
    p = sub.add_parser("simulate", help="run all peers in one process (fastest; research sweeps)")
    p.add_argument("spec", help="P2PExperiment YAML file")
    p.add_argument("--out", type=Path, help="output folder (default: results/<experiment name>)")
    p.add_argument("--rounds", type=int, help="override spec.rounds")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override spec.runtime.device")
    p.add_argument("--methods", help="comma-separated method names to run (default: all in the spec)")
    p.add_argument(
        "--engine",
        choices=("batched", "per-peer"),
        default="batched",
        help="batched (default): every peer of every method trains in one stacked step per batch; "
        "per-peer: each peer trains alone, as p2pk worker does (the same bits as p2pk run)",
    )
    p.add_argument(
        "--threads",
        default="1",
        help="PyTorch CPU threads, a number or 'auto' (the cores this process may use). Default 1: "
        "more threads help the batched engine only on otherwise idle cores; when other work shares "
        "them, threads that wait for each other make training many times slower",
    )
    p.set_defaults(func=run)


def cpu_threads(value: str) -> int:
    """``--threads``: a positive number, or ``auto`` for the cores this process may run on."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"--threads must be a number or 'auto', got {value!r}") from None
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    return threads


def _round_line(method: str, r: int, records) -> str:
    """Mean FNR/FPR over clients, on the global test set where there is one."""
    eval_set = "global" if "global" in records[0].metrics else "local"
    fnr = sum(rec.metrics[eval_set]["fnr"] for rec in records) / len(records)
    fpr = sum(rec.metrics[eval_set]["fpr"] for rec in records) / len(records)
    return f"{method} round {r}: {eval_set} FNR {fnr:.4f} FPR {fpr:.4f}"


def run(args) -> int:
    exp = load_experiment(args.spec)

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from p2p_job.datasets import DataError
    from p2p_job.results import write_results
    from p2p_job.summary import summary_tables
    from p2p_job.simulate import select_methods, simulate, with_rounds

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    try:
        threads = cpu_threads(args.threads)
        if args.rounds is not None:
            exp = with_rounds(exp, args.rounds)
        n_methods = len(select_methods(exp, methods))
    except ValueError as exc:
        print(f"{args.spec}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    torch.set_num_threads(threads)
    out = args.out or Path("results") / exp.name
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task(f"{exp.name}: building shards", total=n_methods * exp.spec.rounds)

            def on_round(method: str, r: int, records) -> None:
                progress.update(task, advance=1, description=_round_line(method, r, records))

            frame = simulate(exp, methods=methods, device=args.device, base_dir=Path(args.spec).parent,
                             on_round=on_round, engine=args.engine, keep_in=out)
    except (DataError, RuntimeError) as exc:
        print(f"{args.spec}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    write_results(frame, out)
    for table in summary_tables(frame, title=exp.name):
        Console().print(table)
    print(f"results, summary and figures in {out}")
    return 0
