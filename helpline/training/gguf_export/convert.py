"""A Llama-architecture checkpoint as one self-contained GGUF file, laid out as llama.cpp's
``convert_hf_to_gguf.py`` lays it out, then read back with ``gguf.GGUFReader``.

What a plain copy of the tensors would get wrong:

- llama.cpp's rotary embedding pairs dimension i with i+1 within a head, transformers' pairs i with
  i + head_dim/2, so the rows of ``q_proj`` and ``k_proj`` are permuted per head (``k_proj`` per KV head).
  transformers' GGUF loader undoes the permutation, which is what lets the export be checked against the
  checkpoint it came from.
- 1-D tensors (the RMS norms) stay F32 in every variant; a 2-D tensor whose rows are no multiple of 32
  cannot be Q8_0 and is written F16, as llama.cpp does.
- The tokenizer travels in the metadata (gpt2-style byte-level BPE: tokens, types, merges, special ids,
  chat template), with the pre-tokenizer name that makes llama.cpp split text as transformers does.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpline.platform.errors import ConfigError, HelplineError
from helpline.platform.lazy_imports import require

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
QUANTS = ("f16", "q8_0", "f32")
_UNSUPPORTED_HINT = (
    "GGUF export writes LlamaForCausalLM checkpoints (SmolLM2, Llama 3) with a byte-level BPE tokenizer; "
    "for another model use llama.cpp's convert_hf_to_gguf.py on the merged folder"
)
# Llama 3's split regex, as its tokenizer.json spells it; llama.cpp calls that pre-tokenizer "llama-bpe".
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


class UnsupportedModelError(ConfigError):
    """The checkpoint is one the GGUF converter does not write (architecture, rope scaling, tokenizer)."""


class GGUFCheckError(HelplineError):
    """A written GGUF file did not read back as written."""

    exit_code = 3


@dataclass(frozen=True)
class LlamaShape:
    """The hyper-parameters a llama GGUF records, read from the checkpoint's config."""

    context_length: int
    embedding_length: int
    block_count: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    head_dim: int
    rope_freq_base: float
    rms_eps: float
    vocab_size: int
    tied_embeddings: bool


@dataclass(frozen=True)
class Written:
    """What ``write_gguf`` put in a file: each tensor's shape (transformers' order) and the metadata values."""

    tensors: dict[str, tuple[int, ...]]
    fields: dict[str, Any]


def read_shape(model_dir: Path) -> LlamaShape:
    """The checkpoint's llama hyper-parameters; refused, with every reason at once, where the converter
    would write a file that llama.cpp runs differently."""
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise UnsupportedModelError(f"{model_dir} has no config.json", hint="pass a merged model folder")
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    if list(architectures) != list(SUPPORTED_ARCHITECTURES):
        raise UnsupportedModelError(
            f"{model_dir.name} is {', '.join(architectures) or 'of no stated architecture'}; GGUF export supports "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} only",
            hint=_UNSUPPORTED_HINT,
        )
    config = require("transformers", "train").AutoConfig.from_pretrained(str(model_dir))
    rope = getattr(config, "rope_parameters", None) or {}
    problems = []
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type {rope['rope_type']!r} (only unscaled rotary embeddings are written)")
    if config.attention_bias or config.mlp_bias:
        problems.append("attention or MLP biases")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim * config.num_attention_heads != config.hidden_size:
        problems.append(f"head_dim {head_dim} × {config.num_attention_heads} heads ≠ hidden size {config.hidden_size}")
    if problems:
        raise UnsupportedModelError(f"{model_dir.name} cannot be written as GGUF: {'; '.join(problems)}",
                                    hint=_UNSUPPORTED_HINT)  # fmt: skip
    return LlamaShape(
        context_length=config.max_position_embeddings,
        embedding_length=config.hidden_size,
        block_count=config.num_hidden_layers,
        feed_forward_length=config.intermediate_size,
        head_count=config.num_attention_heads,
        head_count_kv=config.num_key_value_heads,
        head_dim=head_dim,
        rope_freq_base=float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
        rms_eps=float(config.rms_norm_eps),
        vocab_size=config.vocab_size,
        tied_embeddings=bool(config.tie_word_embeddings),
    )


