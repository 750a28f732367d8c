"""Robust aggregation rules (p2p_job.robust) and the weight-share cap, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from p2p_job.aggregation import capped_shares, fedavg_weights, mixing_weights
from p2p_job.robust import (
    RULES,
    clip_each_tensor,
    clip_to_reference,
    coordinate_median,
    krum_outliers,
    krum_scores,
    robust_merge,
    trimmed_mean,
    validation_filter,
)
from p2p_job.spec import RobustRule


def states(*rows):
    """One state per row: entry "w" holds the row, "bn.running_var" its absolute value + 1."""
    return [{"w": np.array(r, np.float32), "bn.running_var": np.abs(np.array(r, np.float32)) + 1} for r in rows]


def test_the_spec_offers_exactly_the_implemented_rules():
    assert RobustRule.__args__ == RULES


def test_coordinate_median_by_hand():
    merged = coordinate_median(states([1, 10], [2, -5], [100, 0], [3, 1]))
    # per coordinate: sorted (1, 2, 3, 100) -> (2+3)/2; sorted (-5, 0, 1, 10) -> (0+1)/2
    assert merged["w"].tolist() == [2.5, 0.5]
    assert merged["w"].dtype == np.float32
    assert coordinate_median(states([1], [7], [1000]))["w"].tolist() == [7.0]


def test_trimmed_mean_by_hand():
    rows = ([1, 10], [2, -5], [100, 0], [3, 1], [4, 2])
    # trim 1 per side: coordinate 0 sorted (1, 2, 3, 4, 100) -> mean(2, 3, 4) = 3; coordinate 1 (-5, 0, 1, 2, 10) -> 1
    assert trimmed_mean(states(*rows), 1)["w"].tolist() == [3.0, 1.0]
    assert trimmed_mean(states(*rows), 0)["w"].tolist() == pytest.approx([22.0, 1.6])
    # too few contributors for 2 per side: trims (n - 1) // 2 = 1, the median of three
    assert trimmed_mean(states([1], [5], [9]), 2)["w"].tolist() == [5.0]


def test_clipping_pulls_far_contributors_to_the_bound_along_their_direction():
    w = lambda *rows: [{"w": np.array(r, np.float32)} for r in rows]  # noqa: E731
    own, near, far = [0, 0], [3, 4], [30, 40]  # distances 5 and 50 from own
    clipped = clip_to_reference(w(own, near, far), max_norm=10)
    assert clipped[0]["w"].tolist() == [0, 0]
    assert clipped[1]["w"].tolist() == [3, 4]  # within the bound: unchanged
    assert clipped[2]["w"].tolist() == pytest.approx([6, 8])  # scaled by 10 / 50
    # default bound, f = 1: the (m − f)-th = 2nd smallest of the neighbours' distances (√50, √5000, √20000)
    auto = clip_to_reference(w(own, [5, 5], [50, 50], [100, 100]))
    assert auto[3]["w"].tolist() == pytest.approx([50, 50])
    assert auto[2]["w"].tolist() == pytest.approx([50, 50]) and auto[1]["w"].tolist() == [5, 5]


def test_default_clip_bound_is_the_m_minus_f_th_smallest_distance_by_hand():
    """τ = the (m − f)-th smallest of the m neighbours' distances (at least the smallest): f far
    neighbours cannot raise it past an honest one's. Distances from own (0, 0): (3, 4) → 5,
    (6, 8) → 10, (300, 400) → 500, (600, 800) → 1000."""
    w = lambda *rows: [{"w": np.array(r, np.float64)} for r in rows]  # noqa: E731
    clip = lambda rows, f, **kw: [s["w"].tolist() for s in clip_to_reference(w([0, 0], *rows), byzantine=f, **kw)]  # noqa: E731
    honest, far = [3, 4], [300, 400]
    # two neighbours (a ring), one attacker: the median of two (their mean, 252.5) let it stay at
    # half its distance; the 1st smallest clips it to the honest neighbour's 5
    assert clip([honest, far], 1) == [[0, 0], [3, 4], pytest.approx([3, 4])]
    assert clip([far, honest], 1) == [[0, 0], pytest.approx([3, 4]), [3, 4]]  # order does not matter
    assert clip([honest, far], 0) == [[0, 0], [3, 4], [300, 400]]  # f = 0: τ = 500, nothing clipped
    assert clip([honest, far], 2) == [[0, 0], [3, 4], pytest.approx([3, 4])]  # f ≥ m: the smallest, 5
    # three neighbours
    assert clip([honest, [6, 8], far], 0) == [[0, 0], [3, 4], [6, 8], [300, 400]]  # τ = 500
    assert clip([honest, [6, 8], far], 1) == [[0, 0], [3, 4], [6, 8], pytest.approx([6, 8])]  # τ = 10
    assert clip([honest, [6, 8], far], 2) == [[0, 0], [3, 4], pytest.approx([3, 4]), pytest.approx([3, 4])]  # τ = 5
    # two attackers of three: f = 2 holds them to the honest 5; f = 1 underestimates them, and
    # the nearer attacker sets τ = 500 (the guarantee is for at most f)
    assert clip([honest, far, [600, 800]], 2) == [[0, 0], [3, 4], pytest.approx([3, 4]), pytest.approx([3, 4])]
    assert clip([honest, far, [600, 800]], 1) == [[0, 0], [3, 4], [300, 400], pytest.approx([300, 400])]
    # ties: two honest neighbours at 5 ((3, 4) and (4, 3)) and an attacker: τ = 5, both kept exactly
    assert clip([honest, [4, 3], far], 1) == [[0, 0], [3, 4], [4, 3], pytest.approx([3, 4])]
    # ties at the top: the f farthest are equally far, τ is their common distance, nothing changes
    assert clip([honest, far, [400, 300]], 0) == [[0, 0], [3, 4], [300, 400], [400, 300]]
    assert clip([honest, far, [400, 300]], 1) == [[0, 0], [3, 4], [300, 400], [400, 300]]
    # an explicit bound (aggregation.clipNorm, Sun et al.'s fixed τ) wins over f
    for f in (0, 1, 2):
        assert clip([honest, far], f, max_norm=2.5) == [[0, 0], pytest.approx([1.5, 2]), pytest.approx([1.5, 2])]
    assert clip([], 1) == [[0, 0]]  # no neighbour: the peer's own model
    assert clip([far], 1) == [[0, 0], [300, 400]]  # a lone neighbour (f ≥ m): τ is its own distance
    with pytest.raises(ValueError, match="byzantine"):
        clip_to_reference(w([0, 0], honest), byzantine=-1)


def test_clipped_mean_in_a_ring_holds_a_far_attacker_to_the_honest_neighbour():
    """robust_merge passes aggregation's f: own (0, 0), honest (3, 4), attacker (300, 400), p_k
    equal. f = 1: the attacker is clipped to (3, 4), the mean is (6, 8) / 3; f = 0: equation 5."""
    s = [{"w": np.array(r, np.float64)} for r in ([0, 0], [3, 4], [300, 400])]
    assert robust_merge("clipped-mean", s, [1 / 3] * 3, byzantine=1).state["w"].tolist() == pytest.approx([2, 8 / 3])
    assert robust_merge("clipped-mean", s, [1 / 3] * 3, byzantine=0).state["w"].tolist() == pytest.approx([101, 404 / 3])
    assert robust_merge("clipped-mean", s, [1 / 3] * 3, byzantine=0, clip_norm=5).state["w"].tolist() == pytest.approx([2, 8 / 3])


def test_f_hostile_neighbours_never_raise_the_clip_bound_past_an_honest_distance():
    """Property: m neighbours, f of them anywhere (here far away, scaled up to 1e6), the rest
    honest near the peer: τ ≤ the largest honest distance, so every clipped attacker ends no
    farther from the peer than the farthest honest neighbour."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 8))
        f = int(rng.integers(0, m))
        own = rng.normal(size=5)
        honest = [own + rng.normal(size=5) for _ in range(m - f)]
        hostile = [own + rng.normal(size=5) * 10 ** rng.uniform(0, 6) for _ in range(f)]
        order = rng.permutation(m)
        neighbours = [(honest + hostile)[i] for i in order]
        clipped = clip_to_reference([{"w": own}, *({"w": x} for x in neighbours)], byzantine=f)
        bound = max(np.linalg.norm(h - own) for h in honest)
        assert all(np.linalg.norm(c["w"] - own) <= bound * (1 + 1e-9) for c in clipped)


