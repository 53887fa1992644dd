"""`helpline eval distill-report`: the teacher, the student before distillation and the student after,
on the same cases and the same retrieval.

    helpline eval distill-report --config helpline/training/configs/distill-gemma-to-smollm2.yaml --json

Quality: the regression suites through the RAG pipeline (score = mean case score over every case of
every suite; pass rate beside it), the hallucination detector's score of those answers against what
was retrieved, and doc2dial faithfulness and citation correctness over a throwaway doc2dial index.
Speed: single-stream output tokens/s and time to first token through each model's serving engine (the
teacher through its configured endpoint, the students through the workspace's engine: vLLM when it is
up), on RAG prompts the sample questions retrieve. Each model is timed twice: as it answers (its own
answer length, so a model that stops early spends more of its time before the first token), and at
equal length (``ignore_eos``: every answer ``speed_max_tokens`` long, as `bench serving` compares
models), which is what the speed target compares when every endpoint accepts it. The models are timed
in interleaved rounds and the medians reported, so a busy machine slows all three alike.
Memory: peak resident memory of a fresh process that loads the model with the in-process transformers
engine and answers the same prompts (its tokens/s are reported too, like for like across the three).

The teacher is whatever endpoint the distillation config names, so a remote teacher is compared the
same way (its memory is then not measured).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpline.engines.protocol import Generator
from helpline.evaluation.load import level, sequential
from helpline.evaluation.model_probe import run_probe
from helpline.evaluation.rag_eval import build_index, load_questions, run_arm
from helpline.evaluation.regression.cases import load_suite
from helpline.evaluation.regression.factory import resolve_model
from helpline.evaluation.regression.generators import suite_cases
from helpline.evaluation.regression.runner import RAGResponder, _case_score, run_suite
from helpline.guard.selection import load_detector
from helpline.platform.context import Context
from helpline.platform.errors import NotFoundError
from helpline.platform.registry import ModelRecord
from helpline.platform.schemas import ChatMessage
from helpline.retrieval import sample_questions as questions
from helpline.retrieval.factory import build_embedder
from helpline.serving.factory import build_generator, build_pipeline
from helpline.serving.routing import VLLMBackend
from helpline.training.distill.run import resolve_teacher
from helpline.training.distill.teacher import open_teacher, teacher_api_key

LABELS = ("teacher", "student_before", "student_after")
DEFAULT_SUITES = ("support.yaml", "general.yaml", "generated.yaml")


@dataclass
class Contender:
    """One model of the report: how it answers, and (when local) where its weights are."""

    label: str
    name: str
    generator: Generator
    record: ModelRecord | None = None  # for the memory probe; None for a remote teacher
    api_key: str = "unused"


@dataclass
class ReportOptions:
    suites: tuple[str, ...] = DEFAULT_SUITES
    data_dir: Path = Path("../shared/data")
    limit_per_suite: int = 0
    max_tokens: int = 128
    detector: str | None = "helpline-detector"
    doc2dial: Path | None = Path("../shared/data/doc2dial")
    doc2dial_limit: int = 20
    doc2dial_max_docs: int = 60
    speed_prompts: int = 6
    speed_max_tokens: int = 64
    speed_rounds: int = 3
    memory: bool = True


def local_record(ctx: Context, name: str) -> ModelRecord | None:
    """The registry record behind a name, an alias or an adapter's served name (``name-<digest>``)."""
    try:
        return ctx.registry.get_model(name)
    except NotFoundError:
        pass
    for record in ctx.registry.list_models():
        if VLLMBackend.served_name(record) == name:
            return record
    return None


