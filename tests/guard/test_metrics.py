"""Metric computations on small hand-made examples."""

from __future__ import annotations

import random

import pytest

from helpline.guard.metrics import auroc, best_shared_threshold, best_threshold, binary_metrics


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


def test_shared_threshold_serves_every_scoring() -> None:
    labels = [0, 0, 1, 1]
    # Alone, the first scoring is cut best at 0.35 and the second at 0.55; one cut must serve both.
    first, second = [0.1, 0.3, 0.4, 0.8], [0.2, 0.5, 0.6, 0.9]
    assert best_threshold(labels, first) == pytest.approx(0.35)

    def mean_at(t: float) -> float:
        return sum(binary_metrics(labels, s, t)["balanced_accuracy"] for s in (first, second)) / 2

    t = best_shared_threshold(labels, [first, second])
    cuts = [i / 100 for i in range(101)]
    assert mean_at(t) == max(mean_at(c) for c in cuts) == 0.875
    assert t == pytest.approx(0.55)  # of the two equally good cuts, the one nearer 0.5


def test_threshold_search_matches_brute_force() -> None:
    rng = random.Random(3)
    labels = [rng.randint(0, 1) for _ in range(200)]
    scores = [rng.random() * 0.6 + 0.4 * y for y in labels]
    t = best_threshold(labels, scores)
    best = max(binary_metrics(labels, scores, c)["balanced_accuracy"] for c in sorted(set(scores)))
    assert binary_metrics(labels, scores, t)["balanced_accuracy"] == best


def test_metrics_refuse_empty_input() -> None:
    with pytest.raises(ValueError):
        binary_metrics([], [], 0.5)
