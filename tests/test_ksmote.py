"""K-SMOTE (Algorithm 1, equation 3): hand-computed points, the convex-hull property, exact
counts, edge cases, determinism and imbalanced-learn compatibility."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imblearn.pipeline import Pipeline
from scipy.optimize import linprog
from sklearn.base import clone
from sklearn.naive_bayes import GaussianNB

from p2p_job.ksmote import KSMOTE, NeighbourCache, base_neighbourhoods, interpolate, ksmote_sample, n_synthetic


@pytest.mark.parametrize(
    ("n_majority", "n_minority", "ratio", "expected"),
    [
        (100, 10, 1.0, 90),
        (100, 10, 0.5, 40),
        (101, 0, 0.5, 50),  # 50.5 truncated, as imbalanced-learn does
        (100, 10, 2.0, 190),
        (100, 60, 0.5, 0),  # the minority already exceeds r·|D_maj|: nothing to make
        (100, 100, 1.0, 0),
    ],
)
def test_n_synthetic(n_majority, n_minority, ratio, expected):
    assert n_synthetic(n_majority, n_minority, ratio) == expected


def test_interpolate_matches_hand_computed_points():
    bases = np.array([[0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    neighbours = np.array([[[2.0, 0.0], [0.0, 4.0]], [[3.0, 1.0], [1.0, 3.0]]], dtype=np.float32)
    uniforms = np.array(
        [[[0.5, 0.25], [1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.5, 0.5], [0.2, 0.6]]], dtype=np.float32
    )
    # x_b + (1/2)·[(x_1 − x_b)·U_1 + (x_2 − x_b)·U_2], worked by hand:
    expected = np.array(
        [
            [[0.5, 0.5], [1.0, 2.0], [0.0, 0.0]],  # (0,0) + ½[(2,0)·.5 + (0,4)·.25], ½[(2,0)+(0,4)], base
            [[2.0, 1.0], [1.5, 1.5], [1.2, 1.6]],  # (1,1) + ½[(2,0)·1], ½[(2,0)·.5+(0,2)·.5], ½[(2,0)·.2+(0,2)·.6]
        ]
    )
    np.testing.assert_allclose(interpolate(bases, neighbours, uniforms), expected, rtol=1e-6)


def test_interpolate_without_neighbours_copies_the_base():
    bases = np.array([[1.0, 2.0]], dtype=np.float32)
    points = interpolate(bases, np.empty((1, 0, 2), dtype=np.float32), np.empty((1, 3, 0), dtype=np.float32))
    np.testing.assert_array_equal(points, np.repeat(bases[:, None, :], 3, axis=1))


def test_neighbours_are_the_nearest_other_minority_points():
    X = np.array([[0.0], [1.0], [3.0], [10.0]], dtype=np.float32)
    bases, neighbours = base_neighbourhoods(X, 4, 1, np.random.default_rng(0))
    assert sorted(bases.tolist()) == [0, 1, 2, 3]
    nearest = {0: 1, 1: 0, 2: 1, 3: 2}
    assert {int(b): int(n[0]) for b, n in zip(bases, neighbours)} == nearest


def test_a_base_is_never_its_own_neighbour_even_among_duplicates():
    X = np.array([[0.0, 0.0]] * 5 + [[1.0, 1.0], [2.0, 2.0]], dtype=np.float32)
    bases, neighbours = base_neighbourhoods(X, 7, 4, np.random.default_rng(3))
    assert neighbours.shape == (7, 4)
    for base, row in zip(bases, neighbours):
        assert base not in row
        assert len(set(row.tolist())) == 4


def _neighbourhoods_and_rows(X: np.ndarray, n_samples: int, k: int, n_neighbors: int, seed: int):
    """Bases, their neighbours and the output rows made from each, as the module docstring
    documents: min(k, |D_min|, N_s) bases drawn first from the generator, the first
    N_s mod bases making one point more, rows grouped by base in draw order."""
    n_bases = min(k, len(X), n_samples)
    bases, neighbours = base_neighbourhoods(X, n_bases, min(n_neighbors, len(X) - 1), np.random.default_rng(seed))
    per_base, remainder = divmod(n_samples, n_bases)
    starts = np.cumsum([0, *(per_base + (i < remainder) for i in range(n_bases))])
    return bases, neighbours, [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]


def _distance_to_hull(point: np.ndarray, vertices: np.ndarray) -> float:
    """min ‖Σ λ_i v_i − p‖₁ over λ ≥ 0, Σ λ = 1 (a linear programme); 0 inside the hull."""
    n, d = vertices.shape
    # variables: λ (n), s⁺ (d), s⁻ (d);  Vᵀλ + s⁺ − s⁻ = p,  Σλ = 1
    A_eq = np.block([[vertices.T, np.eye(d), -np.eye(d)], [np.ones((1, n)), np.zeros((1, 2 * d))]])
    b_eq = np.concatenate([point, [1.0]])
    cost = np.concatenate([np.zeros(n), np.ones(2 * d)])
    result = linprog(cost, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert result.status == 0
    return float(result.fun)


@settings(max_examples=40, deadline=None)
@given(
    n_min=st.integers(1, 12),
    d=st.integers(1, 4),
    n_samples=st.integers(1, 25),
    k=st.integers(1, 6),
    n_neighbors=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_every_point_lies_in_the_hull_of_its_base_and_neighbours(n_min, d, n_samples, k, n_neighbors, seed):
    X = np.random.default_rng(seed + 1).normal(size=(n_min, d)).astype(np.float32)
    points = ksmote_sample(X, n_samples, k, n_neighbors, np.random.default_rng(seed))
    assert points.shape == (n_samples, d) and points.dtype == np.float32  # exactly N_s points
    bases, neighbours, groups = _neighbourhoods_and_rows(X, n_samples, k, n_neighbors, seed)
    for base, row_neighbours, rows in zip(bases, neighbours, groups):
        vertices = X[[base, *row_neighbours]].astype(np.float64)
        for point in points[rows]:
            assert _distance_to_hull(point.astype(np.float64), vertices) < 1e-4


def test_points_are_convex_combinations_with_the_equation_3_coefficients():
    # Reconstruct the coefficients: with N = d = 2 and independent neighbour directions, the
    # step from x_b is (x_1 − x_b, x_2 − x_b) @ (U_1/2, U_2/2), each in [0, 1/2].
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    points = ksmote_sample(X, 300, 1, 2, np.random.default_rng(7))
    bases, neighbours = base_neighbourhoods(X, 1, 2, np.random.default_rng(7))
    directions = X[neighbours[0]] - X[bases[0]]  # (2, d)
    coefficients = np.linalg.solve(directions.T, (points - X[bases[0]]).T).T
    assert coefficients.min() >= -1e-6 and coefficients.max() <= 0.5 + 1e-6
    # U spreads over [0, 1]: the coefficients fill [0, 1/2] in both directions
    assert coefficients.min(axis=0).max() < 0.05 and coefficients.max(axis=0).min() > 0.45


@pytest.mark.parametrize(("n_min", "n_samples", "k"), [(40, 30, 15), (40, 37, 15), (40, 7, 15), (40, 1000, 4), (3, 11798, 15)])
def test_exactly_the_requested_number_of_points(n_min, n_samples, k):
    # Where the remainder goes (the first bases) is checked by the hull property above.
    X = np.random.default_rng(0).normal(size=(n_min, 3)).astype(np.float32)
    points = ksmote_sample(X, n_samples, k, 5, np.random.default_rng(1))
    assert points.shape == (n_samples, 3) and np.isfinite(points).all()


def test_determinism_under_a_seed():
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    first = ksmote_sample(X, 100, 15, 20, np.random.default_rng(42))
    np.testing.assert_array_equal(first, ksmote_sample(X, 100, 15, 20, np.random.default_rng(42)))
    assert not np.array_equal(first, ksmote_sample(X, 100, 15, 20, np.random.default_rng(43)))


def test_single_minority_point_gives_copies_of_it():
    X = np.array([[1.5, -2.0, 3.0]], dtype=np.float32)
    np.testing.assert_array_equal(ksmote_sample(X, 4, 15, 20, np.random.default_rng(0)), np.repeat(X, 4, axis=0))


def test_few_minority_points_are_all_bases_and_all_neighbours():
    # 3 points, k = 15, N = 20: every point is a base and the other two are its neighbours.
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    bases, neighbours = base_neighbourhoods(X, 3, 2, np.random.default_rng(0))
    assert sorted(bases.tolist()) == [0, 1, 2]
    assert all(sorted([b, *row]) == [0, 1, 2] for b, row in zip(bases.tolist(), neighbours.tolist()))
    points = ksmote_sample(X, 30, 15, 20, np.random.default_rng(0))
    assert points.shape == (30, 2)
    assert (points >= -1e-7).all() and (points.sum(axis=1) <= 1 + 1e-6).all()  # inside the triangle


@pytest.mark.parametrize(("X_min", "n_samples"), [(np.empty((0, 3)), 10), (np.ones((5, 3)), 0), (np.ones((5, 3)), -4)])
def test_nothing_to_make_gives_no_points(X_min, n_samples):
    points = ksmote_sample(X_min, n_samples, 15, 20, np.random.default_rng(0))
    assert points.shape == (0, 3) and points.dtype == np.float32


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="2-D"):
        ksmote_sample(np.ones(5), 3, 15, 20, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k=0"):
        ksmote_sample(np.ones((5, 2)), 3, 0, 20, np.random.default_rng(0))
    with pytest.raises(ValueError, match="out must be"):
        ksmote_sample(np.ones((5, 2)), 3, 15, 20, np.random.default_rng(0), out=np.empty((4, 2)))


# ----------------------------------------------------------------------------- the sampler


def _imbalanced(n_majority=200, n_minority=20, minority_label=1, seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (n_majority, 3)), rng.normal(4, 1, (n_minority, 3))])
    y = np.concatenate([np.full(n_majority, 1 - minority_label), np.full(n_minority, minority_label)])
    return X, y


@pytest.mark.parametrize(("strategy", "expected_minority"), [("auto", 200), (0.5, 100), ({1: 350}, 350)])
def test_sampler_counts_and_keeps_the_original_rows_first(strategy, expected_minority):
    X, y = _imbalanced()
    X_res, y_res = KSMOTE(sampling_strategy=strategy, random_state=0).fit_resample(X, y)
    assert np.bincount(y_res).tolist() == [200, expected_minority]
    np.testing.assert_array_equal(X_res[: len(X)], X)
    np.testing.assert_array_equal(y_res[len(X) :], 1)
    assert X_res.dtype == X.dtype
    new = X_res[len(X) :]
    minority = X[y == 1]
    assert (new >= minority.min(axis=0) - 1e-5).all() and (new <= minority.max(axis=0) + 1e-5).all()


def test_sampler_accepts_integer_features():
    X, y = _imbalanced()
    X_res, y_res = KSMOTE(random_state=0).fit_resample(np.round(X * 10).astype(np.int64), y)
    assert X_res.dtype == np.float64 and np.bincount(y_res).tolist() == [200, 200]


def test_sampler_decides_the_minority_from_counts():
    X, y = _imbalanced(minority_label=0)
    X_res, y_res = KSMOTE(random_state=0).fit_resample(X, y)
    assert np.bincount(y_res).tolist() == [200, 200]
    new = X_res[len(X) :]
    assert (y_res[len(X) :] == 0).all() and (new.mean(axis=0) > 2).all()  # near the label-0 cluster at 4


def test_sampler_is_deterministic_in_random_state():
    X, y = _imbalanced()
    first = KSMOTE(random_state=5).fit_resample(X, y)[0]
    np.testing.assert_array_equal(first, KSMOTE(random_state=5).fit_resample(X, y)[0])
    assert not np.array_equal(first, KSMOTE(random_state=6).fit_resample(X, y)[0])


def test_sampler_in_an_imblearn_pipeline():
    X, y = _imbalanced()
    pipeline = Pipeline([("ksmote", KSMOTE(sampling_strategy=0.5, random_state=0)), ("model", GaussianNB())])
    pipeline.fit(X, y)
    assert pipeline.named_steps["model"].class_count_.tolist() == [200, 100]  # trained on the resampled set
    assert len(pipeline.predict(X)) == len(X)  # samplers are skipped at predict time
    cloned = clone(pipeline)
    assert cloned.named_steps["ksmote"].get_params()["sampling_strategy"] == 0.5


def test_sampler_errors_are_clear():
    X, y = _imbalanced()
    with pytest.raises(ValueError, match="more than 1 class"):
        KSMOTE().fit_resample(X, np.zeros_like(y))  # empty minority
    with pytest.raises(ValueError, match="ratio"):
        KSMOTE(sampling_strategy=0.05).fit_resample(X, y)  # asks for no points
    with pytest.raises(ValueError, match="'k' parameter"):
        KSMOTE(k=0).fit_resample(X, y)


def test_neighbour_cache_gives_the_same_points_and_fits_once_per_minority():
    """A peer rebalances the same D_base every round: one fitted search serves every round,
    and every round's points are those of an uncached sampler with the same seed."""
    X, y = _imbalanced()
    cache = NeighbourCache()
    for seed in range(4):  # four "rounds"
        cached = KSMOTE(random_state=seed, neighbour_cache=cache).fit_resample(X, y)
        fresh = KSMOTE(random_state=seed).fit_resample(X, y)
        np.testing.assert_array_equal(cached[0], fresh[0])
        np.testing.assert_array_equal(cached[1], fresh[1])
    assert cache.fits == 1
    # Other minority rows (or another N) fit a new search, and give their own exact points.
    X_other = X.copy()
    X_other[y == 1] += 0.5
    np.testing.assert_array_equal(
        KSMOTE(random_state=0, neighbour_cache=cache).fit_resample(X_other, y)[0], KSMOTE(random_state=0).fit_resample(X_other, y)[0]
    )
    KSMOTE(random_state=0, n_neighbors=3, neighbour_cache=cache).fit_resample(X_other, y)
    assert cache.fits == 3
    assert clone(KSMOTE(neighbour_cache=cache)).get_params()["neighbour_cache"] is not None


