"""Attacks as an experiment feature (``spec.adversaries``, p2p_job.adversaries): each transform
checked by hand, the spec's rules, real peers over the directory store facing each attack, and an
end-to-end simulation whose results mark the adversary and whose summary leaves it out."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from p2p_job.adversaries import ATTACKS, DEFAULTS, Adversary, adversary_for
from p2p_job.cli import main
from p2p_job.exchange import MemoryExchange, Publication
from p2p_job.model import initial_state
from p2p_job.payloads import state_layout
from p2p_job.peer import Peer, neighbourhoods
from p2p_job.results import read_parquet
from p2p_job.preprocessing import Preprocessor
from p2p_job.scenarios import ClientShard, Split
from p2p_job.spec import PreprocessingSpec
from p2p_job.spec import AttackKind, InvalidSpec, parse_experiment
from p2p_job.store import DirectoryStore
from p2p_job.store_exchange import StoreExchange
from p2p_job.summary import final_round_summary

CLIENTS = ("a", "b", "c", "d")
D = 4


def _doc(adversaries=(), rounds=2, **spec) -> dict:
    return {
        "apiVersion": "p2pk.io/v1alpha1",
        "kind": "P2PExperiment",
        "metadata": {"name": "attack-test"},
        "spec": {
            "seed": 5,
            "rounds": rounds,
            "scenario": {"kind": "imbalanced-iid", "clients": [
                {"name": c, "train": {"benign": 60, "malicious": 8}, "validation": {"benign": 30, "malicious": 6}} for c in CLIENTS]},
            "methods": [{"rebalancing": "ksmote"}],
            "rebalancing": {"k": 3, "neighbours": 4, "shareFraction": 0.5},
            "training": {"hiddenLayers": [8, 4], "localEpochs": 1, "batchSize": 16, "learningRate": 1e-3},
            "adversaries": list(adversaries),
            **spec,
        },
    }


def _shard(name: str, index: int) -> ClientShard:
    """60 benign and 8 malicious rows in the client's own raw units (offset and scale per client)."""
    g = np.random.default_rng(200 + index)

    def raw(nb: int, nm: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.array([0, 1], np.int8), [nb, nm])
        return (10.0 * (index + 1) + (2.0 + index) * (g.normal(0, 1, (len(y), D)) + 2.0 * y[:, None])).astype(np.float32), y

    X, y = raw(60, 8)
    pre = Preprocessor.fit(PreprocessingSpec(), [f"f{j}" for j in range(D)], X)
    Xv, yv = raw(30, 6)
    Xt, yt = raw(30, 6)
    return ClientShard(name, Split(pre.transform(X), y, X), Split(pre.transform(Xv), yv, Xv), Split(pre.transform(Xt), yt, Xt), pre)


SHARDS = {c: _shard(c, i) for i, c in enumerate(CLIENTS)}


def _adversary(attack: str, **fields) -> tuple[Adversary, Publication]:
    exp = parse_experiment(_doc([{"client": "d", "attack": attack, **fields}]))
    w0 = initial_state(exp, D)
    adversary = adversary_for(exp, "ksmote", SHARDS["d"], w0)
    g = np.random.default_rng(0)
    delta = {k: g.normal(0, 0.1, v.shape).astype(np.float32) for k, v in w0.items()}
    X = SHARDS["d"].train.raw[-3:]
    pub = Publication("d", 1, delta, 68, 0.25, X, np.ones(3, np.int8), {"local_fnr": 0.5})
    return adversary, pub


def test_every_attack_kind_has_a_transform_and_defaults():
    assert set(ATTACKS) == set(DEFAULTS) == set(AttackKind.__args__)


def test_scaled_delta_and_sign_flip_multiply_the_delta():
    adv, pub = _adversary("scaled-delta", factor=3)
    out = adv(pub)
    for k, v in pub.delta.items():
        np.testing.assert_allclose(out.delta[k], 3 * v, rtol=1e-6)
        assert out.delta[k].dtype == np.float32
    assert (out.n_base, out.variance, out.synthetic_X is pub.synthetic_X) == (68, 0.25, True)
    adv, pub = _adversary("sign-flip")
    out = adv(pub)
    for k, v in pub.delta.items():
        np.testing.assert_array_equal(out.delta[k], -v)
    adv, pub = _adversary("scaled-delta")
    assert adv.factor == 10.0


