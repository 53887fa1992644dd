"""`helpline eval sft`: ROUGE-L and a structure check of a model's answers against reference answers.

The structure check scores what a support answer in the company's procedure looks like, each part
a small check returning a score and a reason:

- ``NumberedSteps``: where the reference gives numbered steps, the answer gives them too;
- ``PlaceholdersKept``: ``{{Placeholders}}`` of the reference (and of the question) survive, none invented
  as literal values;
- ``EmpatheticOpener``: the first sentence acknowledges the customer.
"""

from __future__ import annotations

import random
import re
import statistics
from dataclasses import dataclass

from helpline.platform.lazy_imports import require
from helpline.platform.pii import scrub_messages
from helpline.training.data.sources import load_source

_STEP = re.compile(r"^\s*\d+[.)]\s+\S", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{[^{}]+\}\}")
_OPENERS = re.compile(
    r"\b(understand|sorry|apologi[sz]e|thank|happy to help|glad to|here to help|appreciate|i hear|"
    r"no worries|certainly|of course|absolutely|i'?m here|assist you)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Verdict:
    """One check's score in [0, 1] (None: not applicable) and why."""

    score: float | None
    reason: str


@dataclass(frozen=True)
class NumberedSteps:
    """Numbered steps in the answer wherever the reference has them."""

    def evaluate(self, answer: str, reference: str, question: str) -> Verdict:
        if len(_STEP.findall(reference)) < 2:
            return Verdict(None, "reference has no numbered steps")
        n = len(_STEP.findall(answer))
        return Verdict(1.0 if n >= 2 else 0.0, f"{n} numbered steps")


@dataclass(frozen=True)
class PlaceholdersKept:
    """Share of the reference's placeholders that the answer keeps."""

    def evaluate(self, answer: str, reference: str, question: str) -> Verdict:
        wanted = set(_PLACEHOLDER.findall(reference))
        if not wanted:
            return Verdict(None, "reference has no placeholders")
        kept = wanted & set(_PLACEHOLDER.findall(answer))
        return Verdict(len(kept) / len(wanted), f"kept {len(kept)}/{len(wanted)}")


@dataclass(frozen=True)
class EmpatheticOpener:
    """The first sentence acknowledges the customer."""

    def evaluate(self, answer: str, reference: str, question: str) -> Verdict:
        first = re.split(r"(?<=[.!?])\s", answer.strip(), maxsplit=1)[0]
        hit = _OPENERS.search(first)
        return Verdict(1.0 if hit else 0.0, f"opener {hit.group(0)!r}" if hit else "no acknowledging opener")


CHECKS = (NumberedSteps(), PlaceholdersKept(), EmpatheticOpener())


def structure_score(answer: str, reference: str, question: str) -> dict:
    """Per-check scores and their mean over the applicable checks."""
    verdicts = {type(c).__name__: c.evaluate(answer, reference, question) for c in CHECKS}
    applicable = [v.score for v in verdicts.values() if v.score is not None]
    return {
        "score": sum(applicable) / len(applicable) if applicable else 0.0,
        "checks": {k: v.score for k, v in verdicts.items()},
    }


def score_answers(answers: list[str], references: list[str], questions: list[str]) -> dict:
    """ROUGE-L F1 and the structure score, averaged; per-check means over applicable examples."""
    rouge_scorer = require("rouge_score.rouge_scorer", "eval")

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(r, a)["rougeL"].fmeasure for a, r in zip(answers, references, strict=True)]
    structure = [structure_score(a, r, q) for a, r, q in zip(answers, references, questions, strict=True)]
    per_check = {}
    for name in (type(c).__name__ for c in CHECKS):
        values = [s["checks"][name] for s in structure if s["checks"][name] is not None]
        per_check[name] = round(statistics.fmean(values), 4) if values else None
    return {
        "examples": len(answers),
        "rougeL_f1": round(statistics.fmean(rouge), 4),
        "structure": round(statistics.fmean(s["score"] for s in structure), 4),
        "structure_checks": per_check,
    }


def load_eval_set(spec: str, limit: int, seed: int = 0) -> tuple[list[list[dict]], list[str], list[str]]:
    """Prompts (all turns but the last answer), references and questions from any supported source.

    ``bitext:CSV`` / ``chat:JSONL`` go through the same loader (and scrubber) as `data prepare`;
    a prepared split (``test.jsonl`` of a dataset version) can be given as ``chat:PATH``.
    """
    conversations, _ = load_source(spec, skip_invalid=True)
    if len(conversations) > limit:
        conversations = random.Random(seed).sample(conversations, limit)
    prompts, references, questions = [], [], []
    for conv in conversations:
        messages, _ = scrub_messages(conv.messages)
        prompts.append(messages[:-1])
        references.append(messages[-1]["content"])
        questions.append(next(m["content"] for m in reversed(messages[:-1]) if m["role"] == "user"))
    return prompts, references, questions


def generate_batched(model_path: str, adapter: str | None, prompts: list[list[dict]], *, max_tokens: int,
                     batch_size: int = 8) -> list[str]:  # fmt: skip
    """Greedy answers with transformers, left-padded batches (fp32 on CPU)."""
    torch = require("torch", "train")
    AutoModelForCausalLM = require("transformers", "train").AutoModelForCausalLM
    AutoTokenizer = require("transformers", "train").AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter or model_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if adapter:
        PeftModel = require("peft", "train").PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    answers: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            texts = [
                tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                for p in prompts[start : start + batch_size]
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1] :]
            answers.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return answers
