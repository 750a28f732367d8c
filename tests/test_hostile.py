"""Hostile neighbours: real peers exchanging through the directory store, one attacker of four
(full mesh) writing its round-1 publication straight into the store as an attacker would. For
every hostile publication of issue 9, no honest peer crashes, and the publication is either
rejected with its reason or its effect is bounded; the honest neighbours are still used."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from p2p_job.exchange import Publication
from p2p_job.payloads import (
    MANIFEST_FILE,
    MODEL_FILE,
    SYNTHETIC_FILE,
    encode_manifest,
    encode_state,
    encode_synthetic,
    sha256,
    state_layout,
)
from p2p_job.peer import Merged, Peer, neighbourhoods
from p2p_job.scenarios import build_shards
from p2p_job.screening import ClassRegions
from p2p_job.spec import parse_experiment
from p2p_job.store import DirectoryStore, round_key
from p2p_job.store_exchange import StoreExchange

HONEST = ("client-a", "client-b", "client-c")
ATTACKER = "client-d"
EXPERIMENT, METHOD = "hostile", "ksmote"


def document(honest=HONEST, topology="full", rebalancing=None, **aggregation) -> dict:
    names = sorted((*honest, ATTACKER))
    clients = [
        {"name": name, "benignGroups": [f"device-{i}"], "maliciousGroups": [f"device-{i}"],
         "train": {"benign": 80, "malicious": 12}, "validation": {"benign": 30, "malicious": 10}}
        for i, name in enumerate(names)
    ]
    return {
        "apiVersion": "p2pk.io/v1alpha1", "kind": "P2PExperiment", "metadata": {"name": EXPERIMENT},
        "spec": {
            "seed": 3, "rounds": 1,
            "dataset": {"kind": "builtin", "builtin": {"devices": len(names), "families": 1, "features": 6,
                                                       "benignPerDevice": 140, "maliciousPerFamily": 40}},
            "scenario": {"kind": "non-iid", "clients": clients, "globalTest": {"benign": 20, "malicious": 10}},
            "topology": {"kind": topology},
            "methods": [{"rebalancing": "ksmote"}],
            "rebalancing": {"k": 3, "neighbours": 4, "shareFraction": 0.5, **(rebalancing or {})},
            "aggregation": aggregation,
            "training": {"localEpochs": 2, "batchSize": 16, "learningRate": 0.05, "hiddenLayers": [8, 4]},
            "runtime": {"device": "cpu", "roundTimeoutSeconds": 5},
        },
    }


@pytest.fixture(scope="module")
def shards():
    return build_shards(parse_experiment(document()))


class Round:
    """Round 1 of the three honest peers over one directory store; the attacker's publication
    is planted between their publishing and their merging."""

    def __init__(self, tmp_path, shards, honest=HONEST, topology="full", rebalancing=None, **aggregation):
        self.exp = parse_experiment(document(honest, topology, rebalancing, **aggregation))
        self.store = DirectoryStore(tmp_path / "store")
        method = self.exp.spec.methods[0]
        self.hood = hood = neighbourhoods(self.exp, method, list(shards.clients))
        self.honest_clients = honest
        self.events: dict[str, list[Merged]] = {c: [] for c in honest}
        self.peers, self.exchanges = {}, {}
        for c in honest:
            events = self.events[c]
            observer = type("O", (), {"trained": lambda s, e: None, "evaluated": lambda s, r: None,
                                      "merged": lambda s, e, ev=events: ev.append(e)})()
            peer = self.peers[c] = Peer(self.exp, method, shards.clients[c], hood[c], "cpu", observer)
            self.exchanges[c] = StoreExchange(
                self.store, experiment=EXPERIMENT, method=METHOD, client=c, feature_names=shards.feature_names,
                layout=state_layout(peer.w0), max_payload_bytes=2**26, timeout=self.exp.spec.runtime.round_timeout_seconds,
                max_points=peer.point_caps,
            )
        self.feature_names = shards.feature_names
        for c in honest:
            self.peers[c].train_and_publish(1, self.exchanges[c])
        reader = StoreExchange(self.store, experiment=EXPERIMENT, method=METHOD, client="reader", feature_names=shards.feature_names,
                               layout=state_layout(self.peers["client-a"].w0), max_payload_bytes=2**26, timeout=1)
        self.honest = {c: reader._read(1, c) for c in honest}
        self.template = self.honest["client-c"]  # the attacker starts from an honest-looking publication

    def key(self, name):
        return round_key(EXPERIMENT, METHOD, 1, ATTACKER, name)

    def plant(self, *, delta=None, X=None, y=None, n_base=None, variance=None, synthetic=None, manifest=None):
        """Write the attacker's publication: payloads first, then the manifest (hand-written
        JSON when ``manifest`` is given as text)."""
        t = self.template
        X = t.synthetic_X if X is None else X
        y = t.synthetic_y if y is None else y
        payloads = {MODEL_FILE: encode_state(t.delta if delta is None else delta),
                    SYNTHETIC_FILE: synthetic if synthetic is not None else encode_synthetic(X, y, self.feature_names)}
        for name, data in payloads.items():
            self.store.put_bytes(self.key(name), data)
        if manifest is None:
            n_rows = pq.ParquetFile(pa.BufferReader(payloads[SYNTHETIC_FILE])).metadata.num_rows
            manifest = encode_manifest(experiment=EXPERIMENT, method=METHOD, client=ATTACKER, round=1,
                                       n_base=t.n_base if n_base is None else n_base,
                                       variance=t.variance if variance is None else variance,
                                       n_synthetic=n_rows, payloads=payloads, metrics={})
        self.store.put_bytes(self.key(MANIFEST_FILE), manifest if isinstance(manifest, bytes) else manifest.encode())
        return payloads

    def merge(self):
        """Every honest peer merges and evaluates round 1; returns their records."""
        return {c: self.peers[c].merge_and_evaluate(1, self.exchanges[c]) for c in self.honest_clients}

    def honest_states(self):
        w0 = self.peers["client-a"].w0
        return [{n: w0[n] + pub.delta[n] for n in w0} for pub in self.honest.values()]


def manifest_text(payloads, **fields) -> str:
    """A manifest as an attacker types it: any JSON text for the fields."""
    base = {"format": "p2pk.manifest/v1", "experiment": EXPERIMENT, "method": METHOD, "client": ATTACKER, "round": 1,
            "n_base": 92, "variance": 0.05, "n_synthetic": 0, "metrics": {},
            "payloads": {n: {"sha256": sha256(d), "bytes": len(d)} for n, d in payloads.items()}}
    text = json.dumps(base)
    for name, raw in fields.items():
        text = text.replace(f'"{name}": {json.dumps(base[name])}', f'"{name}": {raw}')
    return text


#: Refusals of a model as hostile: its points go too (aggregation.refuseHostilePoints, on by default).
MODEL_REASONS = ("model-mismatch", "bad-weights", "degenerate")


def assert_rejected(rnd: Round, records, reason: str, model_used: bool = False):
    """Every honest peer refused the attacker's publication, or only its model or only its
    points, once with ``reason``; a model refused as hostile (:data:`MODEL_REASONS`) has its
    points dropped too, counted as ``hostile-sender``; the honest neighbours' models and points
    are all used (a hostile neighbour never gets an honest one refused), and the attacker's
    model when ``model_used``."""
    hostile = len(rnd.template.synthetic_y) if reason in MODEL_REASONS else 0
    for c in HONEST:
        [merged] = rnd.events[c]
        assert [(who, why.split(":")[0]) for who, why in merged.rejected] == [(ATTACKER, reason)], merged.rejected
        assert [(who, why.split(":")[0], n) for who, why, n in merged.dropped] == [(ATTACKER, "hostile-sender", hostile)] * bool(hostile)
        others = [o for o in HONEST if o != c]
        assert sorted(merged.used) == sorted(others + [ATTACKER] * model_used)
        assert records[c].payloads_rejected == 1 and records[c].points_rejected == hostile
        assert records[c].n_received >= sum(len(rnd.honest[o].synthetic_y) for o in others)
        if hostile:
            assert records[c].n_received == sum(len(rnd.honest[o].synthetic_y) for o in others)
        assert all(math.isfinite(records[c].metrics[e]["fpr"]) for e in records[c].metrics)


def assert_points_dropped(rnd: Round, records, reason: str, n: int):
    """Every honest peer dropped ``n`` of the attacker's points one by one with ``reason`` and
    used its model and every honest neighbour's model and points."""
    for c in HONEST:
        [merged] = rnd.events[c]
        assert merged.rejected == [] and [(who, why.split(":")[0], k) for who, why, k in merged.dropped] == [(ATTACKER, reason, n)]
        others = [o for o in HONEST if o != c]
        assert sorted(merged.used) == sorted([*others, ATTACKER])
        assert (records[c].payloads_rejected, records[c].points_rejected) == (0, n)
        assert records[c].n_received == sum(len(rnd.honest[o].synthetic_y) for o in others) + len(rnd.template.synthetic_y) - n


