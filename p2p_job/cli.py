"""``p2pk`` command line. Each command lives in its own module under ``p2p_job.commands``
and registers itself through ``register(subparsers)``; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import sys

from p2p_job.commands import EXIT_INVALID
from p2p_job.spec import InvalidSpec

#: Command modules, in the order ``p2pk --help`` lists them.
COMMANDS = (
    "validate",
    "data",
    "simulate",
    "run",
    "compare",
    "collect",
    "worker",
    "operator",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pk",
        description="Peer-to-peer federated learning for IoT attack detection with K-SMOTE (P2PK-SMOTE).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"p2p_job.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = ["p2pk", *(sys.argv[1:] if argv is None else argv)]  # the command line, for run records
    try:
        return int(args.func(args) or 0)
    except InvalidSpec as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
