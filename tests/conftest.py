"""Shared fixtures: real services started as local processes (see ``tests/services.py``), and a
real Kubernetes control plane with a node that runs pods as processes (``tests/controlplane.py``,
``tests/node_agent.py``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import controlplane
import services
from node_agent import NodeAgent


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> services.S3Server:
    server = services.start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.service.stop()


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory) -> services.Service:
    service = services.start_pushgateway(tmp_path_factory.mktemp("pushgateway"))
    yield service
    service.stop()


@pytest.fixture
def start_prometheus(tmp_path):
    started: list[services.Service] = []

    def start(targets: list[str], pushgateway: services.Service | None = None) -> services.Service:
        service = services.start_prometheus(tmp_path / f"prometheus-{len(started)}", targets, pushgateway)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def tiny_spec(tmp_path):
    def write(name: str = "tiny", n_clients: int = 3, **spec_overrides) -> Path:
        return services.write_spec(tmp_path / f"{name}.yaml", services.tiny_experiment(name, n_clients, **spec_overrides))

    return write


@pytest.fixture(scope="module")
def scraped_experiment(tmp_path_factory, s3_server, pushgateway) -> services.ScrapedExperiment:
    work = tmp_path_factory.mktemp("scraped")
    document = services.tiny_experiment("scraped")
    spec = services.write_spec(work / "scraped.yaml", document)
    clients = [c["name"] for c in document["spec"]["scenario"]["clients"]]
    ports = {c: services.free_port() for c in clients}
    prometheus = services.start_prometheus(work / "prometheus", [f"127.0.0.1:{p}" for p in ports.values()], pushgateway)
    store_url = s3_server.store_url()
    run = services.ScrapedExperiment(prometheus, pushgateway, "scraped", "ksmote", clients, store_url)
    try:
        for client in clients:
            env = {**s3_server.env, "P2PK_METRICS_PORT": str(ports[client]), "P2PK_PUSHGATEWAY": pushgateway.address}
            run.workers.append(services.spawn_worker(spec, client, store_url, work / "logs", env=env,
                                                     args=["--linger", "600"]))
        for worker in run.workers:
            services.wait_for(lambda: any(e["event"] == "worker_done" for e in worker.events()), 120,
                              f"worker {worker.client} to finish its rounds")

        rounds = document["spec"]["rounds"]

        def all_scraped():
            final = {r["metric"]["client"] for r in run.query(f'p2pk_round{{job="p2pk-workers"}} == {rounds}')}
            fnr = {r["metric"]["client"] for r in run.query('p2pk_false_negative_rate{job="p2pk-workers"}')}
            return final == fnr == set(clients)

        services.wait_for(all_scraped, 60, "Prometheus to scrape every worker's final round")
        yield run
    finally:
        for worker in run.workers:
            worker.stop()
        prometheus.stop()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory, request) -> controlplane.ControlPlane:
    """etcd, kube-apiserver and kube-controller-manager on 127.0.0.1 (session-wide); skipped when
    the binaries are not built (``scripts/build-control-plane.sh``), failed under CI."""
    bin_dir, why = controlplane.control_plane_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    plane = controlplane.start_control_plane(bin_dir, tmp_path_factory.mktemp("control-plane"))
    request.config.stash[CONTROL_PLANE_START] = plane.start_seconds
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def node_agent(control_plane, tmp_path_factory) -> NodeAgent:
    """The control plane's one node, running its pods as local processes with this venv's
    ``p2pk`` and ``.tools/bin``'s kubectl on PATH; the chart's images map to their Dockerfiles'
    entrypoints."""
    tools = controlplane.REPO / ".tools" / "bin"
    path = os.pathsep.join([str(Path(sys.executable).parent), str(tools), "/usr/local/bin", "/usr/bin", "/bin"])
    base_env = {"PATH": path, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if os.environ.get("PYTHONPATH"):
        base_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    agent = NodeAgent(control_plane.api_client, tmp_path_factory.mktemp("node"), control_plane.server,
                      control_plane.ca, base_env, images=controlplane.image_entrypoints(),
                      kubelet_tls=control_plane.kubelet_tls())
    agent.start()
    yield agent
    agent.stop()


CONTROL_PLANE_START = pytest.StashKey[float]()


def pytest_terminal_summary(terminalreporter, config):
    start = config.stash.get(CONTROL_PLANE_START, None)
    if start is not None:
        terminalreporter.write_line(f"real control plane: started in {start:.1f} s")
