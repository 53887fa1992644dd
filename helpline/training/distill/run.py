"""`helpline train distill`: a teacher endpoint's grounded answers become a small student's training set.

    helpline train distill --config helpline/training/configs/distill-gemma-to-smollm2.yaml [key=value ...]

Steps: build the prompt set (KB questions, Bitext instructions, reviewed conversations) → retrieve
the passages the student will see in serving → render serving's support prompt → ask the teacher
(cached, resumable) → filter (length, refusals, repeated answers, groundedness) → write
``datasets/distill-<name>/vN`` with a manifest → fine-tune the student with the SFT recipe → export gate.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpline.answering.prompts import load_prompt
from helpline.answering.rag import Verifier, split_question
from helpline.engines.protocol import Generator
from helpline.guard.verifier import DetectorVerifier
from helpline.platform.context import Context
from helpline.platform.errors import DataError, NotFoundError
from helpline.platform.schemas import ChatMessage, Chunk, ScoredChunk
from helpline.retrieval.factory import open_knowledge_base
from helpline.retrieval.knowledge_base import VISIBLE
from helpline.training.distill.config import DistillConfig, FilterConfig
from helpline.training.distill.prompts import (
    DistillPrompt,
    bitext_prompts,
    dedupe_prompts,
    file_sha256,
    kb_questions,
    normalize,
    prompt_hash,
    reviewed_prompts,
)
from helpline.training.distill.teacher import (
    TeacherCache,
    TeacherRequest,
    answer_all,
    open_teacher,
    served_teacher_name,
    teacher_api_key,
)
from helpline.training.sft.trainer import check_run_dir, output_dir, publish_run, resolve_base_model, run_sft

Search = Callable[..., list[ScoredChunk]]
SPLITS = ("train", "validation", "test")


@dataclass
class Example:
    """A prompt with its passages, the rendered request and (once answered) the teacher's answer."""

    prompt: DistillPrompt
    passages: list[ScoredChunk]
    request: TeacherRequest
    answer: str = ""
    truncated: bool = False  # the teacher was cut at max_tokens
    dropped: str = ""  # the filter that dropped it; "" when kept

    def to_json(self) -> dict:
        messages = [m.model_dump() for m in self.request.messages]
        return {
            "messages": [*messages, {"role": "assistant", "content": self.answer}],
            "intent": self.prompt.intent,
            "category": self.prompt.source,
            "origin": self.prompt.origin,
            "prompt_hash": self.request.key,
            "passages": [p.chunk.chunk_id for p in self.passages],
        }


def build_prompts(cfg: DistillConfig, chunks: list[Chunk]) -> tuple[list[DistillPrompt], dict]:
    """Every enabled source's prompts, deduplicated; returns them and per-source counts."""
    s = cfg.sources
    prompts: list[DistillPrompt] = []
    if s.kb_questions and s.kb_max_questions:
        prompts += kb_questions(chunks, s.kb_max_questions)
    if s.bitext_csv and s.bitext_limit:
        prompts += bitext_prompts(s.bitext_csv, s.bitext_limit, s.seed)
    if s.reviewed_jsonl and s.reviewed_limit:
        prompts += reviewed_prompts(s.reviewed_jsonl, s.reviewed_limit, s.seed)
    counts: dict[str, Any] = {"per_source": dict(Counter(p.source for p in prompts))}
    prompts, counts["duplicate_prompts_dropped"] = dedupe_prompts(prompts)
    if cfg.max_prompts is not None:
        prompts = prompts[: cfg.max_prompts]
    counts["prompts"] = len(prompts)
    return prompts, counts


def build_examples(cfg: DistillConfig, prompts: list[DistillPrompt], search: Search) -> tuple[list[Example], int]:
    """Retrieve passages and render serving's support prompt; prompts with no passage are skipped
    (serving abstains on them, so the student never sees such a prompt)."""
    template = load_prompt("support")
    out, no_passages = [], 0
    for p in prompts:
        conversation = [ChatMessage(**m) for m in p.conversation]
        question, history = split_question(conversation)  # the same query serving runs
        passages = search(question, k=cfg.top_k, role=cfg.role, history=history)
        if not passages:
            no_passages += 1
            continue
        messages = template.build(conversation, passages)
        key = prompt_hash(
            [m.model_dump() for m in messages],
            cfg.teacher.model,
            cfg.teacher.max_tokens,
            cfg.teacher.temperature,
            cfg.teacher.stop,
        )
        out.append(Example(p, passages, TeacherRequest(key, messages)))
    return out, no_passages