def assert_within_honest_range(rnd: Round, slack=1e-5):
    """The merged model of every honest peer lies, coordinate by coordinate, inside the range
    the honest contributors span: the attacker moved nothing outside it."""
    from p2p_job.model import model_state

    states = rnd.honest_states()
    for c in HONEST:
        merged = model_state(rnd.peers[c].model)
        for name, value in merged.items():
            stacked = np.stack([s[name] for s in states])
            assert (value >= stacked.min(axis=0) - slack).all() and (value <= stacked.max(axis=0) + slack).all(), (c, name)


# --------------------------------------------------------------------------- attacks on the model


def test_a_delta_scaled_ten_times_is_left_out_or_outvoted(tmp_path, shards):
    rnd = Round(tmp_path, shards)
    rnd.plant(delta={n: 10 * v for n, v in rnd.template.delta.items()})
    records = rnd.merge()  # the paper's mean: running_var of the attacker's model goes negative
    assert_rejected(rnd, records, "degenerate")
    rnd = Round(tmp_path / "median", shards, robustRule="median")
    rnd.plant(delta={n: 10 * v for n, v in rnd.template.delta.items()})
    rnd.merge()
    assert_within_honest_range(rnd)


def test_float32_max_values_are_rejected(tmp_path, shards):
    rnd = Round(tmp_path, shards)
    rnd.plant(delta={n: np.full_like(v, np.finfo(np.float32).max) for n, v in rnd.template.delta.items()})
    assert_rejected(rnd, rnd.merge(), "degenerate")


