"""Fusing ranked lists: reciprocal rank fusion and a weighted fusion of normalised scores."""

from __future__ import annotations

from collections.abc import Sequence

Ranking = Sequence[tuple[str, float]]  # (id, score), best first


def reciprocal_rank_fusion(
    rankings: Sequence[Ranking], *, k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Cormack et al.'s RRF: each list adds ``weight / (k + rank)`` for every id it holds (rank from 1)."""
    weights = weights or [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, (item, _) in enumerate(ranking, 1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


def weighted_fusion(rankings: Sequence[Ranking], *, weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Convex combination of min-max normalised scores; an id missing from a list scores 0 there."""
    weights = weights or [1.0 / len(rankings)] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        if not ranking:
            continue
        scores = [s for _, s in ranking]
        low, high = min(scores), max(scores)
        span = (high - low) or 1.0
        for item, score in ranking:
            fused[item] = fused.get(item, 0.0) + weight * (score - low) / span
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
