"""Offline stand-ins for training tests: a tiny byte-level tokenizer with ChatML and a tiny Llama.

Both are built in memory in about a second, so the unit tier never needs a downloaded model.
"""

from __future__ import annotations

from importlib import resources

from helpline.platform.lazy_imports import require

_CORPUS = [
    "How do I return an item? Open your orders, choose the item and click Return.",
    "I understand that you want to cancel your order. Here is how: 1. Log in. 2. Open My Orders.",
    "Where is my refund? Refunds take five to seven business days after we receive the parcel.",
    "Thank you for reaching out! I'm sorry to hear about the trouble with your delivery.",
    "system user assistant You are a helpful AI assistant {{Order Number}} {{Website Name}}",
]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer():
    """A lossless byte-level BPE tokenizer with ChatML special tokens and SmolLM2's chat template."""
    ByteLevelBPETokenizer = require("tokenizers", "train").ByteLevelBPETokenizer
    PreTrainedTokenizerFast = require("transformers", "train").PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_CORPUS * 4, vocab_size=400, min_frequency=1, special_tokens=SPECIAL, show_progress=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = resources.files("helpline.training").joinpath("templates", "chatml.jinja").read_text()
    return tokenizer


def tiny_llama(tokenizer, *, seed: int = 0, layers: int = 2):
    """A Llama (2 layers unless told) with hidden size 32 whose vocabulary matches ``tokenizer``."""
    torch = require("torch", "train")
    LlamaConfig = require("transformers", "train").LlamaConfig
    LlamaForCausalLM = require("transformers", "train").LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)
