"""``p2pk worker``: the store exchange, checkpoints and configuration in-process, then real
worker processes over moto's S3 server and the directory store, with faults."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import urllib.request

import numpy as np
import pyarrow.parquet as pq
import pytest
import services
from prometheus_client.parser import text_string_to_metric_families

from p2p_job.exchange import Publication
from p2p_job.payloads import MANIFEST_FILE, MODEL_FILE, decode_manifest, encode_state, state_layout
from p2p_job.peer import PeerState
from p2p_job.store import DirectoryStore, StoreError, checkpoint_key, round_key
from p2p_job.store_exchange import POLL_MAX, StoreExchange
from p2p_job.worker import ConfigError, config_from, read_metrics

W0 = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}
FEATURES = ["x0", "x1", "x2"]


class FakeTime:
    """A clock that only moves when the exchange sleeps; records the pauses."""

    def __init__(self):
        self.now, self.pauses = 0.0, []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.pauses.append(seconds)
        self.now += seconds


def exchange(store, client, timeout=10.0, time=None, **kw) -> StoreExchange:
    time = time or FakeTime()
    return StoreExchange(store, experiment="exp", method="ksmote", client=client, feature_names=FEATURES,
                         layout=state_layout(W0), max_payload_bytes=kw.pop("max_payload_bytes", 2**20),
                         timeout=timeout, clock=time.clock, sleep=time.sleep, **kw)


def publication(client, r=1, scale=1.0, n_points=4) -> Publication:
    rng = np.random.default_rng(r)
    return Publication(
        client=client, round=r,
        delta={"w": np.full((2, 3), scale, np.float32), "b": np.arange(2, dtype=np.float32)},
        n_base=50, variance=0.125,
        synthetic_X=rng.normal(size=(n_points, 3)).astype(np.float32),
        synthetic_y=np.ones(n_points, np.int8),
        metrics={"local_fnr": 0.25, "local_auc": math.nan},
    )


# --------------------------------------------------------------------------- store exchange


def test_publish_then_gather_round_trips(tmp_path):
    store = DirectoryStore(tmp_path)
    sent, received = [], []
    exchange(store, "a", on_bytes=lambda d, n: sent.append((d, n))).publish(publication("a"))
    keys = store.list("exp/ksmote/rounds/")
    assert keys == [round_key("exp", "ksmote", 1, "a", n) for n in ("manifest.json", "model.safetensors", "synthetic.parquet")]
    gathered = exchange(store, "b", on_bytes=lambda d, n: received.append((d, n))).gather(1, ["a"])
    assert gathered.missing == [] and gathered.rejected == []
    pub, original = gathered.publications["a"], publication("a")
    np.testing.assert_array_equal(pub.delta["w"], original.delta["w"])
    np.testing.assert_array_equal(pub.synthetic_X, original.synthetic_X)
    assert (pub.n_base, pub.variance, pub.metrics["local_fnr"]) == (50, 0.125, 0.25)
    total = sum(len(store.get_bytes(k)) for k in keys)
    assert sent == [("sent", total)] and received == [("received", total)]


def test_publish_is_idempotent_and_keeps_the_first_version(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="p2p_job")
    store = DirectoryStore(tmp_path)
    ex = exchange(store, "a")
    ex.publish(publication("a"))
    first = {k: store.get_bytes(k) for k in store.list("")}
    ex.publish(publication("a"))                 # same content: nothing rewritten
    ex.publish(publication("a", scale=2.0))      # different content (non-reproducible training)
    assert {k: store.get_bytes(k) for k in store.list("")} == first
    events = [r.getMessage() for r in caplog.records]
    assert events == ["already_published", "republish_differs"]


def test_a_client_publishes_only_under_its_own_name(tmp_path):
    with pytest.raises(ValueError, match="'a' may not publish as 'b'"):
        exchange(DirectoryStore(tmp_path), "a").publish(publication("b"))


def test_gather_polls_with_capped_backoff_until_the_timeout(tmp_path):
    time = FakeTime()
    store = DirectoryStore(tmp_path)
    exchange(store, "a").publish(publication("a"))
    gathered = exchange(store, "c", timeout=10.0, time=time).gather(1, ["a", "b"])
    assert list(gathered.publications) == ["a"] and gathered.missing == ["b"]
    assert time.pauses[:6] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    assert max(time.pauses) == POLL_MAX
    assert time.now == pytest.approx(10.0)


def test_gather_takes_a_late_publication(tmp_path):
    store = DirectoryStore(tmp_path)
    time = FakeTime()

    def sleep(seconds):  # the neighbour publishes while we wait
        time.sleep(seconds)
        if len(time.pauses) == 3:
            exchange(store, "b").publish(publication("b"))

    ex = StoreExchange(store, experiment="exp", method="ksmote", client="a", feature_names=FEATURES,
                       layout=state_layout(W0), max_payload_bytes=2**20, timeout=60, clock=time.clock, sleep=sleep)
    gathered = ex.gather(1, ["b"])
    assert list(gathered.publications) == ["b"] and len(time.pauses) == 3


def corrupt(store, key, data):
    store.put_bytes(key, data)


def test_bad_payloads_are_rejected_with_their_reason(tmp_path, caplog):
    store = DirectoryStore(tmp_path)
    for client in ("b", "c", "d", "e", "f"):
        exchange(store, client).publish(publication(client))
    # b: payload changed after the manifest (hash), c: NaN weights with a matching manifest,
    # d: manifest claims another round, e: manifest not JSON, f: fine
    corrupt(store, round_key("exp", "ksmote", 1, "b", MODEL_FILE), encode_state({**W0}))
    nan_state = encode_state({"w": np.full((2, 3), np.nan, np.float32), "b": np.zeros(2, np.float32)})
    manifest = json.loads(store.get_bytes(round_key("exp", "ksmote", 1, "c", MANIFEST_FILE)))
    manifest["payloads"][MODEL_FILE] = {"sha256": hashlib.sha256(nan_state).hexdigest(), "bytes": len(nan_state)}
    corrupt(store, round_key("exp", "ksmote", 1, "c", MODEL_FILE), nan_state)
    corrupt(store, round_key("exp", "ksmote", 1, "c", MANIFEST_FILE), json.dumps(manifest).encode())
    manifest = json.loads(store.get_bytes(round_key("exp", "ksmote", 1, "d", MANIFEST_FILE)))
    corrupt(store, round_key("exp", "ksmote", 1, "d", MANIFEST_FILE), json.dumps({**manifest, "round": 2}).encode())
    corrupt(store, round_key("exp", "ksmote", 1, "e", MANIFEST_FILE), b"\x80garbage")

    gathered = exchange(store, "a").gather(1, ["b", "c", "d", "e", "f"])
    assert list(gathered.publications) == ["f"]
    assert sorted(gathered.rejected) == [("b", "hash-mismatch"), ("c", "non-finite"), ("d", "schema"), ("e", "malformed")]
    logged = [r for r in caplog.records if r.getMessage() == "payload_rejected"]
    assert {r.fields["neighbour"]: r.fields["reason"] for r in logged} == dict(gathered.rejected)
    assert "tensor 'w' holds NaN" in next(r.fields["detail"] for r in logged if r.fields["neighbour"] == "c")


def test_payloads_over_the_size_cap_are_rejected(tmp_path):
    store = DirectoryStore(tmp_path)
    exchange(store, "b").publish(publication("b", n_points=2000))
    gathered = exchange(store, "a", max_payload_bytes=8000).gather(1, ["b"])
    # the shared points only: the model (small, sound) still comes, to be judged on its own
    pub = gathered.publications["b"]
    assert gathered.rejected == [] and pub.points_refused.startswith("too-large: ") and len(pub.synthetic_y) == 0
    assert pub.synthetic_X.shape == (0, len(FEATURES))
    gathered = exchange(store, "a", max_payload_bytes=200).gather(1, ["b"])  # the model over the cap too
    assert gathered.rejected == [("b", "too-large")]


class BoundedReads:
    """A directory store that records the ``max_bytes`` of every read."""

    def __init__(self, inner):
        self.inner, self.caps = inner, {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_bytes(self, key, max_bytes=None):
        self.caps[key.rsplit("/", 1)[-1]] = max_bytes
        return self.inner.get_bytes(key, max_bytes)


def test_a_payload_larger_than_its_manifest_declares_is_not_read_whole(tmp_path):
    store = DirectoryStore(tmp_path)
    exchange(store, "b").publish(publication("b"))
    model_key = round_key("exp", "ksmote", 1, "b", MODEL_FILE)
    declared = len(store.get_bytes(model_key))
    store.put_bytes(model_key, store.get_bytes(model_key) + b"\0" * 10**6)
    bounded = BoundedReads(store)
    gathered = exchange(bounded, "a", max_payload_bytes=4000).gather(1, ["b"])
    assert gathered.rejected == [("b", "hash-mismatch")]
    assert bounded.caps == {MANIFEST_FILE: 4000, MODEL_FILE: declared}


class FailingReads:
    """A directory store whose reads of one client's payloads fail (retries exhausted)."""

    def __init__(self, inner, client, failures):
        self.inner, self.client, self.failures = inner, client, failures

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_bytes(self, key, max_bytes=None):
        if f"/{self.client}/" in key and self.failures:
            self.failures -= 1
            raise StoreError("unreachable")
        return self.inner.get_bytes(key, max_bytes)


