"""Score an answer's groundedness in passages with the fine-tuned cross-encoder.

The model reads (passage, "Q: question / A: answer") and outputs the probability that the answer is
hallucinated. An answer is scored as a whole and sentence by sentence; a sentence counts as
supported when *any* passage supports it (minimum over passages), and the answer is as bad as its
worst part (maximum over the whole answer and its sentences). torch and transformers are imported
inside functions so that the gateway pays for them only when a detector is configured.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from helpline.platform.errors import NotFoundError
from helpline.platform.lazy_imports import require

ScoringMode = Literal["answer", "sentences", "both"]
CONFIG_FILE = "detector.json"
MAX_QUESTION_CHARS = 300
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])|\n+\s*(?:[-*•]|\d+[.)])?\s*")


def hypothesis(answer: str, question: str | None) -> str:
    """The second segment the model reads; the question's tail keeps multi-turn context short."""
    if not question:
        return answer
    return f"Q: {question.strip()[-MAX_QUESTION_CHARS:]}\nA: {answer}"


def split_sentences(text: str) -> list[str]:
    """Sentences and list items of ``text``; fragments of fewer than 3 words join their neighbour."""
    parts = [p.strip() for p in _SENTENCE.split(text) if p and p.strip()]
    out: list[str] = []
    pending = ""
    for part in parts:
        part = f"{pending} {part}".strip()
        pending = ""
        if len(part.split()) >= 3:
            out.append(part)
        elif out:
            out[-1] = f"{out[-1]} {part}"
        else:
            pending = part  # a short opener ("Yes.") joins the next sentence
    if pending:
        out.append(pending)
    return out


_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "me",
        "him",
        "her",
        "us",
        "them",
        "my",
        "your",
        "his",
        "our",
        "their",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "why",
        "how",
        "not",
        "no",
        "yes",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "will",
        "would",
        "can",
        "could",
        "should",
        "may",
        "might",
        "must",
        "also",
        "so",
        "than",
        "then",
        "there",
        "here",
        "very",
        "just",
        "about",
        "into",
        "over",
        "after",
        "before",
        "up",
        "down",
        "out",
        "too",
        "only",
        "own",
        "same",
        "such",
        "more",
        "most",
        "other",
        "some",
        "any",
        "all",
        "both",
        "each",
    ]
)
FEATURES = ("cross_encoder_logit", "unsupported_words", "unsupported_names_numbers", "log_words")


def lexical_features(passage: str, answer: str, question: str | None) -> list[float]:
    """What the answer says that neither the passage nor the question contains.

    ``unsupported_words``: share of the answer's content words (5-letter prefixes, so plurals and
    tenses match) found in neither; ``unsupported_names_numbers``: capitalised words and numbers
    found in neither (capped at 5); ``log_words``: log(1 + answer length in words).
    """
    known = {w.lower()[:5] for w in _WORD.findall(f"{passage} {question or ''}")}
    words = _WORD.findall(answer)
    content = [(i, w) for i, w in enumerate(words) if w.lower() not in _STOP]
    unsupported = [(i, w) for i, w in content if w.lower()[:5] not in known]
    # A capital on the answer's first word says nothing; elsewhere it marks a name.
    names = [w for i, w in unsupported if w[0].isdigit() or (w[0].isupper() and i > 0)]
    share = len(unsupported) / len(content) if content else 0.0
    return [share, float(min(len(names), 5)), math.log1p(len(words))]


def passage_windows(passages: list[str], *, size: int = 700, overlap: int = 150) -> list[tuple[int, str]]:
    """(passage index, text): long passages cut into overlapping windows that fit the model's input."""
    out: list[tuple[int, str]] = []
    for i, text in enumerate(passages):
        if len(text) <= size + overlap:
            out.append((i, text))
            continue
        for start in range(0, len(text) - overlap, size - overlap):
            out.append((i, text[start : start + size]))
    return out


@dataclass
class DetectorConfig:
    """What `detector.json` beside the weights records (written by training and calibration)."""

    threshold: float = 0.5
    max_length: int = 256
    mode: ScoringMode = "both"
    thresholds: dict[str, float] = field(default_factory=dict)
    # Logistic-regression weights over FEATURES (+ bias last), fitted on the validation split;
    # empty means "use the cross-encoder's probability alone".
    combiner: list[float] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> DetectorConfig:
        path = folder / CONFIG_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def write(self, folder: Path) -> None:
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self), indent=2))


@dataclass
class SentenceScore:
    """One answer sentence and its hallucination probability (best-supporting passage)."""

    sentence: str
    score: float
    passage: int


@dataclass
class Verdict:
    """The detector's judgement of one answer."""

    score: float
    hallucinated: bool
    threshold: float
    answer_score: float
    sentences: list[SentenceScore]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Query:
    answer: str
    passages: Sequence[str]
    question: str | None


