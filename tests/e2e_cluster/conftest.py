"""Where to run ``tests/e2e_cluster``: the cluster named by KUBECONFIG (or the in-cluster
configuration) with the store given by ``P2PK_E2E_*`` when one is configured; else the suite's
own control plane (``tests/controlplane.py``, its node agent running the pods) with moto's S3 as
the store, one shared user, and the workers run to the end (``P2PK_E2E_RUN=1``). Without either,
the tests skip, saying why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import controlplane


def _configured_elsewhere() -> bool:
    return bool(os.environ.get("KUBECONFIG") or os.environ.get("KUBERNETES_SERVICE_HOST")
                or Path("~/.kube/config").expanduser().exists())


@pytest.fixture(scope="module", autouse=True)
def e2e_target(request):
    if _configured_elsewhere() or controlplane.control_plane_bin()[0] is None:
        yield
        return
    plane = request.getfixturevalue("control_plane")
    request.getfixturevalue("node_agent")
    s3 = request.getfixturevalue("s3_server")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", str(plane.kubeconfig))
        mp.setenv("P2PK_E2E_S3_ENDPOINT", s3.endpoint)
        mp.setenv("P2PK_E2E_S3_ACCESS_KEY", s3.access_key)
        mp.setenv("P2PK_E2E_S3_SECRET_KEY", s3.secret_key)
        mp.setenv("P2PK_E2E_S3_SHARED", "1")  # moto has no MinIO admin API
        mp.setenv("P2PK_E2E_RUN", "1")
        mp.setenv("P2PK_OBSERVE_INTERVAL", "2")  # the operator it starts updates the status every 2 s
        yield