def test_store_errors_while_gathering_are_retried_at_the_next_poll(tmp_path):
    store = DirectoryStore(tmp_path)
    exchange(store, "b").publish(publication("b"))
    gathered = exchange(FailingReads(store, "b", failures=2), "a").gather(1, ["b"])
    assert list(gathered.publications) == ["b"]
    gathered = exchange(FailingReads(store, "b", failures=10**6), "a", timeout=3).gather(1, ["b"])
    assert gathered.missing == ["b"]


# --------------------------------------------------------------------------- configuration

ENV = {"P2PK_SPEC": "/s.yaml", "P2PK_CLIENT": "a", "P2PK_STORE": "file:///x", "P2PK_METRICS_PORT": "9500",
       "P2PK_METHOD": "smote", "AWS_ACCESS_KEY_ID": "key", "P2PK_DEVICE": "cpu"}


def test_flags_override_the_environment():
    cfg = config_from(ENV, {"client": "b", "metrics_port": 0, "method": None, "linger_seconds": 5.0})
    assert (str(cfg.spec), cfg.client, cfg.store, cfg.method, cfg.metrics_port) == ("/s.yaml", "b", "file:///x", "smote", 0)
    assert (cfg.access_key, cfg.device, cfg.pushgateway, cfg.linger_seconds) == ("key", "cpu", None, 5.0)
    assert config_from({k: v for k, v in ENV.items() if k != "P2PK_METRICS_PORT"}, {}).metrics_port is None  # the spec's


