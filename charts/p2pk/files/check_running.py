"""`helm test` check: wait until every named P2PExperiment has reached Running.

Run in the operator image (it has the kubernetes client) by the chart's test hook Pod, with the
in-cluster configuration of its ServiceAccount (or, from a workstation, the kubeconfig):

    python check_running.py --namespace NS --timeout 600 exp-a exp-b

An experiment passes once its ``status.phase`` is Running, or already Succeeded (a small one
may finish before the test starts). Failed or InvalidSpec fails at once, naming the experiment
and the reason from its status conditions; still waiting at the deadline fails too.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

GROUP, VERSION, PLURAL = "p2pk.io", "v1alpha1", "p2pexperiments"
PASSED = {"Running", "Succeeded"}
FAILED = {"Failed", "InvalidSpec"}


def failure_reason(status: dict) -> str:
    """The message of the first true Failed/InvalidSpec condition, else the phase."""
    for cond in status.get("conditions") or []:
        if cond.get("type") in FAILED and cond.get("status") == "True":
            return cond.get("message") or cond.get("reason") or cond["type"]
    return status.get("phase", "")


def wait_until_running(
    get_status: Callable[[str], dict],
    names: list[str],
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    poll: float = 5.0,
) -> list[str]:
    """Poll ``get_status(name)`` until every experiment passed or one failed.

    Returns the problems found (empty when all passed): one line per failed experiment, or one
    per experiment still not Running at the deadline.
    """
    deadline = clock() + timeout
    pending = list(names)
    while True:
        waiting: dict[str, str | None] = {}  # name -> phase
        for name in pending:
            status = get_status(name)
            phase = status.get("phase")
            if phase in FAILED:
                return [f"{name}: {phase}: {failure_reason(status)}"]
            if phase not in PASSED:
                waiting[name] = phase
        if not waiting:
            return []
        if clock() >= deadline:
            return [f"{name}: not Running after {timeout:g} s (phase: {phase or 'none yet'})" for name, phase in waiting.items()]
        pending = list(waiting)
        sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("names", nargs="+", help="P2PExperiment names")
    args = parser.parse_args(argv)

    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:  # run from a workstation
        config.load_kube_config()
    api = client.CustomObjectsApi()

    def get_status(name: str) -> dict:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, name)
        return obj.get("status") or {}

    problems = wait_until_running(get_status, args.names, args.timeout)
    for line in problems:
        print(f"FAIL {line}", file=sys.stderr)
    if not problems:
        print(f"OK: {', '.join(args.names)} reached Running")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
