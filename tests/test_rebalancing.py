"""Rebalancing methods: one ratio semantics for all, D_syn returned alone, the minority decided
from counts, degenerate data returned unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from p2p_job.ksmote import n_synthetic
from p2p_job.rebalancing import METHODS, minority_label, rebalance
from p2p_job.spec import RebalancingSpec

OVER_SAMPLERS = ("random-over", "smote", "ksmote")


def _client(n_benign=120, n_malicious=15, seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (n_benign, 4)), rng.normal(3, 0.5, (n_malicious, 4))]).astype(np.float32)
    y = np.concatenate([np.zeros(n_benign), np.ones(n_malicious)]).astype(np.int8)
    return X, y


@pytest.mark.parametrize("method", OVER_SAMPLERS)
@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.5])
def test_over_samplers_add_n_synthetic_minority_points_after_the_base_rows(method, ratio):
    X, y = _client()
    out = rebalance(method, X, y, RebalancingSpec(ratio=ratio), np.random.default_rng(0))
    n_new = n_synthetic(120, 15, ratio)
    assert out.minority == 1
    assert np.bincount(out.y, minlength=2).tolist() == [120, 15 + n_new]
    np.testing.assert_array_equal(out.X[: len(X)], X)
    np.testing.assert_array_equal(out.y[: len(y)], y)
    np.testing.assert_array_equal(out.synthetic_X, out.X[len(X) :])
    assert out.synthetic_X.shape == (n_new, 4) and (out.synthetic_y == 1).all()
    assert out.X.dtype == out.synthetic_X.dtype == np.float32 and out.y.dtype == out.synthetic_y.dtype == np.int8
    minority = X[y == 1]
    assert (out.synthetic_X >= minority.min(axis=0) - 1e-5).all() and (out.synthetic_X <= minority.max(axis=0) + 1e-5).all()


def test_random_over_sampling_adds_copies_of_minority_rows():
    X, y = _client()
    out = rebalance("random-over", X, y, RebalancingSpec(), np.random.default_rng(0))
    minority_rows = {tuple(row) for row in X[y == 1]}
    assert all(tuple(row) in minority_rows for row in out.synthetic_X)


@pytest.mark.parametrize(("ratio", "kept_majority"), [(1.0, 15), (0.5, 30), (3.0, 5), (0.1, 120)])
def test_random_under_sampling_keeps_minority_over_r_majority_rows(ratio, kept_majority):
    X, y = _client()
    out = rebalance("random-under", X, y, RebalancingSpec(ratio=ratio), np.random.default_rng(0))
    assert np.bincount(out.y, minlength=2).tolist() == [kept_majority, 15]
    assert out.synthetic_X.shape == (0, 4) and out.synthetic_y.shape == (0,)
    base_rows = {tuple(row) for row in X}
    assert all(tuple(row) in base_rows for row in out.X)


def test_none_returns_the_data_as_it_is():
    X, y = _client()
    out = rebalance("none", X, y, RebalancingSpec(), np.random.default_rng(0))
    np.testing.assert_array_equal(out.X, X)
    np.testing.assert_array_equal(out.y, y)
    assert out.synthetic_X.shape == (0, 4) and out.minority == 1


@pytest.mark.parametrize("method", METHODS)
def test_benign_minority_is_rebalanced_as_the_minority(method):
    X, y = _client(n_benign=15, n_malicious=120)
    out = rebalance(method, X, y, RebalancingSpec(), np.random.default_rng(0))
    assert out.minority == 0
    assert (out.synthetic_y == 0).all()
    expected = {"none": [15, 120], "random-under": [15, 15]}.get(method, [120, 120])
    assert np.bincount(out.y, minlength=2).tolist() == expected


def test_smote_works_with_fewer_minority_rows_than_neighbours():
    X, y = _client(n_malicious=3)
    out = rebalance("smote", X, y, RebalancingSpec(neighbours=20), np.random.default_rng(0))  # k_neighbors = 2
    assert len(out.synthetic_X) == 117


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("n_benign", "n_malicious", "minority"), [(50, 0, 1), (0, 50, 0), (50, 1, 1), (1, 50, 0), (0, 0, 1)])
def test_degenerate_data_is_returned_unchanged(method, n_benign, n_malicious, minority):
    X, y = _client(n_benign, n_malicious)
    out = rebalance(method, X, y, RebalancingSpec(), np.random.default_rng(0))
    np.testing.assert_array_equal(out.X, X)
    np.testing.assert_array_equal(out.y, y)
    assert len(out.synthetic_X) == 0 and out.minority == minority


@pytest.mark.parametrize("method", OVER_SAMPLERS + ("random-under",))
def test_a_ratio_that_asks_for_nothing_changes_nothing(method):
    X, y = _client(n_benign=100, n_malicious=60)
    out = rebalance(method, X, y, RebalancingSpec(ratio=0.5), np.random.default_rng(0))
    assert np.bincount(out.y).tolist() == [100, 60] and len(out.synthetic_X) == 0


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_in_the_generator(method):
    X, y = _client()
    first = rebalance(method, X, y, RebalancingSpec(), np.random.default_rng(9))
    second = rebalance(method, X, y, RebalancingSpec(), np.random.default_rng(9))
    np.testing.assert_array_equal(first.X, second.X)
    np.testing.assert_array_equal(first.y, second.y)


def test_minority_label_from_counts():
    assert minority_label(np.array([0, 0, 1], dtype=np.int8)) == 1
    assert minority_label(np.array([0, 1, 1], dtype=np.int8)) == 0
    assert minority_label(np.array([0, 1], dtype=np.int8)) == 1  # tie: malicious


def test_bad_input_is_named():
    X, y = _client()
    with pytest.raises(ValueError, match="unknown rebalancing method 'adasyn'"):
        rebalance("adasyn", X, y, RebalancingSpec(), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"labels must be 0 \(benign\) or 1 \(malicious\); row 120 has 2"):
        rebalance("none", X, np.where(y == 1, 2, 0), RebalancingSpec(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="one label per row"):
        rebalance("none", X, y[:-1], RebalancingSpec(), np.random.default_rng(0))


@pytest.mark.parametrize("method", ["random-over", "smote", "ksmote"])
def test_synthetic_points_have_valid_categories(method):
    g = np.random.default_rng(4)
    y = np.array([0] * 80 + [1] * 12, np.int8)
    X = np.hstack([g.normal(size=(92, 3)), np.eye(4)[g.integers(0, 4, 92)]]).astype(np.float32)
    out = rebalance(method, X, y, RebalancingSpec(k=5, neighbours=4), np.random.default_rng(0), onehot_blocks=((3, 7),))
    block = out.synthetic_X[:, 3:7]
    assert len(block) == 68 and set(np.unique(block).tolist()) == {0.0, 1.0} and (block.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(out.X[:92], X)  # the base rows untouched


@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.5])
@pytest.mark.parametrize("benign_minority", [False, True])
def test_ksmote_without_imbalanced_learns_checks_gives_the_samplers_rows(ratio, benign_minority):
    """rebalance calls K-SMOTE's resampling directly (p2p_job.ksmote.ksmote_resample): the same
    rows as the imbalanced-learn sampler it stands for, for the seed rebalance draws, on
    column-major rows (as shards hold them) with a one-hot block, the neighbour search cached
    or not."""
    from p2p_job.ksmote import KSMOTE, NeighbourCache

    g = np.random.default_rng(5)
    X = np.asfortranarray(np.hstack([g.normal(size=(70, 3)), np.eye(3)[g.integers(0, 3, 70)]]).astype(np.float32))
    y = np.array([0] * 60 + [1] * 10, np.int8)
    if benign_minority:
        y = 1 - y
    params = RebalancingSpec(ratio=ratio, k=4, neighbours=5)
    cache = NeighbourCache()
    for round_ in range(3):
        out = rebalance("ksmote", X, y, params, np.random.default_rng(round_), cache, ((3, 6),))
        seed = int(np.random.default_rng(round_).integers(2**31 - 1))
        minority = 0 if benign_minority else 1
        target = {minority: 10 + n_synthetic(60, 10, ratio)}
        X_ref, y_ref = KSMOTE(sampling_strategy=target, k=4, n_neighbors=5, random_state=seed,
                              onehot_blocks=((3, 6),)).fit_resample(X, y)
        np.testing.assert_array_equal(out.X, X_ref)
        np.testing.assert_array_equal(out.y, y_ref)
        assert out.X.dtype == np.float32 and out.y.dtype == np.int8
    assert cache.fits == 1
