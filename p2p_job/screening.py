"""Screening a neighbour's publication against what the receiver knows, before any of it is used.

``p2p_job.payloads`` checks that the bytes are well formed (hashes, dtypes, finiteness, sizes);
this module checks that the *values* are believable for that neighbour, from facts every peer
holds without trusting the sender: the spec (each client's training counts, hence |D_base|, the
minority class its synthetic points belong to, and how many points α lets it share), the
receiver's own feature ranges, and the model's own invariants. Each check returns ``None`` or
``"<reason>: <detail>"`` with a reason of :data:`p2p_job.payloads.REJECT_REASONS`.

A publication has two parts, judged apart (DESIGN "Hostile neighbours"): its model (the delta,
with the weight inputs |D_base| and Var(D_base) of eq. 6) by the model checks, its shared points
(eq. 7) by the point checks. Refusing one part leaves the other to its own checks.

On the model:

* ``bad-weights`` — |D_k| above the training rows the spec gives client k, or a variance summary
  that is negative, not finite, or — when the spec's scaling puts every feature in [0, 1]
  (``minmax``, ``quantile``; one-hot columns too) — above 1/4 (Var(D_base) is then a mean of
  per-feature variances of values in [0, 1], at most 1/4 by Popoviciu's inequality). The weight inputs of
  equation 6 are self-reported; these are their hard bounds (``aggregation.maxWeightShare``
  caps their influence further).
* ``degenerate`` — a model that is not a model: a non-finite weight, a BatchNorm running variance
  at or below −ε/2 (BatchNorm divides by √(running_var + ε), ε = 1e-5), or non-finite outputs
  (checked by the peer with a forward pass). An honest variance can be about 0 (a unit whose
  weights decayed) and come back from w0 + delta a few float32 ulps below 0: that is no harm.

On the shared points, as a set (no honest sender fails these, so the whole set is refused):

* ``too-many-points`` — more shared points than equation 7 lets the sender publish:
  ``⌈α · r · |D_k|⌉`` (|D_syn| = r·|D_maj| − |D_min| ≤ r·|D_k|, Algorithm 1 line 1), 0 when
  the method does not share.
* ``wrong-label`` — a shared point whose label is not the sender's minority class (D_syn holds
  only minority points, and the spec's counts say which class that is on the sender).

On each shared point (an honest non-IID sender can fail these — its attack kinds may lie
outside the receiver's ranges — so only the failing points are dropped):

* ``out-of-range`` — a shared point farther than ``rebalancing.pointTolerance`` of the
  receiver's own feature ranges outside them (the ranges of its own preprocessed training rows;
  with min-max scaling: outside ``[−t, 1 + t]``), or not finite once in the receiver's units.
* ``class-region`` (``rebalancing.classRegion``) — a shared point inside the receiver's own
  region of the other class (:class:`ClassRegions`): its label contradicts the receiver's data
  there. This closes the label-flip hole the label check leaves: benign rows relabelled as the
  sender's minority (attack) carry the expected label, and would teach honest peers to flag
  benign traffic.

Every check looks at one publication and the receiver's own facts only, so a hostile neighbour
never makes an honest one fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.neighbors import NearestNeighbors

#: Var(D_base) of rows in [0, 1] is at most 1/4 (Popoviciu); a hair above for rounding.
MAX_UNIT_VARIANCE = 0.25 * (1 + 1e-9)
#: Scalings of ``dataset.preprocessing.scaling`` that put every feature in [0, 1].
UNIT_SCALINGS = ("minmax", "quantile")


def max_variance(scaling: str) -> float:
    """The largest Var(D_base) an honest client can report under ``scaling``."""
    return MAX_UNIT_VARIANCE if scaling in UNIT_SCALINGS else math.inf


def minority_of(benign: int, malicious: int) -> int:
    """The class a client's synthetic points have: its training minority (fewer rows; 1 on a
    tie), as ``p2p_job.rebalancing.minority_label`` decides it from the same counts."""
    return 0 if benign < malicious else 1


def point_cap(n_base: int, share_fraction: float, ratio: float, shares: bool) -> int:
    """Most shared points a sender with |D_base| = ``n_base`` may publish in a round (eq. 7:
    ``round(α·|D_syn|)`` with |D_syn| ≤ r·|D_base|), 0 when the method does not share."""
    return math.ceil(share_fraction * ratio * n_base) if shares else 0


def screen_weights(n_base: int, variance: float, spec_n_base: int, most_variance: float) -> str | None:
    """Equation 6's inputs: ``n_base`` in [1, the spec's training rows of that client],
    ``variance`` finite and in [0, ``most_variance``] (:func:`max_variance`)."""
    if not 1 <= n_base <= spec_n_base:
        return f"bad-weights: n_base {n_base} is outside [1, {spec_n_base}] (the spec's training rows of that client)"
    if not (math.isfinite(variance) and 0.0 <= variance <= most_variance):
        return f"bad-weights: variance {variance} is outside [0, {most_variance:.4g}] (its scaled features)"
    return None


@dataclass(frozen=True)
class ScreenedPoints:
    """A neighbour's shared points after :func:`screen_points`: ``X`` (the receiver's encoding)
    and ``y`` of the points kept; ``refused`` (``"<reason>: <detail>"``) when the whole set is
    refused; ``dropped`` maps the reason of each per-point check to (points it dropped, a detail
    naming the first)."""

    X: np.ndarray
    y: np.ndarray
    refused: str | None = None
    dropped: dict[str, tuple[int, str]] = field(default_factory=dict)


#: Nearest rows the class-region check consults: imbalanced-learn's EditedNearestNeighbours default.
REGION_NEIGHBOURS = 3
#: Rows of a class whose k-th-nearest-neighbour distances estimate its typical one (a fixed sample
#: of them when it has more: the median needs no more, and the search stays cheap on large shards).
SPACING_SAMPLE = 2000


class ClassRegions:
    """The receiver's own training rows (``X`` in its preprocessed units, labels ``y``) as class
    regions, for the ``class-region`` point check, in the spirit of Wilson's Edited Nearest
    Neighbours (IEEE SMC 1972; imbalanced-learn's ``EditedNearestNeighbours``, ``kind_sel="all"``):
    a point labelled c is *inside the region of the other class* c' = 1 − c when its ``k``
    nearest training rows are all of class c' **and** the farthest of them lies within
    ``tolerance`` × r_c', where r_c' is the median over the rows of class c' of the distance to
    their k-th nearest other row of c' (how deep inside c' its own rows sit; from a fixed sample
    of :data:`SPACING_SAMPLE` of them on larger classes). A class of at most ``k`` rows has no
    region.

    The second condition is what keeps honest non-IID points: an attack kind the receiver never
    saw has only benign rows near it, but not as near as benign rows are to each other. ENN alone
    (the first condition) would drop it. It bounds the k-th nearest row, not the nearest: one
    benign row that looks like an attack kind (real N-BaIoT's benign sample holds single-packet
    rows equal to gafgyt tcp's) must not turn that whole kind into "benign region" — a point is
    dropped only where several rows of the other class surround it as closely as they surround
    each other (docs/robustness.md "The class-region check"). Nearest-neighbour searches are
    scikit-learn's."""

    def __init__(self, X: np.ndarray, y: np.ndarray, tolerance: float, k: int = REGION_NEIGHBOURS):
        X, self.labels = np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)
        self.k = min(k, len(self.labels))
        self.everyone = NearestNeighbors(n_neighbors=self.k).fit(X) if self.k else None
        self.radius: dict[int, float] = {}
        for c in (0, 1):
            rows = X[self.labels == c]
            if len(rows) <= self.k:  # no k-th other row to speak of
                continue
            sample = rows if len(rows) <= SPACING_SAMPLE else \
                rows[np.random.default_rng(0).choice(len(rows), SPACING_SAMPLE, replace=False)]
            distances, _ = NearestNeighbors(n_neighbors=self.k + 1).fit(rows).kneighbors(sample)  # column 0: the row itself
            self.radius[c] = tolerance * float(np.median(distances[:, self.k]))

    def inside_other(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For points ``X`` (the receiver's units) labelled ``y``: a mask of those inside the
        region of the other class, and each point's distance to its k-th nearest training row
        where those k rows are all of the other class (NaN elsewhere)."""
        inside, farthest = np.zeros(len(y), dtype=bool), np.full(len(y), np.nan)
        if len(y) == 0 or self.everyone is None:
            return inside, farthest
        other = 1 - np.asarray(y, dtype=np.int64)
        distances, rows = self.everyone.kneighbors(X, n_neighbors=self.k)
        surrounded = (self.labels[rows] == other[:, None]).all(axis=1)
        farthest[surrounded] = distances[surrounded, -1]
        for c, radius in self.radius.items():
            candidates = surrounded & (other == c)
            inside[candidates] = distances[candidates, -1] <= radius
        return inside, farthest


def screen_points(X_raw: np.ndarray, y: np.ndarray, *, transform, cap: int, label: int, tolerance: float,
                  low: np.ndarray, high: np.ndarray, regions: ClassRegions | None = None) -> ScreenedPoints:
    """A neighbour's shared points. The set as a whole: at most ``cap`` of them and every label
    ``label`` (checked first, so a flood costs nothing more; no honest sender fails either, so
    either refuses them all). Then each point on its own, in the receiver's preprocessed units
    ``transform(X_raw)``: one with a non-finite value, or farther than ``tolerance`` times the
    feature's range ``high − low`` (the receiver's own training rows; a constant feature counts
    a range of 1) outside ``[low, high]``, is dropped (``out-of-range``); then, given
    ``regions``, one inside the receiver's region of the other class (``class-region``,
    :class:`ClassRegions`). The others are kept."""
    return screen_point_sets([(X_raw, y, cap, label)], transform=transform, tolerance=tolerance, low=low, high=high,
                             regions=regions)[0]


def screen_point_sets(sets: list[tuple[np.ndarray, np.ndarray, int, int]], *, transform, tolerance: float,
                      low: np.ndarray, high: np.ndarray, regions: ClassRegions | None = None) -> list[ScreenedPoints]:
    """:func:`screen_points` for the point sets of several neighbours, ``(X_raw, y, cap, label)``
    each, every set judged on its own as there. The sets that pass the set checks go through
    ``transform`` together, in one call (``transform`` must work row by row, as a fitted
    :class:`p2p_job.preprocessing.Preprocessor` does: a row comes out the same whatever rows
    come with it): on the few hundred points a neighbour shares per round, a call costs about
    the same for one row as for all of them."""
    empty = np.empty((0, len(low)), dtype=np.float32)
    screened: list[ScreenedPoints | None] = []
    for _, y, cap, label in sets:
        refused = _refuse_set(y, cap, label)
        screened.append(ScreenedPoints(empty, y[:0], refused) if refused else None)
    passing = [i for i, s in enumerate(screened) if s is None]
    if passing:
        with np.errstate(over="ignore", invalid="ignore"):
            X_all = np.asarray(transform(np.concatenate([sets[i][0] for i in passing])), dtype=np.float32)
        for i, X in zip(passing, np.split(X_all, np.cumsum([len(sets[i][1]) for i in passing])[:-1])):
            screened[i] = _screen_each_point(X, np.asarray(sets[i][1]), tolerance, low, high, regions)
    return screened


def _refuse_set(y: np.ndarray, cap: int, label: int) -> str | None:
    """Why a set of shared points is refused as a whole (more than ``cap``, or a label other
    than ``label``), else None."""
    if len(y) > cap:
        return f"too-many-points: {len(y)} shared points, over the cap of {cap} (α·r·|D_base|)"
    wrong = np.flatnonzero(np.asarray(y) != label)
    if wrong.size:
        return (f"wrong-label: {wrong.size} point(s) labelled {int(y[wrong[0]])}, "
                f"the sender's minority class is {label} (row {wrong[0]})")
    return None


def _screen_each_point(X: np.ndarray, y: np.ndarray, tolerance: float, low: np.ndarray, high: np.ndarray,
                       regions: ClassRegions | None) -> ScreenedPoints:
    """The per-point checks of :func:`screen_points` on one set's points ``X``, already in the
    receiver's units."""
    with np.errstate(over="ignore", invalid="ignore"):
        span = np.where(high > low, high - low, 1.0)
        outside = ~np.isfinite(X) | (X < low - tolerance * span) | (X > high + tolerance * span)
    bad = outside.any(axis=1)
    dropped = {}
    if bad.any():
        row, col = np.argwhere(outside)[0]
        dropped["out-of-range"] = (int(bad.sum()), f"beyond {tolerance} of this peer's feature ranges (row {row}, feature {col} "
                                                   f"at {float(X[row, col]):.4g}, its range [{low[col]:.4g}, {high[col]:.4g}])")
    if regions is not None:
        kept = np.flatnonzero(~bad)
        inside, nearest = regions.inside_other(X[kept], y[kept])
        if inside.any():
            row = kept[np.argmax(inside)]
            c = 1 - int(y[row])
            dropped["class-region"] = (int(inside.sum()), f"inside this peer's own class-{c} region (row {row}: its "
                                                         f"{regions.k} nearest training rows are class {c}, the farthest of them at "
                                                         f"{nearest[np.argmax(inside)]:.4g} <= {regions.radius[c]:.4g})")
            bad[kept[inside]] = True
    return ScreenedPoints(X[~bad], y[~bad], None, dropped)


#: BatchNorm's ε (PyTorch's default, which ``p2p_job.model`` keeps): it divides by √(var + ε).
BATCHNORM_EPS = 1e-5


def degenerate_state(state: dict[str, np.ndarray]) -> str | None:
    """A model state that cannot be used: non-finite entries, or a BatchNorm ``running_var``
    entry at or below −ε/2 (√(var + ε) then stands near or past 0)."""
    floor = -BATCHNORM_EPS / 2
    for name, value in state.items():
        if not np.isfinite(value).all():
            return f"degenerate: {name} holds NaN or infinite values"
        if name.endswith("running_var") and not (value > floor).all():
            return f"degenerate: {name} has {int((value <= floor).sum())} value(s) <= {floor:g}"
    return None