def contenders(
    ctx: Context, cfg: Any, *, after: str | None = None, teacher_model: str | None = None
) -> list[Contender]:
    """Teacher (the config's endpoint), student before (``cfg.student``) and after (``after``, default the
    adapter the config's SFT section registers)."""


    t = resolve_teacher(cfg, ctx).teacher
    allowed = ctx.settings.teacher  # the workspace's teacher key, for its endpoint only
    teacher = open_teacher(
        t.base_url, t.model, api_key_env=t.api_key_env, timeout_s=t.timeout_s, stop=t.stop, allowed=allowed
    )
    key = teacher_api_key(t.api_key_env, base_url=t.base_url, allowed=allowed)
    out = [Contender("teacher", t.model, teacher, local_record(ctx, teacher_model or t.model), key)]
    after = after or cfg.sft.get("adapter_name") or f"distill-{cfg.name}"
    for label, model in (("student_before", cfg.student), ("student_after", after)):
        name = resolve_model(ctx, model)
        generator = build_generator(ctx.with_settings(chat_model=name))
        out.append(Contender(label, name, generator, ctx.registry.get_model(name)))
    return out


def rag_prompts(ctx: Context, generator: Generator, questions: list[str]) -> list[list[ChatMessage]]:
    """Serving's grounded prompts for ``questions`` (those the knowledge base abstains on are skipped)."""
    pipeline = build_pipeline(ctx, generator=generator)
    prompts = []
    for q in questions:
        prepared = pipeline.prepare([ChatMessage(role="user", content=q)])
        if not prepared.abstained:
            prompts.append(prepared.messages)
    return prompts


def sample_questions(n: int) -> list[str]:
    return questions()[: max(n, 1) * 2]


def engine_speed(c: Contender, prompts: list[list[ChatMessage]], *, n: int, max_tokens: int,
                 full_length: bool = False) -> dict[str, Any] | None:  # fmt: skip
    """Single-stream figures through the contender's own engine (HTTP endpoint or in-process). At
    ``full_length`` only an endpoint can be told to ignore end-of-sequence: None in-process."""
    base_url = getattr(c.generator, "base_url", None)
    if base_url is None:
        if full_length:
            return None
        return {"engine": "transformers (in-process)", **sequential(c.generator, prompts, n=n, max_tokens=max_tokens)}
    dicts = [[m.model_dump() for m in p] for p in prompts]
    return {"engine": f"endpoint {base_url}", **level(base_url, c.api_key, c.generator.name, dicts, concurrency=1, n=n,
                                                      max_tokens=max_tokens, full_length=full_length)}  # fmt: skip


def decode_rate(r: dict[str, Any]) -> float | None:
    """Tokens/s after the first token: (tokens per answer - 1) / (end-to-end - time to first token)."""
    good = r["requests"] - r["failed"]
    spent = r["e2e_p50_s"] - r["ttft_p50_s"]
    if not good or not spent > 0:
        return None
    return round((r["output_tokens"] / good - 1) / spent, 2)