def test_model_replacement_lowers_the_output_bias_boosted_by_the_client_count():
    adv, pub = _adversary("model-replacement", factor=2)
    out = adv(pub)
    bias = list(pub.delta)[-1]
    assert pub.delta[bias].shape == (1,)
    np.testing.assert_allclose(out.delta[bias], pub.delta[bias] - 4 * 2, rtol=1e-6)  # γ = 4 clients
    for k in list(pub.delta)[:-1]:
        np.testing.assert_array_equal(out.delta[k], pub.delta[k])


def test_gaussian_noise_replaces_the_delta_with_seeded_noise():
    adv, pub = _adversary("gaussian-noise", factor=2)
    out, again = adv(pub), adv(pub)
    stacked = np.concatenate([v.ravel() for v in out.delta.values()])
    assert abs(stacked.std() - 2.0) < 0.2 and abs(stacked.mean()) < 0.2
    for k in pub.delta:
        np.testing.assert_array_equal(out.delta[k], again.delta[k])  # seeded by (seed, method, client, round)
        assert not np.allclose(out.delta[k], pub.delta[k])
    later = adv(Publication(**{**pub.__dict__, "round": 2}))
    assert not np.array_equal(later.delta[list(pub.delta)[0]], out.delta[list(pub.delta)[0]])


def test_inflated_n_base_multiplies_the_size_only():
    adv, pub = _adversary("inflated-n-base", factor=1e6)
    out = adv(pub)
    assert out.n_base == 68_000_000 and out.variance == 0.25 and out.delta is pub.delta


def test_a_little_is_enough_shifts_every_entry_by_z_standard_deviations_of_the_known_models():
    adv, pub = _adversary("a-little-is-enough", factor=2)
    assert adv(pub) is pub  # no neighbour's model gathered yet: honest
    first = list(pub.delta)[0]
    neighbours = [{k: np.full(v.shape, value, np.float32) for k, v in pub.delta.items()} for value in (0.0, 0.3)]
    own = {k: np.full(v.shape, 0.6, np.float32) for k, v in pub.delta.items()}
    adv.observe(neighbours)
    out = adv(Publication(**{**pub.__dict__, "delta": own}))
    # models 0, 0.3, 0.6: μ = 0.3, σ = sqrt((0.09 + 0 + 0.09) / 3) = sqrt(0.06); μ − 2σ = −0.18990
    for k in pub.delta:
        np.testing.assert_allclose(out.delta[k], np.full(pub.delta[k].shape, 0.3 - 2 * np.sqrt(0.06)), rtol=1e-5)
        assert out.delta[k].dtype == np.float32
    assert (out.n_base, out.synthetic_X is pub.synthetic_X) == (68, True)
    # entry by entry: where the models agree, nothing moves
    neighbours[0][first][0] = neighbours[1][first][0] = own[first][0] = 0.5
    adv.observe(neighbours)
    assert adv(Publication(**{**pub.__dict__, "delta": own})).delta[first][0] == pytest.approx(0.5)
    # what it gathered travels in its checkpoint arrays, and only an adaptive attack keeps any
    again, _ = _adversary("a-little-is-enough", factor=2)
    again.restore({"model.x": np.zeros(1), **adv.state()})
    np.testing.assert_array_equal(again(Publication(**{**pub.__dict__, "delta": own})).delta[first],
                                  adv(Publication(**{**pub.__dict__, "delta": own})).delta[first])
    flipper, _ = _adversary("sign-flip")
    flipper.observe(neighbours)
    assert flipper.state() == {}


def test_label_flip_shares_own_rows_with_flipped_labels():
    adv, pub = _adversary("label-flip", points=50)
    out = adv(pub)
    shard = SHARDS["d"]
    raw_train = shard.train.raw
    assert out.synthetic_X.shape == (50, D) and out.synthetic_y.dtype == np.int8
    for x, y in zip(out.synthetic_X, out.synthetic_y):
        (row,) = np.flatnonzero(np.all(np.isclose(raw_train, x, rtol=1e-5), axis=1))[:1]
        assert y == 1 - shard.train.y[row]


