"""The detector a workspace gets on first use, where HaluEval's training split is at hand."""

from __future__ import annotations

import os
from pathlib import Path

from helpline.guard.selection import DEFAULT_DETECTOR
from helpline.platform.context import Context
from helpline.training.detector.train import DetectorTrainConfig, train_and_register


def ensure_default_detector(ctx: Context, name: str, *, log=print) -> None:
    """First use in a fresh workspace: train the support-feature detector (about a minute, no network).

    Only for the default name, and only from the shared HaluEval *training* split
    (``$HELPLINE_HALUEVAL_DIR`` or ``../shared/data/halueval``); otherwise nothing happens and
    loading reports what to run. The detector `helpline init` registers from the package counts as not
    trained yet: it has no dialogue head (that needs the style model, fitted on HaluEval's answers), so
    the first use with the data at hand replaces it with the same recipe's full output.
    """
    if name != DEFAULT_DETECTOR or Path(name).is_dir():
        return
    registered = next((m for m in ctx.registry.list_models() if m.name == name), None)
    if registered is not None and not registered.metadata.get("bundled"):
        return
    halueval = Path(os.environ.get("HELPLINE_HALUEVAL_DIR", "../shared/data/halueval"))
    if not (halueval / "qa_data.jsonl").exists():
        return
    doc2dial = halueval.parent / "doc2dial"
    cfg = DetectorTrainConfig(
        halueval_dir=halueval,
        doc2dial_dir=doc2dial if (doc2dial / "qa.jsonl").exists() else None,
        train_cross_encoder=False,
        val_items=800,
        output_name=name,
    )
    log(
        f"no detector yet: training {name} from {halueval} (support features only, about a minute); the full "
        "detector, with its cross-encoder, comes from helpline/evaluation/recipes/detector.yaml (see its header)"
    )
    # replaces the bundled detector, which nothing refers to (a detector is never aliased nor gated)
    train_and_register(ctx, cfg, base_path=Path("."), log=log)
