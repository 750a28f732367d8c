"""One peer's round (Algorithm 2 from one peer) over a MemoryExchange, on small hand-made shards."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from p2p_job.aggregation import data_variance, share_sample
from p2p_job.exchange import Gathered, MemoryExchange, Publication
from p2p_job.model import model_state
from p2p_job.peer import Peer, PeerState, neighbourhoods
from p2p_job.rebalancing import rebalance
from p2p_job.preprocessing import Preprocessor
from p2p_job.scenarios import ClientShard, Split
from p2p_job.seeding import rng
from p2p_job.spec import PreprocessingSpec, parse_experiment

CLIENTS = ("a", "b", "c")
D = 4


def _experiment(seed=0, methods=({"rebalancing": "ksmote"},), **spec):
    doc = {
        "apiVersion": "p2pk.io/v1alpha1",
        "kind": "P2PExperiment",
        "metadata": {"name": "peer-test"},
        "spec": {
            "seed": seed,
            "rounds": 3,
            "scenario": {  # the counts of the hand-made shards below (every peer screens its neighbours with them)
                "kind": "imbalanced-iid",
                "clients": [{"name": c, "train": {"benign": 60, "malicious": 8}, "validation": {"benign": 30, "malicious": 6}}
                            for c in CLIENTS],
            },
            "methods": list(methods),
            "rebalancing": {"k": 3, "neighbours": 4, "shareFraction": 0.5},
            "training": {"hiddenLayers": [8, 4], "localEpochs": 1, "batchSize": 16, "learningRate": 1e-3},
            **spec,
        },
    }
    return parse_experiment(doc)


def _shard(name: str, index: int) -> ClientShard:
    """An imbalanced client (60 benign, 8 malicious) in its own raw units: each client's
    features are offset and scaled differently, so its scaler differs from the others'."""
    g = np.random.default_rng(100 + index)
    offset, scale = 10.0 * (index + 1), 2.0 + index

    def raw(n_benign: int, n_malicious: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.array([0, 1], np.int8), [n_benign, n_malicious])
        X = g.normal(0.0, 1.0, (len(y), D)) + 2.0 * y[:, None]
        return (offset + scale * X).astype(np.float32), y

    X_train, y_train = raw(60, 8)
    scaler = Preprocessor.fit(PreprocessingSpec(), [f"f{j}" for j in range(D)], X_train)
    X_val, y_val = raw(30, 6)
    X_test, y_test = raw(30, 6)
    return ClientShard(
        name=name,
        train=Split(scaler.transform(X_train), y_train, X_train),
        validation=Split(scaler.transform(X_val), y_val, X_val),
        global_test=Split(scaler.transform(X_test), y_test, X_test),
        preprocessor=scaler,
    )


SHARDS = {name: _shard(name, i) for i, name in enumerate(CLIENTS)}


def _peers(exp, observer=None) -> dict[str, Peer]:
    method = exp.spec.methods[0]
    hood = neighbourhoods(exp, method, list(CLIENTS))
    return {c: Peer(exp, method, SHARDS[c], hood[c], "cpu", observer) for c in CLIENTS}


def _state(peer: Peer) -> dict[str, np.ndarray]:
    return model_state(peer.model)


def _run_rounds(peers: dict[str, Peer], rounds, exchange=None):
    exchange = exchange or MemoryExchange()
    records = []
    for r in rounds:
        for peer in peers.values():
            peer.train_and_publish(r, exchange)
        records += [peer.merge_and_evaluate(r, exchange) for peer in peers.values()]
    return records


class Recording(MemoryExchange):
    """A MemoryExchange that keeps every publication for inspection."""

    def __init__(self):
        super().__init__()
        self.published: dict[tuple[int, str], Publication] = {}

    def publish(self, pub):
        self.published[(pub.round, pub.client)] = pub
        super().publish(pub)


