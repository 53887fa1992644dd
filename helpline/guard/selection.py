"""Evaluate the detector on HaluEval-format files (official protocol) and doc2dial pairs; time it."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from helpline.datasets.halueval import (
    Split,
    doc2dial_pairs,
    parse_dataset_spec,
    protocol_pairs,
    read_halueval,
    split_items,
)
from helpline.guard.detector import Detector, Precision, registered_detector_path
from helpline.guard.metrics import binary_metrics
from helpline.platform.context import Context
from helpline.platform.errors import NotFoundError

DEFAULT_DETECTOR = "helpline-detector"


def chosen_detector(registry: Any, name: str | None) -> str | None:
    """The detector a setting names: ``auto`` is helpline-detector when it is registered (else none),
    ``none`` (or nothing) is none, anything else is that name or folder."""
    if not name or name == "none":
        return None
    if name == "auto":
        return DEFAULT_DETECTOR if any(m.name == DEFAULT_DETECTOR for m in registry.list_models()) else None
    return name

# Published anchors to read our figures against (not comparable one-to-one: see the report).
ANCHORS = {
    "qa": "ChatGPT 62.59% accuracy on HaluEval QA (judging without knowledge; Li et al. 2023)",
    "dialogue": "ChatGPT 72.40% accuracy on HaluEval dialogue (Li et al. 2023)",
    "doc2dial": "Vectara HHEM-2.1-Open 74.3% balanced accuracy on RAGTruth-QA",
}


def load_detector(ctx: Context, name_or_path: str, *, precision: Precision = "auto") -> Detector:
    """A detector from a folder, or from the registry by name."""
    return Detector.load(detector_path(ctx, name_or_path), precision=precision)


BUNDLED_DETECTOR = Path(__file__).parent / "bundled"


def register_bundled_detector(ctx: Context) -> bool:
    """`helpline init`: register the detector shipped in the package as helpline-detector (its support
    features' heads, a 2 KB file), so every answer is verified from the first run. A detector already
    registered under that name (a recipe's, with its cross-encoder) is kept. True when it registered."""

    if any(m.name == DEFAULT_DETECTOR for m in ctx.registry.list_models()):
        return False
    output = ctx.workspace.models / DEFAULT_DETECTOR
    output.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUNDLED_DETECTOR / "detector.json", output / "detector.json")
    metadata = json.loads((output / "detector.json").read_text())["metadata"]
    ctx.registry.register_model(DEFAULT_DETECTOR, kind="detector", path=output, metadata=metadata)
    return True


def detector_path(ctx: Context, name_or_path: str) -> Path:
    """The folder of a detector given as a folder or a registry name."""
    path = Path(name_or_path)
    if not path.is_dir():
        try:
            path = registered_detector_path(ctx.registry, name_or_path)
        except NotFoundError as e:
            raise NotFoundError(
                f"no detector {name_or_path!r} (neither a folder nor a registered model)",
                hint="train one: `helpline eval train-detector --config helpline/evaluation/recipes/detector.yaml`",
            ) from e
    return path


def evaluate_dataset(
    detector: Detector,
    spec: str,
    *,
    split: Split = "all",
    limit: int = 0,
    threshold: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics for "hallucinated" on one dataset under the p = 0.5 protocol."""
    kind, path = parse_dataset_spec(spec)
    if kind == "doc2dial":
        faithful = "agent" if spec.startswith("doc2dial-agent:") else "span"
        pairs = doc2dial_pairs(path, split, seed=seed, faithful=faithful)
    else:
        pairs = protocol_pairs(split_items(read_halueval(path, kind), split), seed=seed)
    if limit:
        pairs = pairs[:limit]
    head = "rag" if kind == "doc2dial" else kind
    cut = threshold if threshold is not None else detector.threshold_for(head)
    start = time.perf_counter()
    queries = [(p.answer, list(p.passages), p.question) for p in pairs]
    verdicts = detector.verdicts(queries, threshold=cut, kind=head, progress=True)
    seconds = time.perf_counter() - start
    metrics = binary_metrics([p.label for p in pairs], [v.score for v in verdicts], cut)
    return {
        "dataset": spec,
        "kind": kind,
        "split": split,
        "detector": detector.name,
        "head": head,
        "head_inputs": (detector.head(head) or {}).get("inputs", []),
        "threshold": round(cut, 4),
        **metrics,
        "ms_per_answer_batched": round(1000 * seconds / max(1, len(pairs)), 2),
        "anchor": ANCHORS[kind],
    }


def bench(detector: Detector, spec: str, *, n: int = 100) -> dict[str, Any]:
    """Median and p90 latency of scoring one answer at a time (no batching, as in the gateway)."""
    kind, path = parse_dataset_spec(spec)
    if kind == "doc2dial":
        pairs = doc2dial_pairs(path, "test")[:n]
    else:
        pairs = protocol_pairs(split_items(read_halueval(path, kind), "test"))[:n]
    head = "rag" if kind == "doc2dial" else kind
    for p in pairs[:3]:  # warm-up: first calls allocate
        detector.score(p.answer, list(p.passages), p.question, kind=head)
    times = []
    for p in pairs:
        start = time.perf_counter()
        detector.score(p.answer, list(p.passages), p.question, kind=head)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "dataset": spec,
        "detector": detector.name,
        "n": len(times),
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
        "head_inputs": (detector.head(head) or {}).get("inputs", []),
        "max_length": detector.config.max_length,
    }