class Detector:
    """A loaded detector; create it with :meth:`load`. Thread-safe for inference."""

    def __init__(self, model: Any, tokenizer: Any, config: DetectorConfig, *, name: str = "detector") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.name = name

    @classmethod
    def load(cls, path: str | Path, *, quantize: bool = True, threads: int | None = None) -> Detector:
        """Load a saved detector; ``quantize`` applies int8 dynamic quantization (faster on CPU)."""
        torch = require("torch", "eval")
        transformers = require("transformers", "eval")
        folder = Path(path)
        if not (folder / "config.json").exists():
            raise NotFoundError(
                f"no detector checkpoint at {folder}",
                hint="train one with `helpline eval train-detector` or pass the folder of a saved detector",
            )
        if threads:
            torch.set_num_threads(threads)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        model = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        if quantize:
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        return cls(model, tokenizer, DetectorConfig.read(folder), name=folder.name)

    # scoring ---------------------------------------------------------------------------------

    def score(self, answer: str, passages: list[str], question: str | None = None) -> float:
        """Probability that ``answer`` is not supported by ``passages`` (0 = grounded, 1 = hallucinated)."""
        return self.verdict(answer, passages, question).score

    def verdict(
        self, answer: str, passages: list[str], question: str | None = None, *, threshold: float | None = None
    ) -> Verdict:
        """The score, the decision at the calibrated threshold, and per-sentence detail."""
        return self.verdicts([(answer, passages, question)], threshold=threshold)[0]

    def verdicts(
        self,
        queries: Sequence[tuple[str, Sequence[str], str | None]],
        *,
        threshold: float | None = None,
        batch_size: int = 32,
        progress: bool = False,
    ) -> list[Verdict]:
        """Batched :meth:`verdict` for offline evaluation (one forward pass per batch of pairs)."""
        mode = self.config.mode
        cut = self.config.threshold if threshold is None else threshold
        qs = [_Query(a, list(p) or [""], q) for a, p, q in queries]
        plan: list[tuple[int, int, int]] = []  # (query, segment (0 = whole answer), passage)
        texts: list[tuple[str, str]] = []
        segments = [self._segments(q.answer, mode) for q in qs]
        for qi, (q, segs) in enumerate(zip(qs, segments)):
            for si, seg in enumerate(segs):
                for pi, passage in passage_windows(list(q.passages)):
                    plan.append((qi, si, pi))
                    texts.append((passage, hypothesis(seg, q.question)))
        logits = self.logits(texts, batch_size=batch_size, progress=progress)
        probs = [
            self.combine(logit, lexical_features(passage, seg_answer, qs[qi].question))
            for logit, (qi, _, _), (passage, _), seg_answer in zip(
                logits, plan, texts, self._segment_texts(plan, segments)
            )
        ]
        best: dict[tuple[int, int], tuple[float, int]] = {}
        for (qi, si, pi), p in zip(plan, probs):
            if (qi, si) not in best or p < best[(qi, si)][0]:
                best[(qi, si)] = (p, pi)
        out = []
        for qi, segs in enumerate(segments):
            whole = best[(qi, 0)][0]
            sentences = [SentenceScore(s, *best[(qi, si)]) for si, s in enumerate(segs) if si > 0]
            parts = ([whole] if mode != "sentences" else []) + [s.score for s in sentences]
            score = max(parts) if parts else whole
            out.append(Verdict(round(score, 6), score >= cut, cut, round(whole, 6), sentences))
        return out

    def combine(self, logit: float, features: list[float]) -> float:
        """P(hallucinated) from the cross-encoder logit and the lexical features."""
        w = self.config.combiner
        z = logit if not w else w[0] * logit + sum(a * b for a, b in zip(w[1:-1], features)) + w[-1]
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    @staticmethod
    def _segment_texts(plan: list[tuple[int, int, int]], segments: list[list[str]]) -> list[str]:
        return [segments[qi][si] for qi, si, _ in plan]

    def _segments(self, answer: str, mode: ScoringMode) -> list[str]:
        # Index 0 is the whole answer; sentences follow when the answer has more than one.
        sentences = split_sentences(answer) if mode != "answer" else []
        if len(sentences) <= 1:
            return [answer]
        return [answer, *sentences]

    def probabilities(
        self, pairs: list[tuple[str, str]], *, batch_size: int = 32, progress: bool = False
    ) -> list[float]:
        """P(hallucinated) for (passage, hypothesis) pairs, batched by length to limit padding."""
        torch = require("torch", "eval")
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out = [0.0] * len(pairs)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="scoring", unit="batch")
        with torch.inference_mode():
            for idx in batches:
                enc = self.tokenizer(
                    [pairs[i][0] for i in idx],
                    [pairs[i][1] for i in idx],
                    truncation="longest_first",
                    max_length=self.config.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                for i, z in zip(idx, self.model(**enc).logits[:, 0].tolist()):
                    out[i] = float(z)
        return out