def test_a_missing_neighbour_is_left_out_counted_and_the_weights_renormalised():
    """Eq. 5–6 by hand on real models: a averages over itself and b only (c never published)."""
    exp = _experiment(aggregation={"lambda": 0.8})
    peers = _peers(exp)
    exchange = Recording()
    peers["a"].train_and_publish(1, exchange)
    peers["b"].train_and_publish(1, exchange)
    record = peers["a"].merge_and_evaluate(1, exchange)

    assert (record.neighbours_used, record.neighbours_missing, record.payloads_rejected) == (1, 1, 0)
    assert record.aggregated
    pa, pb = exchange.published[(1, "a")], exchange.published[(1, "b")]
    var_a, var_b = data_variance(SHARDS["a"].train.X), data_variance(SHARDS["b"].train.X)
    n_a, n_b = len(SHARDS["a"].train.y), len(SHARDS["b"].train.y)
    p_a = 0.8 * var_a / (var_a + var_b) + 0.2 * n_a / (n_a + n_b)
    p_b = 0.8 * var_b / (var_a + var_b) + 0.2 * n_b / (n_a + n_b)
    assert p_a + p_b == pytest.approx(1.0)
    w0 = peers["a"].w0
    merged = _state(peers["a"])
    for name in w0:
        by_hand = p_a * (w0[name].astype(np.float64) + pa.delta[name]) + p_b * (w0[name].astype(np.float64) + pb.delta[name])
        np.testing.assert_allclose(merged[name], by_hand, rtol=1e-6, atol=1e-7, err_msg=name)


def test_the_publication_carries_delta_sizes_variance_and_raw_shared_points():
    exp = _experiment()
    peer = _peers(exp)["b"]
    exchange = Recording()
    peer.train_and_publish(1, exchange)
    pub = exchange.published[(1, "b")]
    shard = SHARDS["b"]

    trained = _state(peer)
    assert all(pub.delta[k].dtype == np.float32 and np.array_equal(pub.delta[k], trained[k] - peer.w0[k]) for k in trained)
    assert (pub.n_base, pub.variance) == (68, data_variance(shard.train.X))
    assert pub.metrics == {}
    # The α-fraction of this round's D_syn (same random streams as the peer), in raw units.
    rebalanced = rebalance("ksmote", shard.train.X, shard.train.y, exp.spec.rebalancing, rng(0, "ksmote", "b", 1, "rebalance"))
    expected_X, expected_y = share_sample(rebalanced.synthetic_X, rebalanced.synthetic_y, 0.5, rng(0, "ksmote", "b", 1, "share"))
    assert len(pub.synthetic_y) == round(0.5 * (60 - 8)) and (pub.synthetic_y == 1).all()
    np.testing.assert_allclose(pub.synthetic_X, shard.preprocessor.inverse_transform(expected_X), rtol=1e-5)
    assert pub.synthetic_X.min() > 5.0  # raw units of client b (offset 20), not the scaled [0, 1]


def test_received_points_are_encoded_with_the_receivers_own_preprocessor():
    exp = _experiment(rebalancing={"k": 3, "neighbours": 4, "shareFraction": 0.5, "received": "unbounded"})
    peers = _peers(exp)
    exchange = Recording()
    records = _run_rounds(peers, [1], exchange)
    a = peers["a"]
    from_b, from_c = exchange.published[(1, "b")], exchange.published[(1, "c")]
    expected = SHARDS["a"].preprocessor.transform(np.concatenate([from_b.synthetic_X, from_c.synthetic_X]))
    np.testing.assert_allclose(a.received_X, expected, rtol=1e-5)
    assert records[0].n_received == len(a.received_y) == 2 * 26
    # Round 2 trains on D_base ∪ D_syn ∪ D_o_syn, the literal Algorithm 2: 68 + 52 + 52.
    (record,) = [r for r in _run_rounds(peers, [2], exchange) if r.client == "a"]
    assert record.n_train == 68 + 52 + 52 and record.n_synthetic == 52
    _run_rounds(peers, [3], exchange)
    assert len(a.received_y) == 3 * 52  # unbounded: D_o_syn only grows


def test_balanced_received_points_count_towards_the_target_and_are_bounded():
    """Default policy: a's deficit is 60 − 8 = 52 malicious points, so D_o_syn keeps the newest
    0.5·52 = 26 (those from c, the last neighbour), and a trains on 68 base rows, 52 − 26 of its
    own synthetic points and the 26 received: the minority is 60 rows, as without neighbours."""
    exp = _experiment()
    peers = _peers(exp)
    exchange = Recording()
    records = _run_rounds(peers, [1], exchange)
    a = peers["a"]
    assert records[0].n_received == 52 and len(a.received_y) == 26
    newest = SHARDS["a"].preprocessor.transform(exchange.published[(1, "c")].synthetic_X)
    np.testing.assert_allclose(a.received_X, newest, rtol=1e-5)
    for r in (2, 3):
        (record,) = [rec for rec in _run_rounds(peers, [r], exchange) if rec.client == "a"]
        assert record.n_train == 68 + 26 + 26 and record.n_synthetic == 52
        assert len(a.received_y) == 26
        np.testing.assert_allclose(a.received_X, SHARDS["a"].preprocessor.transform(exchange.published[(r, "c")].synthetic_X), rtol=1e-5)
    # Still shares an α-fraction of its whole D_syn.
    assert len(exchange.published[(3, "a")].synthetic_y) == 26


