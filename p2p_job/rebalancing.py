"""Rebalancing methods compared in §5 (Algorithm 2, line 5): K-SMOTE and its baselines.

Every method reads the same ratio ``r`` (``spec.rebalancing.ratio``) the same way: afterwards
the minority holds about ``r·|D_maj|`` rows.

- ``none``: the data as it is.
- ``random-over``: imbalanced-learn ``RandomOverSampler``; the added copies are D_syn.
- ``random-under``: imbalanced-learn ``RandomUnderSampler`` keeps ``|D_min| / r`` majority rows
  (at least one, at most all); no D_syn.
- ``smote``: imbalanced-learn ``SMOTE`` with ``k_neighbors = min(N, |D_min| − 1)``.
- ``ksmote``: :class:`p2p_job.ksmote.KSMOTE` (Algorithm 1), its resampling called directly
  (:func:`p2p_job.ksmote.ksmote_resample`: the same rows, without imbalanced-learn's input checks).

Over-samplers add ``N_s = r·|D_maj| − |D_min|`` points (:func:`p2p_job.ksmote.n_synthetic`),
passed to imbalanced-learn as a per-class target count so that ``r > 1`` works too.

The minority is decided from this client's own counts (in scenario 3 it is benign on some
clients): the class with fewer rows, label 1 (malicious) on a tie, and the missing class when
only one is present. Degenerate data (one class only, or a minority of one row) is returned
unchanged with no synthetic points, whatever the method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler

from p2p_job.ksmote import KSMOTE, NeighbourCache, ksmote_resample, n_synthetic
from p2p_job.spec import RebalancingSpec

METHODS = ("none", "random-over", "random-under", "smote", "ksmote")


@dataclass(frozen=True)
class Rebalanced:
    """What a method produces from one client's base data."""

    X: np.ndarray  # float32 (n, d): the training set (D_base ∪ D_syn, or the under-sample)
    y: np.ndarray  # int8
    synthetic_X: np.ndarray  # float32: D_syn alone (empty for none / random-under)
    synthetic_y: np.ndarray  # int8, all equal to ``minority``
    minority: int  # 0 or 1


def snap_categories(X: np.ndarray, onehot_blocks) -> None:
    """Set each one-hot block of the rows of ``X`` (in place) to the category of its largest entry."""
    for start, stop in onehot_blocks:
        chosen = np.argmax(X[:, start:stop], axis=1)
        X[:, start:stop] = 0
        X[np.arange(len(X)), start + chosen] = 1


def minority_label(y: np.ndarray) -> int:
    """The class with fewer rows in ``y`` (0/1 labels); 1 on a tie."""
    n_benign, n_malicious = np.bincount(y, minlength=2)
    return 0 if n_benign < n_malicious else 1


def _sampler(method: str, minority: int, n_min: int, n_maj: int, params: RebalancingSpec, seed: int,
             cache: NeighbourCache | None = None, onehot_blocks: tuple[tuple[int, int], ...] = ()):
    """The imbalanced-learn sampler for ``method``, or None when it would not change the data."""
    if method == "random-under":
        keep = min(n_maj, max(1, int(n_min / params.ratio)))
        return RandomUnderSampler(sampling_strategy={1 - minority: keep}, random_state=seed) if keep < n_maj else None
    n_new = n_synthetic(n_maj, n_min, params.ratio)
    if n_new == 0:
        return None
    target = {minority: n_min + n_new}
    if method == "random-over":
        return RandomOverSampler(sampling_strategy=target, random_state=seed)
    if method == "smote":
        return SMOTE(sampling_strategy=target, k_neighbors=min(params.neighbours, n_min - 1), random_state=seed)
    return KSMOTE(sampling_strategy=target, k=params.k, n_neighbors=params.neighbours, random_state=seed, neighbour_cache=cache,
                  onehot_blocks=onehot_blocks)


def rebalance(method: str, X, y, params: RebalancingSpec, rng: np.random.Generator,
              cache: NeighbourCache | None = None, onehot_blocks: tuple[tuple[int, int], ...] = ()) -> Rebalanced:
    """Apply rebalancing ``method`` to one client's base data ``(X, y)``.

    ``rng`` seeds the sampler (one integer is drawn from it whatever the method, so the
    stream's later use does not depend on the method). Over-samplers keep the original rows
    first and append D_syn. ``cache`` (one per peer) lets K-SMOTE reuse its neighbour search
    while the minority rows stay the same (:class:`p2p_job.ksmote.NeighbourCache`).
    ``onehot_blocks`` are the column ranges of one-hot encoded categorical features: K-SMOTE
    gives them the category of the base's neighbours (SMOTE-NC's rule); SMOTE's interpolated
    points get, per block, the category of their largest entry, so every synthetic point has a
    valid category.
    """
    if method not in METHODS:
        raise ValueError(f"unknown rebalancing method {method!r}; expected one of {', '.join(METHODS)}")
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (len(X),):
        raise ValueError(f"X must be (rows, features) and y one label per row; got X {X.shape}, y {y.shape}")
    bad = np.flatnonzero(~np.isin(y, (0, 1)))
    if bad.size:
        raise ValueError(f"labels must be 0 (benign) or 1 (malicious); row {bad[0]} has {y[bad[0]]}")
    y = y.astype(np.int8)
    seed = int(rng.integers(2**31 - 1))
    minority = minority_label(y)
    n_min = int(np.sum(y == minority))
    sampler = None
    if method != "none" and n_min >= 2:
        sampler = _sampler(method, minority, n_min, len(y) - n_min, params, seed, cache, tuple(onehot_blocks))
    if sampler is None:
        X_out, y_out = X, y
    elif isinstance(sampler, KSMOTE):  # X and y are checked above: imbalanced-learn's checks are skipped
        n_new = {minority: sampler.sampling_strategy[minority] - n_min}
        X_out, y_out = ksmote_resample(X, y, n_new, sampler.k, sampler.n_neighbors, sampler.random_state, cache, onehot_blocks)
    else:
        X_out, y_out = sampler.fit_resample(X, y)
        X_out, y_out = X_out.astype(np.float32, copy=False), y_out.astype(np.int8, copy=False)
    n_added = max(0, len(y_out) - len(y))
    if method == "smote":
        snap_categories(X_out[len(X_out) - n_added :], onehot_blocks)
    return Rebalanced(
        X=X_out,
        y=y_out,
        synthetic_X=X_out[len(X_out) - n_added :],
        synthetic_y=y_out[len(y_out) - n_added :],
        minority=minority,
    )
