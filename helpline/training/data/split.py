"""A leakage-free, intent-stratified train/validation/test split over groups of conversations."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

SPLITS = ("train", "validation", "test")


def grouped_stratified_split(
    group_of: dict[int, int],
    intent_of: dict[int, str],
    *,
    validation: float,
    test: float,
    seed: int,
) -> dict[str, list[int]]:
    """Assign whole groups to splits so that each intent gets about the requested fractions.

    A group goes where its majority intent is furthest below its target share; groups are
    visited in a seeded random order, so the split is reproducible and never separates a group.
    """
    members: dict[int, list[int]] = defaultdict(list)
    for idx, group in sorted(group_of.items()):
        members[group].append(idx)
    by_intent: dict[str, list[int]] = defaultdict(list)
    for group, idxs in members.items():
        intent = Counter(intent_of[i] for i in idxs).most_common(1)[0][0]
        by_intent[intent].append(group)

    targets = {"train": 1.0 - validation - test, "validation": validation, "test": test}
    rng = random.Random(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for intent in sorted(by_intent):
        groups = sorted(by_intent[intent])
        rng.shuffle(groups)
        # Big groups first, so the small ones can even out the shares.
        groups.sort(key=lambda g: -len(members[g]))
        total = sum(len(members[g]) for g in groups)
        filled = dict.fromkeys(SPLITS, 0)
        for g in groups:
            size = len(members[g])
            split = max(SPLITS, key=lambda s: targets[s] * total - filled[s] - (size if s != "train" else 0) / 2)
            filled[split] += size
            out[split].extend(members[g])
    return {s: sorted(v) for s, v in out.items()}
