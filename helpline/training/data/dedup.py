"""Exact and near-duplicate removal, and grouping of template siblings, with MinHash LSH.

Two thresholds do two jobs: conversations whose whole text is nearly identical are *dropped*
(they add nothing and would inflate the test score), while conversations whose customer turns
are merely similar (the same template with another order number, a rephrasing) are *grouped*, so
that the split keeps each group on one side and the test split measures generalisation.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

_PRIME = np.uint64((1 << 61) - 1)
_TOKEN = re.compile(r"\{\{[^}]+\}\}|[a-z]+|\d+")


def normalize(text: str) -> str:
    """Lowercase, placeholders and digit runs unified, punctuation dropped: what a template shares."""
    words = []
    for tok in _TOKEN.findall(text.lower()):
        words.append("#" if tok.startswith("{{") or tok.isdigit() else tok)
    return " ".join(words)


def shingles(text: str, n: int) -> set[int]:
    """Hashed character n-grams (deterministic across processes, unlike ``hash``)."""
    text = f" {text} "
    if len(text) <= n:
        return {zlib.crc32(text.encode())}
    return {zlib.crc32(text[i : i + n].encode()) for i in range(len(text) - n + 1)}


class MinHashLSH:
    """Candidate pairs of similar sets via banded MinHash signatures."""

    def __init__(self, *, bands: int = 32, rows: int = 4, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.bands, self.rows = bands, rows
        n = bands * rows
        self._a = rng.integers(1, int(_PRIME) - 1, size=n, dtype=np.uint64)
        self._b = rng.integers(0, int(_PRIME) - 1, size=n, dtype=np.uint64)

    def signature(self, items: set[int]) -> np.ndarray:
        x = np.fromiter(items, dtype=np.uint64, count=len(items))[:, None]
        # Overflow in uint64 wraps; that is a fine hash family for our purpose.
        with np.errstate(over="ignore"):
            return ((x * self._a + self._b) % _PRIME).min(axis=0)

    def candidate_pairs(self, sets: list[set[int]]) -> set[tuple[int, int]]:
        buckets: dict[tuple, list[int]] = defaultdict(list)
        for idx, items in enumerate(sets):
            sig = self.signature(items)
            for band in range(self.bands):
                key = (band, sig[band * self.rows : (band + 1) * self.rows].tobytes())
                buckets[key].append(idx)
        pairs: set[tuple[int, int]] = set()
        for members in buckets.values():
            if 1 < len(members) <= 200:  # a huge bucket is a degenerate shingle set, not a template
                pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
        return pairs


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / max(1, len(a | b))


@dataclass
class DedupResult:
    """Indices kept, with their group ids, and what was dropped."""

    kept: list[int]
    group_of: dict[int, int]
    exact_dropped: int
    near_dropped: int


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def dedupe_and_group(
    full_texts: list[str],
    prompt_texts: list[str],
    *,
    near_dup_threshold: float = 0.9,
    sibling_threshold: float = 0.7,
    seed: int = 0,
) -> DedupResult:
    """Drop exact/near duplicates of the whole conversation; group similar customer turns."""
    seen: dict[str, int] = {}
    exact_dropped = 0
    survivors: list[int] = []
    for i, text in enumerate(full_texts):
        key = normalize(text)
        if key in seen:
            exact_dropped += 1
            continue
        seen[key] = i
        survivors.append(i)

    lsh = MinHashLSH(seed=seed)
    full_sets = [shingles(normalize(full_texts[i]), 5) for i in survivors]
    dropped: set[int] = set()
    for a, b in sorted(lsh.candidate_pairs(full_sets)):
        if a not in dropped and b not in dropped and jaccard(full_sets[a], full_sets[b]) >= near_dup_threshold:
            dropped.add(b)  # keep the first occurrence
    kept = [survivors[j] for j in range(len(survivors)) if j not in dropped]

    prompts = [normalize(prompt_texts[i]) for i in kept]
    uf = _UnionFind(len(kept))
    by_skeleton: dict[str, int] = {}
    for j, p in enumerate(prompts):  # identical skeleton = same template, another entity value
        if p in by_skeleton:
            uf.union(by_skeleton[p], j)
        else:
            by_skeleton[p] = j
    prompt_sets = [shingles(p, 4) for p in prompts]
    for a, b in lsh.candidate_pairs(prompt_sets):
        if jaccard(prompt_sets[a], prompt_sets[b]) >= sibling_threshold:
            uf.union(a, b)
    group_of = {kept[j]: uf.find(j) for j in range(len(kept))}
    return DedupResult(kept=kept, group_of=group_of, exact_dropped=exact_dropped, near_dropped=len(dropped))
