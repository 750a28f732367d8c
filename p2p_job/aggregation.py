"""Peer-to-peer model merging (§4.3): equations 5–7 and Algorithm 2, lines 12–16.

A peer picked to update (:func:`is_selected`) sets its weights to ``Σ_k p_k w_k`` over itself and
its neighbours (equation 5, :func:`weighted_average`) with

    p_k = λ · Var_k / Σ Var + (1 − λ) · |D_k| / Σ |D|        (equation 6, :func:`mixing_weights`)

where ``Var_k`` is the data variance of client k's base data (:func:`data_variance`) and the
sums run over the same peers, so that the weights sum to 1 (§5.1.3). It also takes an
α-fraction of each neighbour's synthetic points (equation 7, :func:`share_sample`).
"""

from __future__ import annotations

import numpy as np

from p2p_job.seeding import rng as seeded_rng


def data_variance(X) -> float:
    """``Variance(D_base)`` of equation 6: the mean over features of each feature's variance
    (population variance, ddof 0). 0.0 for no rows."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (rows, features); got shape {X.shape}")
    return float(X.var(axis=0).mean()) if len(X) else 0.0


def _shares(values, name: str) -> np.ndarray:
    """``values / Σ values`` for non-negative finite values; equal shares when they sum to 0."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence; got shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{name} must be finite and non-negative; got {values.tolist()}")
    total = values.sum()
    return values / total if total > 0 else np.full(values.size, 1.0 / values.size)


def capped_shares(values, max_share: float = 1.0, name: str = "values") -> np.ndarray:
    """``values / Σ values`` with no share above ``max_share``: the largest values are clipped
    to the one threshold t at which the largest share ``t / Σ min(v, t)`` is ``max_share``
    (water-filling), so self-reported weight inputs cannot buy more than that share of an
    average. ``max_share`` 1 leaves the shares as they are (the paper); below 1/n no share can
    be that small and every peer gets 1/n."""
    shares = _shares(values, name)
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"max_share must be in (0, 1]; got {max_share}")
    if max_share >= 1.0 or shares.max() <= max_share:
        return shares
    if max_share * shares.size <= 1.0:
        return np.full(shares.size, 1.0 / shares.size)
    capped = np.zeros(shares.size, dtype=bool)
    while True:
        free = ~capped
        rest = 1.0 - max_share * capped.sum()
        out = np.where(capped, max_share, 0.0)
        total = shares[free].sum()
        out[free] = rest * shares[free] / total if total > 0 else rest / free.sum()
        over = free & (out > max_share)
        if not over.any():
            return out
        capped |= over


def mixing_weights(variances, sizes, lam: float, max_share: float = 1.0) -> np.ndarray:
    """Equation 6: ``p_k = λ·Var_k/ΣVar + (1−λ)·|D_k|/Σ|D|`` over the peer and its neighbours.

    Sums to 1. When every variance is 0 (or every size is 0) that term gives each peer an
    equal share, since no peer differs from another in it. ``max_share`` < 1 (a deviation,
    ``aggregation.maxWeightShare``) caps each term's shares with :func:`capped_shares`, so that
    no peer's p_k exceeds it whatever |D_k| or Var_k it claims.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1]; got {lam}")
    variance_shares = capped_shares(variances, max_share, "variances")
    size_shares = capped_shares(sizes, max_share, "sizes")
    if variance_shares.size != size_shares.size:
        raise ValueError(f"{variance_shares.size} variances but {size_shares.size} sizes")
    weights = lam * variance_shares + (1.0 - lam) * size_shares
    return weights / weights.sum()


def fedavg_weights(sizes, max_share: float = 1.0) -> np.ndarray:
    """FedAvg's weights ``|D_k| / Σ|D|`` (equation 6 with λ = 0; the ``fedavg`` rule), capped
    at ``max_share`` like :func:`mixing_weights`."""
    return capped_shares(sizes, max_share, "sizes")


def weighted_average(states: list[dict[str, np.ndarray]], weights) -> dict[str, np.ndarray]:
    """Equation 5: ``Σ_k p_k · w_k`` entry by entry over model states (parameters and BatchNorm
    buffers, as ``{name: array}``). The weights are normalised to sum 1.

    Floating entries are averaged in float64 and returned in their own dtype. Integer entries
    (e.g. BatchNorm's ``num_batches_tracked``) stay integer: their weighted average is rounded
    to the nearest integer. Every state must have the same names, shapes and dtypes.
    """
    if not states:
        raise ValueError("weighted_average needs at least one state")
    shares = _shares(weights, "weights")
    if shares.size != len(states):
        raise ValueError(f"{len(states)} states but {shares.size} weights")
    names = list(states[0])
    merged: dict[str, np.ndarray] = {}
    for i, state in enumerate(states):
        if sorted(state) != sorted(names):
            raise ValueError(f"state {i} has entries {sorted(state)}; state 0 has {sorted(names)}")
    for name in names:
        arrays = [np.asarray(state[name]) for state in states]
        first = arrays[0]
        for i, array in enumerate(arrays):
            if array.shape != first.shape or array.dtype != first.dtype:
                raise ValueError(
                    f"entry {name!r}: state {i} is {array.dtype}{list(array.shape)}, state 0 is {first.dtype}{list(first.shape)}"
                )
        if not (np.issubdtype(first.dtype, np.floating) or np.issubdtype(first.dtype, np.integer)):
            raise ValueError(f"entry {name!r} has dtype {first.dtype}; only float and integer entries can be averaged")
        average = np.tensordot(shares, np.stack(arrays).astype(np.float64), axes=1)
        if np.issubdtype(first.dtype, np.integer):
            average = np.rint(average)
        merged[name] = average.astype(first.dtype)
    return merged


def is_selected(seed: int, method: str, round: int, client: str, probability: float) -> bool:
    """Algorithm 2, line 12: whether ``client`` is picked to update in ``round``.

    A pseudo-random draw from (seed, method, round, client), so every peer computes the same
    answer for every other peer without a coordinator. ``probability`` 1 always selects.
    """
    return bool(seeded_rng(seed, method, "select", round, client).random() < probability)


def share_sample(X, y, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Equation 7's ``D_syn × α``: ``round(α·n)`` rows of ``(X, y)`` drawn without replacement
    (Python's ``round``: halves go to the even number), in their original order."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
    rows = np.sort(rng.choice(len(X), size=round(alpha * len(X)), replace=False))
    return X[rows], y[rows]
