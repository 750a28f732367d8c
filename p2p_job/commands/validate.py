"""``p2pk validate exp.yaml``: check an experiment file; list every error by field path.

Everything ``simulate``, ``run``, the workers or the operator would refuse about a spec is
refused here first (exit 2): the checks live in the spec model (``p2p_job.spec``). With
``--kubernetes`` it also applies what only a Kubernetes run needs (an S3 endpoint, store
credentials), as the operator does."""

from __future__ import annotations


from p2p_job.spec import InvalidSpec, kubernetes_errors, load_experiment, resolved_method_name


def register(sub) -> None:
    p = sub.add_parser("validate", help="check an experiment file and list every error by field path")
    p.add_argument("spec", help="P2PExperiment YAML file")
    p.add_argument("--kubernetes", action="store_true",
                   help="also check what the operator needs (kubernetes.s3 endpoint and credentials)")
    p.set_defaults(func=run)


def run(args) -> int:
    exp = load_experiment(args.spec)
    if args.kubernetes and (errors := kubernetes_errors(exp)):
        raise InvalidSpec(str(args.spec), errors)
    s = exp.spec
    methods = ", ".join(resolved_method_name(m, s.aggregation.rule) for m in s.methods)
    clients = ", ".join(c.name for c in s.scenario.clients)
    print(
        f"{args.spec}: valid P2PExperiment {exp.name!r}: {s.scenario.kind} on {s.dataset.kind} data, "
        f"{len(s.scenario.clients)} clients ({clients}), {s.rounds} rounds, "
        f"{s.topology.kind} topology, methods: {methods}"
        + "".join(f"; adversary {a.client}: {a.attack} from round {a.from_round}" for a in s.adversaries)
    )
    return 0
