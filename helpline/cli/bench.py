"""`helpline bench ...`: speed and memory of answers, the detector, retrieval, serving and training; the loop.

Each benchmark builds what it measures only when it runs (heavy libraries load through ``require``).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import typer

from helpline.answering.abstention import REPORT_NAME, calibrate
from helpline.answering.decision import NoVerifier
from helpline.bench.loop import run_loop_bench
from helpline.bench.reliability import SECTIONS, ReliabilityOptions, run_reliability
from helpline.bench.reliability.faults import SCENARIOS
from helpline.bench.reliability.harness import LiveOptions
from helpline.bench.retrieval import dataset_texts, ingest_throughput, peak_rss_mb, scale_report
from helpline.bench.scale import ScaleOptions, run_scale_bench
from helpline.bench.serving import BenchOptions
from helpline.bench.serving import run_bench as run_serving_bench
from helpline.bench.training import run_bench as run_training_bench
from helpline.cli.eval import DETECTOR_HELP
from helpline.cli.eval.answers import build_answer_pipeline
from helpline.cli.output import console, json_stdout, print_json, show
from helpline.evaluation.answer_paths import served_gateway
from helpline.evaluation.load import level
from helpline.guard.selection import bench, load_detector
from helpline.improve import load_options
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.retrieval import SAMPLE_KB, sample_questions
from helpline.retrieval.factory import BACKENDS, FAST_BACKENDS, build_embedder
from helpline.retrieval.ingest.loaders import sample_texts
from helpline.training.data.prepare import resolve_dataset
from helpline.training.sft.trainer import resolve_base_model

bench_app = typer.Typer(no_args_is_help=True, help="Measure speed and memory.")


@bench_app.command("answers")
def bench_answers(
    model: str = typer.Option(None, "--model", help="Chat model (name, alias or folder; default: chat_model)."),
    engine: str = typer.Option(None, help="auto | vllm | transformers (default: settings.engine)."),
    n: int = typer.Option(24, help="Streamed requests per level."),
    concurrency: str = typer.Option("1,8", help="Concurrency levels, comma-separated."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Served-answer latency through the gateway (streamed, as the chat page asks): p50/p95 to the first
    token and to the end, with the answer unchecked, verified, and verified with the extractive fallback."""
    ctx = Context.load()
    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    prompts = [[{"role": "user", "content": q}] for q in sample_questions()]
    result: dict[str, Any] = {"n": n, "concurrency": levels, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="helpline-bench-answers-") as tmp:
        pipeline = build_answer_pipeline(ctx, model=model, engine=engine, documents=None, tmp=tmp)
        result["model"] = pipeline.generator.name
        variants = {
            "unchecked": dataclasses.replace(pipeline, verifier=NoVerifier(), reader=None),
            "verified": dataclasses.replace(pipeline, reader=None),
            "verified+fallback": pipeline,
        }
        for name, variant in variants.items():
            with served_gateway(variant, ctx.registry, Path(tmp) / name) as (url, key):
                result["variants"][name] = {
                    f"c{c}": level(
                        url, key, "helpline-support", prompts, concurrency=c, n=n, max_tokens=variant.max_tokens
                    )
                    for c in levels
                }
    if as_json:
        print_json(result)
        return
    for name, rows in result["variants"].items():
        for c, r in rows.items():
            console.print(f"{name} {c}: e2e p50/p95 {r['e2e_p50_s']}/{r['e2e_p95_s']} s, first token p50/p95 "
                          f"{r['ttft_p50_s']}/{r['ttft_p95_s']} s, failed {r['failed']}")  # fmt: skip