def pre_tokenizer_name(pre: dict | None) -> str | None:
    """llama.cpp's name (``tokenizer.ggml.pre``) for how a tokenizer.json splits text before BPE, or None
    where it is not one of the splits written here."""
    steps = (pre.get("pretokenizers") or []) if pre and pre.get("type") == "Sequence" else ([pre] if pre else [])
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # SmolLM2 as published: digits one by one, then GPT-2's split
    if kinds == ["Split", "ByteLevel"] and (steps[0].get("pattern") or {}).get("Regex") == _LLAMA3_SPLIT:
        return "llama-bpe"
    return None


def add_vocab(writer: Any, model_dir: Path, vocab_size: int) -> dict[str, Any]:
    """Write the tokenizer into ``writer``'s metadata; return the fields written (for the read-back)."""
    gguf = require("gguf", "train")
    tokenizers = require("tokenizers", "train")
    path = model_dir / "tokenizer.json"
    spec = json.loads(path.read_text()) if path.is_file() else {}
    pre = pre_tokenizer_name(spec.get("pre_tokenizer"))
    if (spec.get("model") or {}).get("type") != "BPE" or pre is None:
        raise UnsupportedModelError(
            f"{model_dir.name}'s tokenizer is not a byte-level BPE with a known pre-tokenizer "
            f"(model {(spec.get('model') or {}).get('type')}, pre-tokenizer {spec.get('pre_tokenizer')})",
            hint=_UNSUPPORTED_HINT,
        )
    tokenizer = tokenizers.Tokenizer.from_file(str(path))
    by_id = {i: token for token, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    added = tokenizer.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(vocab_size):  # the embedding may have rows no token uses: llama.cpp names them [PADi]
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        if i not in by_id:
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token:
        # Left unset, llama.cpp decides by tokenizer type; SmolLM2's template writes no BOS and wants none.
        bos = special.special_token_ids.get("bos")
        writer.add_add_bos_token(bos is not None and tokenizer.encode("a").ids[:1] == [bos])
    fields = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
              "tokenizer.ggml.merges": special.merges}  # fmt: skip
    fields |= {getattr(gguf.Keys.Tokenizer, f"{kind.upper()}_ID"): i for kind, i in special.special_token_ids.items()}
    if special.chat_template is not None:
        fields["tokenizer.chat_template"] = special.chat_template
    return fields


def add_hparams(writer: Any, shape: LlamaShape, *, name: str, quant: str) -> dict[str, Any]:
    """Write the llama hyper-parameters and the file's identity; return the fields written."""
    gguf = require("gguf", "train")
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]  # fmt: skip
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.embedding_length)
    writer.add_block_count(shape.block_count)
    writer.add_feed_forward_length(shape.feed_forward_length)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_freq_base)
    writer.add_head_count(shape.head_count)
    writer.add_head_count_kv(shape.head_count_kv)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_vocab_size(shape.vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    arch = "llama"
    return {
        "general.architecture": arch, "general.name": name, "general.file_type": int(file_type),
        f"{arch}.context_length": shape.context_length, f"{arch}.embedding_length": shape.embedding_length,
        f"{arch}.block_count": shape.block_count, f"{arch}.feed_forward_length": shape.feed_forward_length,
        f"{arch}.rope.dimension_count": shape.head_dim, f"{arch}.rope.freq_base": shape.rope_freq_base,
        f"{arch}.attention.head_count": shape.head_count, f"{arch}.attention.head_count_kv": shape.head_count_kv,
        f"{arch}.attention.layer_norm_rms_epsilon": shape.rms_eps, f"{arch}.vocab_size": shape.vocab_size,
    }  # fmt: skip


def permute_rows(weights: Any, n_head: int) -> Any:
    """q_proj/k_proj rows from transformers' rotary layout to llama.cpp's, one head (of ``n_head``) at a time."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))  # fmt: skip


def checkpoint_tensors(model_dir: Path) -> Iterator[tuple[str, Any]]:
    """Every tensor of the checkpoint's safetensors files, as float32 numpy arrays."""
    torch = require("torch", "train")
    safe_open = require("safetensors", "train").safe_open
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UnsupportedModelError(f"{model_dir} has no .safetensors weights", hint="pass a merged model folder")
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is no dict)
                yield key, weights.get_tensor(key).to(torch.float32).numpy()