def test_majority_flip_shares_own_majority_rows_labelled_as_the_minority():
    adv, pub = _adversary("majority-flip", points=40)
    out = adv(pub)
    shard = SHARDS["d"]
    assert out.synthetic_X.shape == (40, D) and set(out.synthetic_y) == {1}  # malicious is d's minority (8 of 68)
    for x in out.synthetic_X:  # every one a benign training row: it passes the label check
        rows = np.flatnonzero(np.all(np.isclose(shard.train.raw, x, rtol=1e-5), axis=1))
        assert rows.size and (shard.train.y[rows] == 0).all()


def test_point_attacks_share_as_many_points_as_the_honest_publication_by_default():
    for attack in ("label-flip", "majority-flip", "out-of-range"):
        adv, pub = _adversary(attack)
        assert len(adv(pub).synthetic_y) == len(pub.synthetic_y) == 3


def test_out_of_range_points_lie_factor_ranges_away_labelled_with_the_minority():
    adv, pub = _adversary("out-of-range", factor=100, points=20)
    out = adv(pub)
    scaled = SHARDS["d"].preprocessor.transform(out.synthetic_X)
    assert out.synthetic_X.shape == (20, D)
    assert scaled.min() >= 50 - 1e-3 and scaled.max() <= 100 + 1e-3
    assert set(out.synthetic_y) == {1}  # malicious is d's minority (8 of 68)


def test_flooding_shares_many_correctly_labelled_minority_rows():
    adv, pub = _adversary("flooding", points=1000)
    out = adv(pub)
    assert out.synthetic_X.shape == (1000, D) and set(out.synthetic_y) == {1}
    malicious = SHARDS["d"].train.raw[SHARDS["d"].train.y == 1]
    assert all(np.isclose(malicious, x, rtol=1e-5).all(axis=1).any() for x in out.synthetic_X[:50])


def test_an_adversary_is_honest_before_its_first_round():
    adv, pub = _adversary("sign-flip", fromRound=2)
    assert adv(pub) is pub
    assert adv(Publication(**{**pub.__dict__, "round": 2})).delta[list(pub.delta)[0]][0, 0] == -pub.delta[list(pub.delta)[0]][0, 0]


@pytest.mark.parametrize(
    ("adversaries", "path", "words"),
    [
        ([{"client": "z", "attack": "sign-flip"}], "spec.adversaries[0].client", "no client 'z'"),
        ([{"client": "a", "attack": "sign-flip"}, {"client": "a", "attack": "flooding"}], "spec.adversaries[1].client", "named twice"),
        ([{"client": "a", "attack": "sign-flip", "fromRound": 3}], "spec.adversaries[0].fromRound", "after the last round"),
        ([{"client": "a", "attack": "sign-flip", "points": 5}], "spec.adversaries[0].points", "applies to label-flip"),
        ([{"client": "a", "attack": "poison"}], "spec.adversaries[0].attack", "Input should be"),
        ([{"client": "a", "attack": "scaled-delta", "factor": float("inf")}], "spec.adversaries[0].factor", "finite"),
        ([{"client": c, "attack": "sign-flip"} for c in CLIENTS], "spec.adversaries", "at least one honest client"),
    ],
)
def test_the_spec_refuses_adversaries_that_cannot_be(adversaries, path, words):
    with pytest.raises(InvalidSpec) as info:
        parse_experiment(_doc(adversaries))
    assert any(p == path and words in m for p, m in info.value.errors), info.value.errors


# --------------------------------------------------------------------------- real peers


def _round_over_the_store(tmp_path, exp, timeout: float = 5) -> list:
    """One round of four real peers exchanging through a directory store."""
    method = exp.spec.methods[0]
    hood = neighbourhoods(exp, method, list(CLIENTS))
    peers = {c: Peer(exp, method, SHARDS[c], hood[c], "cpu") for c in CLIENTS}
    store = DirectoryStore(tmp_path / "store")
    layout = state_layout(peers["a"].w0)
    exchanges = {c: StoreExchange(store, experiment=exp.name, method="ksmote", client=c, feature_names=[f"f{i}" for i in range(D)],
                                  layout=layout, max_payload_bytes=64 * 2**20, timeout=timeout) for c in CLIENTS}
    for c, peer in peers.items():
        peer.train_and_publish(1, exchanges[c])
    return [peers[c].merge_and_evaluate(1, exchanges[c]) for c in CLIENTS]


