"""p2p_job.screening: a neighbour's values against the receiver's own facts, by hand."""

from __future__ import annotations

import math

import numpy as np

from p2p_job.screening import (
    ClassRegions,
    degenerate_state,
    max_variance,
    minority_of,
    point_cap,
    screen_point_sets,
    screen_points,
    screen_weights,
)


def test_weight_inputs_are_bounded_by_the_spec_and_the_scaling():
    assert screen_weights(92, 0.1, 92, max_variance("minmax")) is None
    assert screen_weights(93, 0.1, 92, max_variance("minmax")).startswith("bad-weights: n_base 93")
    assert screen_weights(10**12, 0.1, 92, max_variance("minmax")).startswith("bad-weights")
    assert screen_weights(92, 0.26, 92, max_variance("quantile")).startswith("bad-weights: variance 0.26")
    assert screen_weights(92, 3.0, 92, max_variance("robust")) is None  # median/IQR scaling has no such bound
    assert screen_weights(92, math.inf, 92, max_variance("robust")).startswith("bad-weights")
    assert screen_weights(92, -0.1, 92, max_variance("robust")).startswith("bad-weights")


def test_point_caps_and_labels_follow_equation_7_and_the_senders_counts():
    assert point_cap(92, 0.5, 1.0, True) == 46 and point_cap(92, 0.1, 1.0, True) == 10  # ⌈9.2⌉
    assert point_cap(92, 0.5, 1.0, False) == 0
    assert minority_of(80, 12) == 1 and minority_of(10, 30) == 0 and minority_of(5, 5) == 1


def test_points_are_judged_against_the_receivers_own_ranges_one_by_one():
    low, high = np.array([0.0, -2.0]), np.array([1.0, 2.0])  # ranges 1 and 4
    ok = np.array([[1.9, 5.9], [-0.9, -5.9]], np.float32)  # each within 1 range of its interval
    y = np.ones(2, np.int8)
    same = np.asarray
    kept = screen_points(ok, y, cap=2, label=1, tolerance=1.0, low=low, high=high, transform=same)
    assert kept.refused is None and kept.dropped == {} and np.array_equal(kept.X, ok) and list(kept.y) == [1, 1]
    # the set as a whole: a count over the cap or a wrong label refuses every point
    refused = screen_points(ok, y, cap=1, label=1, tolerance=1.0, low=low, high=high, transform=same)
    assert refused.refused.startswith("too-many-points: 2") and len(refused.y) == 0 and refused.X.shape == (0, 2)
    assert screen_points(ok, y, cap=2, label=0, tolerance=1.0, low=low, high=high, transform=same).refused.startswith("wrong-label: 2 point(s)")
    # each point on its own: only the one 4.1 below the low end of a range of 4 is dropped
    far = np.concatenate([ok, [[0.5, -6.1]]]).astype(np.float32)
    screened = screen_points(far, np.ones(3, np.int8), cap=3, label=1, tolerance=1.0, low=low, high=high, transform=same)
    assert screened.refused is None and np.array_equal(screened.X, ok)
    count, detail = screened.dropped["out-of-range"]
    assert count == 1 and "row 2, feature 1 at -6.1" in detail
    # a point that overflows the receiver's scaling is out of range too; the finite one stays
    inf = np.array([[np.inf, 0.0], [0.5, 0.0]], np.float32)
    screened = screen_points(inf, y, cap=2, label=1, tolerance=1.0, low=low, high=high, transform=same)
    assert screened.dropped["out-of-range"][0] == 1 and screened.X.tolist() == [[0.5, 0.0]]


def test_a_flood_is_refused_before_any_point_is_transformed():
    def transform(X):
        raise AssertionError("a flood must be refused before any point is transformed")

    screened = screen_points(np.zeros((200_000, 2), np.float32), np.ones(200_000, np.int8), transform=transform,
                             cap=154, label=1, tolerance=10.0, low=np.zeros(2), high=np.ones(2))
    assert screened.refused.startswith("too-many-points: 200000") and len(screened.y) == 0


def _grid_regions(tolerance=1.25):
    """Benign rows on the unit grid 0..4 × 0..4, attack rows on the grid 10..12 × 0..2: most
    rows of either have their 3rd nearest other row at 1 (corners at √2), so both spacings are 1."""
    benign = np.array([(i, j) for i in range(5) for j in range(5)], np.float32)
    attack = np.array([(i, j) for i in range(10, 13) for j in range(3)], np.float32)
    X = np.concatenate([benign, attack])
    y = np.concatenate([np.zeros(len(benign)), np.ones(len(attack))]).astype(np.int8)
    return ClassRegions(X, y, tolerance)


