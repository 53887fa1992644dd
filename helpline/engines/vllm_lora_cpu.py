"""A vLLM plugin that makes LoRA adapters fast on vLLM's CPU backend.

vLLM's CPU backend applies LoRA with PyTorch-native "punica" ops that gather a full copy of the
adapter's weight matrix for every token (``lora_b_weights[token_indices]``) before an einsum. For a
prefill of 500 tokens through a 1536-wide projection at rank 64 that is a 200 MB temporary per layer
and projection, which is why adapters served on CPU crawl (we measured 0-20 tokens/s for 8 concurrent
requests where the base model did hundreds).

The ops below compute the same products by grouping tokens per adapter: one matrix multiplication
per adapter present in the batch (usually one), with the same indexing rules as the originals (a
negative index selects from the end, exactly like the tensor indexing they replace). Shapes the
grouping does not cover fall through to vLLM's own implementation.

Registered as a ``vllm.general_plugins`` entry point (see pyproject.toml), so vLLM loads it in every
process it starts; it patches nothing unless vLLM runs on the CPU platform.
"""

from __future__ import annotations

import logging
from typing import Any

import torch  # only vLLM's processes load this module (and vLLM brings torch)

from helpline.platform.lazy_imports import optional

_PATCHED_NAMES = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice", "sgmv_shrink", "sgmv_expand", "sgmv_expand_slice")


_last_indices: list = [None, -1, -1, None]  # (tensor, version, numel, answer) of the previous call


def uniform_index(indices: Any) -> int | None:
    """The adapter index when every token uses the same one, else None.

    Every LoRA layer of one forward step gets the same index tensor, so the answer is cached for
    as long as that tensor is unchanged (same object or view, same in-place version, same length);
    holding a reference keeps its memory from being reused by another tensor.
    """
    try:
        version = indices._version
    except RuntimeError:  # tensors made under inference_mode have no version counter: no caching
        version = None
    ref, last_version, numel, answer = _last_indices
    if version is not None and ref is not None and indices.data_ptr() == ref.data_ptr() \
            and version == last_version and indices.numel() == numel:  # fmt: skip
        return answer
    first = int(indices[0])
    answer = first if bool((indices == first).all()) else None
    _last_indices[:] = [indices, version, indices.numel(), answer] if version is not None else [None, -1, -1, None]
    return answer


#: (stacked weights, adapter index) -> (the stacked tensor, its version, fp32 [in, out] matrix). Holding the
#: stacked tensor keeps its memory from being reused, so an equal data pointer means the same weights.
_matrices: dict[tuple[int, tuple[int, ...], int], tuple[Any, int, Any]] = {}


def lora_matrix(weights: Any, index: int) -> Any:
    """``weights[index]`` as a contiguous fp32 ``[in, out]`` matrix, cached until the weights change.

    vLLM keeps the adapter weights in bf16 and converting them on every call cost more than the
    matrix products themselves (61k conversions, 6.9 s, for 768 output tokens in our profile).
    """
    try:
        version = weights._version
    except RuntimeError:  # an inference tensor: no version counter, so no caching
        return weights[index].to(torch.float32).T.contiguous()
    key = (weights.data_ptr(), tuple(weights.shape), index)
    hit = _matrices.get(key)
    if hit is not None and hit[1] == version:
        return hit[2]
    matrix = weights[index].to(torch.float32).T.contiguous()
    if len(_matrices) > 8192:  # adapters reloaded many times: start over rather than grow
        _matrices.clear()
    _matrices[key] = (weights, version, matrix)
    return matrix


def lora_products(inputs: Any, weights: Any, indices: Any) -> Any | None:
    """``inputs[t] @ weights[indices[t]].T`` for every token ``t``, one matmul per distinct adapter.

    ``weights`` is ``[adapters, out, in]`` (or ``[adapters, 1, out, in]``). None when the shapes are
    not the one-index-per-token case (the caller then uses the original op). Products are computed
    in fp32 (the caller casts them into its output tensor).
    """
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    if weights.dim() != 3 or indices.dim() != 1 or indices.numel() != inputs.shape[0] or inputs.shape[0] == 0:
        return None
    inputs = inputs.to(torch.float32)
    first = uniform_index(indices)
    if first is not None:
        return inputs @ lora_matrix(weights, first)
    out = torch.empty((inputs.shape[0], weights.shape[1]), dtype=torch.float32, device=inputs.device)
    for adapter in torch.unique(indices).tolist():
        rows = (indices == adapter).nonzero(as_tuple=True)[0]
        out[rows] = inputs[rows] @ lora_matrix(weights, adapter)
    return out


def make_ops(original: dict[str, Any]) -> dict[str, Any]:
    """Grouped versions of vLLM's torch ``bgmv_*`` ops; ``original`` holds the ops they fall back to."""
    token_ops = _token_ops(original)
    return {**token_ops, **_prefill_ops(original, token_ops)}


