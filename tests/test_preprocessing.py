"""Each client's feature pipeline (p2p_job.preprocessing): hand-computed transforms, inverses,
one-hot blocks and the errors that name the column."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler

from p2p_job.datasets import DataError
from p2p_job.preprocessing import Preprocessor, signed_expm1, signed_log1p
from p2p_job.spec import PreprocessingSpec

NAMES = ["bytes", "rate", "delta", "flat"]


def _rows(n=40, seed=1) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.column_stack([
        g.lognormal(8, 3, n),          # heavy-tailed counter
        g.lognormal(2, 2, n),
        g.normal(0, 1000, n),          # either sign
        np.full(n, 7.0),               # constant
    ]).astype(np.float32)  # fmt: skip


def _spec(**kw) -> PreprocessingSpec:
    return PreprocessingSpec.model_validate(kw)


def test_default_is_the_papers_min_max_scaling_and_inverts():
    X = _rows()
    pre = Preprocessor.fit(PreprocessingSpec(), NAMES, X)
    other = _rows(10, seed=2)
    np.testing.assert_allclose(pre.transform(other), MinMaxScaler().fit(X).transform(other), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pre.inverse_transform(pre.transform(other)), other, rtol=1e-4)
    assert pre.transform(X)[:, 3].tolist() == [0.0] * 40  # constant feature: range 1, as scikit-learn
    assert pre.transform(X).dtype == np.float32 and pre.output_names == NAMES


def test_first_matching_transform_wins_then_min_max_by_hand():
    X = _rows()
    spec = _spec(transforms=[{"columns": ["delta"], "transform": "signed-log"}, {"columns": ["*"], "transform": "log1p"}])
    pre = Preprocessor.fit(spec, NAMES, X)
    assert pre.transforms == {"bytes": "log1p", "rate": "log1p", "delta": "signed-log", "flat": "log1p"}
    logged = np.column_stack([np.log1p(X[:, 0].astype(np.float64)), np.log1p(X[:, 1].astype(np.float64)), signed_log1p(X[:, 2].astype(np.float64))])
    by_hand = (logged - logged.min(0)) / (logged.max(0) - logged.min(0))
    np.testing.assert_allclose(pre.transform(X)[:, :3], by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pre.inverse_transform(pre.transform(X)), X, rtol=1e-4)
    # Log-compressed counters no longer sit in one corner: the median row is mid-range.
    assert 0.2 < np.median(pre.transform(X)[:, 0]) < 0.8
    assert np.median(Preprocessor.fit(PreprocessingSpec(), NAMES, X).transform(X)[:, 0]) < 0.05


def test_signed_log_is_odd_and_inverts():
    x = np.array([-1e9, -3.0, -0.5, 0.0, 0.5, 3.0, 1e9])
    np.testing.assert_allclose(signed_log1p(-x), -signed_log1p(x))
    np.testing.assert_allclose(signed_expm1(signed_log1p(x)), x, rtol=1e-12)


@pytest.mark.parametrize("scaling", ["robust", "quantile"])
def test_other_scalers_fit_on_the_training_rows_and_invert(scaling):
    X = _rows()
    pre = Preprocessor.fit(_spec(scaling=scaling, transforms=[{"columns": ["bytes", "rate"], "transform": "log1p"}]), NAMES, X)
    encoded = pre.transform(X)
    if scaling == "quantile":
        assert encoded[:, :3].min() == 0.0 and encoded[:, :3].max() == 1.0
    else:
        np.testing.assert_allclose(np.median(encoded[:, :3], axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(pre.inverse_transform(encoded)[:, :3], X[:, :3], rtol=1e-3)


def test_fitted_on_the_given_rows_only():
    X = _rows()
    a = Preprocessor.fit(PreprocessingSpec(), NAMES, X[:20])
    b = Preprocessor.fit(PreprocessingSpec(), NAMES, X[20:])
    assert a.transform(X[:20]).max() == 1.0 and not np.array_equal(a.transform(X), b.transform(X))


def test_one_hot_blocks_from_the_datasets_categories_and_valid_categories_back():
    names = ["bytes", "proto", "rate"]
    categories = {"proto": ["icmp", "tcp", "udp"]}
    X = np.array([[10, 1, 2], [1000, 1, 3], [5, 2, 4]], np.float32)  # icmp never seen in training
    pre = Preprocessor.fit(_spec(categorical=["proto"]), names, X, categories)
    assert pre.output_names == ["bytes", "rate", "proto=icmp", "proto=tcp", "proto=udp"]
    assert pre.onehot_blocks == [(2, 5)] and pre.n_outputs == 5
    encoded = pre.transform(np.array([[10, 0, 2], [10, 2, 2], [10, 9, 2]], np.float32))
    np.testing.assert_array_equal(encoded[:, 2:], [[1, 0, 0], [0, 0, 1], [0, 0, 0]])  # code 9: unknown, all zeros
    # An interpolated point (0.3 tcp, 0.7 udp) goes back as a valid category: udp.
    back = pre.inverse_transform(np.array([[0.5, 0.5, 0.0, 0.3, 0.7]], np.float32))
    assert back[0, 1] == 2.0
    np.testing.assert_allclose(back[0, [0, 2]], [5 + 0.5 * 995, 3.0], rtol=1e-5)


@pytest.mark.parametrize("scaling", ["minmax", "robust", "quantile"])
def test_transform_equals_the_column_transformers_own(scaling):
    """transform calls the fitted parts itself (no ColumnTransformer layer): the same array as
    ``pipeline.transform``, to the bit, on rows outside the training ranges, of either sign,
    with NaN and with unknown category codes."""
    names = ["bytes", "proto", "rate", "delta", "state"]
    g = np.random.default_rng(3)
    X = np.column_stack([g.lognormal(8, 3, 60), g.integers(0, 3, 60), g.lognormal(2, 2, 60), g.normal(0, 1000, 60),
                         g.integers(0, 2, 60)]).astype(np.float32)
    spec = _spec(scaling=scaling, categorical=["proto", "state"], transforms=[{"columns": ["delta"], "transform": "signed-log"},
                                                                             {"columns": ["bytes"], "transform": "log1p"}])
    pre = Preprocessor.fit(spec, names, X, {"proto": ["icmp", "tcp", "udp"], "state": ["CON", "RST", "REQ"]})
    other = np.column_stack([g.lognormal(9, 4, 50), g.integers(0, 5, 50), g.normal(0, 100, 50), g.normal(0, 1e5, 50),
                             g.integers(0, 3, 50)]).astype(np.float32)
    other[3, 2], other[7, 0], other[9, 1] = np.nan, -3.0, np.nan  # undefined log1p: NaN out
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        expected = pre.pipeline.transform(other).astype(np.float32)
    np.testing.assert_array_equal(pre.transform(other), expected)
    assert pre.transform(other).dtype == np.float32 and np.isnan(expected).any()
    with pytest.raises(ValueError, match="expected rows of 5 raw features"):
        pre.transform(other[:, :4])


def test_undefined_or_unmatched_columns_are_named():
    X = _rows()
    X[:, 2] = np.abs(X[:, 2])
    X[3, 2] = -5.0
    with pytest.raises(DataError, match=r"log1p of feature column 3 is undefined for its value in training row 4;"):
        Preprocessor.fit(_spec(transforms=[{"columns": ["delta"], "transform": "log1p"}]), NAMES, X)
    with pytest.raises(DataError, match=r"transforms\[0\]\.columns: 'pkts\*' matches no numeric feature column"):
        Preprocessor.fit(_spec(transforms=[{"columns": ["pkts*"], "transform": "log1p"}]), NAMES, X)
    with pytest.raises(DataError, match=r"categorical: no feature column 'proto'"):
        Preprocessor.fit(_spec(categorical=["proto"]), NAMES, X)
    with pytest.raises(ValueError, match="listed twice"):
        _spec(categorical=["proto", "proto"])
    # A receiver's log1p of a raw value ≤ −1 is NaN, which the peer rejects as non-finite.
    pre = Preprocessor.fit(_spec(transforms=[{"columns": ["bytes"], "transform": "log1p"}]), NAMES, _rows())
    assert np.isnan(pre.transform(np.array([[-2, 1, 1, 7]], np.float32))[0, 0])


def _flows(path, n_per_device=120):
    """A flow table with heavy-tailed counters and a text protocol column: attacks are UDP floods."""
    import pandas as pd

    g = np.random.default_rng(5)
    rows = []
    for device in ("cam", "bell"):
        for i in range(n_per_device):
            attack = i % 8 == 0
            rows.append({
                "bytes": float(g.lognormal(12 if attack else 6, 1.5)), "pkts": float(g.lognormal(5 if attack else 2, 1)),
                "proto": "udp" if attack else g.choice(["tcp", "icmp"]), "label": "attack" if attack else "normal", "device": device,
            })
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_text_categorical_column_loads_encodes_and_travels_as_a_valid_category(tmp_path):
    from data_helpers import client, experiment

    from p2p_job.exchange import MemoryExchange
    from p2p_job.peer import Peer, neighbourhoods
    from p2p_job.scenarios import build_shards
    from p2p_job.spec import parse_experiment

    dataset = {
        "kind": "tabular", "path": str(_flows(tmp_path / "flows.csv")), "labelColumn": "label", "benignValues": ["normal"],
        "groupColumn": "device",
        "preprocessing": {"categorical": ["proto"], "transforms": [{"columns": ["*"], "transform": "log1p"}]},
    }
    scenario = {"kind": "non-iid", "clients": [client("a", (60, 6), (20, 3), ["cam"], ["cam"]), client("b", (60, 6), (20, 3), ["bell"], ["bell"])],
                "globalTest": {"benign": 20, "malicious": 4}}
    doc = experiment(scenario, dataset)
    doc["spec"]["rounds"] = 1
    doc["spec"]["rebalancing"] = {"k": 3, "neighbours": 3, "shareFraction": 0.5}
    doc["spec"]["training"] = {"hiddenLayers": [4], "localEpochs": 1}
    exp = parse_experiment(doc)
    shards = build_shards(exp)
    assert shards.feature_names == ["bytes", "pkts", "proto"] and shards.categories == {"proto": ["icmp", "tcp", "udp"]}
    for shard in shards.clients.values():  # the same width everywhere, whatever a client saw
        assert shard.preprocessor.output_names == ["bytes", "pkts", "proto=icmp", "proto=tcp", "proto=udp"]
        assert shard.train.X.shape[1] == 5
    method = exp.spec.methods[0]
    peers = {c: Peer(exp, method, shards.clients[c], n, "cpu") for c, n in neighbourhoods(exp, method, list(shards.clients)).items()}
    exchange = MemoryExchange()
    for peer in peers.values():
        peer.train_and_publish(1, exchange)
    shared = exchange.gather(1, ["a"]).publications["a"].synthetic_X
    assert len(shared) > 0 and set(np.unique(shared[:, 2]).tolist()) <= {0.0, 1.0, 2.0}  # raw codes, not fractions
    record = peers["b"].merge_and_evaluate(1, exchange)
    assert record.payloads_rejected == 0 and record.n_received == len(shared)
    received = peers["b"].received_X[:, 2:]
    assert (received.sum(axis=1) == 1).all()  # valid one-hot in b's own encoding


def test_column_stats_suggest_logs_for_heavy_tails_and_one_hot_for_categories():
    from p2p_job.preprocessing import column_stats, suggested_preprocessing

    X = _rows(200)
    X[:, 3] = np.arange(200) % 3  # a coded category
    X[:, 2] = np.where(np.arange(200) % 2, 1, -1) * np.random.default_rng(3).lognormal(4, 2.5, 200)  # heavy, both signs
    X = np.column_stack([X, np.random.default_rng(2).uniform(0, 1, 200)]).astype(np.float32)  # tame
    stats = column_stats([*NAMES, "share"], X, {"flat": ["a", "b", "c"]})
    by_name = {c.name: c for c in stats}
    assert by_name["bytes"].suggestion == "log1p" and by_name["bytes"].skew > 2  # lognormal counter
    assert by_name["delta"].suggestion == "signed-log" and by_name["delta"].decades > 3
    assert by_name["share"].suggestion == "none" and abs(by_name["share"].skew) < 1
    assert by_name["flat"].suggestion == "categorical" and by_name["flat"].distinct == 3
    assert by_name["bytes"].minimum == float(X[:, 0].min()) and by_name["bytes"].maximum == float(X[:, 0].max())
    section = suggested_preprocessing(stats)
    assert section["categorical"] == ["flat"] and section["scaling"] == "quantile"
    assert {"columns": ["delta"], "transform": "signed-log"} in section["transforms"]
    PreprocessingSpec.model_validate(section)  # a valid dataset.preprocessing section


def test_auto_logs_the_clients_own_heavy_columns_says_nothing_twice_and_scales_by_quantile():
    X = _rows(200)
    X[:, 2] = np.random.default_rng(4).normal(0, 1, 200)  # tame, either sign
    pre = Preprocessor.fit(_spec(auto=True), NAMES, X)
    assert pre.transforms == {"bytes": "signed-log", "rate": "signed-log", "delta": "none", "flat": "none"}
    encoded = pre.transform(X)
    assert encoded[:, :3].min() == 0.0 and encoded[:, :3].max() == 1.0  # quantile: every value in [0, 1]
    assert pre.transform(np.array([[1e12, -5, 1e6, 7]], np.float32)).tolist() == [[1.0, 0.0, 1.0, 0.0]]  # beyond the range: clipped
    # An explicit entry wins over auto's choice, and an explicit scaling over auto's quantile.
    pre = Preprocessor.fit(_spec(auto=True, scaling="minmax", transforms=[{"columns": ["rate"], "transform": "none"}]), NAMES, X)
    assert pre.transforms["rate"] == "none" and pre.transforms["bytes"] == "signed-log"
    assert pre.transform(np.array([[1e12, 0, 0, 7]], np.float32))[0, 0] > 1.0  # min-max extrapolates
    # Each client decides on its own rows: a slice where bytes is tame keeps it as it is.
    tame = X.copy()
    tame[:, 0] = np.random.default_rng(6).uniform(100, 200, 200)
    assert Preprocessor.fit(_spec(auto=True), NAMES, tame).transforms["bytes"] == "none"


@pytest.mark.parametrize(
    ("dataset", "auto", "scaling"),
    [
        ({"kind": "builtin"}, False, "minmax"),
        ({"kind": "nbaiot", "path": "x"}, True, "quantile"),
        ({"kind": "tabular", "path": "x", "labelColumn": "l", "benignValues": ["0"]}, True, "quantile"),
        ({"kind": "botiot", "path": "x", "preprocessing": {"categorical": ["proto"]}}, True, "quantile"),
        ({"kind": "botiot", "path": "x", "preprocessing": {"scaling": "robust"}}, True, "robust"),
        ({"kind": "nbaiot", "path": "x", "preprocessing": {"auto": False}}, False, "minmax"),
        ({"kind": "builtin", "preprocessing": {"auto": True}}, True, "quantile"),
    ],
)
def test_auto_is_the_default_for_real_data_and_the_papers_min_max_stays_one_line_away(dataset, auto, scaling):
    from p2p_job.spec import DatasetSpec

    pre = DatasetSpec.model_validate(dataset).preprocessing
    assert (pre.auto, pre.scaling) == (auto, scaling)
    assert PreprocessingSpec.model_validate(pre.model_dump(by_alias=True)) == pre  # what shards and model files store reads back the same


def test_auto_loads_few_valued_text_columns_as_categories_and_leaves_addresses_out(tmp_path):
    import pandas as pd

    from p2p_job.datasets import load_dataset
    from p2p_job.spec import DatasetSpec

    path = _flows(tmp_path / "flows.csv")
    frame = pd.read_csv(path)
    frame["saddr"] = [f"10.0.{i // 200}.{i % 200}" for i in range(len(frame))]  # 240 values: an address, not a category
    frame.to_csv(path, index=False)
    base = {"kind": "tabular", "path": str(path), "labelColumn": "label", "benignValues": ["normal"], "groupColumn": "device"}
    table = load_dataset(DatasetSpec.model_validate(base))
    assert table.feature_names == ["bytes", "pkts", "proto"] and table.categories == {"proto": ["icmp", "tcp", "udp"]}
    notes = {c: (action, reason) for c, action, reason in table.report.columns}
    assert notes["proto"] == ("categorical", "dataset.preprocessing.auto: a text column: a category (3 values), one-hot encoded")
    assert notes["saddr"][0] == "dropped" and "at most 32 values" in notes["saddr"][1]
    pre = Preprocessor.fit(DatasetSpec.model_validate(base).preprocessing, table.feature_names, table.features, table.categories)
    assert pre.output_names == ["bytes", "pkts", "proto=icmp", "proto=tcp", "proto=udp"]
    assert pre.transforms == {"bytes": "signed-log", "pkts": "signed-log"}
    # Without auto the text column is left out, as before.
    plain = load_dataset(DatasetSpec.model_validate({**base, "preprocessing": {"auto": False}}))
    assert plain.feature_names == ["bytes", "pkts"] and plain.categories == {}
