"""``p2pk worker``: run one peer (one client of one method) until the experiment's last round.

Configured by the worker environment of DESIGN.md (``P2PK_SPEC``, ``P2PK_CLIENT``,
``P2PK_STORE``, ``P2PK_METHOD``, ``P2PK_S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``P2PK_METRICS_PORT``, ``P2PK_PUSHGATEWAY``, ``P2PK_DEVICE``,
``P2PK_SHARDS``);
the flags below override them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("worker", help="run one peer against a store (what `p2pk run` and Kubernetes Jobs start)")
    p.add_argument("--spec", type=Path, help="P2PExperiment YAML file [P2PK_SPEC]")
    p.add_argument("--client", help="client name [P2PK_CLIENT]")
    p.add_argument("--store", help="s3://bucket/prefix or file:///path [P2PK_STORE]")
    p.add_argument("--method", help="method name (default: the spec's first) [P2PK_METHOD]")
    p.add_argument("--s3-endpoint", help="S3/MinIO endpoint host:port or URL [P2PK_S3_ENDPOINT]")
    p.add_argument("--metrics-port", type=int, help="port of /metrics, 0 = do not serve (default: spec.runtime.metricsPort, 9400) [P2PK_METRICS_PORT]")
    p.add_argument("--pushgateway", help="host:port of a Prometheus Pushgateway [P2PK_PUSHGATEWAY]")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override spec.runtime.device [P2PK_DEVICE]")
    p.add_argument("--shards", help="read this client's prepared shard instead of cutting it: 'store' (<experiment>/shards/ "
                   "in the store) or a folder written by `p2pk data prepare` (default: spec.dataset.shards) [P2PK_SHARDS]")
    p.add_argument("--linger", type=float, dest="linger_seconds",
                   help="keep serving /metrics this many seconds after the last round (for a final scrape)")
    p.set_defaults(func=run)


def run(args) -> int:
    from p2p_job.worker import ConfigError, config_from, main

    flags = {k: getattr(args, k) for k in ("spec", "client", "store", "method", "s3_endpoint", "metrics_port",
                                           "pushgateway", "device", "shards", "linger_seconds")}
    try:
        cfg = config_from(os.environ, flags)
    except ConfigError as exc:
        print(f"p2pk worker: {exc}", file=sys.stderr)
        return 2
    exit_now(main(cfg))


def exit_now(code: int) -> None:
    """End the worker process with ``code`` once its logs and output are flushed, without
    Python's finalisation: unloading PyTorch, scikit-learn and pandas took 2.5 s of wall time
    per worker on the loaded development machine (benchmarks/README.md, "Start-up and end of
    p2pk run"), after its last round was already in the store. Nothing is left to do by then:
    the store calls are synchronous, the Pushgateway was pushed, a thread still reading a
    neighbour that timed out has nothing to hand back."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
