"""What ``p2pk simulate`` and ``p2pk run`` share: the spec as run (``--set``, ``--rounds``,
``--seeds``), the output folder and its run record (``p2p_job.runrecord``: refused, resumed or
fresh), progress lines, and the summary of a ``--seeds`` run (mean and spread across seeds).

A command gives :func:`execute` a ``run_one(exp, run, progress) -> DataFrame`` that runs one
experiment into ``run.out`` and writes its results there; it raises :class:`RunFailed` for a
failure to report in one line (exit 1).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from p2p_job.commands import EXIT_INVALID
from p2p_job.spec import InvalidSpec

#: Exit code of a run that failed (data, device, a worker).
EXIT_FAILED = 1


class RunFailed(RuntimeError):
    """A run that could not finish; the message is the one line shown."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags both runners take."""
    p.add_argument("spec", help="P2PExperiment YAML file")
    p.add_argument("--out", type=Path, help="output folder (default: results/<experiment name>)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="sets",
                   help="override a spec field, e.g. --set training.learningRate=0.001 or "
                        "--set methods[0].rebalancing=smote (YAML value; repeat for more)")
    p.add_argument("--rounds", type=int, help="override spec.rounds")
    p.add_argument("--seeds", help="repeat the run for these seeds (e.g. 1,2,3 or 1-5), each in <out>/seed-<s>; "
                                   "the summary in <out> gives the mean and spread across seeds")
    p.add_argument("--methods", help="comma-separated method names to run (default: all in the spec)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override spec.runtime.device")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the results in --out even if they were written by other code (or have no run record)")
    again.add_argument("--force", action="store_true", help="delete the results in --out first and start again")


def parse_seeds(text: str) -> list[int]:
    """``1,2,3`` or ``1-5`` (or both mixed) → distinct seeds in the order given."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"--seeds {text!r}: expected seeds like 1,2,3 or 1-5")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise ValueError(f"--seeds {text!r}: {part} is an empty range")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    return seeds


@dataclass(frozen=True)
class Planned:
    """One run to make: its experiment (overrides applied) and output folder."""

    exp: object  # P2PExperiment
    out: Path
    seed: int | None = None


def plan(args) -> tuple[object, Path, list[Planned]]:
    """The base experiment, the output folder and the runs (one, or one per seed). Raises
    InvalidSpec (every error by field path) or ValueError (bad arguments)."""
    from p2p_job.compare import SEED_FOLDER
    from p2p_job.overrides import experiment_as_run
    from p2p_job.spec import select_methods

    if args.rounds is not None and args.rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {args.rounds}")
    exp = experiment_as_run(args.spec, args.sets, rounds=args.rounds)
    select_methods(exp, methods(args))  # unknown names: ValueError before anything is written
    out = args.out or Path("results") / exp.name
    if not args.seeds:
        return exp, out, [Planned(exp, out)]
    runs = [Planned(experiment_as_run(args.spec, args.sets, rounds=args.rounds, seed=seed),
                    out / SEED_FOLDER.format(seed=seed), seed) for seed in parse_seeds(args.seeds)]
    return exp, out, runs


def methods(args) -> list[str] | None:
    return [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None


def execute(args, runner: str, run_one: Callable) -> int:
    """Plan, open each output folder (refusing a folder in use), run, record how it ended, and
    print the summary. Ctrl-C is recorded as ``interrupted`` and passed on (exit 130)."""
    import pandas as pd
    from rich.console import Console

    from p2p_job import runrecord
    from p2p_job.progress import Progress
    from p2p_job.results import write_results
    from p2p_job.summary import summary_tables

    try:
        exp, out, planned = plan(args)
    except InvalidSpec:
        raise
    except ValueError as exc:
        print(f"{args.spec}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    extra = {"device": args.device, "sets": args.sets}
    names = methods(args)
    frames = []
    parent = None
    with Progress() as progress:
        try:
            if args.seeds:
                parent = runrecord.begin(out, exp, runner=runner, methods=names, argv=args.argv, resume=args.resume,
                                         force=args.force, extra={**extra, "seeds": [p.seed for p in planned]})
            for item in planned:
                run = runrecord.begin(item.out, item.exp, runner=runner, methods=names, argv=args.argv,
                                      resume=args.resume, force=args.force, extra=extra)
                if run.resumed:
                    progress.say(run.describe_resume())
                elif item.seed is not None:
                    progress.say(f"seed {item.seed}: {item.out}")
                try:
                    frame = run_one(item.exp, run, progress)
                except KeyboardInterrupt:
                    run.finish("interrupted")
                    raise
                except RunFailed as exc:
                    for record in (run, parent):
                        if record is not None:
                            record.finish("failed", error=str(exc))
                    print(f"p2pk {runner}: {exc}", file=sys.stderr)
                    return EXIT_FAILED
                run.finish("done")
                frames.append(frame if item.seed is None else frame.assign(seed=item.seed))
            if parent is not None:
                frame = pd.concat(frames, ignore_index=True)
                write_results(frame, out, title=f"{exp.name}, {len(planned)} seeds", say=progress.say)
                parent.finish("done")
        except runrecord.FolderInUse as exc:
            if parent is not None:
                parent.finish("failed", error=str(exc))
            print(f"p2pk {runner}: {exc}", file=sys.stderr)
            return EXIT_INVALID
        except KeyboardInterrupt:
            if parent is not None:
                parent.finish("interrupted")
            raise
    console = Console(width=None if sys.stdout.isatty() else 160)
    title = exp.name if parent is None else f"{exp.name}, {len(planned)} seeds"
    for table in summary_tables(frames[0] if parent is None else frame, title=title):
        console.print(table)
    print(f"results, summary and figures in {out}" + (f"; each seed's in {out}/seed-<s>" if parent else ""))
    return 0
