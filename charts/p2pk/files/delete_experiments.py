"""`helm uninstall` pre-delete hook: delete every P2PExperiment the operator watches while the
operator still runs, and wait until they are gone.

An experiment with state outside Kubernetes (MinIO users, a store prefix to purge) carries the
operator's finalizer: its deletion handler cleans up before Kubernetes lets it go. Deleted after
the operator, it would keep the finalizer (and its Jobs) forever. So the chart's pre-delete hook
Job runs this, in the operator image (it has the kubernetes client), under its own
ServiceAccount that may only list and delete P2PExperiments, over what the operator watches:
the release namespace, or every namespace with ``operator.clusterWide`` — experiments applied
with kubectl included, since the operator goes with the release:

    python delete_experiments.py --namespace NS --timeout 300
    python delete_experiments.py --all-namespaces --timeout 300

Each is deleted with foreground propagation, so it goes only after its Jobs and their pods.
It exits 0 once none is left, 1 naming those still there at the deadline and their finalizers
(``helm uninstall`` then stops, before removing the operator; see docs/deploy.md, "Uninstalling").
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Hashable, TypeVar

GROUP, VERSION, PLURAL = "p2pk.io", "v1alpha1", "p2pexperiments"
Key = TypeVar("Key", bound=Hashable)


def delete_and_wait(
    names: Callable[[], list[Key]],
    delete: Callable[[Key], None],
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    poll: float = 2.0,
) -> tuple[list[Key], list[Key]]:
    """Delete every experiment ``names()`` lists, then poll until none is left.

    Returns (the experiments deleted, those still there at the deadline)."""
    deadline = clock() + timeout
    deleted = names()
    for name in deleted:
        delete(name)
    while True:
        left = names()
        if not left or clock() >= deadline:
            return deleted, left
        sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--namespace", action="append", help="a namespace the operator watches (repeat)")
    where.add_argument("--all-namespaces", action="store_true", help="every namespace (a cluster-wide operator)")
    parser.add_argument("--selector", default="", help="only experiments with these labels (default: all)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)

    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    try:
        config.load_incluster_config()
    except config.ConfigException:  # run from a workstation
        config.load_kube_config()
    api = client.CustomObjectsApi()
    found: dict[tuple[str, str], dict] = {}

    def names() -> list[tuple[str, str]]:
        if args.all_namespaces:
            items = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector=args.selector)["items"]
        else:
            items = [i for ns in args.namespace
                     for i in api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, label_selector=args.selector)["items"]]
        found.clear()
        found.update({(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in items})
        return sorted(found)

    def delete(key: tuple[str, str]) -> None:
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, key[0], PLURAL, key[1],
                                                body=client.V1DeleteOptions(propagation_policy="Foreground"))
        except ApiException as exc:
            if exc.status != 404:  # gone meanwhile
                raise

    started = time.monotonic()
    deleted, left = delete_and_wait(names, delete, args.timeout)
    if left:
        stuck = ", ".join(f"{ns}/{name} (finalizers: {', '.join(found[(ns, name)]['metadata'].get('finalizers') or ()) or 'none'})"
                          for ns, name in left)
        print(f"FAIL still there after {args.timeout:g} s (is the operator running? it removes its finalizer): {stuck}",
              file=sys.stderr)
        return 1
    listed = ": " + ", ".join(f"{ns}/{name}" for ns, name in deleted) if deleted else ""
    print(f"deleted {len(deleted)} experiments in {time.monotonic() - started:.1f} s{listed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
