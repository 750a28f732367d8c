"""``p2pk operator``: run the Kubernetes operator; ``p2pk crd``: print the P2PExperiment CRD.

kopf and the kubernetes client are imported inside ``run`` (see docs/internals.md, "CLI")."""

from __future__ import annotations

import argparse
import os


def register(sub) -> None:
    p = sub.add_parser("operator", help="run the Kubernetes operator for P2PExperiment resources (kopf)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-n", "--namespace", action="append", metavar="NS",
                       help="watch this namespace (repeat for more; glob patterns allowed)")
    where.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (needs a ClusterRole)")
    p.add_argument("--liveness", metavar="URL", help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--pushgateway", metavar="HOST:PORT", default=os.environ.get("P2PK_PUSHGATEWAY") or None,
                   help="Prometheus Pushgateway for the Jobs of experiments whose spec.runtime.pushgateway is unset "
                        "(default: $P2PK_PUSHGATEWAY)")
    p.add_argument("--allowed-image", action="append", metavar="IMAGE",
                   help="an image experiments may run (repeat; a final * allows any suffix, e.g. 'registry/p2pk/worker:*'); "
                        "default $P2PK_ALLOWED_IMAGES (comma-separated); none given: any")
    p.add_argument("--allowed-service-account", action="append", metavar="NAME",
                   help="a ServiceAccount experiments' pods may run as (repeat); default $P2PK_ALLOWED_SERVICE_ACCOUNTS; none given: any")
    p.add_argument("--observe-interval", metavar="SECONDS", type=_seconds,
                   default=os.environ.get("P2PK_OBSERVE_INTERVAL") or "30",
                   help="seconds between two status updates of a running experiment from its Jobs and the clients' "
                        "metrics (default: $P2PK_OBSERVE_INTERVAL or 30)")
    p.add_argument("--deletion-timeout", metavar="SECONDS", type=_seconds,
                   default=os.environ.get("P2PK_DELETION_TIMEOUT") or "120",
                   help="seconds a deleted experiment waits for its Jobs to stop or the store to answer before the "
                        "operator releases its finalizer with a Warning Event naming what it left in the store "
                        "(default: $P2PK_DELETION_TIMEOUT or 120)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every handler call")
    p.set_defaults(func=run_operator)

    c = sub.add_parser("crd", help="print the P2PExperiment CustomResourceDefinition (YAML)")
    c.set_defaults(func=print_crd)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def run_operator(args) -> int:
    os.environ["P2PK_OBSERVE_INTERVAL"] = str(args.observe_interval)  # read when the handlers register
    import kopf

    import p2pk_operator.handlers  # noqa: F401  (registers the handlers)
    from p2pk_operator.admission import Admission

    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=True,  # one operator instance: no peering objects needed
        clusterwide=args.all_namespaces,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(pushgateway=args.pushgateway, deletion_timeout=args.deletion_timeout,
                       admission=Admission.from_settings(args.allowed_image, args.allowed_service_account)),
    )
    return 0


def print_crd(args) -> int:
    from p2pk_operator.crd import crd_yaml

    print(crd_yaml(), end="")
    return 0