@pytest.mark.parametrize(("field", "raw"), [("n_base", "1e400"), ("n_base", "1" + "0" * 400), ("variance", "1e999"),
                                            ("n_base", "-3"), ("variance", "-0.5")])
def test_weight_inputs_out_of_bounds_are_rejected(tmp_path, shards, field, raw):
    rnd = Round(tmp_path, shards)
    payloads = rnd.plant()
    rnd.store.put_bytes(rnd.key(MANIFEST_FILE), manifest_text(payloads, **{field: raw}).encode())
    assert_rejected(rnd, rnd.merge(), "schema")


def test_an_inflated_n_base_is_rejected_against_the_spec(tmp_path, shards):
    rnd = Round(tmp_path, shards)
    rnd.plant(n_base=10**12)
    records = rnd.merge()
    assert_rejected(rnd, records, "bad-weights")  # and its points, as a hostile sender's
    rnd = Round(tmp_path / "keep", shards, refuseHostilePoints=False)
    rnd.plant(n_base=10**12)
    records = rnd.merge()
    for c in HONEST:  # its points are judged on their own and taken
        [merged] = rnd.events[c]
        assert [why.split(":")[0] for _, why in merged.rejected] == ["bad-weights"] and merged.dropped == []
        assert records[c].n_received == sum(len(rnd.honest[o].synthetic_y) for o in HONEST if o != c) + len(rnd.template.synthetic_y)


def test_krum_refuses_the_points_of_the_outlier_it_singles_out_and_keeps_those_of_honest_neighbours_it_did_not_choose(tmp_path, shards):
    """A BatchNorm bias shifted by 100: Krum leaves every neighbour's model out (it chooses one
    contributor) but singles out only the attacker as an outlier; the attacker's points go
    (``hostile-sender``), every honest neighbour's points are taken although its model was not
    chosen. With refuseHostilePoints off, the attacker's points are taken too."""
    delta = lambda rnd: {n: v + (100.0 if n == "1.bias" else 0.0) for n, v in rnd.template.delta.items()}  # noqa: E731
    n = None
    for refuse in (True, False):
        rnd = Round(tmp_path / str(refuse), shards, robustRule="krum", refuseHostilePoints=refuse)
        rnd.plant(delta=delta(rnd))
        records = rnd.merge()
        n = len(rnd.template.synthetic_y)
        for c in HONEST:
            [merged] = rnd.events[c]
            others = [o for o in HONEST if o != c]
            reasons = dict(merged.rejected)
            assert reasons[ATTACKER].endswith("as an outlier")
            assert all(not reasons.get(o, "").endswith("as an outlier") for o in others)
            assert [(who, why.split(":")[0], k) for who, why, k in merged.dropped] == [(ATTACKER, "hostile-sender", n)] * refuse
            assert records[c].n_received == sum(len(rnd.honest[o].synthetic_y) for o in others) + n * (not refuse)
            assert records[c].points_rejected == n * refuse


