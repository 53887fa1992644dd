"""Step 2 of `helpline improve` (#26): the collected rows scrubbed, deduplicated, split and mixed with replay rows
into the files training reads, with a manifest of every source.

In order:

1. scrub every collected text (prompt, chosen, rejected) with :mod:`helpline.platform.pii`, as `data prepare` does;
2. drop exact and near duplicates and group near-identical questions (``training/data/dedup.py``); newer
   corrections come first, so of two duplicates the newer correction stays;
3. split: a conversation, with every conversation that asks a question of the same group, is one unit; of the
   units holding corrections that can be scored (``heldout.py``), a seeded ``heldout_share`` is held out.
   Nothing from a held-out unit is trained on; its corrections become ``heldout.yaml``, an answer set scored as
   served (the promotion gate's suite of its own), and their (correction, replaced draft) pairs
   ``heldout_pairs.jsonl`` (how often preference tuning makes the model prefer a correction it never saw);
4. replay: a seeded sample of ``replay_rows`` rows of the production model's own training set (found through
   its lineage, :func:`replay_source`), half grounded (passages in the prompt) and half general (none), so that
   old behaviour is kept; rows that ask a corrected question are left out (they may teach the old answer);
5. write ``sft.jsonl`` (the collected answers and the replay rows, shuffled; the layout `data prepare` writes),
   ``pairs.jsonl`` (TRL's conversational preference layout: prompt, chosen, rejected), ``heldout.yaml``, and
   ``manifest.json`` last: its sources, files with their sha256, the cursor, the seed, the counts, and every turn
   that did not become a training row counted by reason (``turns_read`` = ``train_rows`` + ``heldout_cases`` +
   the excluded ones).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from helpline.platform.errors import ConfigError, DataError, NotFoundError
from helpline.platform.files import read_jsonl
from helpline.platform.pii import scrub, scrub_messages
from helpline.platform.registry import Registry
from helpline.training.data.dedup import dedupe_and_group, jaccard, normalize, shingles
from helpline.training.loop.collect import Collected, Collection
from helpline.training.loop.heldout import expect_phrases, heldout_case, write_heldout

SIBLING_THRESHOLD = 0.7  # as `data prepare` groups customer turns
FORMATS = {
    "sft.jsonl": "chat-messages-jsonl",  # as `data prepare` writes: {"messages", "intent", "category", "origin"}
    "pairs.jsonl": "trl-conversational-preference-jsonl",  # {"prompt", "chosen", "rejected"}, each a message list
    "heldout_pairs.jsonl": "trl-conversational-preference-jsonl",
    "heldout.yaml": "answer-questions-yaml",  # `helpline eval answers --questions`
}


@dataclass(frozen=True)
class LoopDataset:
    """What :func:`build_loop_dataset` wrote, and its manifest."""

    out_dir: Path
    manifest: dict[str, Any]

    @property
    def sft_path(self) -> Path:
        return self.out_dir / "sft.jsonl"

    @property
    def pairs_path(self) -> Path:
        return self.out_dir / "pairs.jsonl"

    @property
    def heldout_path(self) -> Path:
        return self.out_dir / "heldout.yaml"

    @property
    def heldout_pairs_path(self) -> Path:
        return self.out_dir / "heldout_pairs.jsonl"

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.json"


def replay_source(registry: Registry, alias: str = "production") -> Path | None:
    """The prepared dataset the model behind ``alias`` was trained on, from the lineage it was registered with (an
    adapter's ``dataset``, a full fine-tune's ``training.dataset``); None for a model trained elsewhere (a bundled
    base model). A recorded dataset that is gone is refused: a loop without replay forgets old behaviour."""
    record = registry.get_model(alias)
    meta = record.metadata
    dataset = meta.get("dataset") or (meta.get("training") or {}).get("dataset")
    if not isinstance(dataset, dict) or not dataset.get("path"):
        return None
    path = Path(dataset["path"])
    if not path.is_dir():
        raise NotFoundError(
            f"{record.name!r} was trained on {path}, which no longer exists",
            hint="restore that dataset folder, or pass the replay dataset explicitly",
        )
    return path


def build_loop_dataset(
    collection: Collection,
    *,
    out_dir: Path,
    replay_from: Path | None,
    replay_rows: int,
    heldout_share: float,
    seed: int,
) -> LoopDataset:
    """Scrub, deduplicate, split and mix ``collection`` with ``replay_rows`` rows of the dataset in ``replay_from``
    (a prepared dataset folder, e.g. :func:`replay_source`; None: no replay), and write the files into
    ``out_dir`` (see the module docstring)."""
    _check(heldout_share=heldout_share, replay_rows=replay_rows)
    raw = sorted(collection.items, key=lambda i: (i.kind != "correction", -i.feedback_at))
    clean, pii, scrubbed_rows = _scrub(raw)
    kept, groups, duplicates = _dedupe(clean)
    held_out = _split([raw[i] for i in kept], [groups[i] for i in kept], share=heldout_share, seed=seed)
    train = [i for i, out in zip(kept, held_out, strict=True) if not out]
    held = [i for i, out in zip(kept, held_out, strict=True) if out]
    cases = [c for i in held if raw[i].kind == "correction" and (c := heldout_case(clean[i], raw=raw[i])) is not None]
    replay, replay_entry = _replay(
        replay_from, n=replay_rows, corrected=[clean[i] for i in kept if raw[i].kind == "correction"], seed=seed
    )
    sft = [clean[i].sft_row() for i in train] + replay
    random.Random(seed).shuffle(sft)
    pairs = [p for i in train if (p := clean[i].pair()) is not None]
    heldout_pairs = [p for i in held if raw[i].kind == "correction" and (p := clean[i].pair()) is not None]

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "sft.jsonl": (_write_jsonl(out_dir / "sft.jsonl", sft), len(sft)),
        "pairs.jsonl": (_write_jsonl(out_dir / "pairs.jsonl", pairs), len(pairs)),
        "heldout.yaml": (write_heldout(out_dir / "heldout.yaml", cases), len(cases)),
        "heldout_pairs.jsonl": (_write_jsonl(out_dir / "heldout_pairs.jsonl", heldout_pairs), len(heldout_pairs)),
    }
    excluded = Counter(collection.excluded)
    excluded.update({"duplicate": duplicates, "heldout_conversation": len(held) - len(cases)})
    manifest = {
        "format": FORMATS,
        "created_at": time.time(),
        "dataset_hash": _sha256("".join(_sha256(text) for text, _ in files.values())),
        "files": {name: {"sha256": _sha256(text), "count": n} for name, (text, n) in files.items()},
        "cursor": {"since": collection.since, "until": collection.cursor},
        "seed": seed,
        "options": {"heldout_share": heldout_share, "replay_rows": replay_rows,
                    "staff_facing": collection.staff_facing},
        "sources": [_gateway_source(collection, clean), replay_entry],
        "counts": {
            "turns_read": collection.turns_read, "collected": len(raw), "train_rows": len(train),
            "heldout_cases": len(cases), "pairs": len(pairs), "heldout_pairs": len(heldout_pairs),
            "replay_rows": len(replay), "sft_rows": len(sft),
        },
        "excluded": {k: v for k, v in sorted(excluded.items()) if v},
        "cut_assistant_turns": collection.cut_assistant_turns,
        "identical_pairs_skipped": collection.identical_pairs_skipped,
        "pii": {"rows_scrubbed": scrubbed_rows, "replaced": dict(sorted(pii.items()))},
        "response_ids": {"trained": [raw[i].response_id for i in train], "heldout": [c["id"] for c in cases]},
    }  # fmt: skip
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return LoopDataset(out_dir=out_dir, manifest=manifest)


def _check(*, heldout_share: float, replay_rows: int) -> None:
    """Refuse options that cannot make a dataset, every problem at once."""
    problems = [f"heldout_share is {heldout_share}, not from 0 to below 1"] if not 0 <= heldout_share < 1 else []
    problems += [f"replay_rows is {replay_rows}, below 0"] if replay_rows < 0 else []
    if problems:
        raise ConfigError("; ".join(problems), hint="hold out a share such as 0.2, and replay 0 or more rows")


def _scrub(items: list[Collected]) -> tuple[list[Collected], Counter[str], int]:
    """Every item with personal data replaced in its prompt, chosen and rejected answers; the replacements by kind,
    and how many items had any."""
    total: Counter[str] = Counter()
    out, touched = [], 0
    for item in items:
        prompt, counts = scrub_messages(item.prompt)
        chosen, chosen_counts = scrub(item.chosen)
        rejected, rejected_counts = scrub(item.rejected) if item.rejected is not None else (None, Counter())
        counts = counts + chosen_counts + rejected_counts
        touched += bool(counts)
        total.update(counts)
        out.append(replace(item, prompt=prompt, chosen=chosen, rejected=rejected))
    return out, total, touched


def _dedupe(items: list[Collected]) -> tuple[list[int], dict[int, int], int]:
    """The items kept (exact and near duplicates of an earlier one dropped), each one's question group, and how
    many were dropped. As in `data prepare`, the shared system prompt is left out of the comparison."""
    full = ["\n".join(m["content"] for m in [*i.prompt[1:], {"content": i.chosen}]) for i in items]
    questions = ["\n".join(m["content"] for m in i.prompt if m["role"] == "user") for i in items]
    result = dedupe_and_group(full, questions, sibling_threshold=SIBLING_THRESHOLD)
    return result.kept, result.group_of, result.exact_dropped + result.near_dropped


def _split(items: list[Collected], groups: list[int], *, share: float, seed: int) -> list[bool]:
    """Which items are held out. A unit is a conversation with every conversation that asks a question of the same
    group; of the units with a correction a seeded ``share`` is held out, at least one when there are two or more
    and the share is not 0, never all of them. Only units whose corrections can all be scored are eligible."""
    unit_of = _units(items, groups)
    scorable: dict[str, bool] = {}
    for item, unit in zip(items, unit_of, strict=True):
        if item.kind == "correction":
            ok = bool(expect_phrases(item.chosen, question=item.question, rejected=item.rejected))
            scorable[unit] = scorable.get(unit, True) and ok
    want = round(share * len(scorable))
    if share > 0 and len(scorable) >= 2:
        want = min(max(1, want), len(scorable) - 1)
    candidates = sorted(u for u, ok in scorable.items() if ok)
    random.Random(seed).shuffle(candidates)
    heldout = set(candidates[:want])
    return [unit in heldout for unit in unit_of]


def _units(items: list[Collected], groups: list[int]) -> list[str]:
    """Each item's unit: conversations joined when they ask questions of one group (union-find over
    ``c:CONVERSATION`` and ``g:GROUP`` nodes), named by the least node."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for item, group in zip(items, groups, strict=True):
        a, b = find(f"c:{item.conversation_id}"), find(f"g:{group}")
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(f"c:{item.conversation_id}") for item in items]


