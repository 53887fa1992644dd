"""Parts of the serving path on their own: streaming failures, cancellation, abstention maths."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from helpline.answering.abstention import declines, tradeoff
from helpline.engines.vllm_server import VLLMServer
from helpline.platform.errors import EngineError
from helpline.platform.registry import Registry
from helpline.platform.schemas import Chunk, ScoredChunk
from helpline.platform.settings import VLLMSettings
from helpline.serving.gateway.auth import Principal
from helpline.serving.gateway.protocol import ChatCompletionRequest
from helpline.serving.routing import startup_adapters
from helpline.testing.serving import Gateway


class SlowGenerator:
    """Streams forever (until cancelled) or fails after one delta; records whether it was closed."""

    def __init__(self, *, fail: bool = False) -> None:
        self.name = "slow"
        self.fail = fail
        self.closed = False

    async def astream(self, messages, *, max_tokens, temperature=0.0) -> AsyncIterator[str]:
        try:
            yield "Hello"
            if self.fail:
                raise EngineError("engine died")
            while True:
                await asyncio.sleep(0.01)
                yield " more"
        finally:
            self.closed = True


def _service_with(gateway: Gateway, generator: SlowGenerator):
    service = gateway.client.app.state.chat_service
    gateway.backend.generators["fake-base"] = generator  # type: ignore[assignment]
    principal = Principal(gateway.store.lookup(gateway.keys["customer"]))  # type: ignore[arg-type]
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "How do I return an item?"}], stream=True)
    return service, principal, body


def test_client_disconnect_mid_stream_closes_the_generation(gateway: Gateway) -> None:
    generator = SlowGenerator()
    service, principal, body = _service_with(gateway, generator)

    async def go() -> None:
        events = await service.stream(body, principal)
        await anext(events)  # the role event; the answer is being generated (and decided) before it is sent
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(events), timeout=0.2)  # the client goes away: Starlette cancels
        await events.aclose()

    asyncio.run(go())
    assert generator.closed
    assert service.gate.active == 0
    assert gateway.store.turns(limit=1)[0]["status"] == "cancelled"


def test_engine_failure_mid_stream_sends_an_error_event_then_done(gateway: Gateway) -> None:
    service, principal, body = _service_with(gateway, SlowGenerator(fail=True))

    async def collect() -> list[str]:
        return [e async for e in await service.stream(body, principal)]

    events = asyncio.run(collect())
    assert events[-1] == "data: [DONE]\n\n"
    error = json.loads(events[-2][6:])["error"]
    assert error["code"] == 503 and "engine died" not in error["message"]  # the details are in the log
    assert error["request_id"] in error["message"]
    assert service.gate.active == 0


def test_tradeoff_finds_the_threshold_that_separates_scores() -> None:
    pairs = [(0.8, 0.3), (0.7, 0.2), (0.9, 0.4), (0.6, 0.1)]
    result = tradeoff(pairs)
    assert result["auc"] == 1.0
    best = result["best_balanced"]
    assert best["answer_rate"] == 1.0 and best["abstain_rate"] == 1.0 and 0.4 < best["threshold"] <= 0.6


def test_vllm_command_has_lora_and_startup_adapters(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    registry.register_model("base", kind="base", path=tmp_path)
    adapter_dir = tmp_path / "ad"
    adapter_dir.mkdir()
    (adapter_dir / "adapter_config.json").write_text("{}")
    registry.register_model("ad", kind="adapter", path=adapter_dir, base_model="base")
    registry.register_model("unused", kind="adapter", path=tmp_path / "missing", base_model="base")
    registry.set_alias("production", "ad")
    modules = startup_adapters(registry, "base")
    assert list(modules.values()) == [str(adapter_dir)]  # only aliased adapters load at start
    server = VLLMServer(model_path=tmp_path, served_name="base", settings=VLLMSettings(port=1), log_path=None,
                        lora_modules=modules)  # fmt: skip
    cmd = server.command()
    assert "--enable-lora" in cmd and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert f"{next(iter(modules))}={adapter_dir}" in cmd
    assert "--chat-template" not in cmd  # the base's tokenizer config cannot be read: vLLM decides
    other = tmp_path / "other"
    other.mkdir()
    (other / "adapter_config.json").write_text("{}")
    registry.register_model("chat", kind="adapter", path=other, base_model="base")
    assert len(startup_adapters(registry, "base", chat_model="chat")) == 2  # the configured chat model loads too


def test_base_without_chat_template_is_served_with_its_adapters_template(tmp_path: Path) -> None:
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir(), adapter.mkdir()
    (base / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>"}))
    (adapter / "chat_template.jinja").write_text("{{ messages }}")
    settings = VLLMSettings(port=1)
    server = VLLMServer(
        model_path=base, served_name="b", settings=settings, log_path=None, lora_modules={"a": str(adapter)}
    )
    cmd = server.command()
    assert cmd[cmd.index("--chat-template") + 1] == str(adapter / "chat_template.jinja")
    (base / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    assert "--chat-template" not in server.command()  # the base's own template wins
    assert VLLMServer(model_path=base, served_name="b", settings=settings, log_path=None).chat_template() is None


def test_supervisor_restarts_a_crashed_engine(tmp_path: Path, monkeypatch) -> None:
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake_engine = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self): self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        f"h.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    server = VLLMServer(model_path=tmp_path, served_name="m", settings=VLLMSettings(port=port, startup_timeout_s=20),
                        log_path=tmp_path / "log")  # fmt: skip
    monkeypatch.setattr(server, "command", lambda: [sys.executable, "-c", fake_engine])
    server.start()
    try:
        first = server.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # a crash, as the supervisor sees one
        for _ in range(100):
            if server.restarts == 1 and server.is_ready():
                break
            __import__("time").sleep(0.2)
        assert server.restarts == 1 and server.pid != first and server.is_ready()
    finally:
        server.stop()
    assert not server.is_ready()


def test_scored_chunk_threshold_applies_to_best_passage(gateway: Gateway) -> None:
    pipeline = gateway.client.app.state.chat_service.pipeline
    chunk = Chunk(chunk_id="c", doc_id="d", title="t", text="x")
    pipeline.search = lambda q, k, role, history=None: [ScoredChunk(chunk=chunk, score=0.19)]
    assert gateway.chat("customer", "anything").json()["abstained"] is True
    pipeline.search = lambda q, k, role, history=None: [ScoredChunk(chunk=chunk, score=0.21)]
    assert gateway.chat("customer", "anything").json()["abstained"] is False


def test_follow_up_is_searched_with_the_users_earlier_turns() -> None:
    from helpline.answering.rag import RAGPipeline
    from helpline.platform.schemas import ChatMessage
    from helpline.testing import FakeGenerator

    calls: list[tuple[str, list[str] | None]] = []
    chunk = Chunk(doc_id="d", chunk_id="d#0", text="Moving abroad: update your address.", title="Moving")

    def search(query: str, *, k: int, role: str, history: list[str] | None = None) -> list[ScoredChunk]:
        calls.append((query, history))
        return [ScoredChunk(chunk=chunk, score=1.0)]

    conversation = [
        ChatMessage(role="user", content="How do I change my delivery address?"),
        ChatMessage(role="assistant", content="Open Settings > Addresses."),
        ChatMessage(role="user", content="and if I moved to another country?"),
    ]
    RAGPipeline(search=search, generator=FakeGenerator()).answer(conversation)
    assert calls == [("and if I moved to another country?", ["How do I change my delivery address?"])]


def test_gateway_detector_setting_picks_the_registered_detector(tmp_path: Path) -> None:
    from helpline.guard.detector import DetectorConfig
    from helpline.guard.verifier import DetectorVerifier
    from helpline.platform.context import Context
    from helpline.platform.errors import NotFoundError
    from helpline.platform.settings import GatewaySettings, Settings
    from helpline.serving.factory import build_verifier

    registry = Registry(tmp_path / "r.sqlite")
    settings = Settings(workspace=tmp_path)
    ctx = Context(settings, registry=registry)
    assert build_verifier(ctx) is None  # auto, nothing trained yet: answers go unchecked
    folder = tmp_path / "det"
    folder.mkdir()
    DetectorConfig(threshold=0.5, thresholds={"rag": 0.42}).write(folder)  # the head answers are checked with
    registry.register_model("helpline-detector", kind="detector", path=folder)
    verifier = build_verifier(ctx)
    assert isinstance(verifier, DetectorVerifier) and verifier.cutoff() == 0.42
    off = settings.model_copy(update={"gateway": GatewaySettings(detector="none")})
    assert build_verifier(Context(off, registry=registry)) is None
    with pytest.raises(NotFoundError):  # a named detector that is not registered is a configuration error
        build_verifier(ctx.with_settings(gateway=GatewaySettings(detector="nope")))


@pytest.fixture
def fake_vllm():
    """A stand-in for vLLM's model list and adapter loading, on a free loopback port."""

    pytest.importorskip("uvicorn")
    from helpline.testing.serving import fake_vllm_app, serve_in_thread

    app = fake_vllm_app()
    with serve_in_thread(app) as port:
        yield port, app


