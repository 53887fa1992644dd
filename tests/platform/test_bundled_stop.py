"""Imported models stop at the end of a chat turn, not only at <eos>."""

from __future__ import annotations

from helpline.platform.bundled import stop_token_ids
from helpline.testing.training import tiny_tokenizer


def test_end_of_turn_token_joins_the_eos_ids() -> None:
    tok = tiny_tokenizer()  # ChatML: <|im_end|> ends a turn, <|endoftext|> is another token
    end = tok.get_vocab()["<|im_end|>"]
    other = tok.get_vocab()["<|endoftext|>"]
    assert stop_token_ids(tok, other) == [other, end]  # a Gemma-like config listing only <eos>
    assert stop_token_ids(tok, end) == end  # already there: unchanged
    assert stop_token_ids(tok, [other, end]) == [other, end]
    assert stop_token_ids(tok, None) == end
