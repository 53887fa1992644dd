from __future__ import annotations

from pathlib import Path

import pytest

from helpline.platform.errors import ConfigError
from helpline.platform.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("HELPLINE_CONFIG", "HELPLINE_ENGINE", "HELPLINE_WORKSPACE", "HELPLINE_VLLM__PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    s = load_settings()
    assert s.workspace == Path(".helpline")
    assert s.engine == "auto"
    assert s.vllm.host == "127.0.0.1"


def test_env_overrides_file_and_nested_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "helpline.yaml").write_text("engine: transformers\nvllm:\n  port: 9100\nretrieval:\n  top_k: 6\n")
    assert load_settings().engine == "transformers"
    assert load_settings().retrieval.top_k == 6
    monkeypatch.setenv("HELPLINE_ENGINE", "vllm")
    monkeypatch.setenv("HELPLINE_VLLM__PORT", "9200")
    s = load_settings()
    assert (s.engine, s.vllm.port, s.retrieval.top_k) == ("vllm", 9200, 6)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "helpline.yaml").write_text(
        "engine: tensorflow\nretrieval:\n  top_k: 0\n  chunk_size: 200\n  chunk_overlap: 300\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "engine" in message and "top_k" in message
    assert "helpline.yaml" in message  # the hint says where to fix it


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "helpline.yaml").write_text("egnine: vllm\n")
    with pytest.raises(ConfigError, match="egnine"):
        load_settings()


def test_a_misspelt_nested_variable_is_refused_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPLINE_VLLM__GPU_MEMORY_UTILIZATIN", "0.5")  # pydantic-settings alone would drop it
    monkeypatch.setenv("HELPLINE_GATEWAY__LIMITS__BURSTS", "5")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "HELPLINE_GATEWAY__LIMITS__BURSTS, HELPLINE_VLLM__GPU_MEMORY_UTILIZATIN name no setting" in str(err.value)
    monkeypatch.delenv("HELPLINE_VLLM__GPU_MEMORY_UTILIZATIN")
    monkeypatch.delenv("HELPLINE_GATEWAY__LIMITS__BURSTS")
    monkeypatch.setenv("HELPLINE_GATEWAY__LIMITS__BURST", "5")
    monkeypatch.setenv("HELPLINE_SHARED_DATA", "/data")  # not a section: not a setting, not checked
    assert load_settings().gateway.limits.burst == 5


def test_missing_config_file_named_by_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HELPLINE_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_settings()


def test_the_shipped_gpu_preset_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    preset = Path(__file__).parents[2] / "deploy" / "presets" / "gpu-8b.yaml"
    monkeypatch.setenv("HELPLINE_CONFIG", str(preset))
    s = load_settings()
    assert (s.engine, s.vllm.max_model_len, s.vllm.tensor_parallel_size) == ("vllm", 8192, 1)
    assert s.vllm.extra_args == ["--enable-prefix-caching"] and s.gateway.limits.context_tokens == 8192
