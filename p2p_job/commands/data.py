"""``p2pk data``: cut an experiment's dataset into client shards and show them.

- ``p2pk data prepare exp.yaml --out DIR``: write the shards (``p2p_job.shards``) and print
  the rows per class per client, laid out like the paper's Table 1. ``--out s3://bucket/prefix``
  (or ``file:///path``) writes them into that store under ``<experiment>/shards/``, where
  workers with ``dataset.shards: store`` each read their own.
- ``p2pk data describe DIR|exp.yaml``: read shards back (or cut them from a spec, writing
  nothing) and print the same table, then each raw column's range and skew with a suggested
  transform and a ``dataset.preprocessing`` section to start from.
- ``p2pk data presets``: list the built-in scenario layouts (``scenario.preset``).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path


#: Exit code for data that does not fit the spec (missing file, bad row, too few rows).
EXIT_DATA = 1


def register(sub) -> None:
    p = sub.add_parser("data", help="prepare client shards from an experiment's dataset and scenario; describe them")
    data = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prepare = data.add_parser("prepare", help="write each client's train / validation / global test Parquet and a manifest")
    prepare.add_argument("spec", help="P2PExperiment YAML file (a relative dataset.path is read from its folder)")
    prepare.add_argument("--out", required=True, help="folder for the shards, or a store (s3://bucket/prefix, file:///path): "
                         "the shards go under <experiment>/shards/ there, for workers with dataset.shards: store")
    prepare.add_argument("--s3-endpoint", help="S3/MinIO endpoint host:port or URL for --out s3://… "
                         "(credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
    prepare.set_defaults(func=run_prepare)
    describe = data.add_parser(
        "describe", help="print the rows per class per client, each column's range and skew, and suggested dataset.preprocessing"
    )
    describe.add_argument("dir", type=Path, help="folder written by `p2pk data prepare`, or a spec file (shards cut in memory)")
    describe.set_defaults(func=run_describe)
    listing = data.add_parser("presets", help="list the built-in scenario layouts (scenario.preset)")
    listing.set_defaults(func=run_presets)


def data_errors(command):
    """Run ``command(args)``; data that does not fit the spec, or a store that fails, is one
    line on stderr and exit 1."""

    @functools.wraps(command)
    def run(args) -> int:
        from p2p_job.datasets import DataError
        from p2p_job.store import StoreError

        try:
            return command(args)
        except (DataError, StoreError) as exc:
            print(f"p2pk data {args.data_command}: {exc}", file=sys.stderr)
            return EXIT_DATA

    return run


@data_errors
def run_prepare(args) -> int:
    from p2p_job.datasets import DataError
    from p2p_job.scenarios import build_shards
    from p2p_job.shards import fingerprint, write_shards
    from p2p_job.spec import load_experiment

    exp = load_experiment(args.spec)
    shards = build_shards(exp, Path(args.spec).resolve().parent)
    if "://" in args.out:
        import os

        from p2p_job.store import open_store, shards_prefix

        try:
            store = open_store(args.out, endpoint=args.s3_endpoint, access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
                               secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"), create_bucket=True)
        except ValueError as exc:
            raise DataError(f"--out: {exc}") from None
        where = f"{args.out.rstrip('/')}/{shards_prefix(exp.name)}"
        write_shards(shards, store, shards_prefix(exp.name), fingerprint=fingerprint(exp))
    else:
        where = args.out
        write_shards(shards, Path(args.out), fingerprint=fingerprint(exp))
    _print(shards, f"{exp.name}: {exp.spec.scenario.kind} on {exp.spec.dataset.kind} data, shards in {where}")
    return 0


@data_errors
def run_describe(args) -> int:
    from p2p_job.shards import read_shards

    if args.dir.is_file():
        from p2p_job.scenarios import build_shards
        from p2p_job.spec import load_experiment

        shards = build_shards(load_experiment(args.dir), args.dir.resolve().parent)
    else:
        shards = read_shards(args.dir)
    _print(shards, f"shards in {args.dir}")
    _print_columns(shards)
    return 0


def _print_columns(shards) -> None:
    """Each raw column over every client's training rows, and the suggested preprocessing."""
    import numpy as np
    import yaml
    from rich.console import Console
    from rich.table import Table

    from p2p_job.preprocessing import column_stats, suggested_preprocessing

    rows = np.concatenate([shard.train.raw for shard in shards.clients.values()])
    stats = column_stats(shards.feature_names, rows, shards.categories)
    table = Table(title=f"columns over the clients' {len(rows)} training rows (now: {shards.preprocessing.model_dump(by_alias=True)})")
    for column in ("column", "min", "median", "max", "skew", "decades", "distinct", "suggested"):
        table.add_column(column, justify="left" if column in ("column", "suggested") else "right")
    for c in stats:
        table.add_row(c.name, f"{c.minimum:.4g}", f"{c.median:.4g}", f"{c.maximum:.4g}", f"{c.skew:.2f}", f"{c.decades:.1f}", str(c.distinct), c.suggestion)
    console = Console()
    console.print(table)
    console.print(
        "suggested (heavy tails: |skew| > 2 or > 3 decades; quantile scaling: docs/real-data.md). dataset.preprocessing.auto, "
        "the default for real data, makes these choices per client on its own training rows; the paper's min-max alone: auto: false",
        markup=False,
    )
    console.print(yaml.safe_dump({"preprocessing": suggested_preprocessing(stats)}, sort_keys=False, width=100, default_flow_style=None),
                  markup=False, highlight=False)


def run_presets(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from p2p_job.presets import available

    table = Table("preset", "dataset", "scenario", "layout")
    for preset in available().values():
        table.add_row(preset.name, preset.dataset, preset.scenario["kind"], preset.description)
    Console().print(table)
    return 0


def _print(shards, title: str) -> None:
    """The paper's Table 1 layout: a row per split and class, a column per client."""
    from rich.console import Console
    from rich.table import Table

    from p2p_job.shards import class_counts, kind_counts

    console = Console()
    kinds = kind_counts(shards)
    titles = (title, f"malicious rows per attack kind ({shards.kind_column})")
    for caption, rows in zip(titles, (class_counts(shards), kinds)):
        if not rows:
            continue
        table = Table(title=caption)
        table.add_column("")
        for name in shards.clients:
            table.add_column(name, justify="right")
        for row, counts in rows.items():
            table.add_row(row, *(str(counts.get(name, "")) for name in shards.clients))
        console.print(table)
    report = shards.load_report
    console.print(f"{len(shards.feature_names)} features; dataset rows read: {report.rows_read}, bad rows dropped: {report.rows_dropped}")
    for problem in report.problems:
        console.print(f"  dropped: {problem}", markup=False, highlight=False)
    for column, action, reason in report.columns:
        console.print(f"column {column!r}: {action} — {reason}", markup=False, highlight=False, soft_wrap=True)
