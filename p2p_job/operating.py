"""Operating points: a decision threshold per client, chosen on its own local validation set,
reported beside the paper's fixed 0.5 (``spec.training.threshold``).

A detector's scores are only half of it; which threshold turns them into alarms decides its
FNR and FPR. Each round, after evaluating, a peer chooses ``evaluation.operatingPoint`` on its
validation scores (never on the global test set) and evaluates every set at that threshold too:

- ``best-f1``: the threshold with the highest F1 on the validation set;
- ``target-fpr``: the lowest threshold whose validation FPR is at most ``evaluation.targetFpr``
  (the most attacks caught within that false-alarm budget).

Every threshold in the interval (s_{i−1}, s_i] between two consecutive distinct validation
scores makes the same decisions on the validation set; of the chosen interval (for ``best-f1``
the lowest reaching the best F1) the midpoint is taken, so the threshold sits between the
validation scores instead of on one of them. Above the highest score
the interval reaches 1 (the sigmoid's bound), below the lowest it starts at 0. A validation set
missing a class cannot rank anything: the paper's threshold is kept.
"""

from __future__ import annotations

import numpy as np

OPERATING_POINTS = ("best-f1", "target-fpr")


def choose_threshold(y_true, scores, rule: str = "best-f1", target_fpr: float = 0.01, default: float = 0.5) -> float:
    """The threshold (a row is malicious when its score ≥ threshold) of ``rule`` on one
    client's validation labels and scores; ``default`` when they lack a class."""
    if rule not in OPERATING_POINTS:
        raise ValueError(f"unknown operating point {rule!r}; expected one of {', '.join(OPERATING_POINTS)}")
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    positives, negatives = np.sort(s[y == 1]), np.sort(s[y == 0])
    if len(positives) == 0 or len(negatives) == 0:
        return float(default)
    # Candidate i: threshold candidates[i] (the last one lies above every score: nothing flagged).
    candidates = np.append(np.unique(s), np.inf)
    tp = len(positives) - np.searchsorted(positives, candidates, side="left")
    fp = len(negatives) - np.searchsorted(negatives, candidates, side="left")
    if rule == "best-f1":
        chosen = int(np.argmax(2 * tp / (len(positives) + tp + fp)))
    else:
        chosen = int(np.flatnonzero(fp / len(negatives) <= target_fpr)[0])
    lower = candidates[chosen - 1] if chosen > 0 else 0.0
    upper = min(candidates[chosen], 1.0)
    return float((lower + upper) / 2)
