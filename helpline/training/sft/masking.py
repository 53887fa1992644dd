"""Assistant-only loss: tokenize a conversation and label only the assistant answers.

We tokenize ourselves instead of relying on ``{% generation %}`` markers (SmolLM2's and most
templates have none). Each assistant answer is located by rendering the conversation prefix with
``add_generation_prompt=True``; the configured ``assistant_marker`` must end that prefix and the
configured ``end_of_turn`` must follow the answer. If a template changes its markers, this raises
instead of silently training on the prompt. ``check_example`` then verifies each tokenized example
independently: prompt tokens are -100, each answer's end-of-turn token is trained.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from helpline.platform.errors import DataError

IGNORE = -100


class TemplateMismatchError(DataError):
    """The chat template does not produce the markers the config says it does."""


def load_chat_template(spec: str | None) -> str | None:
    """``None`` (keep the model's), a shipped name (``chatml``, ``gemma``) or a .jinja file → template text."""
    if spec is None:
        return None
    shipped = resources.files("helpline.training").joinpath("templates", f"{spec}.jinja")
    if shipped.is_file():
        return shipped.read_text()
    path = Path(spec).expanduser()
    if path.is_file():
        return path.read_text()
    raise TemplateMismatchError(
        f"chat template {spec!r} not found", hint="use chatml, gemma or a path to a .jinja file"
    )


def _render(tokenizer, messages: list[dict], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer, messages: list[dict], *, assistant_marker: str, end_of_turn: str) -> tuple[str, list]:
    """Render ``messages``; return the text and the (start, end) character span of each trained answer.

    A span covers the answer and its end-of-turn marker.
    """
    full = _render(tokenizer, messages, generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], generation_prompt=True)
        if not full.startswith(prefix):
            raise TemplateMismatchError(
                "the chat template does not render conversations as a prefix of their continuation",
                hint="use a template where the generation prompt is the start of the assistant turn",
            )
        if not prefix.endswith(assistant_marker):
            raise TemplateMismatchError(
                f"the chat template's assistant header is {prefix[-len(assistant_marker) - 8 :]!r}, "
                f"not the configured assistant_marker {assistant_marker!r}",
                hint="set assistant_marker (and end_of_turn) to the template's markers, or choose chat_template",
            )
        start = len(prefix)
        answer = message["content"]
        while start < len(full) and not full.startswith(answer, start) and full[start].isspace():
            start += 1  # templates may add whitespace; answers are stored stripped
        end = start + len(answer)
        if full[start:end] != answer or not full.startswith(end_of_turn, end):
            raise TemplateMismatchError(
                f"assistant answer #{i} is not followed by the configured end_of_turn {end_of_turn!r}",
                hint="set end_of_turn to the template's end-of-turn token, or choose chat_template",
            )
        spans.append((start, end + len(end_of_turn)))
    return full, spans


def tokenize_example(
    tokenizer, messages: list[dict], *, assistant_marker: str, end_of_turn: str, max_length: int | None = None
) -> dict | None:
    """``{"input_ids", "labels"}`` with -100 outside the answers; None if longer than ``max_length``."""
    text, spans = assistant_spans(tokenizer, messages, assistant_marker=assistant_marker, end_of_turn=end_of_turn)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    if max_length is not None and len(ids) > max_length:
        return None  # cutting would drop the end-of-turn token, and the model would never learn to stop
    labels = [IGNORE] * len(ids)
    for pos, (tok_start, _tok_end) in enumerate(enc["offset_mapping"]):
        # A token is trained when it starts inside an answer; a token straddling the header is prompt.
        if any(s <= tok_start < e for s, e in spans):
            labels[pos] = ids[pos]
    example = {"input_ids": ids, "labels": labels}
    check_example(tokenizer, example, messages, assistant_marker=assistant_marker, end_of_turn=end_of_turn)
    return example


def check_example(tokenizer, example: dict, messages: list[dict], *, assistant_marker: str, end_of_turn: str) -> None:
    """Verify one tokenized example from its tokens alone; raise if the mask is wrong.

    - the tokens up to each trained run decode to text ending with the assistant marker (so the
      prompt, headers included, is -100);
    - each trained run decodes to an answer followed by the end-of-turn token, which is trained;
    - there are as many trained runs as assistant turns, so no user text is trained.
    """
    ids, labels = example["input_ids"], example["labels"]
    eot_ids = tokenizer(end_of_turn, add_special_tokens=False)["input_ids"]
    if len(eot_ids) != 1:
        raise TemplateMismatchError(
            f"end_of_turn {end_of_turn!r} is {len(eot_ids)} tokens, not one special token",
            hint="use the tokenizer's end-of-turn special token",
        )
    runs, start = [], None
    for pos, label in enumerate([*labels, IGNORE]):
        if label != IGNORE and start is None:
            start = pos
        elif label == IGNORE and start is not None:
            runs.append((start, pos))
            start = None
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    if len(runs) != len(answers):
        raise TemplateMismatchError(
            f"{len(runs)} trained spans for {len(answers)} assistant answers",
            hint="the assistant_marker/end_of_turn do not match the template",
        )
    for (s, e), answer in zip(runs, answers):
        before = tokenizer.decode(ids[:s], skip_special_tokens=False)
        if not before.rstrip(" ").endswith(assistant_marker):
            raise TemplateMismatchError(
                f"tokens before an answer end in {before[-30:]!r}, not the assistant marker {assistant_marker!r}",
                hint="prompt tokens would be trained; check assistant_marker and the chat template",
            )
        if ids[e - 1] != eot_ids[0] or labels[e - 1] != eot_ids[0]:
            raise TemplateMismatchError(
                f"the end-of-turn token {end_of_turn!r} after an answer is not trained",
                hint="the model would not learn to stop; check end_of_turn and the chat template",
            )
        trained = tokenizer.decode(ids[s : e - 1], skip_special_tokens=False)
        if trained.strip() != answer.strip():
            raise TemplateMismatchError(
                "a trained span is not exactly the assistant answer",
                hint="the chat template changes answers; check the template",
            )
