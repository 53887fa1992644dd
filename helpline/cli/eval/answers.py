"""`helpline eval answers`: what customers are served, scored (`helpline bench answers` times it)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import typer

from helpline.cli.eval import JUDGE_URL_HELP, eval_app, llm_judge
from helpline.cli.output import console, print_json
from helpline.evaluation.answer_paths import answerer
from helpline.evaluation.answers import VIAS, AnswerCase, Doc2dialJudge, evaluate, read_cases
from helpline.evaluation.judge.judge import judge_results
from helpline.evaluation.rag_eval import build_index, load_questions
from helpline.evaluation.regression.factory import resolve_model
from helpline.guard.selection import load_detector
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.platform.files import write_jsonl
from helpline.platform.tracking import track_report
from helpline.retrieval import SAMPLE_KB
from helpline.retrieval.factory import build_embedder, open_knowledge_base
from helpline.serving.factory import build_generator, build_pipeline, build_verifier
from helpline.serving.kb_owner import OwnedKB
from helpline.training.detector.default import ensure_default_detector

DATASET_HELP = "doc2dial:DIR: held-out doc2dial questions over a throwaway index of its documents."


def parse_vias(text: str) -> list[str]:
    vias = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in vias if v not in VIAS]
    if unknown or not vias:
        raise ConfigError(
            f"unknown --via {', '.join(unknown) or '(none)'}", hint=f"use one or more of {','.join(VIAS)}"
        )
    return vias


def answer_set(
    ctx: Context, *, questions: Path | None, dataset: str | None, limit: int, removed: int, max_docs: int, seed: int
) -> tuple[list[Any], list[Any] | None]:
    """The cases to ask, and the documents of a throwaway index (None: the workspace's knowledge base)."""
    if dataset is None:
        return read_cases(questions or SAMPLE_KB / "QUESTIONS.yaml"), None
    kind, _, folder = dataset.partition(":")
    if kind != "doc2dial" or not folder:
        raise ConfigError(f"unknown dataset {dataset!r}", hint="use --dataset doc2dial:DIR or --questions FILE")

    documents, rows = load_questions(Path(folder), limit=limit, removed=removed, seed=seed, max_docs=max_docs)
    cases = [
        AnswerCase(
            id=q.id,
            question=q.conversation[-1].content,
            doc_id=None if q.removed else q.doc_id,
            gold_passage=q.gold_passage,
            reference=q.agent_response or None,
            conversation=q.conversation,
        )
        for q in rows
    ]
    return cases, documents


def build_answer_pipeline(
    ctx: Context, *, model: str | None, engine: str | None, documents: list[Any] | None, tmp: str
):
    """The gateway's pipeline (its verifier, reader and prompt, as the settings say) over the workspace's
    knowledge base, or over a throwaway index of ``documents``; the model answering is ``model``."""
    if model:
        ctx = ctx.with_settings(chat_model=resolve_model(ctx, model))
    generator = build_generator(ctx, engine=engine)  # type: ignore[arg-type]
    if documents is None:
        kb = OwnedKB(lambda: open_knowledge_base(ctx))
    else:
        kb = OwnedKB(lambda: build_index(ctx, documents=documents, store_dir=tmp)[0])
    return build_pipeline(ctx, generator=generator, kb=kb, verifier=build_verifier(ctx))


def doc2dial_judge(ctx: Context, name: str) -> Any:

    ensure_default_detector(ctx, name, log=lambda m: console.print(f"[dim]{m}[/]"))
    embedder = build_embedder(ctx)
    return Doc2dialJudge(detector=load_detector(ctx, name), embed=embedder.embed_documents)


@eval_app.command("answers")
def answers(
    questions: Path = typer.Option(None, "--questions", help="Question file (YAML/JSONL; default: the sample KB's)."),
    dataset: str = typer.Option(None, "--dataset", help=DATASET_HELP),
    model: str = typer.Option(None, "--model", help="Chat model (name, alias or folder; default: chat_model)."),
    engine: str = typer.Option(None, help="auto | vllm | transformers (default: settings.engine)."),
    via: str = typer.Option(
        "pipeline,stream",
        help="Entry points, comma-separated: pipeline (= helpline ask), gateway (whole), stream (gateway, streamed).",
    ),
    limit: int = typer.Option(120, help="doc2dial: answerable questions."),
    removed: int = typer.Option(20, help="doc2dial: questions whose gold document is left out of the index."),
    max_docs: int = typer.Option(150, help="doc2dial: documents indexed (gold ones + seeded distractors)."),
    seed: int = typer.Option(0, help="doc2dial: question sampling seed."),
    judge_detector: str = typer.Option(
        "helpline-detector",
        "--judge-detector",
        help="doc2dial: the detector that checks answers against the gold span.",
    ),
    judge_url: str = typer.Option(None, "--judge-url", help=JUDGE_URL_HELP),
    judge_model: str = typer.Option(None, "--judge-model", help="The judge's model name at --judge-url."),
    judge_key_env: str = typer.Option(None, "--judge-key-env", help="Variable holding the judge's API key."),
    voice: Path = typer.Option(None, "--voice", help="Brand-voice rubric (a text file; default: the sample's)."),
    answers_file: Path = typer.Option(None, "--answers", help="Write every served answer and its verdict (JSONL)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """What customers are served, as served: correct, wrong-served, handoff and abstention rates."""
    ctx = Context.load()
    vias = parse_vias(via)
    cases, documents = answer_set(
        ctx, questions=questions, dataset=dataset, limit=limit, removed=removed, max_docs=max_docs, seed=seed
    )
    judge = doc2dial_judge(ctx, judge_detector) if documents is not None else None
    judge_llm = llm_judge(ctx, url=judge_url, model=judge_model, key_env=judge_key_env, voice=voice)
    result: dict[str, Any] = {"set": dataset or str(questions or "sample_kb/QUESTIONS.yaml"), "via": {}}
    rows: list[dict] = []
    params = {"set": result["set"], "model": model, "engine": engine, "via": via, "judge_model": judge_model}
    with (
        tempfile.TemporaryDirectory(prefix="helpline-answers-") as tmp,
        ctx.tracker.start_run(kind="eval-answers", name=f"answers {model or 'chat_model'}", params=params) as tracked,
    ):
        pipeline = build_answer_pipeline(ctx, model=model, engine=engine, documents=documents, tmp=tmp)
        result["model"] = pipeline.generator.name
        result["verifier"] = type(pipeline.verifier).__name__
        result["fallback"] = pipeline.reader is not None
        for v in vias:
            with answerer(v, pipeline, ctx.registry) as answer:  # type: ignore[arg-type]
                summary, judged = evaluate(cases, answer, doc2dial=judge, progress=not as_json)
            if judge_llm is not None:
                summary["judge"] = judge_results(judge_llm, cases, judged)
            result["via"][v] = summary
            rows += [{"via": v, **r.__dict__} for r in judged]
        track_report(tracked, result)
    if answers_file is not None:
        write_jsonl(answers_file, rows)
        result["answers_file"] = str(answers_file)
    if as_json:
        print_json(result)
        return
    for v, s in result["via"].items():
        console.print(
            f"[bold]{v}[/]: correct {s['correct_rate']}, wrong served {s['wrong_served_rate']}, handoff "
            f"{s['handoff_rate_answerable']} (answerable: {s['answerable']}); abstention on unanswerable "
            f"{s['abstention_rate_unanswerable']} ({s['unanswerable']}); internal leaks {s['internal_leaks']}; "
            f"p50/p95 {s['latency_ms_p50']}/{s['latency_ms_p95']} ms"
        )
        if "judge" in s:
            j = s["judge"]
            console.print(
                f"  judge {j['model']}: correctness {j['correctness_mean']}, helpfulness {j['helpfulness_mean']}, "
                f"voice {j['voice_mean']} (0-10, {j['judged']} answers); agreement with the rules "
                f"{j['agreement']['rate']} (kappa {j['agreement']['cohen_kappa']})"
            )
