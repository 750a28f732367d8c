"""Equations 5–7 and Algorithm 2 line 12: hand-computed weights and merges, properties, the
coordinator-free selection and the α-fraction of shared points."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_job.aggregation import (
    data_variance,
    fedavg_weights,
    is_selected,
    mixing_weights,
    share_sample,
    weighted_average,
)


def test_data_variance_is_the_mean_per_feature_variance():
    # feature 0: values 0, 2 → variance 1; feature 1: values 0, 4 → variance 4
    assert data_variance(np.array([[0.0, 0.0], [2.0, 4.0]])) == pytest.approx(2.5)
    assert data_variance(np.empty((0, 3))) == 0.0
    with pytest.raises(ValueError, match="2-D"):
        data_variance(np.ones(4))


@pytest.mark.parametrize(
    ("variances", "sizes", "lam", "expected"),
    [
        ([1, 3], [100, 300], 0.8, [0.25, 0.75]),
        # var shares ¼ ¼ ½, size shares .1 .3 .6 → ½·(…) + ½·(…)
        ([2, 2, 4], [10, 30, 60], 0.5, [0.175, 0.275, 0.55]),
        # λ = 0.8: .8·(.9, .1) + .2·(.5, .5)
        ([9, 1], [50, 50], 0.8, [0.82, 0.18]),
        # no variance anywhere: that term shares equally, .8·(½, ½) + .2·(¼, ¾)
        ([0, 0], [1, 3], 0.8, [0.45, 0.55]),
        ([5, 1], [1, 3], 1.0, [5 / 6, 1 / 6]),
    ],
)
def test_mixing_weights_by_hand(variances, sizes, lam, expected):
    np.testing.assert_allclose(mixing_weights(variances, sizes, lam), expected)


def test_mixing_weights_with_lambda_zero_are_fedavg_weights():
    np.testing.assert_allclose(mixing_weights([3, 1, 7], [10, 30, 60], 0.0), fedavg_weights([10, 30, 60]))
    np.testing.assert_allclose(fedavg_weights([1, 3]), [0.25, 0.75])


@given(
    st.lists(st.tuples(st.floats(0, 1e6), st.integers(0, 10**6)), min_size=1, max_size=12),
    st.floats(0, 1),
)
def test_mixing_weights_are_a_distribution(peers, lam):
    weights = mixing_weights([v for v, _ in peers], [n for _, n in peers], lam)
    assert weights.shape == (len(peers),)
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0)


def test_mixing_weights_reject_bad_input():
    with pytest.raises(ValueError, match="variances must be finite and non-negative"):
        mixing_weights([-1, 2], [1, 1], 0.5)
    with pytest.raises(ValueError, match="2 variances but 3 sizes"):
        mixing_weights([1, 2], [1, 1, 1], 0.5)
    with pytest.raises(ValueError, match="lambda must be in"):
        mixing_weights([1, 2], [1, 1], 1.5)
    with pytest.raises(ValueError, match="non-empty"):
        mixing_weights([], [], 0.5)


def _state(weight, bias, batches):
    return {
        "layer.weight": np.array(weight, dtype=np.float32),
        "bn.running_mean": np.array(bias, dtype=np.float32),
        "bn.num_batches_tracked": np.array(batches, dtype=np.int64),
    }


def test_weighted_average_by_hand():
    merged = weighted_average([_state([[1, 2]], [0], 3), _state([[3, 6]], [4], 6)], [0.25, 0.75])
    np.testing.assert_allclose(merged["layer.weight"], [[2.5, 5.0]])
    np.testing.assert_allclose(merged["bn.running_mean"], [3.0])
    assert merged["layer.weight"].dtype == np.float32
    # integer buffers stay integer: ¼·3 + ¾·6 = 5.25 → 5
    assert merged["bn.num_batches_tracked"].dtype == np.int64 and merged["bn.num_batches_tracked"] == 5


def test_weighted_average_normalises_the_weights():
    states = [_state([[1, 2]], [0], 3), _state([[3, 6]], [4], 6)]
    unnormalised = weighted_average(states, [1, 3])
    normalised = weighted_average(states, [0.25, 0.75])
    for name in normalised:
        np.testing.assert_array_equal(unnormalised[name], normalised[name])


def test_averaging_identical_states_returns_them():
    state = _state(np.random.default_rng(0).normal(size=(3, 4)), [1, 2], 7)
    merged = weighted_average([state, state, state], [0.2, 0.3, 0.5])
    for name in state:
        np.testing.assert_allclose(merged[name], state[name], rtol=1e-6)


def test_weighted_average_rejects_mismatched_states():
    a = _state([[1, 2]], [0], 3)
    with pytest.raises(ValueError, match="state 1 has entries"):
        weighted_average([a, {"layer.weight": a["layer.weight"]}], [0.5, 0.5])
    with pytest.raises(ValueError, match="entry 'layer.weight': state 1 is float32\\[1, 3\\]"):
        weighted_average([a, _state([[1, 2, 3]], [0], 3)], [0.5, 0.5])
    with pytest.raises(ValueError, match="2 states but 1 weights"):
        weighted_average([a, a], [1.0])
    with pytest.raises(ValueError, match="at least one state"):
        weighted_average([], [])
    with pytest.raises(ValueError, match="only float and integer"):
        weighted_average([{"flag": np.array([True])}], [1.0])


def test_selection_is_deterministic_and_needs_no_coordinator():
    draws = [[is_selected(7, "ksmote", r, f"client-{c}", 0.5) for c in range(10)] for r in range(50)]
    again = [[is_selected(7, "ksmote", r, f"client-{c}", 0.5) for c in range(10)] for r in range(50)]
    assert draws == again
    assert 0.4 < np.mean(draws) < 0.6
    assert len({tuple(row) for row in draws}) > 10  # varies with the round
    assert any(
        is_selected(7, "ksmote", r, "client-0", 0.5) != is_selected(8, "ksmote", r, "client-0", 0.5) for r in range(50)
    )


def test_selection_probability_one_always_selects():
    assert all(is_selected(1, "ksmote", r, f"c{c}", 1.0) for r in range(20) for c in range(5))


@pytest.mark.parametrize(("n", "alpha", "expected"), [(100, 0.1, 10), (7, 0.5, 4), (5, 0.5, 2), (10, 0.0, 0), (10, 1.0, 10), (0, 0.3, 0)])
def test_share_sample_takes_round_alpha_n_distinct_rows(n, alpha, expected):
    X = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = (np.arange(n) % 2).astype(np.int8)
    shared_X, shared_y = share_sample(X, y, alpha, np.random.default_rng(0))
    assert shared_X.shape == (expected, 2) and shared_y.shape == (expected,)
    rows = (shared_X[:, 0] // 2).astype(int)
    assert len(set(rows.tolist())) == expected  # without replacement
    np.testing.assert_array_equal(shared_y, y[rows])  # labels travel with their rows


def test_share_sample_is_deterministic_in_the_generator():
    X = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.zeros(100, dtype=np.int8)
    first = share_sample(X, y, 0.2, np.random.default_rng(3))[0]
    np.testing.assert_array_equal(first, share_sample(X, y, 0.2, np.random.default_rng(3))[0])
    assert not np.array_equal(first, share_sample(X, y, 0.2, np.random.default_rng(4))[0])
    with pytest.raises(ValueError, match="alpha must be in"):
        share_sample(X, y, 1.2, np.random.default_rng(0))