def test_the_filtered_clipped_mean_leaves_out_only_the_outlier_and_averages_every_honest_neighbour(tmp_path, shards):
    """A BatchNorm bias shifted by 100: the filtered clipped mean singles out the attacker (its
    points go, ``hostile-sender``), uses every honest neighbour's model and points, and its
    merged model is built from the honest contributors alone (inside the range they span)."""
    rnd = Round(tmp_path, shards, robustRule="filtered-clipped-mean")
    rnd.plant(delta={n: v + (100.0 if n == "1.bias" else 0.0) for n, v in rnd.template.delta.items()})
    records = rnd.merge()
    n = len(rnd.template.synthetic_y)
    for c in HONEST:
        [merged] = rnd.events[c]
        others = [o for o in HONEST if o != c]
        assert [(who, why.split(":")[0]) for who, why in merged.rejected] == [(ATTACKER, "robust-rule")]
        assert merged.rejected[0][1].endswith("as an outlier")
        assert sorted(merged.used) == sorted(others)
        assert [(who, why.split(":")[0], k) for who, why, k in merged.dropped] == [(ATTACKER, "hostile-sender", n)]
        assert records[c].n_received == sum(len(rnd.honest[o].synthetic_y) for o in others)
        assert math.isfinite(records[c].metrics["global"]["fpr"])
    assert_within_honest_range(rnd)


def test_a_sign_flipped_delta_and_a_shifted_batchnorm_bias_are_outvoted_by_the_median(tmp_path, shards):
    for attack in ("sign", "bias"):
        rnd = Round(tmp_path / attack, shards, robustRule="median")
        delta = {n: -v for n, v in rnd.template.delta.items()} if attack == "sign" else \
            {n: v + (100.0 if n == "1.bias" else 0.0) for n, v in rnd.template.delta.items()}
        rnd.plant(delta=delta)
        records = rnd.merge()
        assert all(rnd.events[c][0].rejected == [] for c in HONEST)  # nothing wrong with it as data
        assert all(math.isfinite(records[c].metrics["global"]["fpr"]) for c in HONEST)
        assert_within_honest_range(rnd)


# --------------------------------------------------------------------------- attacks on the bytes


def test_a_parquet_bomb_is_refused_from_its_metadata(tmp_path, shards):
    """2.3 MB that decodes to 20M rows: refused from the metadata, never decoded."""
    rnd = Round(tmp_path, shards)
    zeros = pa.array(np.zeros(20_000_000, np.float32))
    table = pa.table({**{n: zeros for n in rnd.feature_names}, "label": pa.array(np.ones(20_000_000, np.int8))})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    bomb = sink.getvalue().to_pybytes()
    del table, zeros
    assert len(bomb) < 5 * 2**20
    payloads = rnd.plant(synthetic=bomb)
    rnd.store.put_bytes(rnd.key(MANIFEST_FILE), manifest_text(payloads, n_synthetic="3").encode())  # lies about the count
    assert_rejected(rnd, rnd.merge(), "too-many-points", model_used=True)  # the points only: its model is sound


def test_a_huge_manifest_is_not_read_past_its_cap(tmp_path, shards):
    rnd = Round(tmp_path, shards)
    payloads = rnd.plant()
    huge = manifest_text(payloads).replace('"metrics": {}', '"metrics": {' + ", ".join(f'"m{i}": {i}' for i in range(2_000_000)) + "}")
    assert len(huge) > 30 * 2**20
    rnd.store.put_bytes(rnd.key(MANIFEST_FILE), huge.encode())
    start = time.perf_counter()
    records = rnd.merge()
    assert time.perf_counter() - start < 3 * rnd.exp.spec.runtime.round_timeout_seconds
    assert_rejected(rnd, records, "too-large")