def test_balanced_training_set_uses_a_random_subset_of_own_synthetic_points():
    """The rows trained on in round 2 are exactly base ∪ (own D_syn minus |D_o_syn| rows) ∪ D_o_syn."""
    exp = _experiment()
    peers = _peers(exp)
    exchange = Recording()
    _run_rounds(peers, [1], exchange)
    a = peers["a"]
    received = a.received_X.copy()
    task = a.training_task(2)  # the round's training set, as the training engine gets it
    seen = {"X": task.X, "y": task.y}
    shard = SHARDS["a"]
    rebalanced = rebalance("ksmote", shard.train.X, shard.train.y, exp.spec.rebalancing, rng(0, "ksmote", "a", 2, "rebalance"))
    X = seen["X"]
    np.testing.assert_array_equal(X[:68], shard.train.X)
    np.testing.assert_array_equal(X[-26:], received)
    own = X[68:-26]
    assert len(own) == 26 and (seen["y"][68:] == 1).all()
    # Every own point is a distinct row of this round's D_syn.
    matches = [np.flatnonzero((rebalanced.synthetic_X == row).all(axis=1)) for row in own]
    assert all(len(m) == 1 for m in matches) and len({int(m[0]) for m in matches}) == 26


def test_max_received_keeps_the_newest_points():
    exp = _experiment(rebalancing={"k": 3, "neighbours": 4, "shareFraction": 0.5, "received": "unbounded", "maxReceived": 30})
    peers = _peers(exp)
    exchange = Recording()
    _run_rounds(peers, [1], exchange)
    newest = SHARDS["a"].preprocessor.transform(exchange.published[(1, "c")].synthetic_X)
    assert len(peers["a"].received_X) == 30
    np.testing.assert_allclose(peers["a"].received_X[-26:], newest, rtol=1e-5)


def test_methods_that_do_not_share_publish_no_points():
    peers = _peers(_experiment(methods=[{"rebalancing": "smote"}]))
    exchange = Recording()
    records = _run_rounds(peers, [1], exchange)
    assert all(len(pub.synthetic_y) == 0 for pub in exchange.published.values())
    assert all(r.n_received == 0 and r.n_synthetic == 52 for r in records)


def _round_one_with_a_bad_c(synthetic_X: np.ndarray, **spec):
    """Round 1 of peers a and b, plus a publication from c: b's, with ``synthetic_X`` as its
    shared points. Returns the peers, the exchange and b's publication."""
    peers = _peers(_experiment(**spec))
    exchange = Recording()
    for c in ("a", "b"):
        peers[c].train_and_publish(1, exchange)
    good = exchange.published[(1, "b")]
    bad = dataclasses.replace(good, client="c", synthetic_X=synthetic_X, synthetic_y=np.ones(len(synthetic_X), np.int8))
    exchange.publish(bad)
    return peers, exchange, good


def test_incompatible_points_are_rejected_and_counted_and_the_model_judged_on_its_own():
    peers, exchange, good = _round_one_with_a_bad_c(np.zeros((2, D + 1), np.float32))
    record = peers["a"].merge_and_evaluate(1, exchange)
    assert (record.neighbours_used, record.neighbours_missing, record.payloads_rejected) == (2, 0, 1)
    assert record.n_received == len(good.synthetic_y)  # b's points; none of c's


@pytest.mark.parametrize("refuse", [True, False])
def test_an_incompatible_model_is_rejected_and_counted_and_its_points_refused_as_a_hostile_senders(refuse):
    """A model of another network is refused (model-mismatch); with refuseHostilePoints its
    points go too, counted per point as hostile-sender; off, they are judged on their own."""
    peers, exchange, good = _round_one_with_a_bad_c(np.zeros((0, D), np.float32), aggregation={"refuseHostilePoints": refuse})
    bad = exchange.published[(1, "c")]
    exchange.publish(dataclasses.replace(bad, delta={**good.delta, "extra": np.zeros(1, np.float32)},
                                         synthetic_X=good.synthetic_X, synthetic_y=good.synthetic_y))
    record = peers["a"].merge_and_evaluate(1, exchange)
    n = len(good.synthetic_y)
    assert (record.neighbours_used, record.payloads_rejected, record.points_rejected) == (1, 1, n * refuse)
    assert record.n_received == n * (1 + (not refuse))  # b's points, and c's when judged on their own