def engine_speeds(models: list[Contender], prompts: list[list[ChatMessage]], opts: ReportOptions) -> dict[str, dict]:
    """Every contender's single-stream figures, natural and at equal length, in interleaved rounds; medians
    of the rounds (each round's figures are kept)."""

    for c in models:
        c.generator.generate(prompts[0], max_tokens=4)  # warm-up: the first request pays for caches and graphs
    runs: dict[str, dict[str, list]] = {c.label: {"natural": [], "equal_length": []} for c in models}
    for _ in range(max(1, opts.speed_rounds)):
        for c in models:
            for kind in ("natural", "equal_length"):
                r = engine_speed(c, prompts, n=opts.speed_prompts, max_tokens=opts.speed_max_tokens,
                                 full_length=kind == "equal_length")  # fmt: skip
                if r is not None and not r["failed"]:
                    runs[c.label][kind].append({**r, "decode_tokens_per_s": decode_rate(r)})

    def median_of(rows: list[dict], key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    out = {}
    for c in models:
        natural, equal = runs[c.label]["natural"], runs[c.label]["equal_length"]
        keys = ("output_tokens_per_s", "ttft_p50_s", "e2e_p50_s", "decode_tokens_per_s")
        row: dict[str, Any] = {"engine": natural[0]["engine"] if natural else None, "rounds": len(natural)}
        row.update({k: median_of(natural, k) for k in keys})
        per_answer = [r["output_tokens"] / r["requests"] for r in natural]
        row["tokens_per_answer"] = round(statistics.median(per_answer), 3) if per_answer else None
        row["equal_length"] = {k: median_of(equal, k) for k in keys} if equal else None
        row["runs"] = runs[c.label]
        out[c.label] = row
    return out


def regression(ctx: Context, c: Contender, opts: ReportOptions, *, verifier: Any, embedder: Any) -> dict[str, Any]:
    """Every suite through the RAG pipeline with ``c``'s generator; pooled score and per-suite summaries."""

    pipeline = build_pipeline(ctx, generator=c.generator)
    pipeline.max_tokens = opts.max_tokens
    responder = RAGResponder(pipeline, name=c.label)
    cases, suites = [], {}
    for suite_name in opts.suites:
        suite = load_suite(suite_name)
        result = run_suite(suite.name, suite_cases(suite, data_dir=opts.data_dir, limit=opts.limit_per_suite),
                           responder, embedder=embedder, verifier=verifier, progress=True)  # fmt: skip
        suites[suite.name] = result.summary()
        cases += result.cases
    hall = [x.hallucination for x in cases if x.hallucination is not None]
    return {
        "n": len(cases),
        "score": round(sum(map(_case_score, cases)) / max(1, len(cases)), 4),
        "pass_rate": round(sum(x.passed for x in cases) / max(1, len(cases)), 4),
        "hallucination_mean": round(sum(hall) / len(hall), 4) if hall else None,
        "suites": {
            k: {f: v[f] for f in ("n", "pass_rate", "mean_score", "hallucination_mean")} for k, v in suites.items()
        },
        "failing": [x.id for x in cases if not x.passed],
    }


def run_report(ctx: Context, models: list[Contender], opts: ReportOptions) -> dict[str, Any]:
    """Every figure for every contender, then the distillation targets."""
    detector = None
    if opts.detector:
        detector = load_detector(ctx, opts.detector)
    embedder = build_embedder(ctx, backend="torch")
    out: dict[str, Any] = {"models": {c.label: {"name": c.name} for c in models}, "options": _jsonable(opts)}
    prompts = rag_prompts(ctx, models[0].generator, sample_questions(opts.speed_prompts))
    if not prompts:
        raise NotFoundError("no sample question retrieves a passage", hint="run `helpline kb sync` first")
    for c in models:
        out["models"][c.label]["regression"] = regression(ctx, c, opts, verifier=detector, embedder=embedder)
    for label, speed in engine_speeds(models, prompts, opts).items():
        out["models"][label]["speed"] = speed
    if opts.doc2dial is not None and opts.doc2dial.exists():
        documents, questions = load_questions(opts.doc2dial, limit=opts.doc2dial_limit, removed=0, seed=0,
                                              max_docs=opts.doc2dial_max_docs)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            kb, doc_embedder = build_index(ctx, documents=documents, store_dir=tmp)
            for c in models:
                out["models"][c.label]["doc2dial"] = run_arm(
                    ctx,
                    kb,
                    doc_embedder,
                    questions,
                    c.generator,
                    rag=True,
                    max_tokens=opts.max_tokens,
                    detector=detector,
                )
    if opts.memory:
        with tempfile.TemporaryDirectory() as tmp:
            dicts = [[m.model_dump() for m in p] for p in prompts]
            for c in models:
                row = out["models"][c.label]
                if c.record is None:
                    row["memory"] = {"skipped": "the teacher is not a local registry model (pass --teacher-model)"}
                    continue
                base, adapter = _paths(ctx, c.record)
                try:
                    row["memory"] = run_probe(base, adapter, dicts, n=min(3, len(dicts)),
                                              max_tokens=opts.speed_max_tokens, workdir=Path(tmp))  # fmt: skip
                except RuntimeError as e:  # one model's probe must not lose the figures already measured
                    row["memory"] = {"error": str(e)[-500:]}
    out["targets"] = targets(out["models"])
    return out


def _paths(ctx: Context, record: ModelRecord) -> tuple[str, str | None]:
    return str(ctx.registry.base_of(record).path), str(record.path) if record.kind == "adapter" else None


def targets(models: dict[str, dict]) -> dict[str, Any]:
    """Student after against the teacher (≥ 90% of its regression score at ≥ 1.8× its single-stream
    tokens/s) and against itself before distillation (a higher score)."""
    t, b, a = (models[k] for k in LABELS)
    score_ratio = a["regression"]["score"] / t["regression"]["score"] if t["regression"]["score"] else None
    out: dict[str, Any] = {
        "score_ratio_vs_teacher": _r(score_ratio),
        "score_ratio_met": bool(score_ratio is not None and score_ratio >= 0.9),
        "beats_student_before": a["regression"]["score"] > b["regression"]["score"],
    }
    for key, section in (("engine", "speed"), ("transformers", "memory")):
        ts, as_ = t.get(section, {}).get("output_tokens_per_s"), a.get(section, {}).get("output_tokens_per_s")
        basis = "as answered"
        t_eq, a_eq = (m.get(section, {}).get("equal_length") or {} for m in (t, a))
        if t_eq.get("output_tokens_per_s") and a_eq.get("output_tokens_per_s"):
            ts, as_, basis = t_eq["output_tokens_per_s"], a_eq["output_tokens_per_s"], "equal length"
        ratio = as_ / ts if ts and as_ else None
        out[f"speed_ratio_{key}"] = _r(ratio)
        out[f"speed_ratio_{key}_met"] = bool(ratio is not None and ratio >= 1.8)
        if key == "engine":
            out["speed_ratio_engine_basis"] = basis if ratio is not None else None
            natural = [m.get("speed", {}).get("output_tokens_per_s") for m in (t, a)]
            out["speed_ratio_engine_as_answered"] = _r(natural[1] / natural[0]) if all(natural) else None
    return out


def _r(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None


def _jsonable(opts: ReportOptions) -> dict[str, Any]:
    return {
        k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in vars(opts).items()
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (one column per model)."""
    rows: list[tuple[str, tuple[str, ...]]] = [
        ("regression score (mean case score)", ("regression", "score")),
        ("regression pass rate", ("regression", "pass_rate")),
        ("regression cases", ("regression", "n")),
        ("hallucination score of answers (mean, lower is better)", ("regression", "hallucination_mean")),
        ("doc2dial faithful (retrieved passages)", ("doc2dial", "faithful_rate_retrieved")),
        ("doc2dial faithful (gold passage)", ("doc2dial", "faithful_rate_gold")),
        ("doc2dial citation correct", ("doc2dial", "citation_correct")),
        ("doc2dial citation precision", ("doc2dial", "citation_precision")),
        ("doc2dial similarity to agent", ("doc2dial", "similarity_agent")),
        ("engine single-stream tokens/s, as answered", ("speed", "output_tokens_per_s")),
        ("engine tokens per answer, as answered", ("speed", "tokens_per_answer")),
        ("engine TTFT p50 (s)", ("speed", "ttft_p50_s")),
        ("engine single-stream tokens/s, equal length", ("speed", "equal_length", "output_tokens_per_s")),
        ("engine decode tokens/s, equal length", ("speed", "equal_length", "decode_tokens_per_s")),
        ("transformers tokens/s", ("memory", "output_tokens_per_s")),
        ("transformers TTFT p50 (s)", ("memory", "ttft_p50_s")),
        ("peak RSS, transformers (MB)", ("memory", "peak_rss_mb")),
        ("parameters (M)", ("memory", "parameters_m")),
    ]
    models = report["models"]
    lines = ["| | " + " | ".join(f"{k} ({models[k]['name']})" for k in LABELS) + " |", "|---" * 4 + "|"]
    for title, path in rows:
        lines.append(f"| {title} | " + " | ".join(_cell(models[k], path) for k in LABELS) + " |")
    lines += ["", "targets: " + ", ".join(f"{k}={v}" for k, v in report["targets"].items())]
    return "\n".join(lines) + "\n"


def _cell(row: dict, path: tuple[str, ...]) -> str:
    value: Any = row
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return "–" if value is None else str(value)


def write_report(report: dict[str, Any], reports_dir: Path, name: str) -> dict[str, str]:
    """``distill-<name>-<time>.json`` and ``.md`` in the workspace's reports folder."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    stem = reports_dir / f"distill-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    return {"json": str(stem.with_suffix(".json")), "markdown": str(stem.with_suffix(".md"))}