@bench_app.command("hallucination")
def bench_hallucination(
    dataset: str = typer.Option(..., "--dataset", help="halueval-qa:FILE or halueval-dialogue:FILE."),
    detector: str = typer.Option("helpline-detector", "--detector", help=DETECTOR_HELP),
    n: int = typer.Option(100, help="Answers to time, one at a time."),
    precision: str = typer.Option(
        "auto",
        help="Cross-encoder precision: auto (the one the detector was calibrated in, where the CPU runs it; "
        "what the gateway runs), bf16, int8 or fp32.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Time the detector on single answers (what the gateway pays per reply); reports the median."""
    ctx = Context.load()
    result = bench(load_detector(ctx, detector, precision=precision), dataset, n=n)  # type: ignore[arg-type]
    show(result, as_json)


@bench_app.command("retrieval")
def bench_retrieval(
    sizes: str = typer.Option("10000,100000", help="Knowledge-base sizes (chunks) to measure query latency at."),
    rounds: int = typer.Option(3, help="Rounds of the ingest measurement (the median is reported)."),
    repeats: int = typer.Option(3, help="Passes over the question set per latency measurement."),
    backend: str = typer.Option("openvino-int8", help="Embedder backend on the query path (see --help of kb)."),
    ingest_texts: str = typer.Option(
        "sample", help="Ingest texts: sample (the sample KB's chunks) or doc2dial:DIR / beir:DIR (its first chunks)."
    ),
    ingest_limit: int = typer.Option(300, help="At most this many chunks from a dataset given to --ingest-texts."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Ingest chunks/s (fp32 torch vs each int8 backend), query latency p50/p95 at each size, peak memory."""
    ctx = Context.load()
    r = ctx.settings.retrieval
    docs, texts = sample_texts(SAMPLE_KB, chunk_size=r.chunk_size, chunk_overlap=r.chunk_overlap)
    if ingest_texts != "sample":
        texts = dataset_texts(ingest_texts, chunk_size=r.chunk_size, chunk_overlap=r.chunk_overlap, limit=ingest_limit)
    questions = sample_questions()
    embedders = {b: build_embedder(ctx, backend=b) for b in BACKENDS}
    with console.status(f"embedding {len(texts)} chunks × {rounds} rounds per backend"):
        ingest = ingest_throughput(embedders, texts, rounds=rounds)
    fp32 = ingest["torch"]["chunks_per_s_median"]
    speedup = {b: round(ingest[b]["chunks_per_s_median"] / fp32, 2) for b in FAST_BACKENDS}
    with console.status(f"building {sizes} chunk indexes and timing {len(questions)} questions"):
        scale = scale_report(
            docs, embedders[backend], questions, sizes=[int(s) for s in sizes.split(",")], repeats=repeats
        )
    data = {
        "ingest": {"texts": ingest_texts, "chunks": len(texts), **ingest, "speedup_vs_fp32": speedup},
        "query_backend": backend,
        "scale": scale,
        "synthetic_vectors": "chunks beyond the sample KB's use random unit vectors and generated text",
        "peak_rss_mb": peak_rss_mb(),
    }
    show(data, as_json)


@bench_app.command("serving")
def bench_serving(
    abstention: bool = typer.Option(False, "--abstention", help="Calibrate the abstention threshold instead."),
    data: Path = typer.Option(None, help="doc2dial folder (docs.jsonl, qa.jsonl) for --abstention."),
    questions: int = typer.Option(300, help="--abstention: questions asked with and without their document."),
    concurrency: str = typer.Option("1,8,16,32", help="Comma-separated concurrency levels."),
    requests: int = typer.Option(0, help="Requests per level (default: 2 x concurrency, at least 8)."),
    max_tokens: int = typer.Option(64, help="Output tokens per request."),
    skip: str = typer.Option("", help="Comma-separated parts to skip: transformers,vllm,gateway,adapter,swap."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Throughput and latency: transformers sequential vs vLLM direct vs the gateway; base vs adapter."""
    ctx = Context.load()
    if abstention:
        if data is None:
            raise ConfigError("--abstention needs --data", hint="e.g. --data ../shared/data/doc2dial")
        embedder = build_embedder(ctx)
        with console.status(f"indexing {data} and asking {questions} questions twice"):
            result = calibrate(data, settings=ctx.settings, embedder=embedder, n=questions)
        result["thresholds"] = {result["mode"]: result["best_balanced"]["threshold"]}
        report = ctx.workspace.reports / REPORT_NAME
        report.write_text(json.dumps(result, indent=2))
        result["written_to"] = str(report)
    else:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
        opts = BenchOptions(
            levels=levels, requests=requests, max_tokens=max_tokens, skip=set(filter(None, skip.split(",")))
        )
        result = run_serving_bench(ctx, opts)
    if as_json:
        print_json(result)
    else:
        console.print_json(data=result)


@bench_app.command("training")
def bench_training(
    model: str = typer.Option("smollm2-135m-instruct", help="Registry name or folder of the base model."),
    dataset: str = typer.Option("bitext", help="Prepared dataset (NAME, NAME/vN or folder)."),
    steps: int = typer.Option(4, help="Optimizer steps per method (the first is not timed)."),
    batch: int = typer.Option(
        1,
        help="Examples per step. 1 with checkpointing measures what the methods store; larger batches add "
        "activations (on a 135M model the logits over a 49k vocabulary dominate from batch 4).",
    ),
    max_length: int = typer.Option(256, help="Longest example kept."),
    methods: str = typer.Option("full,lora,qlora", help="Comma-separated methods."),
    gradient_checkpointing: bool = typer.Option(
        True,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in backward, for all methods alike (as QLoRA recipes do).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Peak memory (RSS) and tokens/s of full fine-tuning, LoRA and QLoRA on the same batches."""
    ctx = Context.load()
    base = resolve_base_model(model, ctx)
    data = resolve_dataset(dataset, ctx.workspace.datasets)
    with console.status("training each method in its own process"):
        report = run_training_bench(
            base, data, methods=methods.split(","), steps=steps, batch=batch, max_length=max_length,
            checkpointing=gradient_checkpointing,
        )  # fmt: skip
    if as_json:
        print_json(report)
        return
    for method, r in report["methods"].items():
        console.print(f"{method}: peak {r.get('peak_rss_mb')} MB, {r.get('tokens_per_s')} tokens/s")


@bench_app.command("scale")
def bench_scale(
    seconds: float = typer.Option(30.0, help="How long each measured run lasts."),
    clients: int = typer.Option(8, help="Closed-loop streamed clients, spread over the replicas."),
    max_tokens: int = typer.Option(32, help="Answer length asked for."),
    engine_bound: bool = typer.Option(True, "--engine-bound/--no-engine-bound", help="Also over the real vLLM."),
    redis: bool = typer.Option(True, "--redis/--no-redis", help="Also one replica with redis_url (redis-server)."),
    failover: bool = typer.Option(True, "--failover/--no-failover", help="Also kill one of two replicas under load."),
    database_turns: int = typer.Option(2000, help="Chat turns timed for the gateway database's share (0: skip)."),
    database_url: str = typer.Option(
        None, help="Also time the gateway database on this scratch PostgreSQL database (the bench writes into it)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Throughput and p95 of one and two gateway replicas over one engine: an instant stand-in engine (what the
    gateway's own work allows) and the real vLLM (what the engine allows); Redis's cost against the default; and
    the gateway database's share of a chat (SQLite, and PostgreSQL with --database-url)."""
    options = ScaleOptions(seconds=seconds, clients=clients, max_tokens=max_tokens, engine_bound=engine_bound,
                           redis=redis, failover=failover, database_turns=database_turns,
                           database_url=database_url)  # fmt: skip
    with json_stdout(as_json):
        report = run_scale_bench(Context.load(), options)
    show(report, as_json=as_json)


@bench_app.command("reliability")
def bench_reliability(
    section: list[str] = typer.Option(
        None, "--section", help=f"A section to run (repeat; default all, in this order): {', '.join(SECTIONS)}."
    ),
    fault: list[str] = typer.Option(
        None, "--fault", help=f"faults: a scenario (repeat; default all): {', '.join(SCENARIOS)}."
    ),
    seconds: float = typer.Option(45.0, help="load: how long the streamed chats run."),
    cap: int = typer.Option(
        4, help="The gateway's concurrency cap (gateway.limits.max_concurrency); load runs twice it."
    ),
    max_tokens: int = typer.Option(48, help="Answer length asked for (generation.max_new_tokens)."),
    hang_timeout: float = typer.Option(
        12.0, help="faults: vllm.hang_timeout_s, when the SIGSTOPped engine counts as hung."
    ),
    seed: Path = typer.Option(
        None, help="An initialised workspace folder to copy (models stay there) instead of `helpline init`."
    ),
    out: Path = typer.Option(None, "--out", help="Also write the JSON object to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Load, faults, fuzzing and attacks against a real `helpline run` on loopback, in a fresh workspace."""
    live = LiveOptions(concurrency_cap=cap, max_tokens=max_tokens, hang_timeout_s=hang_timeout)
    options = ReliabilityOptions(
        sections=tuple(section or SECTIONS), seconds=seconds, faults=tuple(fault or SCENARIOS), live=live, seed=seed
    )
    with console.status(f"running {', '.join(options.sections)} against a live `helpline run` (minutes)"):
        result = run_reliability(options)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if as_json:
        print_json(result)
        return
    for name in result["sections"]:
        verdict = result[name].get("passed")
        mark = "" if verdict is None else ("[green]passed[/]" if verdict else "[red]failed[/]")
        console.print(f"{name}: {mark} ({result[name]['section_s']} s)")
    if out is not None:
        console.print(f"figures: {out}")


@bench_app.command("loop")
def bench_loop(
    corrections: int = typer.Option(30, help="Staff corrections to seed (questions production serves wrong)."),
    sft_steps: int | None = typer.Option(None, help="SFT steps (default: the preset's)."),
    pref_steps: int | None = typer.Option(None, help="Preference steps (default: the preset's)."),
    method: str = typer.Option("dpo", help="Preference method: dpo or orpo."),
    sft_set: list[str] = typer.Option([], "--sft-set", help="KEY=VALUE override of the SFT preset (repeatable)."),
    pref_set: list[str] = typer.Option([], "--pref-set", help="KEY=VALUE override of the preference preset."),
    gate_limit: int | None = typer.Option(None, help="Cases per gate suite (default: the gate config's)."),
    gate_config: Path | None = typer.Option(None, help="Promotion gate YAML (default: helpline/evaluation/gate.yaml)."),
    data_dir: Path = typer.Option(Path("../shared/data"), help="Folder the gate's data-driven suites read."),
    heldout_share: float = typer.Option(0.2, help="Share of corrected conversations held out for the gate."),
    replay_rows: int = typer.Option(200, help="Rows of production's training set mixed in."),
    train: bool = typer.Option(True, help="Run helpline improve; --no-train measures staff answers alone (minutes)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Seed corrections through the gateway as staff would, run `helpline improve` (no canary), and measure the
    corrected questions' paraphrases as served before and after, with each step's wall time. Runs on a scratch copy
    of the workspace: its production model and conversations are left as they are."""
    ctx = Context.load()
    options = load_options(
        sft_steps=sft_steps, pref_steps=pref_steps, method=method, sft_set=sft_set, pref_set=pref_set,
        gate_limit=gate_limit, gate_config=gate_config,
        data_dir=data_dir, heldout_share=heldout_share, replay_rows=replay_rows, skip_canary=True,
    )  # fmt: skip
    with json_stdout(as_json):  # the trainers print each logged step on stdout
        report = run_loop_bench(ctx, corrections=corrections, options=options, train=train,
                                log=lambda m: None if as_json else console.print(f"[dim]{m}[/]"))  # fmt: skip
    if as_json:
        print_json(report)
        return
    f = report["paraphrases_fixed"]
    console.print(
        f"{report['corrections_seeded']} corrections → {report['status']} ({report['production_before']} → "
        f"{report['production_after']}); paraphrases right before: {f['before']}, with staff answers: "
        f"{f['with_staff_answers']}, after (model alone / as served): {f['after']} / {f['after_served']} "
        f"(held out: {f['heldout_before']} → {f['heldout_after']}, n={f['n_heldout']}); "
        f"improve {report['improve_seconds']} s, total {report['total_seconds']} s"
    )