class NoGather(MemoryExchange):
    def gather(self, round, neighbours):
        raise AssertionError("a peer that is not selected must not gather")


@pytest.mark.parametrize("aggregation", [{"rule": "local"}, {"rule": "p2p", "updateProbability": 1e-9}])
def test_a_peer_not_selected_keeps_its_trained_model(aggregation):
    peers = _peers(_experiment(aggregation=aggregation))
    exchange = NoGather()
    peers["a"].train_and_publish(1, exchange)
    trained = _state(peers["a"])
    record = peers["a"].merge_and_evaluate(1, exchange)
    assert not record.aggregated and record.neighbours_used == 0 and record.n_received == 0
    assert all(np.array_equal(trained[k], v) for k, v in _state(peers["a"]).items())


def test_fedavg_averages_over_every_client_by_size():
    exp = _experiment(methods=[{"rebalancing": "none", "aggregation": "fedavg"}], topology={"kind": "ring"})
    assert neighbourhoods(exp, exp.spec.methods[0], list(CLIENTS)) == {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}
    peers = _peers(exp)
    exchange = Recording()
    _run_rounds(peers, [1], exchange)
    pubs = [exchange.published[(1, c)] for c in CLIENTS]  # equal sizes: a plain mean
    w0 = peers["a"].w0
    for name in w0:
        mean = sum(w0[name].astype(np.float64) + p.delta[name] for p in pubs) / 3
        np.testing.assert_allclose(_state(peers["b"])[name], mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(_state(peers["a"])[name], _state(peers["c"])[name])


def test_a_methods_robust_rule_replaces_equation_5():
    """``methods[].robustRule: median``: each peer's model is the coordinate-wise median of its
    own and its neighbours' models (parameters and BatchNorm statistics alike)."""
    exp = _experiment(methods=[{"rebalancing": "none", "robustRule": "median"}])
    assert exp.spec.methods[0].robust_rule == "median"
    peers = _peers(exp)
    assert peers["a"].method_name == "none-median" and peers["a"].robust_rule == "median"
    exchange = Recording()
    _run_rounds(peers, [1], exchange)
    w0 = peers["a"].w0
    for name in w0:
        stacked = np.stack([w0[name] + exchange.published[(1, c)].delta[name] for c in CLIENTS]).astype(np.float64)
        np.testing.assert_allclose(_state(peers["b"])[name], np.median(stacked, axis=0), rtol=1e-6, atol=1e-7)


def test_published_metrics_are_the_last_evaluation():
    peers = _peers(_experiment())
    exchange = Recording()
    first = _run_rounds(peers, [1], exchange)
    _run_rounds(peers, [2], exchange)
    record_a = first[0]
    metrics = exchange.published[(2, "a")].metrics
    assert metrics["local_fnr"] == record_a.metrics["local"]["fnr"]
    assert metrics["global_auc"] == record_a.metrics["global"]["auc"]
    assert len(metrics) == 2 * 8


def test_phase_two_needs_phase_one():
    peer = _peers(_experiment())["a"]
    with pytest.raises(RuntimeError, match="before train_and_publish"):
        peer.merge_and_evaluate(1, MemoryExchange())


def _rows(records):
    return [{k: v for k, v in row.items() if k != "round_seconds"} for rec in records for row in rec.rows()]


def test_same_seed_gives_identical_rounds_and_another_seed_does_not():
    first = _run_rounds(_peers(_experiment(seed=5)), [1, 2])
    second = _run_rounds(_peers(_experiment(seed=5)), [1, 2])
    other = _run_rounds(_peers(_experiment(seed=6)), [1, 2])
    assert _rows(first) == _rows(second)
    assert _rows(first) != _rows(other)


def test_a_restored_peer_continues_exactly_as_if_never_stopped():
    exp = _experiment()
    running = _peers(exp)
    exchange = MemoryExchange()
    _run_rounds(running, [1, 2], exchange)
    saved = {c: p.state() for c, p in running.items()}
    assert saved["a"].scalars["round"] == 2 and len(saved["a"].arrays["received.y"]) == 26  # balanced: 0.5 of the deficit 52
    assert any(k.startswith("optimizer.") for k in saved["a"].arrays)

    restarted = _peers(exp)
    for c, peer in restarted.items():
        peer.restore(PeerState(arrays={k: v.copy() for k, v in saved[c].arrays.items()}, scalars=saved[c].scalars))
    assert _rows(_run_rounds(running, [3], MemoryExchange())) == _rows(_run_rounds(restarted, [3], MemoryExchange()))
    with pytest.raises(ValueError, match="checkpoint is for client/method"):
        restarted["b"].restore(saved["a"])


class Events:
    def __init__(self):
        self.seen = []

    def trained(self, event):
        self.seen.append(("trained", event))

    def merged(self, event):
        self.seen.append(("merged", event))

    def evaluated(self, record):
        self.seen.append(("evaluated", record))


def test_the_observer_sees_each_phase_with_its_counts():
    events = Events()
    exp = _experiment()
    method = exp.spec.methods[0]
    peer = Peer(exp, method, SHARDS["a"], ["b", "c"], torch.device("cpu"), events)
    other = Peer(exp, method, SHARDS["b"], ["a", "c"], "cpu")
    exchange = MemoryExchange()
    peer.train_and_publish(1, exchange)
    other.train_and_publish(1, exchange)
    record = peer.merge_and_evaluate(1, exchange)
    kinds = [kind for kind, _ in events.seen]
    assert kinds == ["trained", "merged", "evaluated"]
    trained, merged = events.seen[0][1], events.seen[1][1]
    assert (trained.n_generated, trained.n_shared, trained.n_train) == (52, 26, 120)
    assert (merged.used, merged.missing, merged.n_received, merged.selected) == (["b"], ["c"], 26, True)
    assert events.seen[2][1] is record and record.round_seconds >= trained.seconds


def test_gathered_rejections_from_the_exchange_are_counted():
    class Rejecting(MemoryExchange):
        def gather(self, round, neighbours):
            found = super().gather(round, neighbours)
            return Gathered(found.publications, [], [(n, "hash: mismatch") for n in found.missing])

    peers = _peers(_experiment())
    exchange = Rejecting()
    peers["a"].train_and_publish(1, exchange)
    record = peers["a"].merge_and_evaluate(1, exchange)
    assert (record.neighbours_used, record.neighbours_missing, record.payloads_rejected) == (0, 0, 2)


def test_points_that_overflow_the_receivers_scaling_are_rejected():
    """Finite in raw units (so the exchange passes them), infinite once this peer scales them:
    taking them would make every later loss NaN."""
    tolerant = {"k": 3, "neighbours": 4, "shareFraction": 0.5, "pointTolerance": 1e6}  # b's points are far in the narrow scaling
    peers, exchange, good = _round_one_with_a_bad_c(np.full((2, D), np.finfo(np.float32).max, np.float32), rebalancing=tolerant)
    # A receiver whose features vary little (range 1e-3).
    narrow = Preprocessor.fit(PreprocessingSpec(), [f"f{j}" for j in range(D)], np.array([[0.0] * D, [1e-3] * D], np.float32))
    peers["a"].shard = dataclasses.replace(SHARDS["a"], preprocessor=narrow)
    record = peers["a"].merge_and_evaluate(1, exchange)
    assert (record.neighbours_used, record.payloads_rejected, record.points_rejected) == (2, 0, 2)  # c's model is sound
    assert np.isfinite(peers["a"].received_X).all() and len(peers["a"].received_y) == len(good.synthetic_y)


def test_a_combination_that_would_be_degenerate_leaves_out_the_farthest_neighbour_only():
    """The safety net behind the screening: when the combined model would have a BatchNorm
    variance <= 0, the neighbour farthest from this peer's model is left out (and named), the
    honest one stays in, and the model that is loaded is sound."""
    peers = _peers(_experiment())
    exchange = Recording()
    for c in CLIENTS:
        peers[c].train_and_publish(1, exchange)
    own, honest = exchange.published[(1, "a")], exchange.published[(1, "b")]
    var = next(n for n in own.delta if n.endswith("running_var"))
    hostile = dataclasses.replace(exchange.published[(1, "c")],
                                  delta={n: (v - 1e3 if n == var else v) for n, v in exchange.published[(1, "c")].delta.items()})
    peer = peers["a"]
    dropped, left_out, outliers = peer._average(own, [honest, hostile])
    assert [(who, why.split(":")[0]) for who, why in dropped] == [("c", "degenerate")] and left_out == outliers == []
    assert (_state(peer)[var] > 0).all()
    w0 = peer.w0
    expected_var = np.stack([w0[var] + own.delta[var], w0[var] + honest.delta[var]])
    assert _state(peer)[var].min() >= expected_var.min() - 1e-6 and _state(peer)[var].max() <= expected_var.max() + 1e-6
