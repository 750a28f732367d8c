"""``p2pk collect STORE/EXPERIMENT --out DIR``: a finished or running experiment's metrics from
any store (``s3://bucket/prefix/<experiment>``, ``file:///path/<experiment>`` or a folder) into
the ``results.parquet``, summary and figures a local run writes (``p2p_job.collect``). For a
Kubernetes run the store root holds the namespace: ``s3://<bucket>/<prefix>/<namespace>/<experiment>``."""

from __future__ import annotations

import sys
from pathlib import Path

from p2p_job.commands import EXIT_INVALID

#: Exit code when the store holds no such experiment, no metrics yet, or fails.
EXIT_NO_RESULTS = 1


def register(sub) -> None:
    p = sub.add_parser("collect", help="collect an experiment's results from a store (S3 or a folder): results.parquet, summary, figures")
    p.add_argument("location", metavar="STORE/EXPERIMENT",
                   help="s3://bucket/prefix/<experiment> (Kubernetes: s3://bucket/prefix/<namespace>/<experiment>), "
                        "file:///path/<experiment> or a folder")
    p.add_argument("--out", type=Path, help="output folder (default: results/<experiment>)")
    p.add_argument("--s3-endpoint", help="S3/MinIO endpoint host:port or URL (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from rich.console import Console

    from p2p_job.collect import collect, split_location
    from p2p_job.datasets import DataError
    from p2p_job.results import write_results
    from p2p_job.store import StoreError, open_store
    from p2p_job.summary import summary_tables

    try:
        store_url, experiment = split_location(args.location)
        store = open_store(store_url, endpoint=args.s3_endpoint, access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
                           secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"))
    except ValueError as exc:
        print(f"p2pk collect: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        frame = collect(store, experiment)
    except (DataError, StoreError) as exc:
        print(f"p2pk collect: {exc}", file=sys.stderr)
        return EXIT_NO_RESULTS
    out = args.out or Path("results") / experiment
    write_results(frame, out, title=experiment,
                  say=lambda message: print(message, file=sys.stderr, flush=True))
    console = Console()
    for table in summary_tables(frame, experiment):
        console.print(table)
    rounds = frame.groupby(["method", "client"])["round"].max()
    print(f"{len(frame)} rows of {frame['method'].nunique()} methods and {frame['client'].nunique()} clients "
          f"(rounds {rounds.min()}–{rounds.max()}); results, summary and figures in {out}")
    return 0
