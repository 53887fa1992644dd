"""Fit the detector's parts after the cross-encoder: the style model, one head per kind, thresholds.

Heads are fitted on the *validation* split (the cross-encoder never saw it), cross-fitted in two
halves, repeated on reshuffled halvings, so that the scores used to choose inputs and thresholds are
out-of-fold. The cross-encoder joins a head only where it helps out-of-fold (AUROC gain > 0.005);
the test split stays untouched.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpline.datasets.halueval import (
    Pair,
    both_pairs,
    doc2dial_pairs,
    read_halueval,
    split_items,
)
from helpline.guard.detector import (
    CROSS_ENCODER,
    STYLE_FILE,
    Detector,
    DetectorConfig,
    hypothesis,
    load_cross_encoder,
    resolve_precision,
)
from helpline.guard.features import apply_head, fit_head, fit_style, support_features
from helpline.guard.metrics import auroc, best_shared_threshold, binary_metrics
from helpline.platform.lazy_imports import require

# Which extra inputs each head may use besides the support features.
KIND_INPUTS = {"qa": [], "dialogue": ["style"], "rag": []}
# Cross-fitting is repeated on this many reshuffled halvings. With one, the luck of a single split chose
# the dialogue threshold: 0.31 on one halving of the validation set, 0.37-0.42 on four others.
REPEATS = 5


def fit_detector(cfg: Any, output: Path, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit style model, heads and thresholds; write ``detector.json`` (and ``style.joblib``) to ``output``."""
    items = {k: read_halueval(cfg.halueval_dir / f"{k}_data.jsonl", k) for k in ("qa", "dialogue")}
    log("fitting the style model on dialogue training answers")
    style_pairs = both_pairs(split_items(items["dialogue"], "train"))
    style = fit_style([p.answer for p in style_pairs], [p.label for p in style_pairs])
    require("joblib", "eval").dump(style, output / STYLE_FILE)
    model = tokenizer = precision = None
    if (output / CROSS_ENCODER / "config.json").exists():
        precision = resolve_precision("auto", require("torch", "eval"))
        model, tokenizer = load_cross_encoder(output / CROSS_ENCODER, precision=precision, threads=cfg.threads)
    config = DetectorConfig(max_length=cfg.max_length)
    detector = Detector(model, tokenizer, config, style=style, name=output.name.removesuffix(".partial"))
    val = validation_pairs(cfg, items)
    report: dict[str, Any] = {"validation_rows": {k: len(v) for k, v in val.items()}}
    if precision:  # the heads and thresholds are fitted on the logits of this precision
        report["cross_encoder_precision"] = precision
    for kind, pairs in val.items():
        log(f"fitting the {kind} head on {len(pairs)} validation pairs")
        head, threshold, metrics = _fit_kind(detector, kind, pairs, seed=cfg.seed)
        config.heads[kind] = head
        config.thresholds[kind] = round(threshold, 4)
        report[kind] = metrics
    config.threshold = config.thresholds.get("rag", 0.5)
    config.metadata = {"validation": report, "config": cfg.model_dump(mode="json")}
    config.write(output)
    return report


def validation_pairs(cfg: Any, items: dict[str, list]) -> dict[str, list[Pair]]:
    """Both answers of ``val_items`` validation items per kind; ``rag`` adds doc2dial pairs to QA."""
    val = {k: both_pairs(split_items(v, "val")[: cfg.val_items]) for k, v in items.items()}
    rag = list(val["qa"])
    if cfg.doc2dial_dir:
        rag += doc2dial_pairs(cfg.doc2dial_dir, "val")[: cfg.val_items]
        # Human agent replies paraphrase the passage: without them the head learns "verbatim = faithful".
        rag += doc2dial_pairs(cfg.doc2dial_dir, "val", faithful="agent")[: cfg.val_items]
    val["rag"] = rag
    return val


def _columns(detector: Detector, pairs: list[Pair], extras: list[str]) -> list[list[float]]:
    rows = [support_features(p.passages[0], p.answer, p.question) for p in pairs]
    if "cross_encoder" in extras:
        logits = detector.logits([(p.passages[0], hypothesis(p.answer, p.question)) for p in pairs])
        for row, z in zip(rows, logits):
            row.append(z)
    if "style" in extras:
        for row, z in zip(rows, detector.style.decision_function([p.answer for p in pairs]).tolist()):
            row.append(float(z))
    return rows


def _fit_kind(detector: Detector, kind: str, pairs: list[Pair], *, seed: int) -> tuple[dict, float, dict]:
    labels = [p.label for p in pairs]
    extras = (["cross_encoder"] if detector.model is not None else []) + KIND_INPUTS[kind]
    full = _columns(detector, pairs, extras)
    names = ["features"] * (len(full[0]) - len(extras)) + extras
    variants = {"features": ["features", *KIND_INPUTS[kind]]}
    if detector.model is not None:
        variants["features+cross_encoder"] = ["features", *extras]
    results: dict[str, Any] = {}
    for name, inputs in variants.items():
        keep = [i for i, col in enumerate(names) if col in inputs]
        rows = [[r[i] for i in keep] for r in full]
        oofs = [_out_of_fold(rows, labels, pairs, inputs, seed=seed + r) for r in range(REPEATS)]
        t = best_shared_threshold(labels, oofs)
        metrics = _mean([{"auroc_oof": auroc(labels, oof), **binary_metrics(labels, oof, t)} for oof in oofs])
        results[name] = (inputs, rows, t, metrics)
    chosen = "features"
    if "features+cross_encoder" in results:
        gain = results["features+cross_encoder"][3]["auroc_oof"] - results["features"][3]["auroc_oof"]
        chosen = "features+cross_encoder" if gain > 0.005 else "features"
    inputs, rows, threshold, _ = results[chosen]
    head = fit_head(rows, labels, inputs)
    return head, threshold, {"chosen": chosen, **{name: r[3] for name, r in results.items()}}


def _mean(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(sum(r[key] for r in runs) / len(runs), 4) for key in runs[0]}


def _out_of_fold(
    rows: list[list[float]], labels: list[int], pairs: list[Pair], inputs: list[str], *, seed: int
) -> list[float]:
    # Halves by item key, so the right and the hallucinated answer of one item stay together.
    keys = sorted({p.key for p in pairs})
    random.Random(seed).shuffle(keys)
    half = set(keys[: len(keys) // 2])
    fold = [p.key in half for p in pairs]
    scores = [0.0] * len(rows)
    for side in (True, False):
        train = [i for i, f in enumerate(fold) if f == side]
        head = fit_head([rows[i] for i in train], [labels[i] for i in train], inputs)
        for i, f in enumerate(fold):
            if f != side:
                scores[i] = apply_head(head, rows[i])
    return scores