def test_several_neighbours_sets_go_through_one_transform_and_are_each_judged_alone():
    """screen_point_sets: the sets that pass the set checks are transformed in one call (a flood
    or a wrong label never reaches it), and every set comes out as screen_points gives it alone."""
    regions = _grid_regions()
    low, high = np.zeros(2), np.array([12.0, 4.0])
    calls = []

    def transform(X):
        calls.append(len(X))
        return np.asarray(X, np.float32) * 1.0

    g = np.random.default_rng(0)
    sets = [
        (np.r_[g.uniform(0, 12, (5, 2)), [[2.5, 2.0], [50.0, 1.0]]].astype(np.float32), np.ones(7, np.int8), 10, 1),  # one in a region, one out
        (np.zeros((50, 2), np.float32), np.ones(50, np.int8), 20, 1),                    # a flood
        (g.uniform(0, 12, (4, 2)).astype(np.float32), np.zeros(4, np.int8), 10, 1),     # wrong labels
        (np.empty((0, 2), np.float32), np.empty(0, np.int8), 10, 1),                     # nothing shared
        (g.uniform(0, 12, (9, 2)).astype(np.float32), np.zeros(9, np.int8), 10, 0),     # benign minority
    ]
    together = screen_point_sets(sets, transform=transform, tolerance=0.05, low=low, high=high, regions=regions)
    assert calls == [7 + 0 + 9]
    for (X, y, cap, label), got in zip(sets, together):
        alone = screen_points(X, y, cap=cap, label=label, transform=transform, tolerance=0.05, low=low, high=high,
                              regions=regions)
        assert got.refused == alone.refused and got.dropped == alone.dropped
        np.testing.assert_array_equal(got.X, alone.X)
        np.testing.assert_array_equal(got.y, alone.y)
    assert together[1].refused.startswith("too-many-points") and together[2].refused.startswith("wrong-label")
    assert set(together[0].dropped) == {"out-of-range", "class-region"} and together[3].X.shape == (0, 2)
    assert screen_point_sets([], transform=transform, tolerance=0.05, low=low, high=high) == []


def test_class_regions_by_hand():
    regions = _grid_regions()
    assert regions.radius == {0: 1.25, 1: 1.25}  # 1.25 × the median 3rd-nearest-row distance, 1
    points = np.array([[2.5, 2.0],    # amid the benign rows: (2,2), (3,2) at 0.5, the 3rd at √1.25
                       [6.5, 1.0],    # between the classes: its 3 nearest rows benign, the 3rd √7.25 away
                       [11.0, 1.0],   # amid the attack rows
                       [2.0, 2.0]],   # on a benign row: the 3rd nearest at 1
                      np.float32)
    inside, farthest = regions.inside_other(points, np.ones(4, np.int8))
    assert inside.tolist() == [True, False, False, True]
    assert np.allclose(farthest[[0, 1, 3]], [np.sqrt(1.25), np.sqrt(7.25), 1.0]) and np.isnan(farthest[2])
    # the same points labelled benign: only the one amid the attack rows is in the other class's region
    assert regions.inside_other(points, np.zeros(4, np.int8))[0].tolist() == [False, False, True, False]
    # a tolerance scales the radius: 1 reaches only the point on a row, 0 none, 3 the point at √7.25
    assert _grid_regions(1.0).inside_other(points, np.ones(4, np.int8))[0].tolist() == [False, False, False, True]
    assert not _grid_regions(0.0).inside_other(points, np.ones(4, np.int8))[0].any()
    assert _grid_regions(3.0).inside_other(points, np.ones(4, np.int8))[0].tolist() == [True, True, False, True]


def test_one_row_of_the_other_class_next_to_a_point_does_not_make_a_region():
    """Real N-BaIoT: the benign sample holds single-packet rows equal to gafgyt tcp's, so an honest
    neighbour's tcp-flood points land on one benign row, the next ones far away. The nearest row
    alone would call the point benign region; the 3rd nearest does not."""
    benign = np.array([(i, j) for i in range(5) for j in range(5)] + [(20.0, 20.0)], np.float32)  # one stray row
    X = np.concatenate([benign, [[40.0, 40.0]] * 4]).astype(np.float32)
    regions = ClassRegions(X, np.r_[np.zeros(len(benign)), np.ones(4)].astype(np.int8), 1.0)
    inside, farthest = regions.inside_other(np.array([[20.1, 20.0]], np.float32), np.ones(1, np.int8))
    assert not inside[0] and farthest[0] > 20  # its nearest row is 0.1 away, its 3rd ~22