def apply_filters(examples: list[Example], filters: FilterConfig, verifier: Verifier | None) -> Counter:
    """Mark each example's ``dropped`` reason (first failing filter, cheap ones first); returns counts."""
    refusals = [re.compile(p, re.I) for p in filters.refusal_patterns]
    answers_seen: Counter = Counter()
    dropped: Counter = Counter()
    for ex in examples:
        words = len(ex.answer.split())
        if words < filters.min_words:
            ex.dropped = "too_short"
        elif words > filters.max_words:
            ex.dropped = "too_long"
        elif filters.drop_truncated and ex.truncated:
            ex.dropped = "truncated"
        elif any(r.search(ex.answer) for r in refusals):
            ex.dropped = "refusal"
        elif max_ngram_count(ex.answer) > filters.max_ngram_repeats:
            ex.dropped = "repetitive"
        elif answers_seen[normalize(ex.answer)] >= filters.max_answer_repeats:
            ex.dropped = "duplicate_answer"
        elif verifier is not None and not verifier.verify(ex.answer, ex.passages).grounded:
            ex.dropped = "ungrounded"
        if ex.dropped:
            dropped[ex.dropped] += 1
        else:
            answers_seen[normalize(ex.answer)] += 1
    return dropped


def max_ngram_count(text: str, n: int = 6) -> int:
    """How often the most frequent n-word sequence occurs (1 for text without repetition, 0 if shorter)."""
    words = normalize(text).split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return max(grams.values(), default=0)


def load_verifier(ctx: Context, filters: FilterConfig) -> tuple[Verifier | None, str | None]:
    """The registered groundedness detector, or None with the warning that goes into the manifest."""
    if not filters.detector:
        return None, "groundedness filter off (filters.detector is null)"
    try:
        ctx.registry.get_model(filters.detector)
    except NotFoundError:
        return None, (
            f"groundedness filter skipped: no detector {filters.detector!r} in the registry "
            "(train one with `helpline eval train-detector`)"
        )

    return DetectorVerifier.from_registry(ctx.registry, filters.detector, threshold=filters.detector_threshold), None


def split_examples(kept: list[Example], *, validation: float, test: float, seed: int) -> dict[str, list[Example]]:
    """Seeded split by prompt hash; validation always gets one example (the SFT recipe evaluates on it)."""
    if len(kept) < 3:
        raise DataError(
            f"only {len(kept)} teacher answer(s) passed the filters; at least 3 are needed",
            hint="add prompt sources, raise max_prompts, or loosen the filters (the manifest counts what dropped)",
        )
    order = sorted(kept, key=lambda e: e.request.key)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * validation))
    n_test = round(len(order) * test) if len(order) - n_val > 2 else 0
    return {"validation": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}


def _next_version(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[1:]) for p in base.iterdir() if re.fullmatch(r"v\d+", p.name)]
    return base / f"v{max(numbers, default=0) + 1}"


