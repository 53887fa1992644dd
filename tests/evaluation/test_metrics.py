"""Metric computations on small hand-made examples."""

from __future__ import annotations

import pytest

from helpline.evaluation.hallucination.metrics import auroc, best_threshold, binary_metrics


def test_binary_metrics_by_hand() -> None:
    labels = [1, 1, 1, 0, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3, 0.2]
    m = binary_metrics(labels, scores, 0.5)
    # tp=2 fn=1 fp=1 tn=4
    assert m["accuracy"] == 0.75
    assert m["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2, abs=1e-4)


def test_auroc_perfect_inverted_and_ties() -> None:
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_best_threshold_separates_when_possible() -> None:
    labels, scores = [0, 0, 1, 1], [0.05, 0.1, 0.2, 0.3]
    t = best_threshold(labels, scores)
    assert 0.1 < t < 0.2
    assert binary_metrics(labels, scores, t)["balanced_accuracy"] == 1.0


def test_metrics_refuse_empty_input() -> None:
    with pytest.raises(ValueError):
        binary_metrics([], [], 0.5)
