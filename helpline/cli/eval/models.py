"""`helpline eval sft|regression|gate|rag|distill-report`: judge a model, fine-tuned or distilled, against
references, regression suites and its baseline.

Heavy libraries load only when a command builds what needs them (see helpline/cli/app.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from helpline.cli.eval import DATA_DIR_HELP, DETECTOR_HELP, JUDGE_URL_HELP, eval_app, llm_judge
from helpline.cli.output import console, print_json
from helpline.evaluation.distill_report import ReportOptions, contenders, markdown, run_report, write_report
from helpline.evaluation.gate import gate_run, load_gate_config, record_gate, run_gate, track_gate
from helpline.evaluation.judge.judge import judge_suite
from helpline.evaluation.rag_eval import run_ab
from helpline.evaluation.regression.cases import load_suite
from helpline.evaluation.regression.factory import build_responder, resolve_model
from helpline.evaluation.regression.generators import suite_cases
from helpline.evaluation.regression.runner import run_suite
from helpline.evaluation.sft import generate_batched, load_eval_set, score_answers
from helpline.guard.selection import chosen_detector, load_detector
from helpline.platform.context import Context
from helpline.platform.files import write_jsonl
from helpline.platform.tracking import track_report
from helpline.retrieval.factory import build_embedder
from helpline.training.distill.config import load_distill_config


def _model_and_adapter(ref: str, ctx: Context) -> tuple[str, str | None]:
    """Registry name/alias or folder → (base checkpoint path, adapter path or None)."""
    path = Path(ref).expanduser()
    if (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        return base, str(path)
    if (path / "config.json").is_file():
        return str(path), None
    record = ctx.registry.chat_model(ref)
    return ctx.registry.base_of(record).path, record.path if record.kind == "adapter" else None


@eval_app.command("sft")
def eval_sft(
    model: str = typer.Option(..., help="Registry name/alias, adapter folder or checkpoint folder."),
    dataset: str = typer.Option(..., help="bitext:CSV or chat:JSONL (e.g. a prepared test.jsonl)."),
    baseline: str | None = typer.Option(None, help="Also score this model (e.g. the base) on the same examples."),
    limit: int = typer.Option(100, help="Examples scored (a seeded sample)."),
    max_tokens: int = typer.Option(192, help="Longest answer generated."),
    batch_size: int = typer.Option(8, help="Generation batch size."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """ROUGE-L to the reference answers and the structure check (steps, placeholders, opener)."""
    ctx = Context.load()
    prompts, references, questions = load_eval_set(dataset, limit)
    report: dict = {"dataset": dataset, "examples": len(prompts), "max_tokens": max_tokens}
    params = {"model": model, "dataset": dataset, "baseline": baseline, "limit": limit, "max_tokens": max_tokens}
    with ctx.tracker.start_run(kind="eval-sft", name=f"eval sft {model}", params=params) as tracked:
        for label, ref in (("model", model), ("baseline", baseline)):
            if ref is None:
                continue
            base, adapter = _model_and_adapter(ref, ctx)
            with console.status(f"generating {len(prompts)} answers with {ref}"):
                answers = generate_batched(base, adapter, prompts, max_tokens=max_tokens, batch_size=batch_size)
            report[label] = {"name": ref, **score_answers(answers, references, questions), "sample": answers[0][:300]}
        track_report(tracked, report)
    if as_json:
        print_json(report)
    else:
        for label in ("model", "baseline"):
            if label in report:
                r = report[label]
                console.print(f"{r['name']}: ROUGE-L {r['rougeL_f1']}, structure {r['structure']}")


@eval_app.command("regression")
def regression(
    suite: Path = typer.Option(
        ..., "--suite", help="Suite file (YAML or JSONL), or a bundled suite by name (support, general, generated)."
    ),
    model: str = typer.Option("production", "--model", help="Registry name, alias or model/adapter folder."),
    mode: str = typer.Option("rag", help="rag: through the RAG pipeline; direct: the generator alone."),
    limit: int = typer.Option(0, help="Run at most this many cases (0 = all)."),
    max_tokens: int = typer.Option(128, help="Answer length cap."),
    data_dir: Path = typer.Option(Path("../shared/data"), help=DATA_DIR_HELP),
    detector: str = typer.Option(None, "--detector", help=DETECTOR_HELP + " Adds a faithfulness score per case."),
    similarity: bool = typer.Option(True, help="Score reference answers by embedding similarity too."),
    judge_url: str = typer.Option(None, "--judge-url", help=JUDGE_URL_HELP),
    judge_model: str = typer.Option(None, "--judge-model", help="The judge's model name at --judge-url."),
    judge_key_env: str = typer.Option(None, "--judge-key-env", help="Variable holding the judge's API key."),
    voice: Path = typer.Option(None, "--voice", help="Brand-voice rubric (a text file; default: the sample's)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run a regression suite against one model and report pass rates per category and evaluator."""
    ctx = Context.load()
    loaded = load_suite(suite)
    cases = suite_cases(loaded, data_dir=data_dir, limit=limit)
    responder = build_responder(ctx, model=model, mode=mode, max_tokens=max_tokens)  # type: ignore[arg-type]
    verifier = _detector(ctx, detector)
    embedder = build_embedder(ctx, backend="torch") if similarity else None
    judge = llm_judge(ctx, url=judge_url, model=judge_model, key_env=judge_key_env, voice=voice)
    params = {"suite": str(suite), "model": model, "mode": mode, "limit": limit, "max_tokens": max_tokens,
              "detector": detector, "similarity": similarity, "judge_model": judge_model}  # fmt: skip
    with ctx.tracker.start_run(kind="eval-regression", name=f"{loaded.name} {model}", params=params) as tracked:
        result = run_suite(loaded.name, cases, responder, embedder=embedder, verifier=verifier, progress=True)
        if judge is not None:
            result.judge = judge_suite(judge, cases, result)
        track_report(tracked, result.to_dict())
    if as_json:
        print_json(result.to_dict())
        return
    summary = result.summary()
    console.print(
        f"{summary['suite']} · {summary['model']}: pass rate {summary['pass_rate']} over {summary['n']} cases"
    )
    for cat, row in summary["categories"].items():
        console.print(f"  {cat:<24} {row['pass_rate']:.2f}  (n={row['n']})")
    if result.judge is not None:
        j = result.judge
        console.print(
            f"  judge {j['model']}: correctness {j['correctness_mean']}, helpfulness {j['helpfulness_mean']}, "
            f"voice {j['voice_mean']} (0-10, {j['judged']} answers); agreement with the rules "
            f"{j['agreement']['rate']} (kappa {j['agreement']['cohen_kappa']})"
        )


