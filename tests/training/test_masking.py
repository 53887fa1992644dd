"""Assistant-only loss: prompt tokens are -100, the end-of-turn token is trained, wrong templates raise."""

from __future__ import annotations

import pytest

from helpline.testing.training import tiny_tokenizer
from helpline.training.sft.masking import IGNORE, TemplateMismatchError, check_example, tokenize_example

MARKER, EOT = "<|im_start|>assistant\n", "<|im_end|>"
CONVERSATION = [
    {"role": "user", "content": "Where is my refund for order {{Order Number}}?"},
    {"role": "assistant", "content": "I understand. 1. Log in.\n2. Open My Orders."},
    {"role": "user", "content": "Thank you!"},
    {"role": "assistant", "content": "You're welcome!"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _trained_text(tokenizer, example: dict) -> str:
    return tokenizer.decode([t for t, lab in zip(example["input_ids"], example["labels"]) if lab != IGNORE])


def test_only_answers_and_their_end_of_turn_are_trained(tokenizer) -> None:
    example = tokenize_example(tokenizer, CONVERSATION, assistant_marker=MARKER, end_of_turn=EOT)
    assert _trained_text(tokenizer, example) == (
        "I understand. 1. Log in.\n2. Open My Orders.<|im_end|>You're welcome!<|im_end|>"
    )
    eot = tokenizer.convert_tokens_to_ids(EOT)
    trained_eot = [i for i, lab in enumerate(example["labels"]) if lab == eot]
    assert len(trained_eot) == 2
    # The user's and system's end-of-turn tokens are prompt: the model must not learn to end them.
    assert example["input_ids"].count(eot) == 5


def test_prompt_tokens_are_masked(tokenizer) -> None:
    example = tokenize_example(tokenizer, CONVERSATION, assistant_marker=MARKER, end_of_turn=EOT)
    text = tokenizer.apply_chat_template(CONVERSATION[:1], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert example["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert example["labels"][n_prompt] != IGNORE


def test_changed_assistant_marker_in_the_template_raises(tokenizer) -> None:
    changed = tiny_tokenizer()
    changed.chat_template = tokenizer.chat_template.replace("'<|im_start|>assistant\n'", "'<|im_start|>bot\n'")
    changed.chat_template = changed.chat_template.replace(
        "'<|im_start|>' + message['role']",
        "'<|im_start|>' + (message['role'] == 'assistant' and 'bot' or message['role'])",
    )
    with pytest.raises(TemplateMismatchError, match="assistant header"):
        tokenize_example(changed, CONVERSATION, assistant_marker=MARKER, end_of_turn=EOT)


def test_changed_end_of_turn_in_the_template_raises(tokenizer) -> None:
    changed = tiny_tokenizer()
    changed.chat_template = tokenizer.chat_template.replace("'<|im_end|>' + '\n'", "'<|endoftext|>' + '\n'")
    with pytest.raises(TemplateMismatchError, match="end_of_turn"):
        tokenize_example(changed, CONVERSATION, assistant_marker=MARKER, end_of_turn=EOT)


def test_check_refuses_a_mask_that_trains_the_prompt(tokenizer) -> None:
    example = tokenize_example(tokenizer, CONVERSATION, assistant_marker=MARKER, end_of_turn=EOT)
    leaky = {"input_ids": example["input_ids"], "labels": list(example["input_ids"])}  # everything trained
    with pytest.raises(TemplateMismatchError):
        check_example(tokenizer, leaky, CONVERSATION, assistant_marker=MARKER, end_of_turn=EOT)


def test_check_refuses_an_untrained_end_of_turn(tokenizer) -> None:
    example = tokenize_example(tokenizer, CONVERSATION[:2], assistant_marker=MARKER, end_of_turn=EOT)
    labels = list(example["labels"])
    last = max(i for i, lab in enumerate(labels) if lab != IGNORE)
    labels[last] = IGNORE
    with pytest.raises(TemplateMismatchError, match="end-of-turn"):
        check_example(
            tokenizer, {"input_ids": example["input_ids"], "labels": labels}, CONVERSATION[:2],
            assistant_marker=MARKER, end_of_turn=EOT,
        )  # fmt: skip


def test_too_long_examples_are_dropped_not_cut(tokenizer) -> None:
    assert tokenize_example(tokenizer, CONVERSATION, assistant_marker=MARKER, end_of_turn=EOT, max_length=10) is None
