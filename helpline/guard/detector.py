"""Score an answer's groundedness in passages: support features + a fine-tuned cross-encoder.

Each (passage, answer part) pair gets an input row: the support features of ``features.py``,
the cross-encoder's logit when one was trained (MiniLM reading passage and "Q: question / A:
answer"), and for HaluEval dialogue the style score. A per-kind logistic head (``qa``,
``dialogue``, ``rag``; fitted by the training recipe) turns the row into P(hallucinated). An
answer is scored whole and sentence by sentence; a part counts as supported when *any* passage
supports it (minimum over passages), and the answer is as bad as its worst part. torch and
transformers load only when a cross-encoder is present.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from helpline.guard.features import apply_head, support_features
from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.lazy_imports import require
from helpline.platform.registry import Registry

ScoringMode = Literal["answer", "sentences", "both"]
Precision = Literal["auto", "bf16", "int8", "fp32"]
CONFIG_FILE = "detector.json"
STYLE_FILE = "style.joblib"
CROSS_ENCODER = "cross_encoder"
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
    max_length: int = 128
    mode: ScoringMode = "both"
    # Per kind: HaluEval labels whole answers, so its kinds score the whole answer.
    modes: dict[str, ScoringMode] = field(default_factory=lambda: {"qa": "answer", "dialogue": "answer"})
    thresholds: dict[str, float] = field(default_factory=dict)
    # kind -> fitted logistic head (see features.fit_head); "rag" is the default for live answers.
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> DetectorConfig:
        path = folder / CONFIG_FILE
        data = json.loads(path.read_text()) if path.exists() else {}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

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

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: DetectorConfig,
        *,
        style: Any = None,
        name: str = "detector",
    ) -> None:
        self.model = model  # the cross-encoder, or None (support features only)
        self.tokenizer = tokenizer
        self.config = config
        self.style = style
        self.name = name

    @classmethod
    def load(cls, path: str | Path, *, precision: Precision = "auto", threads: int | None = None) -> Detector:
        """Load a saved detector; ``precision`` is the cross-encoder's (see :func:`load_cross_encoder`).

        ``auto`` runs the cross-encoder in the precision its heads and thresholds were fitted on
        (detectors calibrated before that was recorded were fitted on int8 logits).
        """
        folder = Path(path)
        if not (folder / CONFIG_FILE).exists():
            raise NotFoundError(
                f"no detector at {folder}",
                hint="train one with `helpline eval train-detector` or pass the folder of a saved detector",
            )
        config = DetectorConfig.read(folder)
        model = tokenizer = style = None
        if (folder / CROSS_ENCODER / "config.json").exists():
            calibrated = config.metadata.get("validation", {}).get("cross_encoder_precision", "int8")
            model, tokenizer = load_cross_encoder(
                folder / CROSS_ENCODER, precision=precision, calibrated=calibrated, threads=threads
            )
        if (folder / STYLE_FILE).exists():
            style = require("joblib", "eval").load(folder / STYLE_FILE)
        return cls(model, tokenizer, config, style=style, name=folder.name)

    # scoring ---------------------------------------------------------------------------------

    def score(self, answer: str, passages: list[str], question: str | None = None, *, kind: str = "rag") -> float:
        """Probability that ``answer`` is not supported by ``passages`` (0 = grounded, 1 = hallucinated)."""
        return self.verdict(answer, passages, question, kind=kind).score

    def verdict(
        self,
        answer: str,
        passages: list[str],
        question: str | None = None,
        *,
        threshold: float | None = None,
        kind: str = "rag",
    ) -> Verdict:
        """The score, the decision at the calibrated threshold, and per-sentence detail."""
        return self.verdicts([(answer, passages, question)], threshold=threshold, kind=kind)[0]

    def threshold_for(self, kind: str) -> float:
        return self.config.thresholds.get(kind, self.config.threshold)

    def verdicts(
        self,
        queries: Sequence[tuple[str, Sequence[str], str | None]],
        *,
        threshold: float | None = None,
        kind: str = "rag",
        batch_size: int = 32,
        progress: bool = False,
    ) -> list[Verdict]:
        """Batched :meth:`verdict` for offline evaluation (one forward pass per batch of pairs)."""
        mode = self.config.modes.get(kind, self.config.mode)
        cut = self.threshold_for(kind) if threshold is None else threshold
        qs = [_Query(a, list(p) or [""], q) for a, p, q in queries]
        plan: list[tuple[int, int, int]] = []  # (query, segment (0 = whole answer), passage)
        triples: list[tuple[str, str, str | None]] = []
        segments = [self._segments(q.answer, mode) for q in qs]
        for qi, (q, segs) in enumerate(zip(qs, segments)):
            for si, seg in enumerate(segs):
                for pi, passage in passage_windows(list(q.passages)):
                    plan.append((qi, si, pi))
                    triples.append((passage, seg, q.question))
        probs = self.probabilities(triples, kind=kind, batch_size=batch_size, progress=progress)
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

    def probabilities(
        self,
        triples: list[tuple[str, str, str | None]],
        *,
        kind: str = "rag",
        batch_size: int = 32,
        progress: bool = False,
    ) -> list[float]:
        """P(hallucinated) of (passage, answer part, question) triples under the ``kind`` head."""
        rows = self.inputs(triples, kind=kind, batch_size=batch_size, progress=progress)
        head = self.head(kind)
        if head is None:  # an untrained detector: the cross-encoder alone, or nothing to go on
            return [1.0 / (1.0 + math.exp(-r[-1])) if self.model is not None else 0.5 for r in rows]
        return [apply_head(head, r) for r in rows]

    def head(self, kind: str) -> dict[str, Any] | None:
        heads = self.config.heads
        return heads.get(kind) or heads.get("rag") or (next(iter(heads.values())) if heads else None)

    def inputs(
        self,
        triples: list[tuple[str, str, str | None]],
        *,
        kind: str = "rag",
        batch_size: int = 32,
        progress: bool = False,
    ) -> list[list[float]]:
        """Input rows for a head: support features, then the cross-encoder logit, then the style score."""
        head = self.head(kind)
        names = head["inputs"] if head else ["cross_encoder"]
        rows = [support_features(p, a, q) for p, a, q in triples]
        if "cross_encoder" in names:
            if self.model is None:
                raise NotFoundError("this detector's head needs a cross-encoder, but none was loaded")
            pairs = [(p, hypothesis(a, q)) for p, a, q in triples]
            for row, z in zip(rows, self.logits(pairs, batch_size=batch_size, progress=progress)):
                row.append(z)
        if "style" in names and self.style is not None:
            for row, z in zip(rows, self.style.decision_function([a for _, a, _ in triples]).tolist()):
                row.append(float(z))
        return rows

    def _segments(self, answer: str, mode: ScoringMode) -> list[str]:
        # Index 0 is the whole answer; sentences follow when the answer has more than one.
        sentences = split_sentences(answer) if mode != "answer" else []
        if len(sentences) <= 1:
            return [answer]
        return [answer, *sentences]

    def logits(self, pairs: list[tuple[str, str]], *, batch_size: int = 32, progress: bool = False) -> list[float]:
        """The cross-encoder's logit for (passage, hypothesis) pairs, batched by length to limit padding."""
        torch = require("torch", "eval")
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out = [0.0] * len(pairs)
        batches: Any = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if progress:
            tqdm = require("tqdm", "train").tqdm

            batches = tqdm(batches, desc="cross-encoder", unit="batch")
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
                for i, z in zip(idx, self.model(**enc).logits[:, 0].float().tolist()):
                    out[i] = float(z)
        return out