@eval_app.command("gate")
def gate(
    candidate: str = typer.Option(..., "--candidate", help="Registry name, alias or model/adapter folder to judge."),
    baseline: str = typer.Option("production", "--baseline", help="What the candidate must not be worse than."),
    config: Path = typer.Option(None, "--config", help="Gate YAML (default: helpline/evaluation/gate.yaml)."),
    limit: int = typer.Option(None, help="Override limit_per_suite (cases per suite)."),
    data_dir: Path = typer.Option(Path("../shared/data"), help=DATA_DIR_HELP),
    record: bool = typer.Option(True, help="Store the verdict in the candidate's registry metadata."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run the suites on candidate and baseline; exit 1 on a regression; write an HTML report."""
    ctx = Context.load()
    cfg = load_gate_config(config)
    if limit is not None:
        cfg.limit_per_suite = limit
    cand_name, base_name = resolve_model(ctx, candidate), resolve_model(ctx, baseline)
    with gate_run(ctx.tracker, cand_name, base_name, cfg) as tracked:
        report, _, _ = run_gate(
            cand_name,
            base_name,
            cfg,
            responder_for=lambda m: build_responder(ctx, model=m, mode=cfg.mode, max_tokens=cfg.max_tokens),  # type: ignore[arg-type]
            data_dir=data_dir,
            reports_dir=ctx.workspace.reports,
            embedder=build_embedder(ctx, backend="torch"),
            verifier=_detector(ctx, cfg.detector),
            progress=True,
        )
        track_gate(tracked, report)
    if record:
        record_gate(ctx.registry, cand_name, report)
    if as_json:
        print_json(report.to_dict())
    else:
        for c in report.checks:
            console.print(f"{'ok ' if c.passed else 'REG'} {c.name}: {c.candidate:.3f} vs {c.baseline} ({c.limit})")
        console.print(f"{'[green]PASSED' if report.passed else '[red]FAILED'}[/] report: {report.report_path}")
    if not report.passed:
        raise typer.Exit(1)


def _detector(ctx: Context, name: str | None):
    """The detector named (``auto``: the registered helpline-detector, if any; ``none``: no detector)."""
    chosen = chosen_detector(ctx.registry, name)
    return None if chosen is None else load_detector(ctx, chosen)


@eval_app.command("rag")
def rag(
    dataset: Path = typer.Option(
        Path("../shared/data/doc2dial"), "--dataset", help="doc2dial folder (docs.jsonl, qa.jsonl)."
    ),
    base: str = typer.Option("smollm2-135m-instruct", "--base", help="Base model (registry name or alias)."),
    finetuned: str = typer.Option(None, "--finetuned", help="Fine-tuned adapter (name, alias or folder)."),
    arms: str = typer.Option("base,finetuned,retrieval,hybrid", help="Comma-separated arms to run."),
    limit: int = typer.Option(10, help="Answerable questions (gold document indexed)."),
    removed: int = typer.Option(5, help="Questions whose gold document is left out of the index."),
    max_tokens: int = typer.Option(64, help="Answer length cap."),
    detector: str = typer.Option("helpline-detector", "--detector", help=DETECTOR_HELP),
    verify: bool = typer.Option(False, help="Attach the detector as the pipeline's verifier (abstain if unsupported)."),
    seed: int = typer.Option(0, help="Question sampling seed."),
    max_docs: int = typer.Option(60, help="Documents indexed (gold ones + seeded distractors; 0 = all)."),
    answers: Path = typer.Option(
        None, "--answers", help="Also write every answer (arm, question, gold document, citations) to this JSONL."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """End-to-end doc2dial RAG evaluation and the A/B report (base, fine-tuned, retrieval, hybrid)."""
    ctx = Context.load()
    det = _detector(ctx, detector)
    record: list[dict] = []
    params = {"dataset": str(dataset), "base": base, "finetuned": finetuned, "arms": arms, "limit": limit,
              "removed": removed, "max_tokens": max_tokens, "detector": detector, "verify": verify, "seed": seed,
              "max_docs": max_docs}  # fmt: skip
    with ctx.tracker.start_run(kind="eval-rag", name=f"rag {finetuned or base}", params=params) as tracked:
        result = run_ab(
            ctx,
            dataset,
            base=base,
            finetuned=finetuned,
            arms=[a.strip() for a in arms.split(",") if a.strip()],
            limit=limit,
            removed=removed,
            max_tokens=max_tokens,
            detector=det,
            verify=verify,
            seed=seed,
            max_docs=max_docs,
            record=record,
        )
        track_report(tracked, result)
    if answers is not None:
        write_jsonl(answers, record)
        result["answers_file"] = str(answers)
    if as_json:
        print_json(result)
        return
    for arm, row in result["arms"].items():
        console.print(f"[bold]{arm}[/]: " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "examples"))
    for pair, metrics in result["comparisons"].items():
        diffs = (f"{m} {c['difference']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]" for m, c in metrics.items())
        console.print(f"[bold]{pair}[/]: " + ", ".join(diffs))


@eval_app.command("distill-report")
def distill_report(
    config: Path = typer.Option(
        ...,
        "--config",
        help="The distillation preset (teacher endpoint, student): helpline/training/configs/distill-*.yaml.",
    ),
    after: str = typer.Option(None, "--after", help="The distilled student (default: the config's sft.adapter_name)."),
    teacher_model: str = typer.Option(
        None, "--teacher-model", help="Registry name of a local teacher, for its memory (default: teacher.model)."
    ),
    suites: list[str] = typer.Option(
        ["support.yaml", "general.yaml", "generated.yaml"], "--suite", help="Suites to run."
    ),
    limit: int = typer.Option(0, help="Cases per suite (0 = all)."),
    max_tokens: int = typer.Option(128, help="Answer length cap."),
    data_dir: Path = typer.Option(Path("../shared/data"), help=DATA_DIR_HELP),
    detector: str = typer.Option("helpline-detector", "--detector", help=DETECTOR_HELP),
    doc2dial: Path = typer.Option(Path("../shared/data/doc2dial"), help="doc2dial folder (skipped if missing)."),
    doc2dial_limit: int = typer.Option(20, help="doc2dial questions."),
    speed_prompts: int = typer.Option(6, help="Single-stream requests timed per model and round."),
    speed_rounds: int = typer.Option(3, help="Interleaved timing rounds (medians are reported)."),
    speed_max_tokens: int = typer.Option(64, help="Answer length of the timed requests (all of it at equal length)."),
    memory: bool = typer.Option(True, help="Measure each local model's memory in a fresh process."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides of the config (teacher.model=...)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Teacher, student before and student after distillation: regression suites, hallucination score,
    doc2dial faithfulness, single-stream tokens/s, TTFT and memory; writes JSON and Markdown reports."""
    cfg = load_distill_config(config, overrides or [])
    ctx = Context.load()
    opts = ReportOptions(
        suites=tuple(suites), data_dir=data_dir, limit_per_suite=limit, max_tokens=max_tokens, detector=detector,
        doc2dial=doc2dial, doc2dial_limit=doc2dial_limit, speed_prompts=speed_prompts, speed_rounds=speed_rounds,
        speed_max_tokens=speed_max_tokens, memory=memory,
    )  # fmt: skip
    with ctx.tracker.start_run(kind="eval-distill", name=f"distill report {cfg.name}", params=asdict(opts)) as tracked:
        report = run_report(ctx, contenders(ctx, cfg, after=after, teacher_model=teacher_model), opts)
        report["files"] = write_report(report, ctx.workspace.reports, cfg.name)
        track_report(tracked, report)
    if as_json:
        print_json(report)
    else:
        console.print(markdown(report), highlight=False)
        console.print(f"reports: {report['files']['markdown']}")