def write_dataset(datasets_dir: Path, name: str, splits: dict[str, list[Example]], manifest: dict) -> dict:
    """Write ``distill-<name>/vN`` atomically (a version appears only when complete); returns the manifest."""
    version_dir = _next_version(datasets_dir / f"distill-{name}")
    partial = version_dir.with_name(version_dir.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in SPLITS:
        lines = "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in splits[split])
        (partial / f"{split}.jsonl").write_text(lines, encoding="utf-8")
        files[split] = {
            "path": f"{split}.jsonl",
            "sha256": hashlib.sha256(lines.encode()).hexdigest(),
            "count": len(splits[split]),
            "per_source": dict(Counter(e.prompt.source for e in splits[split])),
        }
    manifest = {
        "name": f"distill-{name}",
        "version": version_dir.name,
        "created_at": time.time(),
        "dataset_hash": hashlib.sha256("".join(f["sha256"] for f in files.values()).encode()).hexdigest(),
        "format": "chat-messages-jsonl",
        **manifest,
        "splits": files,
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    partial.rename(version_dir)
    manifest["path"] = str(version_dir)
    return manifest


def _sources_manifest(cfg: DistillConfig) -> dict:
    s = cfg.sources
    out: dict = {"kb_questions": s.kb_questions, "kb_max_questions": s.kb_max_questions}
    for label, path in (("bitext_csv", s.bitext_csv), ("reviewed_jsonl", s.reviewed_jsonl)):
        if path:
            out[label] = {"path": path, "sha256": file_sha256(path)}
    return out


def distill_dataset(
    cfg: DistillConfig,
    *,
    datasets_dir: Path,
    teacher: Generator,
    search: Search,
    chunks: list[Chunk],
    verifier: Verifier | None,
    verifier_warning: str | None = None,
    kb_version: Any = None,
    on_answer: Callable[[int, int], None] | None = None,
) -> dict:
    """Prompts → teacher answers (cached) → filters → a new dataset version; returns its manifest."""
    prompts, counts = build_prompts(cfg, chunks)
    examples, counts["no_passages_skipped"] = build_examples(cfg, prompts, search)
    cache_path = datasets_dir / f"distill-{cfg.name}" / "teacher_cache.jsonl"
    cache = TeacherCache(cache_path)
    t = cfg.teacher
    counts["teacher"] = answer_all(
        [e.request for e in examples],
        teacher,
        cache,
        max_tokens=t.max_tokens,
        temperature=t.temperature,
        concurrency=t.concurrency,
        on_answer=on_answer,
    )
    for ex in examples:
        record = cache.get(ex.request.key)
        ex.answer = record["answer"]  # type: ignore[index]
        ex.truncated = record.get("finish_reason") == "length"  # type: ignore[union-attr]
    counts["dropped"] = dict(apply_filters(examples, cfg.filters, verifier))
    kept = [e for e in examples if not e.dropped]
    counts["kept"] = len(kept)
    warn = [w for w in (verifier_warning,) if w]
    for w in warn:
        warnings.warn(w, stacklevel=2)
    prompt = load_prompt("support")
    manifest = {
        "teacher": {"base_url": t.base_url, "model": t.model, "max_tokens": t.max_tokens, "temperature": t.temperature},
        "student": cfg.student,
        "prompt_template": {"name": prompt.name, "version": prompt.version},
        "retrieval": {"top_k": cfg.top_k, "role": cfg.role, "kb_version": kb_version},
        "sources": _sources_manifest(cfg),
        "filters": {**cfg.filters.model_dump(), "groundedness": "off" if verifier is None else "on"},
        "counts": counts,
        "warnings": warn,
        "teacher_cache": str(cache_path),
        "config": cfg.model_dump(),
    }
    splits = split_examples(kept, validation=cfg.validation, test=cfg.test, seed=cfg.seed)
    return write_dataset(datasets_dir, cfg.name, splits, manifest)


def run_distill(
    cfg: DistillConfig,
    *,
    ctx: Context,
    console: Any = None,
    teacher: Generator | None = None,
    on_answer: Callable[[int, int], None] | None = None,
) -> dict:
    """The whole command: dataset from the teacher, then (``cfg.train``) the student's SFT and export gate."""
    if cfg.train:  # before the teacher: an unknown student or an earlier run would stop it after the answers

        sft_cfg = cfg.sft_config("-")
        check_run_dir(sft_cfg, output_dir(sft_cfg, f"distill-{cfg.name}", ctx), prefix="sft.")
        try:
            resolve_base_model(cfg.student, ctx)
        except NotFoundError as e:
            raise NotFoundError(
                f"student: {e.message}",
                hint="build it first (the preset's header lists the commands: a pruned student comes from `train "
                "prune` then `train sft`), or set student=NAME of a registered base model",
            ) from e
    if teacher is None:
        cfg = resolve_teacher(cfg, ctx)
        t, allowed = cfg.teacher, ctx.settings.teacher
        teacher = open_teacher(
            t.base_url, t.model, api_key_env=t.api_key_env, timeout_s=t.timeout_s, stop=t.stop, allowed=allowed
        )
    kb = open_knowledge_base(ctx)
    visible = list(VISIBLE.get(cfg.role, ("public",)))
    chunks = kb.store.chunks(where={"access": {"$in": visible}})
    verifier, warning = load_verifier(ctx, cfg.filters)
    versions = ctx.registry.kb_versions()
    manifest = distill_dataset(
        cfg,
        datasets_dir=ctx.workspace.datasets,
        teacher=teacher,
        search=kb.search,
        chunks=chunks,
        verifier=verifier,
        verifier_warning=warning,
        kb_version=versions[-1].id if versions else None,
        on_answer=on_answer or _progress(console),
    )
    result: dict = {"dataset": manifest}
    if not cfg.train:
        return result

    sft_cfg = cfg.sft_config(manifest["path"])
    preset = f"distill-{cfg.name}"
    result["training"] = run_sft(sft_cfg, preset=preset, ctx=ctx, console=console, kind="distill")
    result.update(publish_run(result["training"], sft_cfg, preset=preset, ctx=ctx, console=console))
    return result


def resolve_teacher(cfg: DistillConfig, ctx: Context) -> DistillConfig:
    """``cfg`` with ``teacher.model`` as its endpoint serves it (a registry adapter name becomes its served
    name); fails early with the served names when the endpoint does not serve it."""

    t = cfg.teacher
    key = teacher_api_key(t.api_key_env, base_url=t.base_url, allowed=ctx.settings.teacher)
    served = served_teacher_name(t.base_url, t.model, api_key=key, registry=ctx.registry)
    return cfg.model_copy(update={"teacher": t.model_copy(update={"model": served})})


def _progress(console: Any) -> Callable[[int, int], None] | None:
    """A plain progress line every 5% (works in logs and terminals alike)."""
    if console is None:
        return None
    last = [-1]

    def report(done: int, total: int) -> None:
        step = done * 20 // max(1, total)
        if step != last[0] or done == total:
            last[0] = step
            console.print(f"teacher answers: {done}/{total}", highlight=False)

    return report
