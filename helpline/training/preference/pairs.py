"""Preference pairs: read and check a JSONL file in TRL's conversational preference format.

One pair a line::

    {"prompt": [{"role": "system", "content": "...passages..."}, {"role": "user", "content": "..."}],
     "chosen": [{"role": "assistant", "content": "..."}],
     "rejected": [{"role": "assistant", "content": "..."}]}

``chosen`` and ``rejected`` may also be plain strings (they become one assistant message each). Other keys
(ids, sources) are allowed and ignored. Every problem in the file is reported at once, by line number, so
a file written by another tool is fixed in one pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from helpline.platform.errors import DataError, NotFoundError

ROLES = {"system", "user", "assistant"}
SHOWN_PROBLEMS = 10


def read_pairs(path: str | Path) -> list[dict]:
    """The pairs of ``path``, each as ``{"prompt": [...], "chosen": [assistant], "rejected": [assistant]}``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise NotFoundError(f"pairs file {file} does not exist", hint="pass the JSONL file of (chosen, rejected) pairs")
    pairs, problems = [], []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        pair, problem = parse_pair(line)
        if problem:
            problems.append(f"line {number}: {problem}")
        else:
            pairs.append(pair)
    if problems:
        more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
        raise DataError(
            f"{file}: {len(problems)} bad pair(s): {'; '.join(problems[:SHOWN_PROBLEMS])}{more}",
            hint='each line: {"prompt": MESSAGES ending with a user turn, "chosen": "...", "rejected": "..."}',
        )
    if not pairs:
        raise DataError(f"{file} holds no pairs", hint="collect some (chosen, rejected) pairs first")
    return pairs


def parse_pair(line: str) -> tuple[dict, str | None]:
    """One line as a normalised pair, or the reason it is not one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        return {}, f"not JSON ({e.msg})"
    if not isinstance(row, dict):
        return {}, "not a JSON object"
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
    if missing:
        return {}, f"missing {', '.join(missing)}"
    problem = prompt_problem(row["prompt"])
    chosen, chosen_problem = answer(row["chosen"], "chosen")
    rejected, rejected_problem = answer(row["rejected"], "rejected")
    problem = problem or chosen_problem or rejected_problem
    if problem:
        return {}, problem
    if chosen[0]["content"].strip() == rejected[0]["content"].strip():
        return {}, "chosen and rejected are the same answer (the pair teaches nothing)"
    return {"prompt": row["prompt"], "chosen": chosen, "rejected": rejected}, None


def prompt_problem(prompt: Any) -> str | None:
    """Why ``prompt`` is not a conversation that asks for the next assistant turn (None: it is one)."""
    if not isinstance(prompt, list) or not prompt:
        return "prompt must be a non-empty list of chat messages"
    for i, message in enumerate(prompt):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"prompt[{i}] must be {{'role': system|user|assistant, 'content': TEXT}}"
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            return f"prompt[{i}] has no text content"
    if prompt[-1]["role"] != "user":
        return "prompt must end with a user message (the answers are the assistant's reply to it)"
    return None


def answer(value: Any, field: str) -> tuple[list[dict], str | None]:
    """``chosen``/``rejected`` as one assistant message, or why it is not one."""
    if isinstance(value, str):
        value = [{"role": "assistant", "content": value}]
    if (
        not isinstance(value, list)
        or len(value) != 1
        or not isinstance(value[0], dict)
        or value[0].get("role") != "assistant"
        or not isinstance(value[0].get("content"), str)
    ):
        return [], f"{field} must be a string or one assistant message [{{'role': 'assistant', 'content': TEXT}}]"
    if not value[0]["content"].strip():
        return [], f"{field} is empty"
    return [{"role": "assistant", "content": value[0]["content"]}], None


def pairs_lineage(path: str | Path, count: int) -> dict:
    """What a run trained on, in the shape of a prepared dataset's lineage (the export gate and the registry
    read ``name``, ``version`` and ``hash``): the file, its content hash and how many pairs it held."""
    file = Path(path).expanduser().resolve()
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return {"path": str(file), "name": file.stem, "version": "pairs", "hash": digest, "pairs": count}


def fits(tokenizer, pair: dict, max_length: int) -> bool:
    """Whether prompt + chosen and prompt + rejected both fit ``max_length`` tokens with the chat template."""
    return all(
        len(tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=True, return_dict=False)) <= max_length
        for side in ("chosen", "rejected")
    )
