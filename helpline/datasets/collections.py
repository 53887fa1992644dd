"""Retrieval test collections: BEIR and doc2dial layouts, read into one shape.

``beir:DIR`` expects ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``)
and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score`` with a header line).
``doc2dial:DIR`` expects ``docs.jsonl`` (``doc_id``, ``title``, ``text``) and ``qa.jsonl`` (``id``,
``question``, ``history`` of ``{role, utterance}``, gold ``doc_id``); relevance is document-level.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from helpline.datasets.doc2dial import read_doc2dial, user_history
from helpline.platform.errors import DataError
from helpline.platform.files import read_jsonl
from helpline.platform.schemas import Document


@dataclass
class EvalQuery:
    """One question with the earlier user turns of its conversation and its relevant documents."""

    qid: str
    text: str
    relevant: dict[str, int]
    history: list[str] = field(default_factory=list)


@dataclass
class Collection:
    """Documents to index and queries to ask of them."""

    name: str
    documents: list[Document]
    queries: list[EvalQuery]


def load_collection(spec: str, *, split: str = "test", limit: int | None = None) -> Collection:
    """Load ``beir:DIR`` or ``doc2dial:DIR``; ``limit`` keeps the first N queries (for quick runs)."""
    kind, _, folder = spec.partition(":")
    path = Path(folder)
    if kind not in ("beir", "doc2dial") or not folder:
        raise DataError(f"bad dataset spec {spec!r}", hint="use beir:DIR or doc2dial:DIR")
    if not path.is_dir():
        raise DataError(f"dataset folder {path} does not exist", hint="pass the folder that holds the files")
    collection = _beir(path, split) if kind == "beir" else _doc2dial(path)
    if limit:
        collection.queries = collection.queries[:limit]
    return collection


def _jsonl(path: Path, *required: str) -> list[dict]:
    return read_jsonl(path, required=required, hint="see `helpline eval retrieval --help` for the expected layout")


def _beir(path: Path, split: str) -> Collection:
    docs = [
        Document(doc_id=str(r["_id"]), title=r.get("title", "") or "", text=r.get("text", "") or r.get("title", ""))
        for r in _jsonl(path / "corpus.jsonl", "_id")
    ]
    texts = {str(r["_id"]): r["text"] for r in _jsonl(path / "queries.jsonl", "_id", "text")}
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise DataError(f"{qrels_path} is missing", hint="pass --split with a qrels file that exists")
    relevant: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) > 0:
                relevant.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    queries = [EvalQuery(qid=q, text=texts[q], relevant=rel) for q, rel in relevant.items() if q in texts]
    return Collection(name=f"beir:{path.name}", documents=[d for d in docs if d.text.strip()], queries=queries)


def _doc2dial(path: Path) -> Collection:
    doc_rows, rows = read_doc2dial(path, qa_fields=("id", "doc_id", "question"), doc_fields=("doc_id", "text"))
    docs = [Document(doc_id=r["doc_id"], title=r.get("title", ""), text=r["text"]) for r in doc_rows]
    queries = [
        EvalQuery(qid=str(r["id"]), text=r["question"], relevant={r["doc_id"]: 1}, history=user_history(r))
        for r in rows
    ]
    return Collection(name=f"doc2dial:{path.name}", documents=docs, queries=queries)