def test_missing_and_malformed_settings_are_named():
    with pytest.raises(ConfigError, match="P2PK_CLIENT / --client, P2PK_STORE / --store"):
        config_from({"P2PK_SPEC": "/s.yaml"}, {})
    with pytest.raises(ConfigError, match="P2PK_METRICS_PORT must be an integer, got 'x'"):
        config_from({**ENV, "P2PK_METRICS_PORT": "x"}, {})
    with pytest.raises(ConfigError, match="must be 0..65535"):
        config_from(ENV, {"metrics_port": 70000})


# --------------------------------------------------------------------------- real worker processes


def metric_samples(port: int) -> dict[tuple, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("experiment", "client", "method")))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


@pytest.mark.slow
def test_workers_as_processes_over_s3(tmp_path, tiny_spec, s3_server):
    """Two worker processes exchange through moto's S3 server over HTTP and leave the DESIGN
    store layout: spec.yaml, rounds/<r>/<client>/{model,synthetic,manifest}, checkpoints, metrics."""
    spec = tiny_spec("s3run", n_clients=2)
    url = s3_server.store_url("experiments")
    workers = [services.spawn_worker(spec, c, url, tmp_path / "logs", env=s3_server.env) for c in ("client-a", "client-b")]
    assert [w.wait() for w in workers] == [0, 0], [w.log_path.read_text()[-2000:] for w in workers]
    store = s3_server.open(url)
    keys = store.list("s3run/")
    assert "s3run/ksmote/spec.yaml" in keys
    for r in (1, 2):
        for c in ("client-a", "client-b"):
            for name in ("model.safetensors", "synthetic.parquet", "manifest.json"):
                assert round_key("s3run", "ksmote", r, c, name) in keys
            manifest = decode_manifest(store.get_bytes(round_key("s3run", "ksmote", r, c, MANIFEST_FILE)), "m",
                                       experiment="s3run", method="ksmote", client=c, round=r)
            assert manifest["n_base"] == 92 and manifest["n_synthetic"] > 0
            assert bool(manifest["metrics"]) == (r > 1)  # round 1 publishes before any evaluation
    rows = read_metrics(store, "s3run", "ksmote", "client-a")
    assert [(row["round"], row["eval"]) for row in rows] == [(1, "local"), (1, "global"), (2, "local"), (2, "global")]
    assert all(row["neighbours_used"] == 1 and row["neighbours_missing"] == 0 for row in rows)
    assert {e["event"] for e in workers[0].events()} >= {"worker_start", "round_end", "worker_done"}


