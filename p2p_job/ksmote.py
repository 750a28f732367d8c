"""K-SMOTE: the paper's over-sampler (§4.2, Algorithm 1, equation 3).

SMOTE makes every synthetic point on the segment between a minority point and ONE of its
nearest minority neighbours, for every minority point. K-SMOTE instead

1. picks ``k`` base minority points at random, without replacement (Algorithm 1, line 2);
2. finds each base's ``N`` nearest minority neighbours, the base itself excluded (line 6);
3. makes ``n_s = N_s / k`` points per base (line 3) with equation 3 (line 9)::

       x_s = x_b + (1/|N|) · Σ_n (x_n − x_b) · U_n,   U_n ~ Uniform(0, 1)

   drawing an independent ``U_n`` for every neighbour AND every synthetic point.

So a synthetic point is the convex combination ``(1 − Σ_n U_n/|N|)·x_b + Σ_n (U_n/|N|)·x_n`` of
its base and all its neighbours: it always lies in their convex hull.

The total is ``N_s = r·|D_maj| − |D_min|`` (line 1), computed by :func:`n_synthetic`.

Choices the paper leaves open, fixed here:

- ``N_s`` is truncated to an integer as imbalanced-learn truncates a float ``sampling_strategy``,
  and is never negative: a ratio that asks for nothing gives no points.
- When ``k`` does not divide ``N_s``, the first ``N_s mod k`` bases (in the order they were
  drawn) make one point more, so exactly ``N_s`` points come out. Rows are grouped by base,
  in that order.
- Fewer minority points than ``k`` (or fewer requested points than ``k``): every minority point
  (every one of the first ``N_s``) serves as a base: ``min(k, |D_min|, N_s)`` bases.
- ``|D_min| − 1 ≤ N``: a base's neighbours are all the other minority points.
- A single minority point has no neighbours: the sum in equation 3 is empty and every
  synthetic point is a copy of it.
- An empty minority gives no points (:func:`ksmote_sample`); :class:`KSMOTE` raises, as every
  imbalanced-learn sampler does for data with one class.
- Which class is the minority is decided from the counts (label 0 may be the minority).

Categorical features (``onehot_blocks``, the one-hot columns of each categorical feature, as
:class:`p2p_job.preprocessing.Preprocessor` lays them out): equation 3 would give a point a
fraction of several categories, which no real row has. As SMOTE-NC does (Chawla et al., 2002;
imbalanced-learn's ``SMOTENC``), the numeric part follows equation 3 and each categorical
feature takes the category most frequent among the base point's N neighbours (the lowest
column on a tie; the base's own category when it has no neighbour), one-hot encoded. Neighbours
are searched on every encoded column (a different category adds √2 to the distance).
"""

from __future__ import annotations

import hashlib
import numbers

import numpy as np
from imblearn.over_sampling.base import BaseOverSampler
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval


def n_synthetic(n_majority: int, n_minority: int, ratio: float) -> int:
    """``N_s = r·|D_maj| − |D_min|`` (Algorithm 1, line 1), truncated as imbalanced-learn does
    for a float ratio, and 0 when the minority already reaches ``r·|D_maj|``."""
    return max(0, int(ratio * n_majority - n_minority))


