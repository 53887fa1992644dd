"""`helpline data prepare`: sources → validated, scrubbed, deduplicated, split, versioned dataset.

Output: ``<workspace>/datasets/NAME/vN/{train,validation,test}.jsonl`` (one ``{"messages": [...],
"intent": ..., "category": ..., "origin": "file:row"}`` per line) and ``manifest.json`` with hashes,
counts, per-intent counts, the scrubber's report and what was dropped and why.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from helpline.platform.errors import DataError
from helpline.platform.pii import measure_recall, scrub_messages
from helpline.training.data.dedup import DedupResult, dedupe_and_group
from helpline.training.data.sources import Conversation, load_source
from helpline.training.data.split import SPLITS, grouped_stratified_split

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PrepareOptions(BaseModel):
    """Options of one `data prepare` run."""

    sources: list[str] = Field(description="KIND:PATH entries (bitext:, chat:, reviewed:, doc2dial:).", min_length=1)
    max_per_source: int | None = Field(
        None, ge=1, description="Seeded sample of at most N conversations from each source (balances a mix)."
    )
    name: str = Field(description="Dataset name; versions are NAME/v1, v2, ...")
    validation: float = Field(0.05, gt=0, lt=0.5, description="Share of groups held out for validation.")
    test: float = Field(0.10, gt=0, lt=0.5, description="Share of groups held out for the test split.")
    seed: int = Field(0, description="Seed of the split.")
    max_tokens: int | None = Field(None, ge=16, description="Longest conversation kept (tokens); default: context.")
    near_dup_threshold: float = Field(0.9, gt=0, le=1, description="Jaccard above which a conversation is dropped.")
    sibling_threshold: float = Field(0.7, gt=0, le=1, description="Jaccard of customer turns that groups them.")
    skip_invalid: bool = Field(False, description="Drop malformed rows instead of refusing the file.")


TokenCounter = Callable[[list[dict[str, str]]], int]


def prepare_dataset(
    options: PrepareOptions,
    *,
    datasets_dir: Path,
    count_tokens: TokenCounter | None,
    context_length: int | None,
    tokenizer_name: str = "",
) -> dict:
    """Run the whole preparation and write a new version; returns the manifest."""
    if not _NAME.match(options.name):
        raise DataError(f"dataset name {options.name!r} is not usable", hint="use letters, digits, '-', '_' or '.'")
    conversations, invalid, source_hashes = _load_sources(options)
    pii = _scrub(conversations)
    limit = min(x for x in (options.max_tokens, context_length) if x is not None) if count_tokens else None
    conversations, too_long = _drop_too_long(conversations, count_tokens, limit)
    dedup, split = _dedupe_and_split(conversations, options)
    group_sizes = Counter(dedup.group_of.values())

    version_dir = _next_version(datasets_dir / options.name)
    partial = version_dir.with_name(version_dir.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    files = _write_splits(partial, conversations, split)
    manifest = {
        "name": options.name,
        "version": version_dir.name,
        "created_at": time.time(),
        "dataset_hash": _sha256("".join(f["sha256"] for f in files.values()).encode()),
        "format": "chat-messages-jsonl",
        "sources": source_hashes,
        "options": options.model_dump(),
        "splits": files,
        "counts": {
            "loaded": len(conversations) + too_long,
            "invalid_skipped": sum(len(p) for p in invalid.values()),
            "too_long_dropped": too_long,
            "exact_duplicates_dropped": dedup.exact_dropped,
            "near_duplicates_dropped": dedup.near_dropped,
            "kept": len(dedup.kept),
            "groups": len(group_sizes),
            "largest_group": max(group_sizes.values()),
        },
        "invalid_rows": {k: v[:50] for k, v in invalid.items()},
        "token_check": {"tokenizer": tokenizer_name, "max_tokens": limit} if count_tokens else None,
        "scrubber": {"replaced": dict(sorted(pii.items())), "labelled_sample": measure_recall(pii_sample())},
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    partial.rename(version_dir)  # a version appears only when complete
    manifest["path"] = str(version_dir)
    return manifest


def _load_sources(options: PrepareOptions) -> tuple[list[Conversation], dict[str, list[str]], dict[str, str]]:
    """Every source's conversations (a seeded sample of each with ``max_per_source``), the problems of the
    rows skipped by source, and each source's sha256 (of docs.jsonl + qa.jsonl for a doc2dial folder)."""
    conversations: list[Conversation] = []
    invalid: dict[str, list[str]] = {}
    source_hashes = {}
    for spec in options.sources:
        loaded, problems = load_source(spec, skip_invalid=options.skip_invalid)
        path = Path(spec.partition(":")[2]).expanduser()
        files = [path / "docs.jsonl", path / "qa.jsonl"] if path.is_dir() else [path]
        source_hashes[spec] = _sha256(b"".join(f.read_bytes() for f in files))
        if options.max_per_source and len(loaded) > options.max_per_source:
            loaded = random.Random(options.seed).sample(loaded, options.max_per_source)
        conversations.extend(loaded)
        if problems:
            invalid[spec] = problems
    if not conversations:
        raise DataError("the sources contain no usable conversation", hint="check the files and their layout")
    return conversations, invalid, source_hashes


