"""Fitting a grounded prompt into the model's context: the newest turns stay, the oldest go.

The gateway measures the whole prompt (policy, passages, history, question) with the engine's own count
or a conservative estimate (``engines.protocol.count_prompt_tokens``) before it generates, so an
over-long conversation is trimmed here rather than refused by the engine.
"""

from __future__ import annotations

from collections.abc import Callable

from helpline.engines.protocol import ContextTooLong
from helpline.platform.schemas import ChatMessage

Count = Callable[[list[ChatMessage]], int]


def fit_to_context(
    messages: list[ChatMessage], *, context_tokens: int, answer_tokens: int, count: Count
) -> list[ChatMessage]:
    """``messages`` (the system prompt with its passages, then the conversation ending with the question)
    with the oldest history turns dropped until the prompt and ``answer_tokens`` fit ``context_tokens``.

    The system prompt and the question always stay, and what is kept of the history starts with a user
    turn. Raises :class:`ContextTooLong` (413) when the question and its passages alone do not fit.
    """
    budget = context_tokens - answer_tokens
    if count(messages) <= budget:
        return messages
    head, turns = messages[:1], messages[1:]
    needed = count(head + turns[-1:])
    if needed > budget:
        raise ContextTooLong(
            f"the question and its passages take about {needed} tokens and the answer may take {answer_tokens}, "
            f"but the model's context is {context_tokens} tokens",
            hint="ask a shorter question, or a smaller max_tokens",
        )
    # Fewer turns never take more tokens, so the first start that fits is found by bisection (a
    # tokenizer's count is not a sum over messages, so each candidate is counted whole).
    low, high = 0, len(turns) - 1
    while low < high:
        middle = (low + high) // 2
        if count(head + turns[middle:]) <= budget:
            high = middle
        else:
            low = middle + 1
    while low < len(turns) - 1 and turns[low].role != "user":
        low += 1
    return head + turns[low:]