def test_batchnorm_variances_stay_positive_under_every_rule():
    """Parameters and BatchNorm buffers go through the rule alike; with every contributor's
    running_var positive, the combination's is too (coordinate-wise rules stay inside the
    contributors' range, clipping lies on a segment, Krum picks a contributor)."""
    s = states([1, 10], [2, -5], [100, 0], [3, 1])
    for rule in RULES:
        merged = robust_merge(rule, s, [0.25] * 4, byzantine=1, loss=lambda state: float(state["w"][0] ** 2)).state
        assert (merged["bn.running_var"] > 0).all(), rule


def test_robust_merge_dispatches_every_rule():
    s = [{"w": np.array([x], np.float32)} for x in (0.0, 1.0, 2.0, 10.0)]
    weights = [0.25, 0.25, 0.25, 0.25]
    expected = {
        "mean": 3.25,
        "median": 1.5,
        "trimmed-mean": 1.5,                    # drops 0 and 10
        "clipped-mean": (0 + 1 + 2 + 2) / 4,    # bound = median distance 2: 10 -> 2
        "krum": 0.0,                            # scores (1, 1, 1, 64): the lowest index of the tie, the peer itself
        "multi-krum": 1.0,                      # the n - f = 3 best: 0, 1, 2
        "filtered-clipped-mean": 1.0,           # 10 is an outlier (64 > 10 × 1); distances 1, 2 within 3 × 1: the mean of 0, 1, 2
        "validation": 1.0,                      # loss w²: dropping 10 lowers it from 3.25² to 1²
    }
    left_out = {"krum": (1, 2, 3), "multi-krum": (3,), "filtered-clipped-mean": (3,), "validation": (3,)}
    # Krum's score 64 > 10 × the median of (1, 1, 1): an outlier; Krum's unchosen 1 and 2 are not
    outliers = {"krum": (3,), "multi-krum": (3,), "filtered-clipped-mean": (3,), "validation": (3,)}
    for rule in RULES:
        merge = robust_merge(rule, s, weights, byzantine=1, loss=lambda state: float(state["w"][0] ** 2), tolerance=0.5)
        assert merge.state["w"].tolist() == pytest.approx([expected[rule]]), rule
        assert merge.left_out == left_out.get(rule, ()), rule
        assert merge.outliers == outliers.get(rule, ()), rule
    with pytest.raises(ValueError, match="unknown robust rule"):
        robust_merge("mode", s, weights)