def _scrub(conversations: list[Conversation]) -> Counter:
    """Replace personal data in every message, in place; returns how many of each kind were replaced."""
    pii: Counter = Counter()
    for conv in conversations:
        conv.messages, counts = scrub_messages(conv.messages)
        pii.update(counts)
    return pii


def _drop_too_long(
    conversations: list[Conversation], count_tokens: TokenCounter | None, limit: int | None
) -> tuple[list[Conversation], int]:
    """The conversations of at most ``limit`` tokens (all of them without a token counter), and how many were not."""
    if count_tokens is None or limit is None:
        return conversations, 0
    fitting = [c for c in conversations if count_tokens(c.messages) <= limit]
    return fitting, len(conversations) - len(fitting)


def _dedupe_and_split(
    conversations: list[Conversation], options: PrepareOptions
) -> tuple[DedupResult, dict[str, list[int]]]:
    """Drop duplicates, group near-siblings, and split the groups stratified by intent."""
    # A shared system prompt (grounded sources put their passages there) would make every pair look alike.
    full = ["\n".join(m["content"] for m in c.messages if m["role"] != "system") for c in conversations]
    prompts = ["\n".join(m["content"] for m in c.messages if m["role"] == "user") for c in conversations]
    dedup = dedupe_and_group(
        full, prompts, near_dup_threshold=options.near_dup_threshold, sibling_threshold=options.sibling_threshold
    )
    split = grouped_stratified_split(
        dedup.group_of,
        {i: conversations[i].intent for i in dedup.kept},
        validation=options.validation,
        test=options.test,
        seed=options.seed,
    )
    return dedup, split


def _write_splits(folder: Path, conversations: list[Conversation], split: dict[str, list[int]]) -> dict[str, dict]:
    """Write ``train/validation/test.jsonl``; returns each one's manifest entry (path, sha256, counts)."""
    files = {}
    for name in SPLITS:
        lines = "".join(json.dumps(conversations[i].to_json(), ensure_ascii=False) + "\n" for i in split[name])
        (folder / f"{name}.jsonl").write_text(lines, encoding="utf-8")
        files[name] = {
            "path": f"{name}.jsonl",
            "sha256": _sha256(lines.encode()),
            "count": len(split[name]),
            "per_intent": dict(sorted(Counter(conversations[i].intent for i in split[name]).items())),
        }
    return files


def pii_sample() -> list[dict]:
    """The labelled sample shipped with the package, on which every manifest reports the scrubber's recall."""
    return yaml.safe_load(resources.files("helpline.training.data").joinpath("pii_sample.yaml").read_text())


def _next_version(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[1:]) for p in base.iterdir() if re.fullmatch(r"v\d+", p.name)]
    return base / f"v{max(numbers, default=0) + 1}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_dataset(ref: str | Path, datasets_dir: Path) -> Path:
    """``NAME`` (latest version), ``NAME/vN`` or a folder path → the version folder."""
    path = Path(ref).expanduser()
    if (path / "manifest.json").is_file():
        return path
    candidate = datasets_dir / str(ref)
    if (candidate / "manifest.json").is_file():
        return candidate
    if candidate.is_dir():
        versions = sorted(
            (p for p in candidate.iterdir() if re.fullmatch(r"v\d+", p.name)), key=lambda p: int(p.name[1:])
        )
        if versions:
            return versions[-1]
    raise DataError(f"no prepared dataset {ref!r} in {datasets_dir}", hint="run `helpline data prepare ... --out NAME`")
