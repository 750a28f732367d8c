"""``p2pk run exp.yaml``: the experiment on this machine, one worker process per client,
exchanging through a directory store (default ``<out>/store``) or S3 (``--store s3://…``);
then ``results.parquet``, ``summary.txt``/``summary.md`` and ``figures/*.png`` in the output
folder, as ``p2pk simulate`` writes them. Methods run one after the other."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from p2p_job.commands import EXIT_INVALID

#: Exit code when a worker failed for good.
EXIT_WORKER_FAILED = 1


def register(sub) -> None:
    p = sub.add_parser("run", help="run one worker process per client on this machine (directory store or S3)")
    p.add_argument("spec", help="P2PExperiment YAML file")
    p.add_argument("--out", type=Path, help="output folder (default: results/<experiment name>)")
    p.add_argument("--store", help="s3://bucket/prefix or file:///path (default: file://<out>/store)")
    p.add_argument("--s3-endpoint", help="S3/MinIO endpoint host:port or URL (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
    p.add_argument("--methods", help="comma-separated method names to run (default: all in the spec)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override spec.runtime.device")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve each worker's /metrics from this port on (+1 per client); default 0: not served")
    p.add_argument("--pushgateway", help="host:port of a Prometheus Pushgateway (default: spec.runtime.pushgateway)")
    p.add_argument("--retries", type=int, default=3,
                   help="failures of one worker at the same round before the run fails (default 3; reaching a new round starts the count afresh)")
    p.set_defaults(func=run)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    from p2p_job.spec import load_experiment

    exp = load_experiment(args.spec)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from p2p_job.local import RunSettings, WorkerFailed, run_local
    from p2p_job.summary import summary_tables

    out = args.out or Path("results") / exp.name
    settings = RunSettings(out=out, store=args.store or exp.spec.runtime.store, s3_endpoint=args.s3_endpoint,
                           metrics_port=args.metrics_port, pushgateway=args.pushgateway, device=args.device,
                           retries=args.retries)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(stderr=True)
    rounds = exp.spec.rounds
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        tasks: dict[tuple[str, str], int] = {}

        def on_tick(workers) -> None:
            for w in workers:
                key = (w.method, w.client)
                if key not in tasks:
                    tasks[key] = progress.add_task(f"{w.method}/{w.client}", total=rounds)
                last = w.last
                if last:
                    note = f" {last['eval']} FNR {last['fnr']:.4f} FPR {last['fpr']:.4f}"
                    if w.restarts:
                        note += f" ({w.restarts} restart(s))"
                    if w.waiting:
                        note += f" waiting for the store ({w.waiting['waited']:.0f} s)"
                    progress.update(tasks[key], completed=last["round"], description=f"{w.method}/{w.client}{note}")
                else:
                    progress.update(tasks[key], completed=w.resumed_from)

        try:
            frame = run_local(exp, Path(args.spec), settings, methods, on_tick)
        except ValueError as exc:  # unknown method names, bad store URL
            print(f"{args.spec}: {exc}", file=sys.stderr)
            return EXIT_INVALID
        except WorkerFailed as exc:
            print(f"p2pk run: {exc}", file=sys.stderr)
            return EXIT_WORKER_FAILED
    for table in summary_tables(frame, title=exp.name):
        Console().print(table)
    print(f"results, summary and figures in {out}; worker logs in {out / 'logs'}")
    return 0
