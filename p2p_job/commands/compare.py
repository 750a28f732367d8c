"""``p2pk compare RESULT_DIR...``: one comparison table and figures for finished (or running)
runs: metric against round, one line per method (one folder) or per folder and method, a band
for the spread across clients or seeds, rate axes 0..1 (``--autoscale`` to zoom), and the
table's final round next to the mean of the last rounds; ``comparison.json`` records what was
compared (``p2p_job.runrecord.write_comparison``). See ``p2p_job.compare``."""

from __future__ import annotations

import sys
from pathlib import Path

from p2p_job.commands import EXIT_INVALID

#: Exit code when a folder holds no results.
EXIT_NO_RESULTS = 1


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare result folders: one table and figures (metric against round)")
    p.add_argument("dirs", nargs="+", type=Path, metavar="RESULT_DIR",
                   help="folders written by `p2pk simulate`/`p2pk run` (a --seeds folder counts as one run)")
    p.add_argument("--out", type=Path, default=Path("comparison"),
                   help="folder for comparison.md, comparison.txt and figures/ (default: ./comparison)")
    p.add_argument("--last", type=int, default=None, help="rounds averaged by the last-rounds table (default 5)")
    p.add_argument("--autoscale", action="store_true", help="fit the y axes to the data instead of 0..1")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from p2p_job.compare import compare
    from p2p_job.datasets import DataError
    from p2p_job.runrecord import write_comparison
    from p2p_job.summary import DEFAULT_LAST, summary_tables

    last = DEFAULT_LAST if args.last is None else args.last
    if last < 1:
        print(f"p2pk compare: --last must be at least 1, got {last}", file=sys.stderr)
        return EXIT_INVALID
    try:
        frame = compare(args.dirs, args.out, last=last, autoscale=args.autoscale,
                        say=lambda message: print(message, file=sys.stderr, flush=True))
    except DataError as exc:
        print(f"p2pk compare: {exc}", file=sys.stderr)
        return EXIT_NO_RESULTS
    write_comparison(args.out, args.dirs, args.argv)
    console = Console()
    for table in summary_tables(frame, last=last):
        console.print(table)
    print(f"comparison table and figures in {args.out}")
    return 0
