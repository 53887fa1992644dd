"""Detector settings: where the cross-encoder trains and in what precision it runs; bad settings refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from helpline.evaluation.hallucination.detector import resolve_precision
from helpline.evaluation.hallucination.train import load_config, training_device
from helpline.platform.errors import ConfigError


def _torch(cuda: bool) -> SimpleNamespace:
    return SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: cuda), device=lambda name: f"device({name})")


def test_auto_picks_the_gpu_when_torch_sees_one() -> None:
    assert training_device("auto", _torch(cuda=True)) == "device(cuda)"
    assert training_device("auto", _torch(cuda=False)) == "device(cpu)"
    assert training_device("cuda:1", _torch(cuda=True)) == "device(cuda:1)"


def test_asking_for_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="sees no CUDA GPU") as err:
        training_device("cuda", _torch(cuda=False))
    assert "device=cpu" in err.value.hint


def test_device_setting_is_validated() -> None:
    assert load_config(None, ["device=cuda:0"]).device == "cuda:0"
    assert load_config(None, []).device == "auto"
    with pytest.raises(ConfigError, match="device"):
        load_config(None, ["device=gpu"])


def _cpu(mkldnn: bool, bf16: bool) -> SimpleNamespace:
    return SimpleNamespace(
        backends=SimpleNamespace(mkldnn=SimpleNamespace(is_available=lambda: mkldnn)),
        ops=SimpleNamespace(mkldnn=SimpleNamespace(_is_mkldnn_bf16_supported=lambda: bf16)),
    )


def test_auto_precision_is_bf16_only_where_the_cpu_runs_it() -> None:
    assert resolve_precision("auto", _cpu(mkldnn=True, bf16=True)) == "bf16"
    assert resolve_precision("auto", _cpu(mkldnn=True, bf16=False)) == "int8"
    assert resolve_precision("auto", _cpu(mkldnn=False, bf16=True)) == "int8"
    assert resolve_precision("fp32", _cpu(mkldnn=True, bf16=True)) == "fp32"


def test_auto_precision_follows_the_calibration() -> None:
    cpu = _cpu(mkldnn=True, bf16=True)
    assert resolve_precision("auto", cpu, calibrated="int8") == "int8"  # heads fitted on int8 logits
    assert resolve_precision("auto", cpu, calibrated="fp32") == "fp32"
    assert resolve_precision("auto", _cpu(mkldnn=True, bf16=False), calibrated="bf16") == "int8"
    assert resolve_precision("bf16", cpu, calibrated="int8") == "bf16"  # asked for explicitly