def encode(array: Any, quant: str) -> tuple[Any, Any]:
    """``array`` as stored in a ``quant`` file, and the raw GGML type when it is quantized (else None)."""
    gguf = require("gguf", "train")
    np = require("numpy", "train")
    if array.ndim == 1 or quant == "f32":
        return array.astype(np.float32), None
    if quant == "f16" or array.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]:
        return array.astype(np.float16), None
    return gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0


def write_gguf(model_dir: Path, out: Path, *, quant: str, name: str) -> Written:
    """Write ``model_dir``'s checkpoint to ``out`` with 2-D weights in ``quant`` (f32, f16 or q8_0)."""
    gguf = require("gguf", "train")
    if quant not in QUANTS:
        raise ConfigError(f"unknown GGUF type {quant!r}", hint=f"use one of {', '.join(QUANTS)}")
    shape = read_shape(model_dir)
    writer = gguf.GGUFWriter(str(out), "llama")
    fields = add_hparams(writer, shape, name=name, quant=quant) | add_vocab(writer, model_dir, shape.vocab_size)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, shape.block_count)
    tensors: dict[str, tuple[int, ...]] = {}
    for hf_name, array in checkpoint_tensors(model_dir):
        if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and shape.tied_embeddings):
            continue  # recomputed by every runtime / the embedding again: no output tensor means tied
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UnsupportedModelError(f"tensor {hf_name} of {model_dir.name} has no llama GGUF name",
                                        hint=_UNSUPPORTED_HINT)  # fmt: skip
        if gguf_name.endswith("attn_q.weight"):
            array = permute_rows(array, shape.head_count)
        elif gguf_name.endswith("attn_k.weight"):
            array = permute_rows(array, shape.head_count_kv)
        data, raw_type = encode(array, quant)
        writer.add_tensor(gguf_name, data, raw_dtype=raw_type)
        tensors[gguf_name] = tuple(array.shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Written(tensors=tensors, fields=fields)


def read_back(path: Path, written: Written) -> dict:
    """Open ``path`` with ``gguf.GGUFReader`` and check every tensor name and shape and every metadata value
    against what was written; the tensor count and types found, or :class:`GGUFCheckError`."""
    reader = require("gguf", "train").GGUFReader(str(path))
    found = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}  # GGUF lists dims inner first
    problems = [f"tensor {n} missing" for n in written.tensors if n not in found]
    problems += [f"tensor {n} not written" for n in found if n not in written.tensors]
    problems += [f"tensor {n} has shape {found[n]}, written {s}" for n, s in written.tensors.items()
                 if n in found and found[n] != s]  # fmt: skip
    for key, value in written.fields.items():
        field = reader.get_field(key)
        got = field.contents() if field is not None else None
        same = math.isclose(got, value, rel_tol=1e-6) if isinstance(value, float) and got is not None else got == value
        if not same:
            problems.append(f"{key} reads {str(got)[:60]!r}, written {str(value)[:60]!r}")
    if problems:
        raise GGUFCheckError(f"{path.name} did not read back as written: {'; '.join(problems[:8])}",
                             hint="a bug in the converter: report it with the model's config.json")  # fmt: skip
    return {
        "tensors": len(found),
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
        "metadata_checked": len(written.fields),
    }
