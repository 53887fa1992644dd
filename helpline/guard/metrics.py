"""Binary classification metrics, written out so that small hand-made examples can check them."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import pairwise


def binary_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float) -> dict[str, float]:
    """Accuracy, balanced accuracy, precision/recall/F1 of the positive class (1) and AUROC."""
    if len(labels) != len(scores) or not labels:
        raise ValueError("labels and scores must be non-empty and of equal length")
    preds = [int(s >= threshold) for s in scores]
    tp = sum(1 for y, p in zip(labels, preds) if y == 1 and p == 1)
    tn = sum(1 for y, p in zip(labels, preds) if y == 0 and p == 0)
    fp = sum(1 for y, p in zip(labels, preds) if y == 0 and p == 1)
    fn = sum(1 for y, p in zip(labels, preds) if y == 1 and p == 0)
    pos, neg = tp + fn, tn + fp
    recall = tp / pos if pos else 0.0
    specificity = tn / neg if neg else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": len(labels),
        "positives": pos,
        "accuracy": round((tp + tn) / len(labels), 4),
        "balanced_accuracy": round((recall + specificity) / 2, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "auroc": round(auroc(labels, scores), 4),
    }


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula; ties count one half."""
    ranked = sorted(zip(scores, labels))
    ranks = [0.0] * len(ranked)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(1 for _, y in ranked if y == 1)
    neg = len(ranked) - pos
    if not pos or not neg:
        return float("nan")
    rank_sum = sum(r for r, (_, y) in zip(ranks, ranked) if y == 1)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def best_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The cut (midpoint between neighbouring scores) with the highest balanced accuracy."""
    return best_shared_threshold(labels, [scores])


def best_shared_threshold(labels: Sequence[int], score_lists: Sequence[Sequence[float]]) -> float:
    """The cut with the highest balanced accuracy averaged over several scorings of the same labels.

    Out-of-fold scores from cross-fitting repeated on reshuffled folds: one split's luck no longer
    decides the threshold. Ties go to the cut nearest 0.5.
    """
    curves = [_balanced_accuracy_curve(labels, s) for s in score_lists]
    values = sorted({x for s in score_lists for x in s})
    candidates = [0.5] + [(a + b) / 2 for a, b in pairwise(values)]
    return max(candidates, key=lambda t: (sum(c(t) for c in curves) / len(curves), -abs(t - 0.5)))


def _balanced_accuracy_curve(labels: Sequence[int], scores: Sequence[float]) -> Callable[[float], float]:
    """Balanced accuracy as a function of the threshold (score >= t is positive), by bisection."""
    pos = sorted(s for y, s in zip(labels, scores) if y == 1)
    neg = sorted(s for y, s in zip(labels, scores) if y == 0)

    def at(t: float) -> float:
        recall = (len(pos) - bisect_left(pos, t)) / len(pos) if pos else 0.0
        specificity = bisect_left(neg, t) / len(neg) if neg else 0.0
        return (recall + specificity) / 2

    return at