def _token_ops(original: dict[str, Any]) -> dict[str, Any]:
    """The decode ("bgmv") ops, one adapter index per token, grouped by :func:`lora_products`."""

    def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):  # type: ignore[no-untyped-def]
        outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor)
        if outputs is None:
            return original["bgmv_shrink"](inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling)
        output_tensor[:, : outputs.shape[1]] = scaling * outputs

    def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):  # type: ignore[no-untyped-def]
        outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor)
        if outputs is None or outputs.shape[0] != output_tensor.shape[0]:
            return original["bgmv_expand"](inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs)
        common = min(outputs.shape[1], output_tensor.shape[1])
        if add_inputs:
            output_tensor[:, :common] += outputs[:, :common]
        else:
            output_tensor[:, :common] = outputs[:, :common]

    def bgmv_expand_slice(  # type: ignore[no-untyped-def]
        inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int, slice_size: int,
        add_inputs: bool = True,
    ):  # fmt: skip
        outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor)
        if outputs is None:
            return original["bgmv_expand_slice"](
                inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size, add_inputs
            )
        if add_inputs:
            output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
        else:
            output_tensor[:, slice_offset : slice_offset + slice_size] = outputs

    return {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}


# The prefill ("sgmv") ops get one index per run of tokens, after ``(inputs, weights, output)``:
# ``seq_start_locs, seq_lengths, lora_indices, batches, max_length, token_nums, *rest`` (as vLLM's
# punica wrapper passes them, positionally). vLLM clusters the batch by adapter, so one adapter for
# the whole batch is a single index: then the token ops run without expanding the indices.
def _one_adapter(inputs: Any, args: tuple, kwargs: dict) -> Any | None:
    """The per-token index tensor when one adapter serves the whole prefill batch, else None."""
    if kwargs or len(args) < 7:
        return None
    lora_indices, token_nums = args[2], args[5]
    if lora_indices.numel() == 1 and inputs.shape[0] == token_nums:
        return lora_indices.reshape(1).expand(token_nums)
    return None


