"""§5.1.2 metrics: a hand-computed case, agreement with scikit-learn and a brute-force sweep of
operating points on random cases, and the documented values at the edges (no warnings)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

from p2p_job.metrics import METRIC_NAMES, evaluate

pytestmark = pytest.mark.filterwarnings("error")  # no edge case may warn


def test_metric_names_in_the_documented_order():
    assert METRIC_NAMES == (
        "fnr", "fpr", "precision", "recall", "f1", "auc", "precision_at_recall_75", "recall_at_precision_75",
    )
    assert tuple(evaluate([0, 1], [0.2, 0.8])) == METRIC_NAMES


def test_hand_computed_case():
    # threshold 0.5 → predictions 0 1 0 1: TP 1, FP 1, FN 1, TN 1.
    # AUC: of the 4 (positive, negative) pairs, 0.4>0.1, 0.9>0.1, 0.9>0.6 are ordered right → 3/4.
    # Operating points (threshold: precision, recall): 0.9: 1, ½ · 0.6: ½, ½ · 0.4: ⅔, 1 · 0.1: ½, 1.
    result = evaluate([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    expected = {"fnr": 0.5, "fpr": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "auc": 0.75,
                "precision_at_recall_75": 2 / 3, "recall_at_precision_75": 0.5}
    assert result == pytest.approx(expected)


def test_a_score_equal_to_the_threshold_is_predicted_malicious():
    assert evaluate([0, 1], [0.2, 0.5], threshold=0.5)["recall"] == 1.0
    assert evaluate([0, 1], [0.2, 0.5], threshold=0.6)["recall"] == 0.0


def _brute_force_curve_metrics(y, scores):
    """Best precision with recall ≥ .75 and best recall with precision ≥ .75 over every threshold."""
    points = []
    for t in np.unique(scores):
        predicted = scores >= t
        points.append((precision_score(y, predicted, zero_division=0), recall_score(y, predicted)))
    p_at_r = max(p for p, r in points if r >= 0.75)
    r_at_p = max([r for p, r in points if p >= 0.75], default=0.0)
    return p_at_r, r_at_p


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_scikit_learn_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes present
    # scores mildly informative, with ties, so operating points vary
    scores = np.round(np.clip(0.3 * y + rng.random(n) * 0.8, 0, 1), 2)
    threshold = float(rng.choice([0.3, 0.5, 0.7]))
    result = evaluate(y, scores, threshold)
    predicted = scores >= threshold
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    p_at_r, r_at_p = _brute_force_curve_metrics(y, scores)
    assert result == pytest.approx({
        "fnr": fn / (fn + tp),
        "fpr": fp / (fp + tn),
        "precision": precision_score(y, predicted, zero_division=0),
        "recall": recall_score(y, predicted),
        "f1": f1_score(y, predicted, zero_division=0),
        "auc": roc_auc_score(y, scores),
        "precision_at_recall_75": p_at_r,
        "recall_at_precision_75": r_at_p,
    })


def test_recall_at_precision_75_is_zero_when_no_operating_point_reaches_it():
    # the only positive has the lowest score: precision ≤ 1/5 at every threshold
    result = evaluate([1, 0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert result["recall_at_precision_75"] == 0.0
    assert result["precision_at_recall_75"] == pytest.approx(0.2)


def _nan_names(result):
    return {name for name, value in result.items() if math.isnan(value)}


def test_no_positives():
    result = evaluate([0, 0, 0, 0], [0.1, 0.7, 0.2, 0.9])
    assert _nan_names(result) == set(METRIC_NAMES) - {"fpr"}
    assert result["fpr"] == 0.5


def test_no_negatives():
    result = evaluate([1, 1, 1, 1], [0.1, 0.7, 0.2, 0.9])
    assert _nan_names(result) == {"fpr", "auc"}
    assert result["precision"] == 1.0 and result["recall"] == 0.5 and result["fnr"] == 0.5
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["precision_at_recall_75"] == 1.0 and result["recall_at_precision_75"] == 1.0


def test_no_predicted_positives():
    result = evaluate([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4])
    assert _nan_names(result) == set()
    assert (result["precision"], result["recall"], result["fnr"], result["f1"], result["fpr"]) == (0.0, 0.0, 1.0, 0.0, 0.0)
    assert result["auc"] == 0.75


def test_empty_evaluation_set():
    assert _nan_names(evaluate([], [])) == set(METRIC_NAMES)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="3 labels but scores has 2 values"):
        evaluate([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="row 1 has 2"):
        evaluate([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="1 non-finite"):
        evaluate([0, 1], [0.1, float("nan")])
