"""Evaluation metrics of §5.1.2. Label 1 (malicious) is the positive class of every metric.

- ``fnr`` = FN / (FN + TP) and ``fpr`` = FP / (FP + TN), at the decision threshold;
- ``precision``, ``recall``, ``f1`` at the decision threshold;
- ``auc``: area under the ROC curve of the scores;
- ``precision_at_recall_75``: the best precision among the operating points (thresholds) whose
  recall is at least 0.75;
- ``recall_at_precision_75``: the best recall among the operating points whose precision is at
  least 0.75, 0 when there is none;
- :func:`fnr_by_kind`: the false negative rate of each attack kind on its own (the question
  "does a client detect the attacks it never saw?").

Values at the edges follow one rule: a metric is NaN exactly when the evaluation set lacks a
class that the metric is defined on, and a number otherwise.

- No positives in ``y_true``: fnr, recall, precision, f1, auc and both curve metrics are NaN
  (there is no attack to detect); fpr is a number.
- No negatives: fpr and auc are NaN; the others are numbers.
- Both classes present but nothing predicted positive: precision = 0 (scikit-learn's
  ``zero_division=0``), so recall = 0, fnr = 1, f1 = 0.

An empty evaluation set gives NaN everywhere. No metric raises or warns on these edges;
non-finite scores are an error.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_auc_score

METRIC_NAMES = (
    "fnr",
    "fpr",
    "precision",
    "recall",
    "f1",
    "auc",
    "precision_at_recall_75",
    "recall_at_precision_75",
)

#: The operating-point level of the two curve metrics (§5.1.2: "when the precision/recall reaches 75%").
CURVE_LEVEL = 0.75


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def evaluate(y_true, scores, threshold: float = 0.5) -> dict[str, float]:
    """All of :data:`METRIC_NAMES` for labels ``y_true`` (0/1) and scores (higher = more
    malicious); a row is predicted malicious when its score is ``>= threshold``."""
    y_true = np.asarray(y_true).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if y_true.shape != scores.shape:
        raise ValueError(f"y_true has {y_true.size} labels but scores has {scores.size} values")
    bad = np.flatnonzero(~np.isin(y_true, (0, 1)))
    if bad.size:
        raise ValueError(f"labels must be 0 (benign) or 1 (malicious); row {bad[0]} has {y_true[bad[0]]}")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(scores)))} non-finite value(s)")
    nan = float("nan")
    if y_true.size == 0:  # neither class: every metric is undefined
        return dict.fromkeys(METRIC_NAMES, nan)

    tn, fp, fn, tp = confusion_matrix(y_true, scores >= threshold, labels=[0, 1]).ravel()
    has_pos, has_neg = tp + fn > 0, tn + fp > 0
    recall = _ratio(tp, tp + fn)
    precision = _ratio(tp, tp + fp)
    result = {
        "fnr": 1.0 - recall if has_pos else nan,
        "fpr": _ratio(fp, fp + tn) if has_neg else nan,
        "precision": precision if has_pos else nan,
        "recall": recall if has_pos else nan,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn) if has_pos else nan,
        "auc": float(roc_auc_score(y_true, scores)) if has_pos and has_neg else nan,
        "precision_at_recall_75": nan,
        "recall_at_precision_75": nan,
    }
    if has_pos:
        # The curve's last point (precision 1, recall 0) is no threshold: it only makes
        # recall_at_precision_75 zero when no real operating point reaches the precision level.
        curve_precision, curve_recall, _ = precision_recall_curve(y_true, scores)
        result["precision_at_recall_75"] = float(curve_precision[curve_recall >= CURVE_LEVEL].max())
        result["recall_at_precision_75"] = float(curve_recall[curve_precision >= CURVE_LEVEL].max())
    return {name: float(result[name]) for name in METRIC_NAMES}


def fnr_by_kind(y_true, scores, kinds, threshold: float = 0.5) -> dict[str, float]:
    """The false negative rate of each attack kind: among the malicious rows of kind k, the
    fraction scored ``< threshold`` (missed). Keys are the kinds of the malicious rows, sorted;
    benign rows and their kind values are ignored. The FNR over all attacks is the mean of
    these weighted by each kind's rows."""
    y_true = np.asarray(y_true).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    kinds = np.asarray(kinds).astype(str).ravel()
    if not y_true.shape == scores.shape == kinds.shape:
        raise ValueError(f"y_true, scores and kinds differ in length ({y_true.size}, {scores.size}, {kinds.size})")
    attack = y_true == 1
    missed = scores[attack] < threshold
    values, inverse = np.unique(kinds[attack], return_inverse=True)
    rates = np.bincount(inverse, weights=missed, minlength=len(values)) / np.bincount(inverse, minlength=len(values))
    return {str(k): float(v) for k, v in zip(values, rates)}
