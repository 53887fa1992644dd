"""The grouped LoRA ops of the vLLM CPU plugin compute exactly what vLLM's own torch ops compute."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")

from helpline.engines.vllm_lora_cpu import make_ops  # noqa: E402

ORIGINAL = {
    name: getattr(ops, name)
    for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice", "sgmv_shrink", "sgmv_expand", "sgmv_expand_slice")
}
GROUPED = make_ops(ORIGINAL)


def _case(indices: list[int], *, d_in: int = 24, d_out: int = 40, adapters: int = 3):
    g = torch.Generator().manual_seed(len(indices) + sum(indices))
    x = torch.randn(len(indices), d_in, generator=g)
    w = torch.randn(adapters, 1, d_out, d_in, generator=g)  # vLLM's stacked [adapters, 1, out, in]
    return x, w, torch.tensor(indices)


def _same(op: str, x, w, out, *args):  # type: ignore[no-untyped-def]
    """Run vLLM's op and ours on copies of ``out``; they must agree. Returns ours."""
    want, got = out.clone(), out.clone()
    ORIGINAL[op](x, w, want, *args)
    GROUPED[op](x, w, got, *args)
    torch.testing.assert_close(got, want)
    return got


@pytest.mark.parametrize("indices", [[0, 0, 0, 0], [2, 0, 2, 1, 0], [-1, 1, -1], [1]])
def test_shrink_matches_vllm(indices: list[int]) -> None:
    x, w, idx = _case(indices)
    _same("bgmv_shrink", x, w, torch.zeros(len(indices), 48), idx, 0.5)


@pytest.mark.parametrize("add_inputs", [True, False])
@pytest.mark.parametrize("indices", [[1, 1, 1], [0, 2, 1, 0], [-1, 0]])
def test_expand_and_expand_slice_match_vllm(indices: list[int], add_inputs: bool) -> None:
    x, w, idx = _case(indices)
    base = torch.randn(len(indices), 100)
    _same("bgmv_expand", x, w, base, idx, add_inputs)
    _same("bgmv_expand_slice", x, w, base, idx, 30, 40, add_inputs)


def test_indices_changed_in_place_between_steps_are_seen() -> None:
    """vLLM refills one index buffer every step: a cached answer must not outlive the change."""
    x, w, _ = _case([0, 0, 0])
    buffer = torch.tensor([0, 0, 0, 0, 0])
    idx = buffer[:3]
    for step_indices in ([0, 0, 0], [1, 0, 1], [2, 2, 2]):
        buffer[:3] = torch.tensor(step_indices)  # in place, as vLLM does
        _same("bgmv_shrink", x, w, torch.zeros(3, 48), idx, 1.0)


def test_inference_mode_indices_are_handled_without_a_cache() -> None:
    x, w, _ = _case([0, 0, 0])
    for step_indices in ([0, 0, 0], [1, 0, 1]):
        with torch.inference_mode():
            _same("bgmv_shrink", x, w, torch.zeros(3, 48), torch.tensor(step_indices), 1.0)


def test_an_adapter_reloaded_into_its_slot_is_used_at_once() -> None:
    """vLLM copies a newly loaded adapter into the same stacked tensor: cached matrices must follow."""
    x, w, idx = _case([1, 1, 1])
    first = _same("bgmv_shrink", x, w, torch.zeros(3, 48), idx, 1.0)
    w[1].copy_(torch.randn_like(w[1]))  # in place, as a load into slot 1
    second = _same("bgmv_shrink", x, w, torch.zeros(3, 48), idx, 1.0)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("per_run", [[1], [0, 2], [-1]])
def test_prefill_ops_match_vllm(per_run: list[int]) -> None:
    """sgmv_*: one adapter index per run of tokens (vLLM clusters runs by adapter)."""
    lengths = [3, 2][: len(per_run)]
    x, w, _ = _case([0] * sum(lengths))
    meta = (
        torch.tensor([0, 3][: len(per_run)]),
        torch.tensor(lengths),
        torch.tensor(per_run),
        len(per_run),
        3,
        sum(lengths),
    )
    _same("sgmv_shrink", x, w, torch.zeros(sum(lengths), 48), *meta, 0.5)
    base = torch.randn(sum(lengths), 100)
    for add in (True, False):
        _same("sgmv_expand", x, w, base, *meta, add)
        _same("sgmv_expand_slice", x, w, base, *meta, 30, 40, add)


@pytest.mark.parametrize("slices", [[40], [40, 16, 16], [30, 30]])
def test_fused_lora_linear_matches_the_per_slice_products(slices: list[int]) -> None:
    """q/k/v (or gate/up) in two matmuls: the same as shrink then expand per slice."""
    from helpline.engines.vllm_lora_cpu import fused_lora_linear

    g = torch.Generator().manual_seed(len(slices))
    x = torch.randn(5, 24, generator=g)
    a = tuple(torch.randn(3, 1, 8, 24, generator=g) for _ in slices)  # [adapters, 1, r, in]
    b = tuple(torch.randn(3, 1, s, 8, generator=g) for s in slices)  # [adapters, 1, out, r]
    y = torch.randn(5, sum(slices), generator=g)
    want = y.clone()
    offset = 0
    for ai, bi, size in zip(a, b, slices, strict=True):
        want[:, offset : offset + size] += (x @ ai[2, 0].T * 0.5) @ bi[2, 0].T
        offset += size
    fused_lora_linear(y, x, a, b, 0.5, 2)
    torch.testing.assert_close(y, want)


def test_fused_lora_linear_in_bf16_matches_fp32_within_rounding() -> None:
    """The bf16 activations of a vLLM CPU server go through oneDNN with prepacked adapter matrices."""
    from helpline.engines.vllm_lora_cpu import fused_lora_linear

    g = torch.Generator().manual_seed(7)
    x = torch.randn(8, 64, generator=g)
    a = tuple(torch.randn(2, 1, 16, 64, generator=g) / 8 for _ in range(3))
    b = tuple(torch.randn(2, 1, n, 16, generator=g) / 4 for n in (64, 32, 32))
    y = torch.zeros(8, 128)
    want = y.clone()
    fused_lora_linear(want, x, a, b, 1.0, 1)  # fp32
    got = y.to(torch.bfloat16)
    fused_lora_linear(got, x.to(torch.bfloat16), tuple(w.to(torch.bfloat16) for w in a),
                      tuple(w.to(torch.bfloat16) for w in b), 1.0, 1)  # fmt: skip
    assert got.dtype == torch.bfloat16
    assert ((got.float() - want).norm() / want.norm()).item() < 0.02


def test_onednn_handlers_are_cached_until_the_adapter_weights_change() -> None:
    from helpline.engines.vllm_lora_cpu import onednn_handlers

    a = (torch.randn(2, 1, 8, 32, dtype=torch.bfloat16),)
    b = (torch.randn(2, 1, 32, 8, dtype=torch.bfloat16),)
    first = onednn_handlers(a, b, 0, 1.0, torch.bfloat16)
    if first is None:
        pytest.skip("this vLLM build has no oneDNN GEMM")
    assert onednn_handlers(a, b, 0, 1.0, torch.bfloat16) is first
    b[0][0].add_(1.0)  # a new adapter loaded into the same slot
    assert onednn_handlers(a, b, 0, 1.0, torch.bfloat16) is not first