@pytest.mark.slow
def test_a_corrupted_and_a_missing_neighbour_are_survived_and_counted(tmp_path, tiny_spec):
    """client-b's publications are planted broken (round 1: a payload changed after its
    manifest; round 2: NaN weights under a matching manifest); client-c never runs. client-a
    finishes both rounds alone, counting one rejection and one missing neighbour per round."""
    spec = tiny_spec("faults", runtime={"device": "cpu", "roundTimeoutSeconds": 2})
    store_dir = tmp_path / "store"
    store = DirectoryStore(store_dir)
    from p2p_job.model import initial_state
    from p2p_job.spec import load_experiment

    w0 = initial_state(load_experiment(spec), 6)
    planted = StoreExchange(store, experiment="faults", method="ksmote", client="client-b",
                            feature_names=[f"f{i}" for i in range(6)], layout=state_layout(w0),
                            max_payload_bytes=2**20, timeout=1)
    for r in (1, 2):
        X = np.ones((3, 6), np.float32)
        delta = {k: np.zeros_like(v) for k, v in w0.items()}
        planted.publish(Publication("client-b", r, delta, 80, 0.1, X, np.ones(3, np.int8), {}))
    store.put_bytes(round_key("faults", "ksmote", 1, "client-b", MODEL_FILE), b"tampered")
    nan = {k: np.full_like(v, np.nan) for k, v in w0.items()}
    m2 = round_key("faults", "ksmote", 2, "client-b", MANIFEST_FILE)
    manifest = json.loads(store.get_bytes(m2))
    data = encode_state(nan)
    manifest["payloads"][MODEL_FILE] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    store.put_bytes(round_key("faults", "ksmote", 2, "client-b", MODEL_FILE), data)
    store.put_bytes(m2, json.dumps(manifest).encode())

    port = services.free_port()
    worker = services.spawn_worker(spec, "client-a", store_dir.as_uri(), tmp_path / "logs",
                                   env={"P2PK_METRICS_PORT": str(port)}, args=["--linger", "120"])
    try:
        services.wait_for(lambda: any(e["event"] == "worker_done" for e in worker.events()), 120, "client-a to finish")
        samples = metric_samples(port)
    finally:
        worker.stop()
    rows = read_metrics(store, "faults", "ksmote", "client-a")
    assert [(r["round"], r["neighbours_used"], r["neighbours_missing"], r["payloads_rejected"]) for r in rows[::2]] == \
        [(1, 0, 1, 1), (2, 0, 1, 1)]
    assert all(math.isfinite(r["auc"]) for r in rows)
    assert samples[("p2pk_payloads_rejected_total", (("reason", "hash-mismatch"),))] == 1
    assert samples[("p2pk_payloads_rejected_total", (("reason", "non-finite"),))] == 1
    assert samples[("p2pk_neighbours_missing_total", ())] == 2
    assert samples[("p2pk_round", ())] == 2
    rejected = [e for e in worker.events() if e["event"] == "payload_rejected"]
    assert [(e["round"], e["neighbour"], e["reason"]) for e in rejected] == \
        [(1, "client-b", "hash-mismatch"), (2, "client-b", "non-finite")]
    missing = [e for e in worker.events() if e["event"] == "neighbour_missing"]
    assert [(e["round"], e["neighbour"]) for e in missing] == [(1, "client-c"), (2, "client-c")]
    assert [pq.read_table(store_dir / f"faults/ksmote/metrics/client-a/{r:05d}.parquet").num_rows for r in (1, 2)] == [2, 2]


