"""End-to-end RAG evaluation on doc2dial, and the A/B comparison of four arms.

Arms: ``base`` (base model, no retrieval), ``finetuned`` (adapter, no retrieval), ``retrieval``
(base model + RAG) and ``hybrid`` (adapter + RAG). For each answer: faithfulness (the detector,
against the gold passage and, for RAG arms, against what was retrieved), citation correctness
(the gold document is cited; top-1 too; precision: the gold document's share of the cited ones),
similarity to the human agent's reply (embedding cosine and ROUGE-L), and, on questions whose gold
document was left out of the index, the abstention rate. The same figures *as served* count what the
gateway's verifier would withdraw, and the hybrid is compared with every other arm question by question
(paired bootstrap intervals), so a claim that it is better says how sure it is.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from helpline.answering.prompts import load_prompt
from helpline.evaluation.rag_questions import Question, load_questions
from helpline.evaluation.regression.evaluators import Output, cosine, is_abstention, rouge_l
from helpline.evaluation.regression.factory import resolve_model
from helpline.guard.verifier import DetectorVerifier
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import Document
from helpline.retrieval.embedders.base import CachedEmbedder
from helpline.retrieval.factory import build_embedder, scratch_knowledge_base
from helpline.serving.factory import build_generator, build_pipeline


def answer_all(
    arm: str, questions: list[Question], *, generator: Any, pipeline: Any | None, max_tokens: int
) -> list[dict]:
    """Answer every question with one arm; RAG arms go through the pipeline (retrieval, citations)."""
    prompt = load_prompt("support")
    out = []
    for q in questions:
        if pipeline is None:
            gen = generator.generate(prompt.build(q.conversation, []), max_tokens=max_tokens, temperature=0.0)
            out.append(
                {"id": q.id, "text": gen.text, "citations": [], "abstained": False, "passages": [], "retrieved": []}
            )
            continue
        prepared = pipeline.prepare(q.conversation)
        answer = pipeline.complete(prepared)
        retrieved = [] if answer.abstained else prepared.passages
        out.append(
            {
                "id": q.id,
                "text": answer.answer,
                "citations": [c.doc_id for c in answer.citations],
                "abstained": answer.abstained,
                "passages": [p.chunk.text for p in retrieved],
                "retrieved": [p.chunk.doc_id for p in retrieved],
            }
        )
    return out


def score_arm(
    questions: list[Question],
    answers: list[dict],
    *,
    detector: Any,
    embedder: Any,
    paired: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """The arm's figures (rates are fractions over the questions they apply to).

    ``as_served`` (with a detector) is what a customer of the gateway gets from the same answers: the
    gateway's verifier replaces a RAG answer the detector finds unsupported by its passages with the
    abstention, which cites nothing (``eval rag --verify`` runs that verifier inside the pipeline; these
    figures come out the same without regenerating). ``paired`` (if given) receives per-question scores
    of the answerable questions, in order, for :func:`compare_arms`.
    """
    asked = [i for i, q in enumerate(questions) if not q.removed]
    removed = [i for i, q in enumerate(questions) if q.removed]
    answerable = [(questions[i], answers[i]) for i in asked]
    gold_scores = detector.verdicts([(a["text"], [q.gold_passage], None) for q, a in answerable]) if detector else []
    said_nothing = [is_abstention(Output(a["text"], abstained=a["abstained"])) for a in answers]
    unsupported, ret_scores = retrieved_verdicts(questions, answers, said_nothing, detector)
    abstains = [said_nothing[i] for i in asked]
    per_q = citation_scores(answerable)
    out: dict[str, Any] = {
        "n_answerable": len(answerable),
        "n_unanswerable": len(removed),
        "faithful_rate_gold": _mean([not v.hallucinated for v in gold_scores]),
        "hallucination_mean_gold": _mean([v.score for v in gold_scores]),
        "faithful_rate_retrieved": _mean([not v.hallucinated for v in ret_scores]) if ret_scores else None,
        **{k: _mean(v) for k, v in per_q.items()},
        **agent_similarity(answerable, embedder),
        "abstention_rate_answerable": _mean(abstains),
        "abstention_rate_removed": _mean([said_nothing[i] for i in removed]) if removed else None,
    }
    if gold_scores:
        per_q["faithful_gold"] = [not v.hallucinated for v in gold_scores]
        kept = [i not in unsupported for i in asked]
        served = served_scores(per_q, gold_scores, abstains, kept)
        per_q.update({f"served_{k}": v for k, v in served.items()})
        out["as_served"] = {
            "withdrawn_rate_answerable": _mean([not k for k in kept]),
            **{k: _mean(v) for k, v in served.items()},
            "abstention_rate_answerable": _mean([ab or not k for ab, k in zip(abstains, kept)]),
            "abstention_rate_removed": _mean([said_nothing[i] or i in unsupported for i in removed])
            if removed
            else None,
        }
    if paired is not None:
        paired.update({k: [float(x) for x in v] for k, v in per_q.items()})
    return out


def retrieved_verdicts(
    questions: list[Question], answers: list[dict], said_nothing: list[bool], detector: Any
) -> tuple[set[int], list[Any]]:
    """One detector pass over every RAG answer against its own passages (what the gateway's verifier sees):
    the answers it finds unsupported, and its verdicts on the answerable questions."""
    answered = [i for i, a in enumerate(answers) if a["passages"] and not said_nothing[i]]
    checked = (
        detector.verdicts([(answers[i]["text"], answers[i]["passages"], None) for i in answered]) if detector else []
    )
    unsupported = {i for i, v in zip(answered, checked) if v.hallucinated}
    return unsupported, [v for i, v in zip(answered, checked) if not questions[i].removed]


def citation_scores(answerable: list[tuple[Question, dict]]) -> dict[str, list[Any]]:
    """Per answerable question: the gold document is cited, cited first, and its share of the cited ones."""
    return {
        "citation_correct": [q.doc_id in a["citations"] for q, a in answerable],
        "citation_top1": [bool(a["citations"]) and a["citations"][0] == q.doc_id for q, a in answerable],
        "citation_precision": [citation_precision(a["citations"], q.doc_id) for q, a in answerable],
    }


def agent_similarity(answerable: list[tuple[Question, dict]], embedder: Any) -> dict[str, float | None]:
    """Similarity of the answers to the human agent's replies: embedding cosine and ROUGE-L."""
    replied = [(q, a) for q, a in answerable if q.agent_response.strip()]  # some turns have no agent reply
    vecs = embedder.embed_documents([x for q, a in replied for x in (q.agent_response, a["text"] or " ")])
    sims = [cosine(vecs[2 * i], vecs[2 * i + 1]) for i in range(len(replied))]
    return {
        "similarity_agent": _mean(sims),
        "rouge_l_agent": _mean([rouge_l(q.agent_response, a["text"]) for q, a in replied]),
    }


def served_scores(
    per_q: dict[str, list[Any]], gold_scores: list[Any], abstains: list[bool], kept: list[bool]
) -> dict[str, list[Any]]:
    """Per answerable question, what a customer gets once the verifier withdraws the answers not ``kept``."""
    return {
        "citation_correct": [c and k for c, k in zip(per_q["citation_correct"], kept)],
        "citation_top1": [c and k for c, k in zip(per_q["citation_top1"], kept)],
        "citation_precision": [c * k for c, k in zip(per_q["citation_precision"], kept)],
        "faithful_answer_gold": [k and not ab and not v.hallucinated for k, ab, v in zip(kept, abstains, gold_scores)],
        "unfaithful_answer_gold": [k and not ab and v.hallucinated for k, ab, v in zip(kept, abstains, gold_scores)],
    }


def compare_arms(
    paired: dict[str, dict[str, list[float]]], *, against: str = "hybrid", resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """``against`` minus every other arm on the same questions: the mean difference of each per-question
    score with a 95% paired-bootstrap interval (percentile), and the questions it wins and loses. An
    interval that excludes 0 is evidence of a difference; 40 questions rarely separate arms by less
    than about 0.1."""
    np = require("numpy", "retrieval")
    bootstrap = require("scipy.stats", "eval").bootstrap

    if against not in paired:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for arm, scores in paired.items():
        if arm == against:
            continue
        rows: dict[str, Any] = {}
        for metric, mine in paired[against].items():
            if metric not in scores or len(scores[metric]) != len(mine) or len(mine) < 2:
                continue
            diff = np.asarray(mine) - np.asarray(scores[metric])
            ci = bootstrap((diff,), np.mean, n_resamples=resamples, method="percentile",
                           random_state=np.random.default_rng(seed)).confidence_interval  # fmt: skip
            rows[metric] = {
                "difference": round(float(diff.mean()), 4),
                "ci95": [round(float(ci.low), 4), round(float(ci.high), 4)],
                "wins": int((diff > 0).sum()),
                "losses": int((diff < 0).sum()),
            }
        out[f"{against}-{arm}"] = rows
    return out


def answer_row(arm: str, q: Question, a: dict) -> dict[str, Any]:
    """One answer as ``eval rag --answers`` writes it: the question, the gold document and what the arm did."""
    return {
        "arm": arm,
        "id": q.id,
        "question": q.conversation[-1].content,
        "gold": q.doc_id,
        "gold_removed": q.removed,
        "answer": a["text"],
        "abstained": a["abstained"],
        "citations": a["citations"],
        "retrieved": a["retrieved"],
        "agent_response": q.agent_response,
    }


def citation_precision(cited: list[str], gold: str) -> float:
    """The share of the distinct cited documents that is the gold one (0 when nothing is cited)."""
    docs = set(cited)
    return (gold in docs) / len(docs) if docs else 0.0


def build_index(ctx: Context, *, documents: list[Document], store_dir: str) -> Any:
    """A throwaway knowledge base under ``store_dir`` over the doc2dial ``documents`` (the workspace's
    embedder in fp32, cached); returns it and the uncached embedder."""
    inner = build_embedder(ctx, backend="torch")
    embedder = CachedEmbedder(inner, ctx.workspace.indexes / "embedding-cache.sqlite")
    r = ctx.settings.retrieval
    kb = scratch_knowledge_base(
        store_dir, embedder, chunk_size=r.chunk_size, chunk_overlap=r.chunk_overlap, name="doc2dial-eval"
    )
    kb.sync(documents)
    return kb, inner


ARMS = ("base", "finetuned", "retrieval", "hybrid")


def run_ab(
    ctx: Any,
    folder: Path,
    *,
    base: str,
    finetuned: str | None,
    arms: list[str],
    limit: int,
    removed: int,
    max_tokens: int,
    detector: Any,
    verify: bool = False,
    seed: int = 0,
    max_docs: int = 0,
    record: list[dict] | None = None,
) -> dict[str, Any]:
    """Answer the same questions with each arm and score them; ``record`` collects every answer."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ConfigError(f"unknown arm(s) {', '.join(unknown) or '(none given)'}", hint=f"use {','.join(ARMS)}")
    if limit + removed < 1:
        raise ConfigError("no questions to ask (--limit and --removed are both 0)", hint="e.g. --limit 40 --removed 10")
    # Both models are looked up before any question is answered: a typo fails in seconds, not after an arm.
    names = {"base": resolve_model(ctx, base), "finetuned": resolve_model(ctx, finetuned) if finetuned else None}
    documents, questions = load_questions(folder, limit=limit, removed=removed, seed=seed, max_docs=max_docs)
    results: dict[str, Any] = {"questions": len(questions), "documents_indexed": len(documents), "arms": {}}
    paired: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        kb, embedder = build_index(ctx, documents=documents, store_dir=tmp)
        for arm in arms:
            model = base if arm in ("base", "retrieval") else finetuned
            name = names["base" if arm in ("base", "retrieval") else "finetuned"]
            if model is None or name is None:
                results["arms"][arm] = {"skipped": "no fine-tuned model given (--finetuned)"}
                continue
            generator = build_generator(ctx.with_settings(chat_model=name))
            rag = arm in ("retrieval", "hybrid")
            results["arms"][arm] = {
                "model": model,
                **run_arm(ctx, kb, embedder, questions, generator, rag=rag, max_tokens=max_tokens,
                          detector=detector, verify=verify, record=record, arm=arm,
                          paired=paired.setdefault(arm, {})),
            }  # fmt: skip
    results["comparisons"] = compare_arms(paired)
    return results


def run_arm(
    ctx: Any,
    kb: Any,
    embedder: Any,
    questions: list[Question],
    generator: Any,
    *,
    rag: bool,
    max_tokens: int,
    detector: Any,
    verify: bool = False,
    record: list[dict] | None = None,
    arm: str = "",
    paired: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """One generator's answers to every question (through the RAG pipeline over ``kb`` when ``rag``),
    scored, with three examples. ``record`` (if given) gets one row per answer, labelled ``arm``;
    ``paired`` its per-question scores (:func:`score_arm`)."""
    pipeline = None
    if rag:
        verifier = None
        if verify and detector is not None:
            verifier = DetectorVerifier(detector)
        pipeline = build_pipeline(ctx, generator=generator, kb=kb, verifier=verifier)
        pipeline.max_tokens = max_tokens
    answers = answer_all("rag" if rag else "direct", questions, generator=generator, pipeline=pipeline,
                         max_tokens=max_tokens)  # fmt: skip
    out = score_arm(questions, answers, detector=detector, embedder=embedder, paired=paired)
    if record is not None:
        record.extend(answer_row(arm, q, a) for q, a in zip(questions, answers, strict=True))
    out["examples"] = [
        {
            "question": q.conversation[-1].content,
            "answer": a["text"][:300],
            "citations": a["citations"][:3],
            "gold": q.doc_id,
        }
        for q, a in list(zip(questions, answers))[:3]
    ]
    return out


def _mean(values: list[Any]) -> float | None:
    return round(statistics.fmean(float(v) for v in values), 4) if values else None