@pytest.mark.parametrize("rule", ["median", "filtered-clipped-mean"])
@pytest.mark.parametrize("attack", sorted(DEFAULTS))
def test_honest_peers_over_the_store_survive_every_attack(tmp_path, attack, rule):
    """One attacker of four (full mesh), through the directory store with a robust rule a
    hostile neighbourhood calls for: no honest peer fails, every model stays finite, and the
    attack is either refused (a rejection counted) or bounded (honest rates stay rates)."""
    extra = {"points": 300} if attack == "flooding" else {}  # label-flip, out-of-range: as many as honest
    exp = parse_experiment(_doc([{"client": "d", "attack": attack, **extra}], rounds=1, aggregation={"robustRule": rule}))
    records = _round_over_the_store(tmp_path, exp, timeout=1 if attack == "silent" else 5)
    honest = [r for r in records if not r.adversarial]
    assert [r.client for r in records if r.adversarial] == ["d"] and len(honest) == 3
    for record in honest:
        for values in record.metrics.values():
            assert 0.0 <= values["fnr"] <= 1.0 and 0.0 <= values["fpr"] <= 1.0
    rejected = sum(r.payloads_rejected for r in honest)
    if attack in ("inflated-n-base", "label-flip", "flooding"):  # its model, its points, its points
        assert rejected == 3, (attack, [(r.client, r.payloads_rejected) for r in honest])
    if attack == "out-of-range":  # every point dropped one by one; its model (honest) is used
        assert rejected == 0 and all(r.points_rejected > 0 for r in honest)
    if rule == "filtered-clipped-mean" and attack in ("sign-flip", "model-replacement"):  # sound models, singled out
        assert rejected == 3, (attack, [(r.client, r.payloads_rejected) for r in honest])
    if attack == "silent":  # nothing to reject: d is missing for each honest peer
        assert rejected == 0 and [r.neighbours_missing for r in honest] == [1, 1, 1]


@pytest.mark.parametrize("refuse", [True, False])
def test_the_validation_rule_leaves_out_a_replaced_model_and_refuses_its_points(tmp_path, refuse):
    """Model replacement passes every screening check (a finite, sound model); the validation
    rule sees each honest peer's own validation loss fall without it and leaves its model out
    (reason robust-rule, counted) as an outlier, and its shared points go with it
    (``hostile-sender``, counted per point); with refuseHostilePoints off they are taken in."""
    exp = parse_experiment(_doc([{"client": "d", "attack": "model-replacement"}], rounds=1,
                                aggregation={"robustRule": "validation", "refuseHostilePoints": refuse}))
    method = exp.spec.methods[0]
    hood = neighbourhoods(exp, method, list(CLIENTS))
    peers = {c: Peer(exp, method, SHARDS[c], hood[c], "cpu") for c in CLIENTS}
    events = []

    class Observer:
        def trained(self, event): pass
        def merged(self, event): events.append(event)
        def evaluated(self, record): pass

    for peer in peers.values():
        peer.observer = Observer()
    exchange = MemoryExchange()
    for peer in peers.values():
        peer.train_and_publish(1, exchange)
    shared = {c: len(exchange.gather(1, [c]).publications[c].synthetic_y) for c in CLIENTS}
    records = {c: peers[c].merge_and_evaluate(1, exchange) for c in CLIENTS}
    for event in events:
        if event.client == "d":
            continue
        assert [(who, why.split(":")[0]) for who, why in event.rejected] == [("d", "robust-rule")], event.rejected
        assert records[event.client].payloads_rejected == 1
        assert event.used == [c for c in CLIENTS if c not in ("d", event.client)]  # d's model is not used
        assert event.rejected[0][1].endswith("as an outlier")
        # every point of d is dropped as a hostile sender's, or reached the point checks (some of these
        # overlapping classes' points fall in the receiver's other-class region and are dropped one by one)
        hostile = [k for who, why, k in event.dropped if why.startswith("hostile-sender")]
        assert [who for who, why, _ in event.dropped if why.startswith("hostile-sender")] == ["d"] * refuse
        assert (hostile and hostile[0] > 0) if refuse else hostile == []
        assert event.n_received + records[event.client].points_rejected == sum(shared[c] for c in CLIENTS if c != event.client)
    assert records["d"].payloads_rejected == 0  # the attacker itself keeps its honest neighbours


# --------------------------------------------------------------------------- end to end


