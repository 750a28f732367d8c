"""`helm uninstall` pre-delete hook: delete the release's P2PExperiments while their operator
still runs, and wait until they are gone.

An experiment carries the operator's finalizer: its deletion handler removes the clients' MinIO
users (and, with purgeOnDelete, the store prefix) before Kubernetes lets it go. Deleted together
with the operator, it would keep the finalizer (and its Jobs) forever. So the chart's pre-delete
hook Job runs, in the operator image (it has the kubernetes client), under its own ServiceAccount
that may only list and delete P2PExperiments:

    python delete_experiments.py --namespace NS --selector app.kubernetes.io/instance=REL --timeout 300

It exits 0 once none is left, 1 naming those still there at the deadline (``helm uninstall``
then stops, before removing the operator; see docs/deploy.md, "Uninstalling").
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

GROUP, VERSION, PLURAL = "p2pk.io", "v1alpha1", "p2pexperiments"


def delete_and_wait(
    names: Callable[[], list[str]],
    delete: Callable[[str], None],
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    poll: float = 2.0,
) -> tuple[list[str], list[str]]:
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
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--selector", required=True, help="label selector of the release's experiments")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)

    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    try:
        config.load_incluster_config()
    except config.ConfigException:  # run from a workstation
        config.load_kube_config()
    api = client.CustomObjectsApi()

    def names() -> list[str]:
        items = api.list_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, label_selector=args.selector)["items"]
        return sorted(item["metadata"]["name"] for item in items)

    def delete(name: str) -> None:
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:  # gone meanwhile
                raise

    deleted, left = delete_and_wait(names, delete, args.timeout)
    if left:
        print(f"FAIL still there after {args.timeout:g} s (is the operator running? it removes their finalizer): "
              f"{', '.join(left)}", file=sys.stderr)
        return 1
    print(f"deleted {len(deleted)} experiments{': ' + ', '.join(deleted) if deleted else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
