"""Loaders, chunking, embedder, vector store, sync and search over the knowledge base."""

from pathlib import Path

import yaml

#: The bundled sample help centre (articles and QUESTIONS.yaml).
SAMPLE_KB = Path(__file__).parent / "sample_kb"


def sample_questions(*, answerable: bool = True) -> list[str]:
    """Questions of the sample help centre (``QUESTIONS.yaml``): by default the customer questions a
    public article answers (the file also holds unanswerable, internal-only and staff questions)."""

    rows = yaml.safe_load((SAMPLE_KB / "QUESTIONS.yaml").read_text("utf-8"))
    return [
        r["question"]
        for r in rows
        if not answerable or (r.get("doc_id") is not None and r.get("role", "customer") == "customer")
    ]