def _prefill_ops(original: dict[str, Any], token_ops: dict[str, Any]) -> dict[str, Any]:
    """The prefill ("sgmv") ops: the grouped ``token_ops`` when one adapter serves the batch, else ``original``."""
    bgmv_shrink, bgmv_expand = token_ops["bgmv_shrink"], token_ops["bgmv_expand"]
    bgmv_expand_slice = token_ops["bgmv_expand_slice"]

    def sgmv_shrink(inputs, lora_a_weights, output_tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        indices = _one_adapter(inputs, args, kwargs)
        if indices is None:
            return original["sgmv_shrink"](inputs, lora_a_weights, output_tensor, *args, **kwargs)
        return bgmv_shrink(inputs, lora_a_weights, output_tensor, indices, args[6])

    def sgmv_expand(inputs, lora_b_weights, output_tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        indices = _one_adapter(inputs, args, kwargs)
        if indices is None:
            return original["sgmv_expand"](inputs, lora_b_weights, output_tensor, *args, **kwargs)
        return bgmv_expand(inputs, lora_b_weights, output_tensor, indices, args[6])

    def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        indices = _one_adapter(inputs, args, kwargs)
        if indices is None or len(args) < 9:
            return original["sgmv_expand_slice"](inputs, lora_b_weights, output_tensor, *args, **kwargs)
        return bgmv_expand_slice(inputs, lora_b_weights, output_tensor, indices, args[6], args[7], args[8])

    return {"sgmv_shrink": sgmv_shrink, "sgmv_expand": sgmv_expand, "sgmv_expand_slice": sgmv_expand_slice}


_fused: dict[tuple, tuple[Any, Any, Any]] = {}


def _slices(a_stacked: tuple, b_stacked: tuple) -> tuple[list, list, tuple | None]:
    """The per-slice A and B stacks as 3-D tensors, and a key that changes with their storage or contents
    (None for inference tensors, which have no version counter)."""
    a = [w.squeeze(1) if w.dim() == 4 else w for w in a_stacked]
    b = [w.squeeze(1) if w.dim() == 4 else w for w in b_stacked]
    try:
        return a, b, tuple((w.data_ptr(), w._version) for w in a + b)
    except RuntimeError:
        return a, b, None


def fused_matrices(a_stacked: tuple, b_stacked: tuple, adapter: int) -> tuple[Any, Any]:
    """One ``[in, n*r]`` shrink matrix and one block-diagonal ``[n*r, sum(out)]`` expand matrix for the n
    slices of a merged layer (q/k/v, gate/up), so a LoRA linear is two matmuls instead of 2n; cached
    until any slice's weights change."""
    a, b, weights_key = _slices(a_stacked, b_stacked)
    key = None if weights_key is None else (weights_key, adapter)
    if key is not None and key in _fused:
        return _fused[key][1], _fused[key][2]
    shrink = torch.cat([lora_matrix(w, adapter) for w in a], dim=1)
    ranks = [w.shape[1] for w in a]
    outs = [w.shape[1] for w in b]
    expand = torch.zeros((sum(ranks), sum(outs)), dtype=torch.float32)
    row = col = 0
    for w, r, o in zip(b, ranks, outs, strict=True):
        expand[row : row + r, col : col + o] = lora_matrix(w, adapter)
        row, col = row + r, col + o
    if key is not None:
        if len(_fused) > 4096:
            _fused.clear()
        _fused[key] = (a + b, shrink, expand)  # holding the tensors keeps their addresses theirs
    return shrink, expand


def fused_lora_linear(y: Any, x: Any, a_stacked: tuple, b_stacked: tuple, scale: float, adapter: int) -> None:
    """``y[:, slice_i] += (x @ A_i.T * scale) @ B_i.T`` for every slice, with one adapter for all tokens."""
    y2 = y.view(-1, y.shape[-1])
    x2 = x.view(-1, x.shape[-1])
    handlers = onednn_handlers(a_stacked, b_stacked, adapter, scale, x2.dtype)
    if handlers is not None:
        ops = optional("vllm._custom_ops")  # there: the handlers came from it
        out = ops.onednn_mm(handlers[1], ops.onednn_mm(handlers[0], x2, None), None)
    else:
        shrink, expand = fused_matrices(a_stacked, b_stacked, adapter)
        out = ((x2.to(torch.float32) @ shrink) * scale) @ expand
    y2[:, : out.shape[1]] += out


#: (fused-matrix cache key, scale, dtype) -> (shrink handler, expand handler), or None where oneDNN refused.
_handlers: dict[tuple, Any] = {}


def onednn_handlers(a_stacked: tuple, b_stacked: tuple, adapter: int, scale: float, dtype: Any) -> Any:
    """The fused shrink and expand matrices (scale folded into expand) prepacked for vLLM's oneDNN GEMM in
    the activations' dtype, as vLLM runs the base model's own linears; None where that GEMM is missing.

    Small products are dominated by per-call cost: in bf16 through oneDNN the two LoRA products of a
    SmolLM2 q/k/v layer take 39 us for 8 tokens, against 71 us in fp32 through torch.matmul (the base
    q/k/v product itself: 57 us); the result differs from fp32 by 0.3% (relative norm).
    """
    ops = optional("vllm._custom_ops")
    if ops is None or not getattr(ops, "_supports_onednn", False) or dtype not in (torch.bfloat16, torch.float32):
        return None
    a, b, weights_key = _slices(a_stacked, b_stacked)
    if weights_key is None:  # nothing can be cached safely: the torch path
        return None
    key = (weights_key, adapter, scale, dtype)
    if key in _handlers:
        return _handlers[key][1]
    shrink, expand = fused_matrices(a_stacked, b_stacked, adapter)
    try:
        made = (
            ops.create_onednn_mm(shrink.to(dtype).contiguous(), 32),
            ops.create_onednn_mm((expand * scale).to(dtype).contiguous(), 32),
        )
    except RuntimeError:  # a shape or dtype oneDNN does not take: the torch path
        made = None
    if len(_handlers) > 4096:
        _handlers.clear()
    _handlers[key] = (a + b, made)  # holding the tensors keeps their addresses theirs
    return made


def make_add_lora_linear(original: Any) -> Any:
    """PunicaWrapperCPU.add_lora_linear with the fused path when one adapter serves every token."""

    def add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None, **kwargs):  # type: ignore[no-untyped-def]
        if buffer is None and not kwargs and self.is_prefill:
            if self.no_lora:
                return None
            indices = self.token_lora_indices
            adapter = uniform_index(indices) if indices.numel() == x.view(-1, x.shape[-1]).shape[0] else None
            outs = [w.shape[-2] for w in lora_b_stacked]
            if adapter is not None and list(outs) == list(output_slices):
                return fused_lora_linear(y, x, lora_a_stacked, lora_b_stacked, scale, adapter)
        return original(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs)

    add_lora_linear._helpline_fused = True  # type: ignore[attr-defined]
    return add_lora_linear


def register() -> None:
    """vLLM entry point: swap in the grouped ops on the CPU platform (idempotent)."""
    platforms = optional("vllm.platforms")
    if platforms is None or not platforms.current_platform.is_cpu():
        return
    package = optional("vllm.lora.ops.torch_ops")
    ops = optional("vllm.lora.ops.torch_ops.lora_ops")
    wrapper = optional("vllm.lora.punica_wrapper.punica_cpu")
    if package is None or ops is None or wrapper is None:  # another vLLM layout: leave it as it is
        return
    if getattr(ops, "_helpline_grouped", False):
        return
    grouped = make_ops({name: getattr(ops, name) for name in _PATCHED_NAMES})
    for module in (ops, package, wrapper):  # sgmv_* call the module globals; the wrapper imported names
        for name, fn in grouped.items():
            if hasattr(module, name):
                setattr(module, name, fn)
    cls = wrapper.PunicaWrapperCPU
    if not getattr(cls.add_lora_linear, "_helpline_fused", False):
        cls.add_lora_linear = make_add_lora_linear(cls.add_lora_linear)
    ops._helpline_grouped = True
    logging.getLogger("vllm.plugins.helpline").info(
        "helpline: LoRA on the CPU backend uses grouped matmuls (vllm_lora_cpu)"
    )