def test_krum_outliers_by_hand():
    """Among the f worst-scored, those above 10 × the median of the n − f best; never the peer."""
    assert krum_outliers(np.array([1.0, 2.0, 3.0, 25.0]), 1) == [3]       # 25 > 10 × 2
    assert krum_outliers(np.array([1.0, 2.0, 3.0, 19.0]), 1) == []        # 19 <= 20: honest spread
    assert krum_outliers(np.array([50.0, 1.0, 2.0, 3.0]), 1) == []        # the peer itself is worst: nobody
    assert krum_outliers(np.array([1.0, 2.0, 300.0, 3.0, 40.0]), 2) == [2, 4]  # median of (1, 2, 3) = 2
    assert krum_outliers(np.array([1.0, 2.0, 300.0, 3.0, 15.0]), 2) == [2]
    assert krum_outliers(np.array([1.0, 2.0, 3.0, 25.0]), 0) == []        # f = 0: no outliers
    assert krum_outliers(np.array([4.0, 4.0]), 1) == []                   # two contributors: equal scores
    # honest non-IID neighbours: the farthest has a score a few times the others', Krum leaves it
    # out but does not single it out
    spread = [{"w": np.array([x, 0.0], np.float32)} for x in (0.0, 1.0, 2.5, 5.0)]
    merge = robust_merge("krum", spread, [0.25] * 4, byzantine=1)
    assert merge.left_out == (1, 2, 3) and merge.outliers == ()


def test_clip_each_tensor_bounds_every_tensor_where_whole_model_clipping_does_not():
    """Peer (0, 0 | 0); A (3, 4 | 0.1); B (0, 1 | 5): m = 2, f = 1, so each tensor's bound is its
    smaller neighbour distance: w's 1 (B's), b's 0.1 (A's). A's w is scaled by 1/5, B's b to 0.1.
    Clipping the whole model to its bound (A's distance 5.001) leaves B's b at 4.9."""
    s = [{"w": np.array(w, np.float32), "b": np.array(b, np.float32)}
         for w, b in (([0, 0], [0]), ([3, 4], [0.1]), ([0, 1], [5]))]
    clipped = clip_each_tensor(s, byzantine=1, factor=1)
    assert clipped[0]["w"].tolist() == [0, 0] and clipped[0]["b"].tolist() == [0]
    assert clipped[1]["w"].tolist() == pytest.approx([0.6, 0.8]) and clipped[1]["b"].tolist() == pytest.approx([0.1])
    assert clipped[2]["w"].tolist() == pytest.approx([0, 1]) and clipped[2]["b"].tolist() == pytest.approx([0.1])
    assert clip_to_reference(s, byzantine=1)[2]["b"].tolist() == pytest.approx([5 * 5.001 / np.sqrt(26)], rel=1e-3)
    # the default factor 3: bounds 3 and 0.3; A's w (5) -> 3, B's b (5) -> 0.3
    clipped = clip_each_tensor(s, byzantine=1)
    assert clipped[1]["w"].tolist() == pytest.approx([1.8, 2.4]) and clipped[2]["b"].tolist() == pytest.approx([0.3])
    assert clipped[2]["w"].tolist() == pytest.approx([0, 1]) and clipped[1]["b"].tolist() == pytest.approx([0.1])


