"""D_o_syn policies (p2p_job.received): hand-computed bounds and own-point counts."""

from __future__ import annotations

import numpy as np
import pytest

from p2p_job.received import ReceivedPolicy, class_deficits
from p2p_job.spec import RebalancingSpec


def _policy(y_base, **params) -> ReceivedPolicy:
    return ReceivedPolicy(RebalancingSpec(**params), np.asarray(y_base, np.int8))


def test_deficits_are_algorithm_1_line_1_per_class():
    y = np.array([0] * 100 + [1] * 10)
    assert class_deficits(y, 1.0) == {0: 0, 1: 90}
    assert class_deficits(y, 0.5) == {0: 0, 1: 40}
    assert class_deficits(y, 1.5) == {0: 50, 1: 140}
    assert class_deficits(np.array([1] * 30 + [0] * 3), 1.0) == {0: 27, 1: 0}  # benign minority


def test_balanced_keeps_the_newest_of_each_class_up_to_its_share_of_the_deficit():
    policy = _policy([0] * 100 + [1] * 10, received_fraction=0.5)  # caps: benign 0, malicious 45
    y = np.array([1] * 30 + [0] * 5 + [1] * 30, np.int8)
    X = np.arange(len(y), dtype=np.float32)[:, None]
    X_kept, y_kept = policy.bound(X, y)
    assert (y_kept == 1).all() and len(y_kept) == 45
    np.testing.assert_array_equal(X_kept[:, 0], np.r_[15:30, 35:65])  # newest 45 malicious, in order


def test_max_received_caps_the_total_under_either_policy():
    y = np.ones(50, np.int8)
    X = np.arange(50, dtype=np.float32)[:, None]
    for received in ("balanced", "unbounded"):
        X_kept, _ = _policy([0] * 100 + [1] * 10, received=received, max_received=7).bound(X, y)
        np.testing.assert_array_equal(X_kept[:, 0], np.arange(43, 50))
    X_kept, _ = _policy([0] * 100 + [1] * 10, received="unbounded").bound(X, y)
    assert len(X_kept) == 50


@pytest.mark.parametrize("n_received, expected", [(0, 90), (30, 60), (90, 0), (120, 0)])
def test_balanced_trains_on_the_part_of_own_synthetic_points_received_points_do_not_fill(n_received, expected):
    policy = _policy([0] * 100 + [1] * 10, received_fraction=1.0)
    synthetic_y = np.ones(90, np.int8)
    chosen = policy.own_synthetic(synthetic_y, np.ones(n_received, np.int8), np.random.default_rng(0))
    assert len(chosen) == expected and len(set(chosen)) == expected and np.all(np.diff(chosen) > 0)
    again = policy.own_synthetic(synthetic_y, np.ones(n_received, np.int8), np.random.default_rng(0))
    np.testing.assert_array_equal(chosen, again)


def test_unbounded_trains_on_every_own_synthetic_point():
    policy = _policy([0] * 100 + [1] * 10, received="unbounded")
    chosen = policy.own_synthetic(np.ones(90, np.int8), np.ones(500, np.int8), np.random.default_rng(0))
    np.testing.assert_array_equal(chosen, np.arange(90))


def test_the_policy_is_checked_in_the_spec():
    with pytest.raises(ValueError):
        RebalancingSpec(received="forever")
    with pytest.raises(ValueError):
        RebalancingSpec(received_fraction=1.5)