def interpolate(
    bases: np.ndarray, neighbours: np.ndarray, uniforms: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Equation 3 (Algorithm 1, line 9) for a batch of bases, with the uniforms given.

    ``bases`` (k, d) holds the base points x_b, ``neighbours`` (k, N, d) their neighbours x_n,
    ``uniforms`` (k, m, N) one U_n(0, 1) per base, point and neighbour. Returns (k, m, d),
    written into ``out`` when given: point ``[b, s]`` is
    ``x_b + (1/N) · Σ_n (x_n − x_b) · uniforms[b, s, n]``, the sum over n being one batched
    matrix product. With no neighbours (N = 0) the sum is empty and every point is x_b.
    """
    k, m, n_neighbours = uniforms.shape
    if out is None:
        out = np.empty((k, m, bases.shape[1]), dtype=np.result_type(bases, uniforms))
    if n_neighbours == 0:
        out[...] = bases[:, None, :]
        return out
    scaled_differences = (neighbours - bases[:, None, :]) / n_neighbours  # (x_n − x_b) / |N|, (k, N, d)
    np.matmul(uniforms, scaled_differences, out=out)
    out += bases[:, None, :]
    return out


class NeighbourCache:
    """The fitted nearest-neighbour search of the last minority rows seen (Algorithm 1, line 6).

    A peer rebalances the same D_base every round, so its minority rows do not change and the
    search is fitted once: pass one cache per peer to :class:`KSMOTE` (``neighbour_cache``).
    The key is the rows' shape, dtype and SHA-256 digest, and N; any other rows fit (and keep) a
    new search. Queries then return exactly what a freshly fitted search would. ``fits`` counts
    the searches fitted."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._search: NearestNeighbors | None = None
        self.fits = 0

    def search(self, X_min: np.ndarray, n_neighbors: int) -> NearestNeighbors:
        """A ``NearestNeighbors(n_neighbors)`` fitted on ``X_min`` (a copy of it)."""
        rows = np.ascontiguousarray(X_min)
        key = (rows.shape, rows.dtype.str, n_neighbors, hashlib.sha256(rows).digest())
        if key != self._key or self._search is None:
            self._search = NearestNeighbors(n_neighbors=n_neighbors).fit(rows.copy())
            self._key = key
            self.fits += 1
        return self._search


def base_neighbourhoods(
    X_min: np.ndarray, n_bases: int, n_neighbors: int, rng: np.random.Generator, cache: NeighbourCache | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1, lines 2 and 6: draw ``n_bases`` distinct base rows of ``X_min`` at random
    (this is the first use of ``rng``) and find each one's ``n_neighbors`` nearest other
    minority rows (scikit-learn ``NearestNeighbors``, Euclidean).

    Returns ``(bases, neighbours)``: row indices of shape (n_bases,) and (n_bases, n_neighbors).
    The base itself is never its own neighbour, even when duplicate rows tie with it.
    ``n_bases ≤ len(X_min)`` and ``n_neighbors ≤ len(X_min) − 1`` are the caller's to ensure.
    With a ``cache``, the search fitted on these rows before is reused (the same output).
    """
    bases = rng.choice(len(X_min), size=n_bases, replace=False)
    if n_neighbors == 0:
        return bases, np.empty((n_bases, 0), dtype=np.intp)
    cache = cache or NeighbourCache()
    search = cache.search(X_min, n_neighbors + 1)
    candidates = search.kneighbors(X_min[bases], return_distance=False)
    is_self = candidates == bases[:, None]
    # A duplicate of the base may come before it; then drop the farthest candidate instead.
    is_self[~is_self.any(axis=1), -1] = True
    return bases, candidates[~is_self].reshape(n_bases, n_neighbors)


def ksmote_sample(
    X_min: np.ndarray,
    n_samples: int,
    k: int,
    n_neighbors: int,
    rng: np.random.Generator,
    out: np.ndarray | None = None,
    cache: NeighbourCache | None = None,
    onehot_blocks: tuple[tuple[int, int], ...] = (),
) -> np.ndarray:
    """Algorithm 1: ``n_samples`` synthetic minority points (float32, shape (n_samples, d)).

    Bases come from :func:`base_neighbourhoods`, points from :func:`interpolate` with float32
    uniforms drawn from ``rng`` as (bases, points per base, N) blocks; the edge cases are those
    of the module docstring. ``out``, a C-contiguous float array of shape (n_samples, d),
    receives the points instead of a new array (so :class:`KSMOTE` writes straight into its
    result); it is returned, unless there are no points to make. ``cache``: see
    :class:`NeighbourCache`. ``onehot_blocks``: ``(start, stop)`` column ranges of one-hot
    encoded categorical features, set as the module docstring says.
    """
    X_min = np.asarray(X_min, dtype=np.float32)
    if X_min.ndim != 2:
        raise ValueError(f"X_min must be a 2-D array (rows, features); got shape {X_min.shape}")
    if k < 1 or n_neighbors < 1:
        raise ValueError(f"k and n_neighbors must be at least 1; got k={k}, n_neighbors={n_neighbors}")
    n_min, d = X_min.shape
    if n_samples <= 0 or n_min == 0:
        return np.empty((0, d), dtype=np.float32)
    n_bases = min(k, n_min, n_samples)
    bases, neighbours = base_neighbourhoods(X_min, n_bases, min(n_neighbors, n_min - 1), rng, cache)
    if out is None:
        out = np.empty((n_samples, d), dtype=np.float32)
    elif out.shape != (n_samples, d) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous array of shape {(n_samples, d)}; got {out.shape}")
    per_base, remainder = divmod(n_samples, n_bases)
    # The first `remainder` bases make per_base + 1 points, the others per_base: two blocks
    # of rows, each one batched interpolation written straight into `out`.
    split = remainder * (per_base + 1)
    for rows, block, count in (
        (slice(0, split), slice(0, remainder), per_base + 1),
        (slice(split, n_samples), slice(remainder, n_bases), per_base),
    ):
        block_bases = bases[block]
        uniforms = rng.random((len(block_bases), count, neighbours.shape[1]), dtype=np.float32)
        block_out = out[rows].reshape(len(block_bases), count, d)
        interpolate(X_min[block_bases], X_min[neighbours[block]], uniforms, out=block_out)
    for start, stop in onehot_blocks:
        category = _neighbourhood_category(X_min[:, start:stop], bases, neighbours)
        per_point = np.repeat(category, [per_base + 1] * remainder + [per_base] * (n_bases - remainder))
        out[:, start:stop] = 0
        out[np.arange(n_samples), start + per_point] = 1
    return out


def _neighbourhood_category(onehot: np.ndarray, bases: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Per base, the column of the category most frequent among its neighbours' one-hot rows
    (the lowest column on a tie); with no neighbours, the base's own category."""
    if neighbours.shape[1] == 0:
        return np.argmax(onehot[bases], axis=1)
    return np.argmax(onehot[neighbours].sum(axis=1), axis=1)


class KSMOTE(BaseOverSampler):
    """K-SMOTE as an imbalanced-learn over-sampler: drops into ``imblearn.pipeline.Pipeline``.

    Parameters
    ----------
    sampling_strategy : float, str, dict or callable, default="auto"
        As in imbalanced-learn. A float is the ratio ``r`` of Algorithm 1 in (0, 1]: the
        minority grows by ``N_s = r·|D_maj| − |D_min|`` points; imbalanced-learn rejects a float
        that asks for no points. For ``r > 1`` pass ``{minority_label: target_count}`` (as
        :func:`p2p_job.rebalancing.rebalance` does).
    k : int, default=15
        Base minority points picked at random (paper: 15).
    n_neighbors : int, default=20
        Nearest minority neighbours N of each base (paper: 20).
    random_state : None, int or RandomState
        Seeds the numpy ``Generator`` that :func:`ksmote_sample` draws from.
    neighbour_cache : NeighbourCache or None, default=None
        Reuse the nearest-neighbour search across calls on the same minority rows (a peer's
        every round); the output is the same with or without it.
    onehot_blocks : sequence of (start, stop), default=()
        Column ranges of one-hot encoded categorical features: their category comes from the
        base point's neighbours, as SMOTE-NC (module docstring).

    Synthetic points are appended after the original rows, class by class, as other
    imbalanced-learn over-samplers do. Sparse input is not supported.
    """

    _parameter_constraints: dict = {
        **BaseOverSampler._parameter_constraints,
        "k": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "neighbour_cache": [NeighbourCache, None],
        "onehot_blocks": ["array-like"],
    }

    def __init__(self, *, sampling_strategy="auto", k=15, n_neighbors=20, random_state=None, neighbour_cache=None, onehot_blocks=()):
        super().__init__(sampling_strategy=sampling_strategy)
        self.k = k
        self.n_neighbors = n_neighbors
        self.random_state = random_state
        self.neighbour_cache = neighbour_cache
        self.onehot_blocks = onehot_blocks

    def _check_X_y(self, X, y, accept_sparse=None):
        return super()._check_X_y(X, y, accept_sparse=False)

    def _fit_resample(self, X, y):
        return ksmote_resample(X, y, self.sampling_strategy_, self.k, self.n_neighbors, self.random_state,
                               self.neighbour_cache, self.onehot_blocks)


def ksmote_resample(X: np.ndarray, y: np.ndarray, n_new: dict, k: int, n_neighbors: int, random_state=None,
                    cache: NeighbourCache | None = None, onehot_blocks=()) -> tuple[np.ndarray, np.ndarray]:
    """What :meth:`KSMOTE.fit_resample` returns once imbalanced-learn has checked ``X`` (n, d)
    and ``y`` and turned the sampling strategy into ``n_new`` (label -> points to add): ``X``
    and ``y`` with each label's synthetic points appended, label by label
    (:func:`ksmote_sample`, drawing from a ``Generator`` seeded from ``random_state``).
    :func:`p2p_job.rebalancing.rebalance` calls it directly with inputs it has checked itself:
    on a peer's D_base, every round, imbalanced-learn's checks cost more than the sampling."""
    rng = np.random.default_rng(check_random_state(random_state).randint(2**31 - 1))
    n_rows = len(X) + sum(n_new.values())
    X_res = np.empty((n_rows, X.shape[1]), dtype=np.result_type(X.dtype, np.float32))  # integer X: float64
    X_res[: len(X)] = X
    y_parts, start = [y], len(X)
    for label, n_samples in n_new.items():
        rows = X_res[start : start + n_samples]
        ksmote_sample(X[y == label], n_samples, k, n_neighbors, rng, out=rows, cache=cache,
                      onehot_blocks=tuple(tuple(b) for b in onehot_blocks))
        y_parts.append(np.full(n_samples, label, dtype=y.dtype))
        start += n_samples
    return X_res, np.concatenate(y_parts)