def test_filtered_clipped_mean_by_hand():
    """Leave out the Krum outliers, clip each tensor to its (m − f)-th smallest distance, then
    equation 5 with p_k renormalised over the rest."""
    s = [{"w": np.array([x, 0.0], np.float32)} for x in (0.0, 1.0, 5.0, 40.0)]
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    # f = 1, n − f − 2 = 1 nearest: scores 1, 1, 16, 35² = 1225; only the f worst can be an
    # outlier, 1225 > 10 × the median 1 of the 3 best; then distances 1 and 5, bound 3 × the
    # (m − f = 1st) smallest: 5 -> 3
    merge = robust_merge("filtered-clipped-mean", s, weights, byzantine=1)
    assert merge.left_out == merge.outliers == (3,)
    assert merge.state["w"].tolist() == pytest.approx([(0.3 * 1 + 0.2 * 3) / 0.9, 0.0])
    # honest spread only (the worst score 9 is < 10 × the median 1): nobody is left out; the
    # distances 1, 3, 6 give the bound 3 × 3 (the 2nd smallest): nothing clipped, the paper's mean
    s[2]["w"], s[3]["w"] = np.array([3.0, 0.0], np.float32), np.array([6.0, 0.0], np.float32)
    merge = robust_merge("filtered-clipped-mean", s, weights, byzantine=1)
    assert merge.left_out == () and merge.state["w"].tolist() == pytest.approx([0.3 + 0.6 + 0.6, 0.0])
    # f = 0 trusts everyone: no outlier, no clipping — the paper's mean, however far a contributor is
    s[3]["w"] = np.array([1e6, 0.0], np.float32)
    assert robust_merge("filtered-clipped-mean", s, weights, byzantine=0).state["w"].tolist() == pytest.approx(robust_merge("mean", s, weights).state["w"].tolist())
    # a ring's three contributors (the peer, two neighbours): scores are each one's nearest
    # squared distance, 1, 1, 100²; the far neighbour goes, the peer never does
    ring = [{"w": np.array([x], np.float32)} for x in (0.0, 1.0, 101.0)]
    assert robust_merge("filtered-clipped-mean", ring, [1 / 3] * 3, byzantine=1).left_out == (2,)
    ring = [{"w": np.array([x], np.float32)} for x in (101.0, 0.0, 1.0)]
    assert robust_merge("filtered-clipped-mean", ring, [1 / 3] * 3, byzantine=1).left_out == ()


def test_one_hostile_contributor_of_four_cannot_drag_the_robust_rules():
    honest = [np.array([1.0, -1.0, 0.5]) + 0.01 * i for i in range(3)]
    for attack in (honest[0] * -10, honest[0] * 1e6, np.full(3, np.finfo(np.float32).max / 4)):
        s = [{"w": h.astype(np.float32)} for h in honest] + [{"w": attack.astype(np.float32)}]
        loss = lambda state: float(((state["w"] - honest[0]) ** 2).sum())  # noqa: E731 - the honest peer's own data
        for rule in ("median", "trimmed-mean", "clipped-mean", "krum", "multi-krum", "filtered-clipped-mean", "validation"):
            merged = robust_merge(rule, s, [0.25] * 4, byzantine=1, loss=loss, tolerance=0.1).state["w"]
            assert np.abs(merged - honest[1]).max() < 0.05, (rule, merged)


