"""The Generator contract (helpline/engines/protocol.py).

What the gateway, the RAG pipeline and distillation rely on: ``generate`` stays within ``max_tokens``
and says whether it was cut (``finish_reason`` "length", which makes the answer policy drop an
unfinished sentence) or ended on its own ("stop"); ``stream`` yields text deltas and ends with exactly
one ``StreamEnd`` carrying that reason; streamed and whole answers are the same text at temperature 0
(the gateway decides both alike); the async adapters the gateway calls give the same answers.

Runs against ``FakeGenerator`` (default tier) and the in-process transformers engine on SmolLM2
(integration). The vLLM HTTP engine is not run here: starting a vLLM server takes about a minute and
only tests/serving/test_integration.py's module fixture starts one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from helpline.engines.protocol import Generation, Generator, StreamEnd, agenerate, astream
from helpline.platform.schemas import ChatMessage
from helpline.testing import FakeGenerator

SYSTEM = ChatMessage(role="system", content="You are a customer-support assistant. Answer briefly.")
#: A question whose answer ends well within ROOM tokens.
SHORT = [SYSTEM, ChatMessage(role="user", content="Reply with one word: yes or no. Is the sky blue?")]
#: A question whose answer cannot end within CUT tokens.
LONG = [SYSTEM, ChatMessage(role="user", content="Explain in detail how to return a parcel, step by step.")]
ROOM = 48
CUT = 5


def streamed(items: list[str]) -> tuple[str, list[StreamEnd]]:
    """The text of a stream's deltas, and the StreamEnd markers among them."""
    return "".join(items).strip(), [i for i in items if isinstance(i, StreamEnd)]


class GeneratorContract:
    """What every generation engine must do; subclass and override the ``generator`` fixture."""

    @pytest.fixture
    def generator(self) -> Generator:
        raise NotImplementedError("override the `generator` fixture")

    def test_it_is_a_generator_with_a_name(self, generator: Generator) -> None:
        assert isinstance(generator, Generator)
        assert isinstance(generator.name, str) and generator.name

    def test_an_answer_that_fits_ends_with_stop_and_counts_its_tokens(self, generator: Generator) -> None:
        out = generator.generate(SHORT, max_tokens=ROOM)
        assert isinstance(out, Generation) and out.text.strip()
        assert out.finish_reason == "stop"
        assert out.model == generator.name  # what the review queue and distillation record as the author
        assert out.prompt_tokens > 0 and 0 < out.completion_tokens < ROOM

    def test_an_answer_cut_at_max_tokens_stays_within_it_and_says_length(self, generator: Generator) -> None:
        out = generator.generate(LONG, max_tokens=CUT)
        assert out.finish_reason == "length"
        assert out.completion_tokens == CUT
        assert 0 < len(out.text.split()) <= CUT  # a token never holds more than one word

    def test_a_stream_yields_text_then_exactly_one_stream_end_with_the_reason(self, generator: Generator) -> None:
        items = list(generator.stream(LONG, max_tokens=CUT))
        text, ends = streamed(items)
        assert all(isinstance(i, str) for i in items)
        assert len(ends) == 1 and items[-1] is ends[0] and ends[0].reason == "length"
        assert text and len(text.split()) <= CUT
        stop = list(generator.stream(SHORT, max_tokens=ROOM))
        assert streamed(stop)[0] and isinstance(stop[-1], StreamEnd) and stop[-1].reason == "stop"

    def test_streamed_and_whole_answers_are_the_same_text_at_temperature_zero(self, generator: Generator) -> None:
        whole = generator.generate(LONG, max_tokens=CUT)
        text, _ = streamed(list(generator.stream(LONG, max_tokens=CUT)))
        assert text == whole.text.strip()

    def test_sampling_still_stays_within_max_tokens(self, generator: Generator) -> None:
        out = generator.generate(LONG, max_tokens=CUT, temperature=0.8)
        assert out.completion_tokens <= CUT and len(out.text.split()) <= CUT
        assert out.finish_reason in {"stop", "length"}
        assert out.finish_reason == "stop" or out.completion_tokens == CUT

    def test_the_gateways_async_adapters_give_the_same_answer(self, generator: Generator) -> None:
        async def both() -> tuple[Generation, list[str]]:
            whole = await agenerate(generator, LONG, max_tokens=CUT)
            return whole, [d async for d in astream(generator, LONG, max_tokens=CUT)]

        whole, items = asyncio.run(both())
        text, ends = streamed(items)
        assert whole.finish_reason == "length" and whole.text.strip() == text
        assert len(ends) == 1 and items[-1] is ends[0] and ends[0].reason == "length"


class TestFakeGenerator(GeneratorContract):
    @pytest.fixture
    def generator(self) -> Generator:
        return FakeGenerator()


@pytest.fixture(scope="module")
def smollm2(workspace_dir: Path) -> Generator:
    """The bundled SmolLM2-135M-Instruct in the in-process transformers engine (about 10 s to load)."""
    from helpline.engines.hf import TransformersGenerator
    from helpline.platform.registry import Registry

    record = Registry(workspace_dir / ".helpline" / "registry.sqlite").get_model("smollm2-135m-instruct")
    return TransformersGenerator(record.path, name=record.name)


@pytest.mark.integration
class TestTransformersGenerator(GeneratorContract):
    @pytest.fixture
    def generator(self, smollm2: Generator) -> Generator:
        return smollm2