def test_prepared_shards_give_the_same_rounds_and_a_finished_worker_does_nothing_more(tmp_path, tiny_spec):
    """In-process, rule ``local`` (no neighbours to wait for): ``--shards`` from ``p2pk data``'s
    format gives the rows the built shards give; running the worker again resumes after its
    last round and changes nothing."""
    from p2p_job.scenarios import build_shards
    from p2p_job.shards import fingerprint, write_shards
    from p2p_job.spec import load_experiment
    from p2p_job.store import shards_prefix
    from p2p_job.worker import WorkerConfig, run_worker

    spec = tiny_spec("alone", n_clients=2, methods=[{"rebalancing": "smote", "aggregation": "local"}])
    exp = load_experiment(spec)
    write_shards(build_shards(exp, spec.parent), tmp_path / "shards", fingerprint=fingerprint(exp))
    write_shards(build_shards(exp, spec.parent), DirectoryStore(tmp_path / "in-store"), shards_prefix("alone"), fingerprint=fingerprint(exp))
    results = {}
    for source, shards in (("built", None), ("prepared", str(tmp_path / "shards")), ("in-store", "store")):
        store = tmp_path / source
        cfg = WorkerConfig(spec=spec, client="client-b", store=store.as_uri(), metrics_port=0, shards=shards)
        assert run_worker(cfg) == 0
        results[source] = [{k: v for k, v in row.items() if k != "round_seconds"}
                           for row in read_metrics(DirectoryStore(store), "alone", "smote-local", "client-b")]
    assert results["built"] == results["prepared"] == results["in-store"]
    assert [(r["round"], r["aggregated"], r["neighbours_used"]) for r in results["built"][::2]] == [(1, False, 0), (2, False, 0)]
    store = DirectoryStore(tmp_path / "built")
    before = {k: store.get_bytes(k) for k in store.list("")}
    assert run_worker(WorkerConfig(spec=spec, client="client-b", store=(tmp_path / "built").as_uri(), metrics_port=0)) == 0
    assert {k: store.get_bytes(k) for k in store.list("")} == before
    # the same name with another spec: refused before anything is touched
    changed = tiny_spec("alone", n_clients=2, rounds=3, methods=[{"rebalancing": "smote", "aggregation": "local"}])
    with pytest.raises(ConfigError, match="spec.yaml holds a different experiment named 'alone'"):
        run_worker(WorkerConfig(spec=changed, client="client-b", store=(tmp_path / "built").as_uri(), metrics_port=0))
    assert {k: store.get_bytes(k) for k in store.list("")} == before


def test_a_round_redone_after_a_crash_keeps_one_metrics_part_per_round(tmp_path, tiny_spec, monkeypatch):
    """Metrics are one part per round, written before the round's checkpoint: a worker that
    dies between the two (round 2's part written, its checkpoint not) does round 2 again when
    restarted and writes the same key, so every round has exactly one part, and the rows equal
    those of a run that never stopped."""
    from p2p_job.checkpoints import Checkpoints
    from p2p_job.store import metrics_prefix
    from p2p_job.worker import WorkerConfig, run_worker

    spec = tiny_spec("parts", n_clients=2, rounds=3, methods=[{"rebalancing": "smote", "aggregation": "local"}])

    def run(folder):
        return run_worker(WorkerConfig(spec=spec, client="client-b", store=(tmp_path / folder).as_uri(), metrics_port=0))

    def rows(folder):
        return [{k: v for k, v in row.items() if k != "round_seconds"}
                for row in read_metrics(DirectoryStore(tmp_path / folder), "parts", "smote-local", "client-b")]

    assert run("whole") == 0
    save = Checkpoints.save

    def dies_at_round_2(self, round, state):
        if round == 2:
            raise RuntimeError("killed")
        save(self, round, state)

    monkeypatch.setattr(Checkpoints, "save", dies_at_round_2)
    with pytest.raises(RuntimeError, match="killed"):
        run("restarted")
    store, prefix = DirectoryStore(tmp_path / "restarted"), metrics_prefix("parts", "smote-local", "client-b")
    assert store.list(prefix) == [f"{prefix}00001.parquet", f"{prefix}00002.parquet"]  # round 2's part, no checkpoint
    monkeypatch.setattr(Checkpoints, "save", save)
    assert run("restarted") == 0
    assert store.list(prefix) == [f"{prefix}{r:05d}.parquet" for r in (1, 2, 3)]
    assert rows("restarted") == rows("whole")
    assert [row["round"] for row in rows("whole")] == [1, 1, 2, 2, 3, 3]


