"""Support features: what an answer says that its passage (and the question) do not.

Cheap (pure Python, microseconds) and general: they read only the overlap of words, names and
numbers between the answer and its sources, so they apply to gateway answers as well as to
HaluEval. The style model (``fit_style``) is the exception: it learns how HaluEval's hallucinated
dialogue responses are *written*, and is used only by the ``dialogue`` head.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

from helpline.platform.lazy_imports import require
from helpline.platform.text import STOPWORDS
from helpline.platform.text import WORD as _WORD
from helpline.platform.text import stems as _stems

_NEGATION = frozenset(["not", "no", "never", "nobody", "nothing", "neither", "nor", "none", "cannot"])
_OPINION = re.compile(r"\b(i think|i believe|i'm not|i am not|i don't|i do not|not a fan|i love|i like|i have)\b", re.I)
FEATURES = (
    "unsupported_share",  # content words in neither passage nor question
    "unsupported_share_passage",  # content words not in the passage
    "unsupported_names_numbers",  # capitalised words and numbers in neither (capped at 5)
    "log_words",
    "question_share",  # content words copied from the question
    "exact_span",  # the answer occurs verbatim in the passage
    "bigram_support",  # share of the answer's word bigrams found in the passage
    "new_negation",  # a negation the passage does not have
    "negation",
    "sentences",
    "opinion",  # first-person opinion or chit-chat
    "supported_names_numbers",
    "unsupported_count",
    "log_passage_words",
)


def support_features(passage: str, answer: str, question: str | None) -> list[float]:
    """The FEATURES vector of one (passage, answer, question)."""
    known_passage = set(_stems(passage))
    known = known_passage | set(_stems(question or ""))
    words = _WORD.findall(answer)
    content = [(i, w) for i, w in enumerate(words) if w.lower() not in STOPWORDS]
    n_content = len(content) or 1
    unsupported = [(i, w) for i, w in content if w.lower()[:5] not in known]
    # A capital on the answer's first word says nothing; elsewhere it marks a name.
    names = [(i, w) for i, w in content if w[0].isdigit() or (w[0].isupper() and i > 0)]
    unsupported_names = [w for i, w in names if w.lower()[:5] not in known]
    answer_stems = _stems(answer)
    bigrams = set(itertools.pairwise(answer_stems))
    passage_stems = _stems(passage)
    passage_bigrams = set(itertools.pairwise(passage_stems))
    negation = any(w.lower() in _NEGATION or w.lower().endswith("n't") for w in words)
    passage_negation = any(w.lower() in _NEGATION or w.lower().endswith("n't") for w in _WORD.findall(passage))
    stripped = answer.lower().strip(" .!?")
    return [
        len(unsupported) / n_content,
        sum(1 for _, w in content if w.lower()[:5] not in known_passage) / n_content,
        float(min(len(unsupported_names), 5)),
        math.log1p(len(words)),
        sum(1 for _, w in content if w.lower()[:5] in set(_stems(question or ""))) / n_content,
        float(bool(stripped) and stripped in passage.lower()),
        len(bigrams & passage_bigrams) / len(bigrams) if bigrams else 1.0,
        float(negation and not passage_negation),
        float(negation),
        float(len([s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s])),
        float(bool(_OPINION.search(answer))),
        float(len(names) - len(unsupported_names)),
        float(len(unsupported)),
        math.log1p(len(passage.split())),
    ]


def fit_style(answers: list[str], labels: list[int]) -> Any:
    """A TF-IDF (characters and words) logistic regression over answers alone."""
    TfidfVectorizer = require("sklearn.feature_extraction.text", "eval").TfidfVectorizer
    LogisticRegression = require("sklearn.linear_model", "eval").LogisticRegression
    make_pipeline = require("sklearn.pipeline", "eval").make_pipeline
    make_union = require("sklearn.pipeline", "eval").make_union

    vectors = make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=3, sublinear_tf=True, max_features=50000),
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=False),
    )
    return make_pipeline(vectors, LogisticRegression(C=2.0, max_iter=3000)).fit(answers, labels)


def fit_head(rows: list[list[float]], labels: list[int], inputs: list[str]) -> dict[str, Any]:
    """A standardised logistic regression, stored as plain numbers (JSON, no pickle)."""
    LogisticRegression = require("sklearn.linear_model", "eval").LogisticRegression

    cols = list(zip(*rows))
    mean = [sum(c) / len(c) for c in cols]
    scale = [max(1e-6, (sum((x - m) ** 2 for x in c) / len(c)) ** 0.5) for c, m in zip(cols, mean)]
    z = [[(x - m) / s for x, m, s in zip(r, mean, scale)] for r in rows]
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(z, labels)
    return {
        "inputs": inputs,
        "mean": [round(m, 6) for m in mean],
        "scale": [round(s, 6) for s in scale],
        "coef": [round(float(c), 6) for c in lr.coef_[0]],
        "bias": round(float(lr.intercept_[0]), 6),
    }


def apply_head(head: dict[str, Any], row: list[float]) -> float:
    """P(hallucinated) of one input row under a fitted head."""
    z = head["bias"] + sum(c * (x - m) / s for c, x, m, s in zip(head["coef"], row, head["mean"], head["scale"]))
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
