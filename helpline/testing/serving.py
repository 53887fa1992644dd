"""Serving fakes: a gateway over FakeEmbedder, InMemoryStore and FakeGenerators, for tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient

from helpline.answering.rag import RAGPipeline
from helpline.answering.staff_answers import StaffAnswers
from helpline.evaluation.load import serve_app
from helpline.platform.registry import ModelRecord, Registry
from helpline.platform.schemas import Document
from helpline.retrieval.knowledge_base import KnowledgeBase
from helpline.serving.gateway.app import create_app
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.gateway.conversations import staff_answer_changes
from helpline.serving.gateway.limits import Admission
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.kb_owner import OwnedKB
from helpline.serving.routing import ModelRouter
from helpline.testing import FakeEmbedder, FakeGenerator, InMemoryStore

DOCS = [
    Document(
        doc_id="returns",
        title="Returning an item",
        text="To return an item open your orders, choose Return, print the label and drop the parcel off within "
        "30 days.",
    ),
    Document(
        doc_id="shipping",
        title="Shipping fees",
        text="Standard shipping costs 4.95 and takes 3 to 5 business days. Express delivery costs 12.90.",
    ),
    Document(
        doc_id="goodwill",
        title="Goodwill credit",
        text="Staff may grant a goodwill credit of up to 20 euros for a late parcel.",
        access="internal",
    ),
]


@dataclass
class FakeBackend:
    """One FakeGenerator per registered model, replying with the model's name."""

    generators: dict[str, FakeGenerator] = field(default_factory=dict)

    def generator_for(self, record: ModelRecord) -> FakeGenerator:
        return self.generators.setdefault(
            record.name, FakeGenerator(reply=f"answer from {record.name}", name=record.name)
        )


@dataclass
class Gateway:
    client: TestClient
    keys: dict[str, str]
    backend: FakeBackend
    registry: Registry
    store: GatewayStore
    kb: OwnedKB

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def chat(self, role: str, content: str, **extra: object):
        body = {"model": "helpline-support", "messages": [{"role": "user", "content": content}], **extra}
        return self.client.post("/v1/chat/completions", json=body, headers=self.headers(role))


#: What `helpline eval gate` records for a candidate that passed (promotion requires it).
PASSED_GATE = {"gate": {"passed": True, "baseline": "fake-base", "at": 0.0, "report": "", "failed_checks": []}}


def make_gateway(
    tmp_path: Path,
    limits: GatewayLimits | None = None,
    *,
    staff_answers: bool = False,
    admission: Admission | None = None,
    store: GatewayStore | None = None,
) -> Gateway:
    """The gateway app over fakes; ``staff_answers`` serves staff corrections again (read at every request);
    ``admission``: shared rate limits and concurrency cap (default: the app's own); ``store``: its database
    (default: SQLite in ``tmp_path``)."""
    registry = Registry(tmp_path / "registry.sqlite")
    registry.register_model("fake-base", kind="base", path=tmp_path / "base")
    registry.register_model(
        "fake-adapter", kind="adapter", path=tmp_path / "adapter", base_model="fake-base", metadata=PASSED_GATE
    )
    registry.register_model("ungated-adapter", kind="adapter", path=tmp_path / "ungated", base_model="fake-base")
    registry.set_alias("production", "fake-base", actor="test")
    kb = OwnedKB(
        lambda: KnowledgeBase(store=InMemoryStore(), embedder=FakeEmbedder(), chunk_size=300, chunk_overlap=20)
    )
    kb.sync(DOCS)
    store = store or GatewayStore(tmp_path / "gateway.sqlite")
    keys = {role: store.create_key(role, name=f"test-{role}")[0] for role in ("customer", "staff", "engineer", "admin")}
    gateway = Gateway(None, keys, FakeBackend(), registry, store, kb)  # type: ignore[arg-type]
    return make_replica(gateway, limits, staff_answers=staff_answers, admission=admission)


def make_replica(
    gateway: Gateway,
    limits: GatewayLimits | None = None,
    *,
    staff_answers: bool = False,
    admission: Admission | None = None,
    connector_check_s: float = 60.0,
    store: GatewayStore | None = None,
    job_runner: Literal["embedded", "external"] = "embedded",
) -> Gateway:
    """Another gateway app over ``gateway``'s registry, store, knowledge base and engine, as a second replica is;
    its keys work on both. ``store``: its own connection to the shared database (default: ``gateway``'s);
    ``job_runner``: whether it runs console jobs itself."""
    kb, store = gateway.kb, store or gateway.store
    router = ModelRouter(gateway.registry, gateway.backend)
    # Dense scores (cosine of the fake embedder's bag of words), so the threshold means something.
    pipeline = RAGPipeline(
        search=lambda q, k, role, history=None: kb.search(q, k=k, role=role, history=history, mode="dense"),
        generator=FakeGenerator(),
        top_k=2,
        min_score=0.2,
    )
    if staff_answers:
        load = lambda since: staff_answer_changes(store, since)  # noqa: E731
        pipeline.staff_answers = StaffAnswers(FakeEmbedder().embed_documents, load, refresh_s=0)
    app = create_app(pipeline=pipeline, router=router, store=store, kb=kb, limits=limits, admission=admission,
                     connector_check_s=connector_check_s, job_runner=job_runner)  # fmt: skip
    return Gateway(TestClient(app), gateway.keys, gateway.backend, gateway.registry, store, kb)


def record_corrected_turn(store: GatewayStore, response_id: str, *, question: str, answer: str, correction: str) -> str:
    """A customer turn logged as the gateway logs it (its own conversation, named after ``response_id``), then
    corrected by staff as the review route stores it. Returns the conversation id (for ``store.erase``)."""
    conversation = f"conv-{response_id}"
    store.record_turn(
        response_id=response_id, conversation_id=conversation, at=1.0, key_id=None, role="customer",
        model="helpline-support", served_model="smollm2-135m-instruct", adapter=None,
        messages=[{"role": "user", "content": question}], passages=[], answer=answer, abstained=0, latency_ms=900.0,
        status="ok", withdrawn=None, verification=None, origins=["client"], internal=0,
    )  # fmt: skip
    store.add_feedback(response_id, rating="down", comment="", correction=correction, key_id=None)
    return conversation


@contextmanager
def serve_in_thread(app) -> Iterator[int]:
    """Run an ASGI app with uvicorn on a free loopback port in a daemon thread; yields the port."""
    server, thread, url = serve_app(app)
    try:
        yield int(url.rsplit(":", 1)[1])
    finally:
        server.should_exit = True
        thread.join(5)


def fake_vllm_app(served: list[str] | None = None):
    """A stand-in for vLLM's model list, health and runtime adapter loading (FastAPI). ``app.state.served`` is what
    ``GET /v1/models`` lists (set it to play a restart), ``app.state.loads`` the load requests it was sent;
    ``app.state.refuse`` names adapters it answers 400 for."""
    app = FastAPI()
    app.state.served, app.state.loads, app.state.refuse = list(served or ["base"]), [], set()

    @app.get("/health")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": m} for m in app.state.served]}

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request) -> PlainTextResponse:
        body = await request.json()
        app.state.loads.append(body)
        if body["lora_name"] in app.state.refuse:
            return PlainTextResponse("invalid adapter", status_code=400)
        if body["lora_name"] in app.state.served:
            return PlainTextResponse(f"The lora adapter '{body['lora_name']}' has already been loaded.", 400)
        app.state.served.append(body["lora_name"])
        return PlainTextResponse("ok")

    return app