def load_cross_encoder(
    folder: Path, *, precision: Precision = "auto", calibrated: str | None = None, threads: int | None = None
) -> tuple[Any, Any]:
    """The fine-tuned MiniLM cross-encoder and its tokenizer, in ``precision``.

    ``auto`` is ``calibrated`` (the precision the heads were fitted on) where the CPU runs it, else bf16
    where the CPU has bf16 instructions (as fast as int8 there and as exact as fp32: int8 dynamic
    quantization cost the dialogue cross-encoder 0.008 AUROC), else int8 dynamic quantization.
    """
    torch = require("torch", "eval")
    transformers = require("transformers", "eval")
    if threads:
        torch.set_num_threads(threads)
    precision = resolve_precision(precision, torch, calibrated=calibrated)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=dtype).eval()
    if precision == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model, tokenizer


def resolve_precision(precision: Precision, torch: Any, *, calibrated: str | None = None) -> str:
    """``auto`` -> ``calibrated`` if given, else bf16; bf16 only where the CPU runs it natively, else int8."""
    if precision not in get_args(Precision):
        raise ConfigError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(get_args(Precision))}")
    if precision != "auto":
        return precision
    wanted = calibrated or "bf16"
    if wanted != "bf16":
        return wanted
    return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "int8"


def registered_detector_path(registry: Registry, name: str) -> Path:
    """The folder of the detector registered as ``name``; a chat model or an embedder there is refused."""
    record = registry.get_model(name)
    if record.kind != "detector":
        raise ConfigError(
            f"{name!r} is a {record.kind} model, not a hallucination detector",
            hint="name a detector (`helpline models list` shows kind detector), or set gateway.detector: auto",
        )
    return Path(record.path)
