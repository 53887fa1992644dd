"""`helpline eval train-detector|hallucination|calibrate-detector`: the hallucination detector that checks
every served answer, trained, scored and calibrated."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import typer

from helpline.cli.eval import DETECTOR_HELP, eval_app
from helpline.cli.output import console, print_json, show
from helpline.datasets.halueval import Split, parse_dataset_spec
from helpline.guard.selection import detector_path, evaluate_dataset, load_detector
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.platform.tracking import track_report
from helpline.training.detector.calibration import fit_detector
from helpline.training.detector.default import ensure_default_detector
from helpline.training.detector.train import load_config, train_and_register


@eval_app.command("train-detector")
def train_detector(
    config: Path = typer.Option(None, "--config", help="YAML preset (helpline/evaluation/recipes/detector.yaml)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. qa_items=500 max_minutes=5."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fine-tune the hallucination detector on HaluEval, calibrate it and register it."""
    ctx = Context.load()
    cfg = load_config(config, overrides or [])
    base = Path(cfg.base_model)
    if not base.exists():
        base = Path(ctx.registry.get_model(cfg.base_model).path)
    output = ctx.workspace.models / cfg.output_name
    metadata = train_and_register(ctx, cfg, base_path=base, log=lambda m: console.print(m, highlight=False))
    result = {"name": cfg.output_name, "path": str(output), **metadata}
    if as_json:
        print_json(result)
    else:
        console.print(f"[green]registered[/] {cfg.output_name} → {output}")


@eval_app.command("hallucination")
def hallucination(
    dataset: str = typer.Option(
        ..., "--dataset", help="halueval-qa:FILE, halueval-dialogue:FILE or doc2dial:FOLDER (any file in that format)."
    ),
    detector: str = typer.Option("helpline-detector", "--detector", help=DETECTOR_HELP),
    split: str = typer.Option("all", help="all, or the held-out 'test' (or 'val') split the detector never saw."),
    limit: int = typer.Option(0, min=0, help="Evaluate at most this many items (0 = all)."),
    threshold: float = typer.Option(None, help="Decision threshold (default: calibrated for the dataset kind)."),
    seed: int = typer.Option(0, help="Seed of the protocol's right/hallucinated draw."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score the detector with HaluEval's protocol: each item shows its right or hallucinated answer (p = 0.5)."""
    parse_dataset_spec(dataset)  # a wrong spec or path is refused before any detector is built
    if split not in get_args(Split):
        raise ConfigError(f"unknown split {split!r}", hint=f"use one of {', '.join(get_args(Split))}")
    ctx = Context.load()
    ensure_default_detector(ctx, detector, log=lambda m: console.print(m, highlight=False))
    det = load_detector(ctx, detector)
    params = {"dataset": dataset, "detector": detector, "split": split, "limit": limit, "threshold": threshold,
              "seed": seed}  # fmt: skip
    with ctx.tracker.start_run(kind="eval-hallucination", name=f"hallucination {detector}", params=params) as tracked:
        result = evaluate_dataset(det, dataset, split=split, limit=limit, threshold=threshold, seed=seed)  # type: ignore[arg-type]
        track_report(tracked, result)
    if as_json:
        print_json(result)
        return
    for key in ("n", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc", "threshold"):
        console.print(f"{key:>18}: {result[key]}")


@eval_app.command("calibrate-detector")
def calibrate_detector(
    detector: str = typer.Option("helpline-detector", "--detector", help=DETECTOR_HELP),
    config: Path = typer.Option(None, "--config", help="The training preset (for data paths and val_items)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. halueval_dir=../shared/data/halueval."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fit the feature combiner, scoring mode and thresholds of a saved detector on the validation split."""
    ctx = Context.load()
    path = detector_path(ctx, detector)
    report = fit_detector(load_config(config, overrides or []), path, log=lambda m: console.print(m, highlight=False))
    record = ctx.registry.get_model(detector) if not Path(detector).is_dir() else None
    if record is not None:
        ctx.registry.update_metadata(record.name, {"validation": report})
    show(report, as_json)