def test_generator_for_a_new_adapter_loads_it_into_the_running_vllm(tmp_path: Path, fake_vllm) -> None:
    from helpline.platform.context import Context
    from helpline.platform.settings import Settings
    from helpline.serving.factory import build_generator
    from helpline.serving.routing import VLLMBackend

    port, app = fake_vllm
    registry = Registry(tmp_path / "r.sqlite")
    registry.register_model("base", kind="base", path=tmp_path)
    registry.register_model("cand", kind="adapter", path=tmp_path / "cand", base_model="base")
    ctx = Context(Settings(chat_model="cand", vllm=VLLMSettings(port=port)), registry=registry)
    gen = build_generator(ctx, engine="vllm")
    served = VLLMBackend.served_name(registry.get_model("cand"))
    assert gen.name == served and gen.base_url == f"http://127.0.0.1:{port}/v1"
    assert app.state.loads == [{"lora_name": served, "lora_path": str(tmp_path / "cand")}]
    build_generator(ctx, engine="vllm")
    assert len(app.state.loads) == 1  # listed now: not loaded twice

    app.state.served = ["other-base"]
    with pytest.raises(EngineError, match=r"serves other-base, not 'cand-"):
        build_generator(ctx, engine="vllm")
    assert len(app.state.loads) == 1  # an adapter of another base is never pushed into it