def test_validation_filter_by_hand():
    """Loss (w − 1)², p_k equal. Contributors 1, 1.3, 0.7, 4 (own first): the mean 1.75 has loss
    0.5625; without 4 the mean is 1.0 (loss 0, drop 0.5625), without 1.3 it is 1.9 (loss 0.81,
    drop < 0), without 0.7 2.1 (1.21): 4 is left out at tolerance 0.5, kept at 0.6."""
    s = [{"w": np.array([x])} for x in (1.0, 1.3, 0.7, 4.0)]
    loss = lambda state: float((state["w"][0] - 1.0) ** 2)  # noqa: E731
    assert validation_filter(s, [0.25] * 4, loss, tolerance=0.5, most=1) == [0, 1, 2]
    assert validation_filter(s, [0.25] * 4, loss, tolerance=0.6, most=1) == [0, 1, 2, 3]
    # f = 0 leaves nobody out; the peer itself is never left out, however bad its own model
    assert validation_filter(s, [0.25] * 4, loss, tolerance=0.0, most=0) == [0, 1, 2, 3]
    bad_own = [{"w": np.array([x])} for x in (9.0, 1.0)]
    assert validation_filter(bad_own, [0.5, 0.5], loss, tolerance=0.0, most=1) == [0, 1]
    # weights count: with p = (0.1, 0.1, 0.1, 0.7) the mean is 0.1 + 0.13 + 0.07 + 2.8 = 3.1, loss 4.41;
    # without 4: 1.0, loss 0; the drop 4.41 is over tolerance 4 but not 4.5
    weights = [0.1, 0.1, 0.1, 0.7]
    assert validation_filter(s, weights, loss, tolerance=4.0, most=1) == [0, 1, 2]
    assert validation_filter(s, weights, loss, tolerance=4.5, most=1) == [0, 1, 2, 3]
    # two hostile of four with f = 2: left out one after the other, the worse first (mean 2.775,
    # loss 3.151; without 5 → 2.033, loss 1.068; then without 4 → 1.05, loss 0.0025)
    two = [{"w": np.array([x])} for x in (1.0, 1.1, 5.0, 4.0)]
    assert validation_filter(two, [0.25] * 4, loss, tolerance=0.1, most=2) == [0, 1]
    assert validation_filter(two, [0.25] * 4, loss, tolerance=0.1, most=1) == [0, 1, 3]
    # leave-one-out's known blind spot (Fang et al. remove a fixed count for it): two that cancel
    # out in the mean (5 and −2.9) each look helpful alone
    cancel = [{"w": np.array([x])} for x in (1.0, 1.1, 5.0, -2.9)]
    assert validation_filter(cancel, [0.25] * 4, loss, tolerance=0.1, most=2) == [0, 1, 2, 3]
    # a neighbour that makes the loss infinite (non-finite outputs) is the first to go
    inf = lambda state: float("inf") if state["w"][0] > 1.5 else float((state["w"][0] - 1.0) ** 2)  # noqa: E731
    assert validation_filter(s, [0.25] * 4, inf, tolerance=100.0, most=1) == [0, 1, 2]
    with pytest.raises(ValueError, match="tolerance"):
        validation_filter(s, [0.25] * 4, loss, tolerance=-1.0, most=1)
    with pytest.raises(ValueError, match="needs a loss"):
        robust_merge("validation", s, [0.25] * 4)


def test_capped_shares_clip_the_largest_values_to_one_threshold():
    assert capped_shares([1, 1, 8], 0.5).tolist() == pytest.approx([0.25, 0.25, 0.5])  # 8 clipped to 2
    # 10 and 7 both clipped to t = 6: (1, 2, 6, 6) / 15
    assert capped_shares([1, 2, 7, 10], 0.4).tolist() == pytest.approx([1 / 15, 2 / 15, 0.4, 0.4])
    assert capped_shares([1, 2, 7, 10], 1.0).tolist() == pytest.approx([0.05, 0.1, 0.35, 0.5])
    assert capped_shares([1, 1e12, 1], 0.2).tolist() == pytest.approx([1 / 3] * 3)  # 0.2 < 1/n: equal
    with pytest.raises(ValueError, match="max_share"):
        capped_shares([1, 2], 0.0)


def test_an_inflated_size_buys_at_most_the_share_cap_in_equation_6():
    sizes, variances = [1000, 1200, 900, 10**12], [0.05, 0.06, 0.04, 0.05]
    uncapped = mixing_weights(variances, sizes, 0.8)
    assert uncapped[3] == pytest.approx(0.8 * 0.25 + 0.2 * 1.0, rel=1e-6)  # the attacker's size share is all of it
    capped = mixing_weights(variances, sizes, 0.8, max_share=0.3)
    assert capped.max() <= 0.3 + 1e-12 and capped.sum() == pytest.approx(1.0)
    assert fedavg_weights(sizes, 0.3)[3] == pytest.approx(0.3)