# --------------------------------------------------------------------------- categorical features


def _mixed(n_min: int, seed: int) -> np.ndarray:
    """Minority rows: 2 numeric columns, then a 3-category and a 2-category one-hot block."""
    g = np.random.default_rng(seed)
    numeric = g.normal(size=(n_min, 2))
    first = np.eye(3)[g.integers(0, 3, n_min)]
    second = np.eye(2)[g.integers(0, 2, n_min)]
    return np.hstack([numeric, first, second]).astype(np.float32)


BLOCKS = ((2, 5), (5, 7))


@settings(max_examples=30, deadline=None)
@given(n_min=st.integers(1, 12), n_samples=st.integers(1, 25), k=st.integers(1, 6), n_neighbors=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_categorical_points_are_valid_and_take_their_neighbourhoods_category(n_min, n_samples, k, n_neighbors, seed):
    X = _mixed(n_min, seed + 1)
    points = ksmote_sample(X, n_samples, k, n_neighbors, np.random.default_rng(seed), onehot_blocks=BLOCKS)
    numeric_only = ksmote_sample(X, n_samples, k, n_neighbors, np.random.default_rng(seed))
    # Eq. 3 on the numeric part, exactly as without categories (same draws).
    np.testing.assert_array_equal(points[:, :2], numeric_only[:, :2])
    bases, neighbours, groups = _neighbourhoods_and_rows(X, n_samples, k, n_neighbors, seed)
    for base, row_neighbours, rows in zip(bases, neighbours, groups):
        vertices = X[[base, *row_neighbours]][:, :2].astype(np.float64)
        for start, stop in BLOCKS:
            around = X[list(row_neighbours) or [base], start:stop].sum(axis=0)  # category counts among the neighbours
            for point in points[rows]:
                block = point[start:stop]
                assert sorted(block.tolist()) == [0.0] * (stop - start - 1) + [1.0]  # one valid category
                assert around[np.argmax(block)] == around.max()  # the most frequent one
                assert np.argmax(block) == np.argmax(around)  # lowest column on a tie
        for point in points[rows]:
            assert _distance_to_hull(point[:2].astype(np.float64), vertices) < 1e-4


def test_categorical_category_by_hand_and_determinism():
    # Base 0 (category c0) has neighbours 1, 2 (c2, c2) and 3 (c1): its points take c2.
    X = np.array([[0, 0, 1, 0, 0], [0.1, 0, 0, 0, 1], [0, 0.1, 0, 0, 1], [0.2, 0.2, 0, 1, 0]], np.float32)
    sampler = KSMOTE(sampling_strategy={1: 10}, k=1, n_neighbors=3, random_state=3, onehot_blocks=[(2, 5)])
    y = np.array([0] * 6 + [1] * 4)
    X_all = np.vstack([np.zeros((6, 5), np.float32), X])
    X_res, _ = sampler.fit_resample(X_all, y)
    again, _ = clone(sampler).fit_resample(X_all, y)
    np.testing.assert_array_equal(X_res, again)
    new = X_res[len(X_all):]
    assert len(new) == 6
    bases, neighbours = base_neighbourhoods(X, 1, 3, np.random.default_rng(np.random.RandomState(3).randint(2**31 - 1)))
    expected = np.argmax(X[neighbours[0], 2:].sum(axis=0))
    assert (np.argmax(new[:, 2:], axis=1) == expected).all() and (new[:, 2:].sum(axis=1) == 1).all()
    if bases[0] == 0:
        assert expected == 2