def test_bench_full_length_requests_ask_vllm_to_ignore_end_of_sequence() -> None:
    """Base and adapter are compared at equal answer length (ignore_eos), not at whatever length each picks."""
    from types import SimpleNamespace

    from helpline.evaluation.load import stream_one

    calls: list[dict] = []

    class Completions:
        async def create(self, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(kwargs)

            async def chunks():  # type: ignore[no-untyped-def]
                delta = SimpleNamespace(content="hi")
                yield SimpleNamespace(choices=[SimpleNamespace(delta=delta)], usage=None, model_extra={})
                yield SimpleNamespace(choices=[], usage=SimpleNamespace(completion_tokens=8), model_extra={})

            return chunks()

    client = SimpleNamespace(chat=SimpleNamespace(completions=Completions()))
    messages = [{"role": "user", "content": "hello"}]
    full = asyncio.run(stream_one(client, "m", messages, 8, full_length=True))
    free = asyncio.run(stream_one(client, "m", messages, 8))
    assert full.ok and full.tokens == 8 and free.ok
    assert calls[0]["extra_body"] == {"ignore_eos": True}
    assert calls[1]["extra_body"] is None


def test_bench_overhead_target_counts_verification_of_the_finished_answer() -> None:
    from helpline.bench.serving import check_ms, targets

    out = {"overhead_prepare_ms_p50": 20.0, "overhead_ms_p50": 60.0, "gateway": {1: {"e2e_p50_s": 1.0}}}
    assert targets(out)["overhead_share_c1"] == {"value": 0.06, "target": 0.05, "met": False}

    verified: list[str] = []

    class Pipeline:
        def verify(self, answer, passages):  # type: ignore[no-untyped-def]
            verified.append(answer)

    pipeline = Pipeline()
    assert check_ms(pipeline, "the answer", []) >= 0.0
    assert verified == ["the answer"]  # the real answer, not an empty string


@pytest.mark.parametrize(
    ("answer", "declined"),
    [
        ("I'm sorry, I don't know the answer to that from our help centre. I can connect you with a person.", True),
        ("I do not know which plan you chose.\nCheck your account page.", True),
        ("Open Orders and choose Return. I can connect you with a person if you need more help.", False),
        ("Standard shipping costs 4.95. I don't know about express.", False),  # it answered first
        ("", False),
    ],
)
def test_an_answer_declines_only_when_it_opens_by_saying_it_does_not_know(answer: str, declined: bool) -> None:
    assert declines(answer) is declined


def test_pipeline_turns_the_models_own_i_dont_know_into_the_handoff_without_sources() -> None:
    from helpline.answering.rag import RAGPipeline, Verdict
    from helpline.platform.schemas import ChatMessage
    from helpline.testing import FakeGenerator

    chunk = Chunk(doc_id="d", chunk_id="d#0", text="Moving abroad: update your address.", title="Moving")
    checked: list[str] = []

    class Verifier:
        def verify(self, answer: str, passages: list[ScoredChunk]) -> Verdict:
            checked.append(answer)
            return Verdict(grounded=True)

    pipeline = RAGPipeline(
        search=lambda query, *, k, role, history=None: [ScoredChunk(chunk=chunk, score=1.0)],
        generator=FakeGenerator(reply="I'm sorry, I don't know the answer to that from our help centre."),
        verifier=Verifier(),
    )
    answer = pipeline.answer([ChatMessage(role="user", content="Can I pay with gold bars?")])
    assert answer.abstained is True and answer.citations == [] and answer.answer == pipeline.abstention_text()
    assert "+1-800-555-0142" in answer.answer and checked == []  # a way to reach a person; nothing to verify


def test_parallelism_and_extra_vllm_arguments_reach_the_command_and_ours_cannot_be_overridden(tmp_path: Path) -> None:
    plain = VLLMServer(model_path=tmp_path, served_name="base", settings=VLLMSettings(port=1), log_path=None).command()
    assert not any(a.endswith("-parallel-size") for a in plain)  # one device: the command is as it was
    settings = VLLMSettings(port=1, tensor_parallel_size=2, data_parallel_size=4,
                            extra_args=["--enable-prefix-caching", "--quantization", "fp8"])  # fmt: skip
    cmd = VLLMServer(model_path=tmp_path, served_name="base", settings=settings, log_path=None).command()
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2" and cmd[cmd.index("--data-parallel-size") + 1] == "4"
    assert "--pipeline-parallel-size" not in cmd and cmd[-3:] == ["--enable-prefix-caching", "--quantization", "fp8"]
    with pytest.raises(ValidationError, match="--port"):
        VLLMSettings(extra_args=["--port=9000"])
    with pytest.raises(ValidationError, match="-tp"):
        VLLMSettings(extra_args=["-tp", "2"])
