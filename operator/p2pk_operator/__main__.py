"""``python -m p2pk_operator [--namespace NS | --all-namespaces]``: the same as ``p2pk operator``."""

import sys

from p2p_job.cli import main

sys.exit(main(["operator", *sys.argv[1:]]))