def test_a_class_of_at_most_k_rows_has_no_region():
    X = np.array([[0, 0], [0, 1], [1, 0], [5, 5], [5, 6], [6, 5]], np.float32)
    regions = ClassRegions(X, np.array([0, 0, 0, 1, 1, 1], np.int8), 1.0)
    assert regions.radius == {}
    assert not regions.inside_other(X[:3], np.ones(3, np.int8))[0].any()


def test_a_large_class_spacing_is_estimated_from_a_sample_of_its_rows():
    benign = np.array([(i, j) for i in range(60) for j in range(60)], np.float32)  # 3,600 rows > SPACING_SAMPLE
    attack = np.array([(i, j) for i in range(100, 105) for j in range(100, 105)], np.float32)
    X = np.concatenate([benign, attack]).astype(np.float32)
    regions = ClassRegions(X, np.r_[np.zeros(len(benign)), np.ones(len(attack))].astype(np.int8), 0.5)
    assert regions.radius == {0: 0.5, 1: 0.5}  # most grid rows' 3rd nearest other row is 1 away, sampled or not


def test_class_regions_take_the_kth_nearest_row_of_the_class_from_the_one_search_over_all_rows():
    """A point surrounded by class c has its k nearest rows of c as its k nearest rows, so
    inside_other takes the k-th distance from its one search over every row: the same value, to
    the bit, as a search over the rows of c alone — on rows with many ties (0/1 columns) too."""
    from sklearn.neighbors import NearestNeighbors

    for seed in range(6):
        g = np.random.default_rng(seed)
        X = np.vstack([g.random((900, 12)), g.random((30, 12)) * 0.5 + 0.3]).astype(np.float32)
        X[:, 6:] = np.round(X[:, 6:]) if seed % 2 else X[:, 6:]
        y = np.r_[np.zeros(900), np.ones(30)].astype(np.int8)
        points = g.random((300, 12)).astype(np.float32)
        points[:, 6:] = np.round(points[:, 6:]) if seed % 2 else points[:, 6:]
        labels = g.integers(0, 2, 300).astype(np.int8)
        inside, nearest = ClassRegions(X, y, 1.0).inside_other(points, labels)
        computed = np.flatnonzero(~np.isnan(nearest))
        assert computed.size > 50
        for c in (0, 1):
            rows = computed[labels[computed] == 1 - c]
            if rows.size:
                alone, _ = NearestNeighbors(n_neighbors=3).fit(X[y == c]).kneighbors(points[rows])
                np.testing.assert_array_equal(nearest[rows], alone[:, -1])


def test_class_region_points_are_dropped_one_by_one_after_the_range_check():
    regions = _grid_regions()
    low, high = np.zeros(2), np.array([12.0, 4.0])
    points = np.array([[2.5, 2.0], [11.0, 1.0], [6.5, 1.0], [500.0, 1.0]], np.float32)
    screened = screen_points(points, np.ones(4, np.int8), cap=4, label=1, tolerance=1.0, low=low, high=high,
                             transform=np.asarray, regions=regions)
    assert screened.X.tolist() == [[11.0, 1.0], [6.5, 1.0]]
    assert screened.dropped["out-of-range"][0] == 1
    count, detail = screened.dropped["class-region"]
    assert count == 1 and detail.startswith("inside this peer's own class-0 region (row 0:")
    off = screen_points(points, np.ones(4, np.int8), cap=4, label=1, tolerance=1.0, low=low, high=high, transform=np.asarray)
    assert "class-region" not in off.dropped and len(off.y) == 3


def test_degenerate_states():
    assert degenerate_state({"w": np.ones(2, np.float32), "bn.running_var": np.ones(2, np.float32)}) is None
    # a variance that decayed to about 0 comes back from w0 + delta a float32 ulp below 0: harmless
    assert degenerate_state({"bn.running_var": np.array([1.0, 0.0, -6e-8], np.float32)}) is None
    assert degenerate_state({"bn.running_var": np.array([1.0, -5e-6, -3.0], np.float32)}).startswith("degenerate: bn.running_var has 2")
    assert degenerate_state({"w": np.array([np.nan], np.float32)}).startswith("degenerate: w holds NaN")