def test_simulate_marks_the_adversary_and_summarises_honest_clients_only(tmp_path, capsys):
    doc = _doc([{"client": "b", "attack": "sign-flip", "factor": 5}], rounds=2)
    doc["spec"]["dataset"] = {"kind": "builtin", "builtin": {"devices": 4, "families": 2, "features": 8, "benignPerDevice": 150, "maliciousPerFamily": 20}}
    doc["spec"]["scenario"] = {"kind": "non-iid", "clients": [
        {"name": c, "benignGroups": [f"device-{i}"], "maliciousGroups": [f"device-{i}"],
         "train": {"benign": 80, "malicious": 10}, "validation": {"benign": 30, "malicious": 10}} for i, c in enumerate(CLIENTS)],
        "globalTest": {"benign": 100, "malicious": 40}}
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert main(["simulate", str(spec), "--out", str(tmp_path / "out")]) == 0
    frame = read_parquet(tmp_path / "out" / "results.parquet")
    assert set(frame.loc[frame["adversarial"], "client"]) == {"b"}
    assert set(frame.loc[~frame["adversarial"], "client"]) == {"a", "c", "d"}
    final = frame[frame["round"] == 2]
    summary = final_round_summary(frame)
    for eval_set in ("local", "global"):
        honest = final[(final["eval"] == eval_set) & ~final["adversarial"]]
        for metric in ("fnr", "fpr"):
            assert summary.loc[("ksmote", eval_set), metric] == pytest.approx(honest[metric].mean())
    assert summary.loc[("ksmote", "global"), "fnr"] != pytest.approx(final[final["eval"] == "global"]["fnr"].mean())
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "honest clients only; adversarial, left out: b" in text
    assert "honest clients only" in capsys.readouterr().out


def test_a_little_is_enough_over_real_peers_hides_among_last_rounds_models_and_survives_a_restart():
    """Round 2 of four real peers: the attacker publishes μ − σ over the three honest models it
    gathered in round 1 and its own honest round-2 model; a copy restarted from its round-1
    checkpoint state publishes the same bytes (what it gathered is in the checkpoint)."""
    exp = parse_experiment(_doc([{"client": "d", "attack": "a-little-is-enough"}], rounds=2))
    method = exp.spec.methods[0]
    hood = neighbourhoods(exp, method, list(CLIENTS))
    peers = {c: Peer(exp, method, SHARDS[c], hood[c], "cpu") for c in CLIENTS}
    exchange = MemoryExchange()
    for peer in peers.values():
        peer.train_and_publish(1, exchange)
    round1 = exchange.gather(1, list(CLIENTS)).publications
    for k in round1["d"].delta:  # round 1: nothing gathered yet, it publishes honestly
        np.testing.assert_array_equal(round1["d"].delta[k], peers["d"]._phase1.publication.delta[k])
    for peer in peers.values():
        peer.merge_and_evaluate(1, exchange)
    restarted = Peer(exp, method, SHARDS["d"], hood["d"], "cpu")
    restarted.restore(peers["d"].state())
    peers["d"].train_and_publish(2, exchange)
    published = exchange.gather(2, ["d"]).publications["d"]
    honest = peers["d"]._phase1.publication.delta
    again = MemoryExchange()
    restarted.train_and_publish(2, again)
    for k, own in honest.items():
        models = np.stack([round1[c].delta[k] for c in ("a", "b", "c")] + [own])
        np.testing.assert_allclose(published.delta[k], models.mean(axis=0) - models.std(axis=0), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(again.gather(2, ["d"]).publications["d"].delta[k], published.delta[k])
    assert any(not np.allclose(published.delta[k], honest[k]) for k in honest)


def test_the_same_attack_gives_the_same_publication_in_any_runner():
    """simulate (MemoryExchange) and a worker (StoreExchange) call the same Peer: what the
    adversary publishes depends on (seed, method, client, round) only."""
    exp = parse_experiment(_doc([{"client": "d", "attack": "gaussian-noise"}], rounds=1))
    published = []
    for _ in range(2):
        hood = neighbourhoods(exp, exp.spec.methods[0], list(CLIENTS))
        peer = Peer(exp, exp.spec.methods[0], SHARDS["d"], hood["d"], "cpu")
        exchange = MemoryExchange()
        peer.train_and_publish(1, exchange)
        published.append(exchange.gather(1, ["d"]).publications["d"])
    for k in published[0].delta:
        np.testing.assert_array_equal(published[0].delta[k], published[1].delta[k])
