"""Operating points (p2p_job.operating): thresholds chosen on a validation set, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from p2p_job.metrics import evaluate
from p2p_job.operating import choose_threshold


def test_separable_scores_give_the_midpoint_of_the_gap():
    y, s = [0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.9]
    assert choose_threshold(y, s, "best-f1") == pytest.approx(0.45)
    assert choose_threshold(y, s, "target-fpr", 0.0) == pytest.approx(0.45)


def test_best_f1_and_target_fpr_by_hand():
    # Thresholds 0.1, 0.2, 0.3, 0.6, 0.9 give F1 4/7, 4/6, 4/5, 2/4, 2/3: best at 0.3 -> (0.2 + 0.3) / 2.
    y, s = [0, 0, 1, 0, 1], [0.1, 0.2, 0.3, 0.6, 0.9]
    assert choose_threshold(y, s, "best-f1") == pytest.approx(0.25)
    assert choose_threshold(y, s, "target-fpr", 0.0) == pytest.approx(0.75)  # no false alarm: above 0.6
    assert choose_threshold(y, s, "target-fpr", 0.34) == pytest.approx(0.25)  # one of three allowed


def test_ties_between_classes_and_the_lowest_best_interval():
    y, s = [0, 1, 1, 0, 1], [0.3, 0.35, 0.4, 0.5, 0.9]
    # Thresholds 0.3 .. 0.9: F1 = 6/8, 6/7, 4/6, 2/5, 2/4 -> best at 0.35: (0.3 + 0.35) / 2.
    assert choose_threshold(y, s) == pytest.approx(0.325)
    y, s = [0, 1, 0, 1], [0.2, 0.8, 0.2, 0.8]
    assert choose_threshold(y, s) == pytest.approx(0.5)


def test_top_of_the_range_reaches_one_and_missing_class_keeps_the_default():
    y, s = [1, 0], [0.2, 0.9]  # the attack scores lower: no false alarm means flagging nothing
    assert choose_threshold(y, s, "target-fpr", 0.0) == pytest.approx(0.95)
    assert choose_threshold([0, 0], [0.1, 0.7], default=0.5) == 0.5
    assert choose_threshold([1, 1], [0.1, 0.7], "target-fpr", default=0.3) == 0.3
    with pytest.raises(ValueError, match="unknown operating point"):
        choose_threshold(y, s, "best-recall")


def test_the_chosen_threshold_achieves_the_best_validation_f1_on_random_data():
    g = np.random.default_rng(0)
    for _ in range(20):
        y = g.integers(0, 2, 40)
        if y.min() == y.max():
            continue
        s = np.clip(g.normal(0.3 + 0.4 * y, 0.2), 0, 1)
        t = choose_threshold(y, s)
        best = max(evaluate(y, s, c)["f1"] for c in np.unique(s))
        assert evaluate(y, s, t)["f1"] == pytest.approx(best)
        fpr_t = choose_threshold(y, s, "target-fpr", 0.1)
        assert evaluate(y, s, fpr_t)["fpr"] <= 0.1
