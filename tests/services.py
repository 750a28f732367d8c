"""Real services for the tests, started as local processes: moto's S3 server, Prometheus and
the Prometheus Pushgateway (Debian's packages ``prometheus`` and ``prometheus-pushgateway``),
and ``p2pk worker`` processes.

Fixtures (defined in ``tests/conftest.py``, usable by any test module):

``s3_server`` (session)
    An :class:`S3Server`: moto's server on a free port, spoken to over HTTP. ``.endpoint``
    (``127.0.0.1:PORT``), ``.env`` (``P2PK_S3_ENDPOINT`` and AWS credentials for workers),
    ``.store_url(name)`` a fresh ``s3://<bucket>/<prefix>`` whose bucket exists.
``pushgateway`` (session)
    A :class:`Service` running ``prometheus-pushgateway``; ``.address`` is ``host:port`` (what
    ``P2PK_PUSHGATEWAY`` takes), ``.url`` its base URL.
``start_prometheus`` (function)
    ``start_prometheus(targets, pushgateway=None) -> Service``: a Prometheus scraping the given
    ``host:port`` targets (job ``p2pk-workers``) and the Pushgateway (``honor_labels: true``,
    so pushed series keep the ``job="p2pk"`` they were pushed with) every second; stopped at the
    end of the test.
``tiny_spec`` (function)
    ``tiny_spec(name="tiny", n_clients=3, **overrides) -> Path``: writes :func:`tiny_experiment`
    (built-in data with 6 features, 2 rounds, 1 local epoch) to the test's tmp dir; keyword
    arguments replace top-level ``spec`` fields (e.g. ``rounds=3``,
    ``runtime={"roundTimeoutSeconds": 2}``).
``scraped_experiment`` (module)
    A :class:`ScrapedExperiment`: the tiny experiment run by real worker processes against
    moto's S3, each serving ``/metrics`` and pushing to the Pushgateway, with a Prometheus
    scraping both; ready once Prometheus holds every client's final round (``p2pk_round``
    equal to the spec's rounds, and ``p2pk_false_negative_rate``). ``.query(promql)`` returns the instant vector as a list of
    ``{"metric": {...labels}, "value": float}``. The workers have finished their rounds and
    linger (still serving) until the module's tests are done.

A missing binary skips the test with the reason, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

#: Seconds a service gets to become ready.
READY_TIMEOUT = 60.0


def require_binary(name: str) -> str:
    """The path of an executable; skip the test when it is missing (fail under CI)."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        message = f"{name} not found on PATH (install it: see scripts/test.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT (Ctrl-C): a shell started in the
    background (``cmd &``, as CI runners and ``nohup`` do) gives its children SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler; the child gets the default a terminal gives."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def terminate(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Service:
    """A started process with a ``host:port`` and a log file."""

    name: str
    process: subprocess.Popen
    address: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        terminate(self.process)


def start_service(name: str, argv: list[str], port: int, log_dir: Path, ready_path: str) -> Service:
    """Start ``argv`` and poll ``http://127.0.0.1:port<ready_path>`` until it answers 200."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    service = Service(name, process, f"127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}:\n{service.log()}")
        try:
            http_get(service.url + ready_path, timeout=2)
            return service
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                service.stop()
                raise RuntimeError(f"{name} not ready after {READY_TIMEOUT}s:\n{service.log()}") from None
            time.sleep(0.2)


# --------------------------------------------------------------------------- S3 (moto)


@dataclass
class S3Server:
    service: Service
    access_key: str = "testing"
    secret_key: str = "testing"
    _buckets: int = 0

    @property
    def endpoint(self) -> str:
        return self.service.address

    @property
    def env(self) -> dict[str, str]:
        return {"P2PK_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def open(self, url: str):
        from p2p_job.store import open_store

        return open_store(url, endpoint=self.endpoint, access_key=self.access_key, secret_key=self.secret_key,
                          create_bucket=True)

    def requests_since(self, offset: int = 0) -> tuple[list[tuple[str, str]], int]:
        """The requests moto logged after character ``offset`` of its log, as (method, path
        without query, unquoted: ``/bucket/key``), and the log's new length."""
        text = self.service.log_path.read_text(errors="replace")
        found = re.finditer(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.[01]"', text[offset:])
        return [(m.group(1), urllib.parse.unquote(m.group(2).split("?")[0])) for m in found], len(text)

    def store_url(self, prefix: str = "experiments") -> str:
        """A new bucket (created) and the store URL under ``prefix``."""
        self._buckets += 1
        url = f"s3://p2pk-test-{self._buckets}-{os.getpid()}/{prefix}"
        self.open(url)
        return url


def start_moto(log_dir: Path) -> S3Server:
    binary = require_binary("moto_server")
    port = free_port()
    return S3Server(start_service("moto", [binary, "-H", "127.0.0.1", "-p", str(port)], port, log_dir, "/moto-api/"))


# --------------------------------------------------------------------------- Prometheus


def start_pushgateway(log_dir: Path) -> Service:
    binary = require_binary("prometheus-pushgateway")
    port = free_port()
    return start_service("pushgateway", [binary, f"--web.listen-address=127.0.0.1:{port}"], port, log_dir, "/-/ready")


def start_prometheus(work_dir: Path, targets: list[str], pushgateway: Service | None = None) -> Service:
    """Prometheus scraping ``targets`` (job ``p2pk-workers``) and the Pushgateway every second."""
    binary = require_binary("prometheus")
    work_dir.mkdir(parents=True, exist_ok=True)
    jobs = [{"job_name": "p2pk-workers", "static_configs": [{"targets": targets}]}]
    if pushgateway is not None:
        jobs.append({"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [pushgateway.address]}]})
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": jobs}
    config_path = work_dir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [binary, f"--config.file={config_path}", f"--storage.tsdb.path={work_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    return start_service("prometheus", argv, port, work_dir, "/-/ready")


def prom_query(prometheus: Service, promql: str) -> list[dict]:
    """An instant query: ``[{"metric": {labels}, "value": float}, …]``."""
    url = f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    body = json.loads(http_get(url))
    if body.get("status") != "success":
        raise RuntimeError(f"query {promql!r} failed: {body}")
    return [{"metric": r["metric"], "value": float(r["value"][1])} for r in body["data"]["result"]]


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- experiments and workers


def tiny_experiment(name: str = "tiny", n_clients: int = 3, **spec_overrides) -> dict:
    """A tiny P2PExperiment document: built-in data (6 features, 3 devices, 1 attack family),
    ``n_clients`` (≤ 3) non-IID clients ``client-a``, ``client-b``…, 2 rounds of 1 local epoch on
    a 8→4 network; K-SMOTE sharing 50%. Keyword arguments replace top-level ``spec`` fields."""
    clients = [
        {"name": f"client-{c}", "benignGroups": [f"device-{i}"], "maliciousGroups": [f"device-{i}"],
         "train": {"benign": 80, "malicious": 12}, "validation": {"benign": 30, "malicious": 10}}
        for i, c in enumerate("abc"[:n_clients])
    ]
    spec = {
        "seed": 7,
        "rounds": 2,
        "dataset": {"kind": "builtin", "builtin": {"devices": 3, "families": 1, "features": 6,
                                                   "benignPerDevice": 140, "maliciousPerFamily": 40}},
        "scenario": {"kind": "non-iid", "clients": clients, "globalTest": {"benign": 20, "malicious": 10}},
        "topology": {"kind": "full"},
        "methods": [{"rebalancing": "ksmote"}],
        "rebalancing": {"k": 3, "neighbours": 4, "shareFraction": 0.5},
        "training": {"localEpochs": 1, "batchSize": 16, "learningRate": 0.05, "hiddenLayers": [8, 4]},
        "runtime": {"device": "cpu", "roundTimeoutSeconds": 60},
    }
    spec.update(spec_overrides)
    return {"apiVersion": "p2pk.io/v1alpha1", "kind": "P2PExperiment", "metadata": {"name": name}, "spec": spec}


def write_spec(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class WorkerProcess:
    """A ``p2pk worker`` subprocess with its JSON log in a file."""

    client: str
    process: subprocess.Popen
    log_path: Path

    def events(self) -> list[dict]:
        from p2p_job.telemetry import parse_log_line

        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return [e for e in map(parse_log_line, lines) if e]

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"worker {self.client} still running after {timeout}s:\n{self.log_path.read_text()[-3000:]}") from None

    def stop(self) -> None:
        terminate(self.process)


def spawn_worker(spec: Path, client: str, store_url: str, log_dir: Path, *, env: dict[str, str] | None = None,
                 args: list[str] = ()) -> WorkerProcess:
    """``python -m p2p_job.cli worker`` for ``client`` with the worker environment (no
    /metrics server unless ``env`` sets ``P2PK_METRICS_PORT``; one torch thread)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "P2PK_SPEC": str(spec), "P2PK_CLIENT": client,
                "P2PK_STORE": store_url, "P2PK_METRICS_PORT": "0", **(env or {})}
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{client}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "p2p_job.cli", "worker", *args], env=full_env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return WorkerProcess(client, process, log_path)


@dataclass
class ScrapedExperiment:
    """See the module docstring (fixture ``scraped_experiment``)."""

    prometheus: Service
    pushgateway: Service
    experiment: str
    method: str
    clients: list[str]
    store_url: str
    workers: list[WorkerProcess] = field(default_factory=list)

    def query(self, promql: str) -> list[dict]:
        return prom_query(self.prometheus, promql)
