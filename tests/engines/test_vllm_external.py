"""A vLLM server run elsewhere (vllm.url), over a stand-in that speaks its model list and runtime LoRA API: the gateway
checks it serves our base, names adapters as the engine host mounts them, and loads them again after a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpline.engines.vllm_external import ExternalVLLM
from helpline.platform.errors import ConfigError, EngineError
from helpline.platform.registry import Registry
from helpline.platform.settings import Settings, VLLMSettings, load_settings

pytest.importorskip("uvicorn")


@pytest.fixture
def engine():
    from helpline.testing.serving import fake_vllm_app, serve_in_thread

    app = fake_vllm_app(["smollm2"])
    with serve_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}", app


def external(url: str, tmp_path: Path, **settings) -> ExternalVLLM:
    s = VLLMSettings(url=url, startup_timeout_s=3, health_interval_s=0.2, **settings)
    return ExternalVLLM(served_name="smollm2", settings=s, workspace_root=tmp_path / "ws")


def test_url_is_an_address_and_workspace_path_needs_it() -> None:
    assert VLLMSettings(url="http://engine:8001/v1/").root_url == "http://engine:8001"
    assert VLLMSettings(port=9000).root_url == "http://127.0.0.1:9000"
    with pytest.raises(ConfigError, match="not a server address"):
        load_settings(vllm={"url": "engine:8001"})
    with pytest.raises(ConfigError, match=r"only used with vllm\.url"):
        load_settings(vllm={"workspace_path": "/models/helpline"})


def test_start_fails_with_the_fix_when_the_engine_serves_another_base(engine, tmp_path: Path) -> None:
    url, app = engine
    app.state.served = ["qwen3-8b"]
    with pytest.raises(EngineError, match="serves qwen3-8b, not 'smollm2'") as e:
        external(url, tmp_path).start(supervise=False)
    assert "--served-model-name smollm2" in (e.value.hint or "")


def test_start_gives_up_on_an_engine_that_never_answers(tmp_path: Path) -> None:
    from helpline.evaluation.load import free_port

    started = time.monotonic()
    with pytest.raises(EngineError, match="no vLLM server answered"):
        external(f"http://127.0.0.1:{free_port()}", tmp_path).start(supervise=False)
    assert time.monotonic() - started < 30


def test_adapters_are_named_by_the_engine_hosts_mount_of_the_workspace(engine, tmp_path: Path) -> None:
    url, app = engine
    server = external(url, tmp_path, workspace_path="/models/helpline")
    server.lora_modules["cand-1"] = str(tmp_path / "ws" / "adapters" / "cand")
    server.start(supervise=False)  # the adapters it must hold are loaded at start
    server.load_lora("other-2", tmp_path / "elsewhere" / "other")  # outside the workspace: sent as it is
    assert app.state.loads == [
        {"lora_name": "cand-1", "lora_path": "/models/helpline/adapters/cand"},
        {"lora_name": "other-2", "lora_path": str(tmp_path / "elsewhere" / "other")},
    ]
    server.load_lora("other-2", tmp_path / "elsewhere" / "other")  # loaded already: no error
    assert app.state.served == ["smollm2", "cand-1", "other-2"]


def test_an_engine_restarted_elsewhere_gets_its_adapters_again(engine, tmp_path: Path) -> None:
    url, app = engine
    server = external(url, tmp_path).start()
    try:
        server.load_lora("cand-1", tmp_path / "ws" / "adapters" / "cand")
        server.load_lora("bad-2", tmp_path / "ws" / "adapters" / "bad")
        app.state.served = ["smollm2"]  # restarted: it holds its base only
        app.state.refuse = {"bad-2"}  # and refuses one adapter now: the other still comes back
        deadline = time.monotonic() + 10
        while server.reloads < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.served == ["smollm2", "cand-1"]
    finally:
        server.stop()


def test_a_promotion_loads_the_adapter_into_the_external_engine_and_serves_it(engine, tmp_path: Path) -> None:
    from helpline.serving.routing import ModelRouter, VLLMBackend
    from helpline.testing.serving import PASSED_GATE

    url, app = engine
    registry = Registry(tmp_path / "r.sqlite")
    registry.register_model("smollm2", kind="base", path=tmp_path)
    registry.register_model(
        "cand", kind="adapter", path=tmp_path / "ws" / "cand", base_model="smollm2", metadata=PASSED_GATE
    )
    registry.set_alias("production", "smollm2", actor="test")
    server = external(url, tmp_path, workspace_path="/m").start(supervise=False)
    router = ModelRouter(registry, VLLMBackend(base_url=server.base_url, base_model="smollm2", server=server))
    router.promote("cand", actor="test")
    route = router.resolve("helpline-support", conversation_id="c1")
    served = VLLMBackend.served_name(registry.get_model("cand"))
    assert route.generator.name == served and route.generator.base_url == f"{url}/v1"
    assert app.state.loads == [{"lora_name": served, "lora_path": "/m/cand"}]


def test_helpline_ask_loads_a_new_adapter_into_the_external_engine_by_its_mounted_path(engine, tmp_path: Path) -> None:
    from helpline.platform.context import Context
    from helpline.platform.workspace import Workspace
    from helpline.serving.factory import build_generator
    from helpline.serving.routing import VLLMBackend

    url, app = engine
    ws = Workspace.at(tmp_path / "ws")
    registry = Registry(tmp_path / "r.sqlite")
    registry.register_model("smollm2", kind="base", path=tmp_path)
    registry.register_model("cand", kind="adapter", path=ws.root / "adapters" / "cand", base_model="smollm2")
    settings = Settings(chat_model="cand", vllm=VLLMSettings(url=url, workspace_path="/m"))
    gen = build_generator(Context(settings, workspace=ws, registry=registry), engine="vllm")
    served = VLLMBackend.served_name(registry.get_model("cand"))
    assert gen.name == served and gen.base_url == f"{url}/v1"
    assert app.state.loads == [{"lora_name": served, "lora_path": "/m/adapters/cand"}]