def test_a_slow_payload_read_does_not_hold_gather_past_the_round_timeout(tmp_path, shards):
    rnd = Round(tmp_path, shards)
    rnd.plant()

    class Slow:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def get_bytes(self, key, max_bytes=None):
            if f"/{ATTACKER}/{MODEL_FILE}" in key:
                time.sleep(30)
            return self.inner.get_bytes(key, max_bytes)

    ex = rnd.exchanges["client-a"]
    ex.store, ex.timeout = Slow(rnd.store), 1.0
    start = time.perf_counter()
    gathered = ex.gather(1, ["client-b", "client-c", ATTACKER])
    assert time.perf_counter() - start < 2.5
    assert sorted(gathered.publications) == ["client-b", "client-c"] and gathered.missing == [ATTACKER]


# --------------------------------------------------------------------------- attacks on the shared points


def test_label_flipped_points_are_rejected(tmp_path, shards):
    rnd = Round(tmp_path, shards)
    y = rnd.template.synthetic_y
    rnd.plant(y=(1 - y).astype(np.int8))  # the attacker's minority is malicious (12 of 92 rows)
    assert_rejected(rnd, rnd.merge(), "wrong-label", model_used=True)


def test_benign_rows_labelled_as_attacks_inside_a_receivers_benign_region_are_dropped(tmp_path, shards):
    """The label flip the label check cannot see: benign rows published with the attack label
    (the sender's minority). client-a's own benign traffic relabelled lies inside its benign
    region: it drops those its class regions put there (the rows whose 3rd nearest other benign
    row is within 0.75 × benign rows' typical distance to theirs; the others stay), counts them
    (class-region) and keeps the attacker's model; with classRegion off it takes them all."""
    own = shards.clients["client-a"]
    benign = own.train.raw[own.train.y == 0][:20]
    inside, _ = ClassRegions(own.train.X, own.train.y, 0.75).inside_other(own.preprocessor.transform(benign), np.ones(20, np.int64))
    assert inside.sum() >= 5  # 7 of the 20: the others' 3rd nearest benign row is farther than 0.75 × the typical one
    for on in (True, False):
        rnd = Round(tmp_path / str(on), shards, rebalancing={"classRegion": on})
        rnd.plant(X=benign, y=np.ones(len(benign), np.int8))
        records = rnd.merge()
        [merged] = rnd.events["client-a"]
        assert merged.rejected == [] and ATTACKER in merged.used
        expected = [(ATTACKER, "class-region", int(inside.sum()))] if on else []
        assert [(who, why.split(":")[0], k) for who, why, k in merged.dropped if who == ATTACKER] == expected
        assert records["client-a"].n_received == sum(len(rnd.honest[o].synthetic_y) for o in HONEST if o != "client-a") + \
            len(benign) - (int(inside.sum()) if on else 0)
        for c in HONEST:  # no honest neighbour's point is dropped by it
            assert all(who == ATTACKER for who, _, _ in rnd.events[c][0].dropped)


def test_points_far_out_of_range_are_all_dropped_and_counted(tmp_path, shards):
    rnd = Round(tmp_path, shards)
    X = rnd.template.synthetic_X * 1000.0 + 1000.0
    rnd.plant(X=X)
    assert_points_dropped(rnd, rnd.merge(), "out-of-range", len(X))
    for c in HONEST:  # none of them reached D_o_syn
        assert np.abs(rnd.peers[c].received_X).max() < 20


def test_only_the_out_of_range_points_of_a_publication_are_dropped(tmp_path, shards):
    """An honest non-IID sender's points can lie outside a receiver's ranges (an attack kind it
    never saw): those points go, the rest of its points and its model stay."""
    rnd = Round(tmp_path, shards)
    X = rnd.template.synthetic_X.copy()
    X[:3] = X[:3] * 1000.0 + 1000.0
    rnd.plant(X=X)
    assert_points_dropped(rnd, rnd.merge(), "out-of-range", 3)


