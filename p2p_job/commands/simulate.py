"""``p2pk simulate exp.yaml``: run every peer of every method in one process, then write
``results.parquet``, ``summary.txt``/``summary.md``, ``figures/*.png`` and the run record
``run.json`` to the output folder. Overrides, repeats over seeds and the rules for re-running
into a folder are those of ``p2p_job.commands.runs``. Resuming keeps the methods a folder holds
complete and runs the others. The methods advance round by round together; Ctrl-C writes the
rounds every method has finished (a rerun resumes: complete methods are kept, the others run
again from round 1).

Exit status: 0 done, 2 invalid spec or arguments (or a folder in use), 1 unusable data or
device, 130 interrupted."""

from __future__ import annotations

import os
import sys

from p2p_job.commands import EXIT_INVALID
from p2p_job.commands.runs import RunFailed, add_arguments, execute, methods


def register(sub) -> None:
    p = sub.add_parser("simulate", help="run all peers in one process (fastest; research sweeps)")
    add_arguments(p)
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
        help="CPU threads of PyTorch and of numpy's BLAS, a number or 'auto' (the cores this process may use). Default 1: "
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
    """Mean FNR/FPR over honest clients (all, if every one is marked adversarial), on the global
    test set where there is one."""
    eval_set = "global" if "global" in records[0].metrics else "local"
    records = [rec for rec in records if not rec.adversarial] or records
    fnr = sum(rec.metrics[eval_set]["fnr"] for rec in records) / len(records)
    fpr = sum(rec.metrics[eval_set]["fpr"] for rec in records) / len(records)
    return f"{method} round {r}: {eval_set} FNR {fnr:.4f} FPR {fpr:.4f}"


def finished_methods(frame, exp) -> list[str]:
    """Methods whose every client reached the spec's last round in ``frame``."""
    clients = {c.name for c in exp.spec.scenario.clients}
    last = frame[frame["round"] == exp.spec.rounds].groupby("method", sort=False)["client"].agg(set)
    return [m for m, done in last.items() if done == clients]


def run(args) -> int:
    try:
        threads = cpu_threads(args.threads)
    except ValueError as exc:
        print(f"{args.spec}: {exc}", file=sys.stderr)
        return EXIT_INVALID

    def run_one(exp, run, progress):
        import pandas as pd
        import torch

        from p2p_job.choices import data_notes, spec_notes
        from p2p_job.datasets import DataError
        from p2p_job.results import read_parquet, results_frame, write_results
        from p2p_job.scenarios import build_shards
        from p2p_job.simulate import simulate_methods
        from p2p_job.spec import resolved_method_name, select_methods
        from p2p_job.training import DeviceError, resolve_device, set_cpu_threads

        set_cpu_threads(threads)
        order = [resolved_method_name(m, exp.spec.aggregation.rule) for m in exp.spec.methods]
        wanted = [resolved_method_name(m, exp.spec.aggregation.rule) for m in select_methods(exp, methods(args))]
        frames = {}
        if run.resumed and (run.out / "results.parquet").exists():
            previous = read_parquet(run.out / "results.parquet")
            frames = {m: previous[previous["method"] == m] for m in finished_methods(previous, exp)}
            if frames:
                progress.say(f"kept from the earlier run: {', '.join(frames)} (every round done)")
        wanted = [m for m in wanted if m not in frames]
        records: dict[str, list] = {m: [] for m in wanted}
        notes = run.record.get("choices", [])
        key = ("simulate", exp.spec.seed)
        progress.say(f"{exp.name}: building shards, then {len(wanted)} method(s) × {exp.spec.rounds} rounds")
        progress.add(key, exp.name, total=len(wanted) * exp.spec.rounds)

        def on_round(method: str, r: int, round_records) -> None:
            records[method] += round_records
            progress.update(key, sum(len(v) for v in records.values()) // len(round_records), _round_line(method, r, round_records))

        def results():
            done = {**frames, **{m: results_frame(recs) for m, recs in records.items() if recs}}
            return pd.concat([done[m] for m in order if m in done], ignore_index=True)

        try:
            if wanted:
                device = resolve_device(args.device or exp.spec.runtime.device)
                shards = build_shards(exp)
                notes = spec_notes(exp) + data_notes(shards.load_report)
                for note in notes:
                    progress.say(note)
                run.record["choices"] = notes
                simulate_methods(exp, select_methods(exp, wanted), shards, device, on_round, args.engine, run.out)
        except KeyboardInterrupt:
            if frames or any(records.values()):
                progress.say(f"interrupted: writing the rounds every method finished to {run.out}")
                write_results(results(), run.out, title=exp.name, notes=notes, say=progress.say)
            raise
        except (DataError, DeviceError, torch.cuda.OutOfMemoryError) as exc:
            raise RunFailed(str(exc)) from None
        frame = results()
        write_results(frame, run.out, title=exp.name, notes=notes, say=progress.say)
        return frame

    return execute(args, "simulate", run_one)