def _replay(
    folder: Path | None, *, n: int, corrected: list[Collected], seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A seeded sample of ``n`` training rows of the dataset in ``folder``, half grounded and half general (the
    other part fills in where one runs short), none asking a corrected question; and its manifest entry."""
    entry: dict[str, Any] = {"kind": "replay", "path": None, "rows": 0}
    if folder is None or n == 0:
        return [], entry
    file = next((folder / name for name in ("train.jsonl", "sft.jsonl") if (folder / name).is_file()), None)
    if file is None:
        raise DataError(f"{folder} holds no train.jsonl", hint="pass a prepared dataset (`helpline data prepare`)")
    rows = read_jsonl(file, required=("messages",))
    manifest = folder / "manifest.json"
    lineage = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    asked = [shingles(normalize(_user_text(c.prompt)), 4) for c in corrected]
    rng = random.Random(seed)
    parts: dict[str, list[dict[str, Any]]] = {"grounded": [], "general": []}
    for row in rows:
        parts[_part(row)].append(row)
    for part in parts.values():
        rng.shuffle(part)
    taken: dict[str, list[dict[str, Any]]] = {"grounded": [], "general": []}
    skipped = 0
    for name, want in (("grounded", (n + 1) // 2), ("general", n // 2), ("grounded", n), ("general", n)):
        while parts[name] and len(taken["grounded"]) + len(taken["general"]) < n and len(taken[name]) < want:
            row = parts[name].pop()
            question = shingles(normalize(_user_text(row["messages"])), 4)
            if any(jaccard(question, a) >= SIBLING_THRESHOLD for a in asked):
                skipped += 1
                continue
            taken[name].append({**row, "origin": f"replay:{row.get('origin', '')}"})
    entry.update(
        path=str(file), sha256=_sha256(file.read_text(encoding="utf-8")), rows_available=len(rows),
        rows=len(taken["grounded"]) + len(taken["general"]), grounded=len(taken["grounded"]),
        general=len(taken["general"]), skipped_corrected_question=skipped,
        dataset={k: lineage.get(k) for k in ("name", "version", "dataset_hash")},
    )  # fmt: skip
    return taken["grounded"] + taken["general"], entry


def _part(row: dict[str, Any]) -> str:
    """``grounded`` for a row whose prompt carries passages, else ``general``."""
    system = next((m["content"] for m in row["messages"] if m.get("role") == "system"), "")
    return "grounded" if row.get("category") == "grounded" or "<passage" in system else "general"


def _user_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(m["content"] for m in messages if m.get("role") == "user")


def _gateway_source(collection: Collection, clean: list[Collected]) -> dict[str, Any]:
    """The gateway database's manifest entry: what was read and why turns were left out, and the sha256 of the
    scrubbed rows collected from it."""
    rows = [{**i.sft_row(), "rejected": i.rejected} for i in clean]
    digest = _sha256("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
    return {
        "kind": "gateway",
        "path": collection.source,
        "sha256": digest,
        "since": collection.since,
        "until": collection.cursor,
        "staff_facing": collection.staff_facing,
        "verified_thumbs_up": collection.verified,
        **collection.counts(),
    }


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")
    return text


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