def test_an_honest_non_iid_neighbour_with_points_outside_the_receivers_ranges_is_not_refused_whole(tmp_path, shards):
    """One device per client: a neighbour's minority points come from its own device and can lie
    outside the receiver's ranges (tolerance 0 here, so some do). Only those points are dropped
    and counted; every neighbour's model is used and the rest of its points taken."""
    rnd = Round(tmp_path, shards, rebalancing={"pointTolerance": 0.0})
    rnd.plant()  # client-d publishes client-c's honest publication
    records = rnd.merge()
    sent = {**{c: len(rnd.honest[c].synthetic_y) for c in HONEST}, ATTACKER: len(rnd.template.synthetic_y)}
    for c in HONEST:
        [merged] = rnd.events[c]
        others = [o for o in (*HONEST, ATTACKER) if o != c]
        assert merged.rejected == [] and sorted(merged.used) == sorted(others)
        assert {why.split(":")[0] for _, why, _ in merged.dropped} <= {"out-of-range"}
        assert records[c].n_received + records[c].points_rejected == sum(sent[o] for o in others)
    assert sum(records[c].points_rejected for c in HONEST) > 0  # the case is real: some points lie outside
    assert sum(records[c].n_received for c in HONEST) > 0


def test_a_flood_of_points_is_refused_before_download(tmp_path, shards):
    rnd = Round(tmp_path, shards)
    X = np.repeat(rnd.template.synthetic_X[:1], 200_000, axis=0)
    rnd.plant(X=X, y=np.ones(200_000, np.int8))
    start = time.perf_counter()
    records = rnd.merge()
    assert_rejected(rnd, records, "too-many-points", model_used=True)
    assert time.perf_counter() - start < 30
    for c in HONEST:  # nothing of it reached D_o_syn
        assert records[c].n_received == sum(len(rnd.honest[o].synthetic_y) for o in HONEST if o != c)


def test_in_a_ring_of_five_only_the_attackers_neighbours_see_it_and_reject_it(tmp_path):
    honest = ("client-a", "client-b", "client-c", "client-e")
    shards = build_shards(parse_experiment(document(honest, "ring")))
    rnd = Round(tmp_path, shards, honest, "ring")
    assert rnd.hood[ATTACKER] == ["client-c", "client-e"]
    rnd.plant(X=rnd.template.synthetic_X * 1000.0 + 1000.0, delta={n: 10 * v for n, v in rnd.template.delta.items()})
    records = rnd.merge()
    n = len(rnd.template.synthetic_y)
    for c in honest:
        [merged] = rnd.events[c]
        sees = ATTACKER in rnd.hood[c]
        assert [(who, why.split(":")[0]) for who, why in merged.rejected] == [(ATTACKER, "degenerate")] * sees
        assert [(who, why.split(":")[0], k) for who, why, k in merged.dropped] == [(ATTACKER, "out-of-range", n)] * sees
        assert records[c].points_rejected == n * sees
        assert sorted(merged.used) == sorted(n for n in rnd.hood[c] if n != ATTACKER)
        assert math.isfinite(records[c].metrics["global"]["fpr"])


def test_an_output_bias_shift_the_filter_does_not_flag_is_clipped_to_the_honest_spread(tmp_path, shards):
    """Model replacement's stealthy form: the attacker's model with only the output bias moved,
    by too little to make its whole-model Krum score an outlier. Each tensor is clipped to its
    (m − f)-th smallest neighbour distance (× 3), so every honest peer's merged output bias moves
    from its own no farther than 3 × its farthest honest neighbour's output bias lies from it."""
    rnd = Round(tmp_path, shards, robustRule="filtered-clipped-mean")
    w0 = rnd.peers["client-a"].w0
    out = [name for name in w0 if name.endswith("bias")][-1]
    rnd.plant(delta={n: v + (-3.0 if n == out else 0.0) for n, v in rnd.template.delta.items()})
    rnd.merge()
    from p2p_job.model import model_state

    for c in HONEST:
        [merged] = rnd.events[c]
        assert merged.rejected == [], merged.rejected  # not flagged: its model is used, clipped
        honest = [w0[out] + rnd.honest[o].delta[out] for o in HONEST if o != c]
        mine = w0[out] + rnd.honest[c].delta[out]
        bound = max(float(np.abs(h - mine).max()) for h in honest)
        assert float(np.abs(model_state(rnd.peers[c].model)[out] - mine).max()) <= 3 * bound + 1e-5
