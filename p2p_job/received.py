"""D_o_syn: the synthetic points a peer receives from its neighbours (eq. 7, Algorithm 2 line 16)
and how they enter its training set (lines 6–7), under ``spec.rebalancing.received``.

- ``unbounded`` — the paper as written: D_o_syn ← D_o_syn ∪ α·D_syn^k every time the peer
  aggregates, so it only grows, and the peer trains on all of D_base ∪ D_syn ∪ D_o_syn.
  ``maxReceived`` (newest kept) is the only bound.
- ``balanced`` (the default) — D_o_syn counts towards the rebalancing target. Per class c with
  deficit Δ_c = r·|D_maj| − |D_c| (Algorithm 1 line 1; 0 for the majority when r ≤ 1), D_o_syn
  keeps at most ``receivedFraction``·Δ_c points of class c (the newest; ``maxReceived`` still
  caps the total), and the peer trains on D_base, D_o_syn and only Δ_c − |D_o_syn,c| of its own
  D_syn points of class c (a random subset). It still generates and shares from the whole D_syn.

Why balanced is the default: under the literal reading, after 100 rounds of a full mesh of three
clients with 1,500 benign rows each, a client trained on ~30,000 received attack points against
1,500 benign ones — the balance K-SMOTE restores is lost again (its FPR rose to 0.9 on real
BoT-IoT flows) and each round costs ~20× the rows of ``none``. Under ``balanced`` every round
trains on about r·|D_maj| minority rows, whatever the round, and at least
(1 − ``receivedFraction``) of the deficit is the client's own K-SMOTE points, so its own attack
kind stays represented while the neighbours' kinds come in.
"""

from __future__ import annotations

import numpy as np

from p2p_job.ksmote import n_synthetic
from p2p_job.spec import RebalancingSpec


def class_deficits(y_base: np.ndarray, ratio: float) -> dict[int, int]:
    """Δ_c = r·|D_maj| − |D_c| per class c ∈ {0, 1} (:func:`p2p_job.ksmote.n_synthetic`), from the
    client's base labels: the points class c lacks to reach the rebalancing target."""
    counts = np.bincount(np.asarray(y_base, dtype=np.int64), minlength=2)
    return {c: n_synthetic(int(counts.max()), int(counts[c]), ratio) for c in (0, 1)}


class ReceivedPolicy:
    """One client's D_o_syn policy: which received points to keep and how many of its own
    synthetic points to train on beside them. ``y_base`` are the client's base labels."""

    def __init__(self, params: RebalancingSpec, y_base: np.ndarray):
        self.balanced = params.received == "balanced"
        self.max_received = params.max_received
        deficits = class_deficits(y_base, params.ratio)
        self.caps = {c: int(params.received_fraction * deficits[c]) for c in deficits} if self.balanced else None

    def bound(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """D_o_syn after line 16: the rows of ``(X, y)`` (oldest first) that :meth:`keep` keeps.
        Order is preserved."""
        keep = self.keep(y)
        return X[keep], y[keep]

    def keep(self, y: np.ndarray) -> np.ndarray:
        """Which of the received rows with labels ``y`` (oldest first) stay in D_o_syn, as a
        mask: under ``balanced`` the newest ``caps[c]`` of each class c, then (both policies)
        the newest ``maxReceived`` overall."""
        keep = np.ones(len(y), dtype=bool)
        if self.caps is not None:
            for c, cap in self.caps.items():
                rows = np.flatnonzero(y == c)
                keep[rows[: max(0, len(rows) - cap)]] = False
        if self.max_received is not None:
            rows = np.flatnonzero(keep)
            keep[rows[: max(0, len(rows) - self.max_received)]] = False
        return keep

    def own_synthetic(self, synthetic_y: np.ndarray, received_y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Indices of the client's own D_syn rows to train on this round (sorted): all of them
        under ``unbounded``; under ``balanced``, for each class c a random
        max(0, |D_syn,c| − |D_o_syn,c|) of them, so own and received points together fill the
        deficit once."""
        if self.caps is None:
            return np.arange(len(synthetic_y))
        chosen = []
        for c in (0, 1):
            rows = np.flatnonzero(synthetic_y == c)
            n_keep = max(0, len(rows) - int(np.sum(received_y == c)))
            chosen.append(rows if n_keep == len(rows) else rng.choice(rows, size=n_keep, replace=False))
        return np.sort(np.concatenate(chosen))