def test_a_corrupt_checkpoint_stops_the_worker_with_its_own_exit_code(tmp_path, tiny_spec, capsys):
    """A restart cannot mend a corrupt checkpoint: ``main`` exits 5 (one of the codes ``p2pk
    run`` does not retry) with one line naming the cause on stderr and in the termination log,
    instead of a traceback and exit 1, retried for nothing."""
    from p2p_job.worker import EXIT_CHECKPOINT, FATAL_EXIT_CODES, WorkerConfig, main

    spec = tiny_spec("corrupt", n_clients=2, rounds=1, methods=[{"rebalancing": "none", "aggregation": "local"}])
    store = DirectoryStore(tmp_path / "store")
    cfg = WorkerConfig(spec=spec, client="client-a", store=(tmp_path / "store").as_uri(), metrics_port=0)
    store.put_bytes(checkpoint_key("corrupt", "none-local", "client-a", "latest.json"), b"{")
    termination = tmp_path / "termination-log"
    assert main(cfg, env={"P2PK_TERMINATION_LOG": str(termination)}) == EXIT_CHECKPOINT
    assert EXIT_CHECKPOINT in FATAL_EXIT_CODES
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert [(e["event"], e["cause"], e["exit_code"]) for e in events if e["level"] == "error"] == [("worker_failed", "checkpoint", 5)]
    [line] = captured.err.splitlines()
    assert line.startswith("p2pk worker: fatal checkpoint: ") and "latest.json" in line
    assert termination.read_text() == line + "\n"


@pytest.mark.parametrize(("make", "code", "cause"), [
    (lambda tmp: {"spec": tmp / "absent.yaml"}, 2, "spec"),
    (lambda tmp: {"shards": tmp / "no-shards"}, 3, "data"),
    (lambda tmp: {"device": "cuda"}, 4, "device"),
])
def test_fatal_causes_have_distinct_exit_codes_and_one_line(tmp_path, tiny_spec, capsys, make, code, cause):
    """Spec, data and device errors each exit with their own code and one stderr line naming
    the cause; a store that cannot be reached is the only failure worth a restart (exit 1)."""
    import torch

    from p2p_job.worker import FATAL_EXIT_CODES, WorkerConfig, main

    if cause == "device" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    spec = tiny_spec("fatal", n_clients=2, rounds=1, methods=[{"rebalancing": "none", "aggregation": "local"}])
    fields = {"spec": spec, "client": "client-a", "store": (tmp_path / "store").as_uri(), "metrics_port": 0, **make(tmp_path)}
    assert main(WorkerConfig(**fields), env={}) == code
    assert code in FATAL_EXIT_CODES
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"p2pk worker: fatal {cause}: "), err


def test_an_unreachable_store_is_restartable(tmp_path, tiny_spec, capsys):
    from p2p_job.worker import EXIT_RESTARTABLE, WorkerConfig, main

    spec = tiny_spec("unreachable", n_clients=2, rounds=1, methods=[{"rebalancing": "none", "aggregation": "local"}],
                     runtime={"device": "cpu", "storeRetrySeconds": 1})
    cfg = WorkerConfig(spec=spec, client="client-a", store="s3://bucket/prefix", s3_endpoint="127.0.0.1:9",
                       access_key="a", secret_key="b", metrics_port=0)
    assert main(cfg, env={}) == EXIT_RESTARTABLE
    assert capsys.readouterr().err == ""
