"""In-process transformers engine: the fallback where vLLM cannot run, and the reference in tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from helpline.engines.protocol import Generation, StreamEnd
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import ChatMessage


class TransformersGenerator:
    """A causal LM (optionally with a PEFT adapter) generating on the CPU or a GPU."""

    def __init__(self, model_path: str | Path, *, adapter_path: str | Path | None = None, name: str = "") -> None:
        torch = require("torch", "serve")
        transformers = require("transformers", "serve")
        self.name = name or Path(model_path).name
        self._torch = torch
        # An adapter saved with its tokenizer carries the chat template it was trained with (a base model
        # such as Gemma 3 270M has none of its own).
        saved = adapter_path is not None and (Path(adapter_path) / "tokenizer_config.json").is_file()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(adapter_path if saved else model_path))
        model = transformers.AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
        if adapter_path is not None:
            peft = require("peft", "train")
            model = peft.PeftModel.from_pretrained(model, str(adapter_path))
        self.model = model.eval()
        #: The context the model was trained for; the gateway measures prompts against it.
        self.max_model_len = getattr(model.config, "max_position_embeddings", None)
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant

    def _inputs(self, messages: list[ChatMessage]) -> dict:
        return self.tokenizer.apply_chat_template(
            [m.model_dump() for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Prompt tokens of ``messages`` with the chat template, as :meth:`generate` would send them."""
        return int(self._inputs(messages)["input_ids"].shape[1])

    def _kwargs(self, max_tokens: int, temperature: float) -> dict:
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        return {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.eos_token_id, **sampling}

    def generate(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Generation:
        inputs = self._inputs(messages)
        n_prompt = inputs["input_ids"].shape[1]
        with self._lock, self._torch.inference_mode():
            out = self.model.generate(**inputs, **self._kwargs(max_tokens, temperature))
        new = out[0][n_prompt:]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return Generation(
            text=text,
            model=self.name,
            prompt_tokens=n_prompt,
            completion_tokens=len(new),
            finish_reason=self._finish_reason(new, max_tokens),
        )

    def _finish_reason(self, new, max_tokens: int) -> str:  # type: ignore[no-untyped-def]
        ended = len(new) < max_tokens or int(new[-1]) == self.tokenizer.eos_token_id
        return "stop" if ended else "length"

    def stream(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        transformers = require("transformers", "serve")
        streamer = transformers.TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = self._inputs(messages)
        result = []

        def run() -> None:
            with self._lock, self._torch.inference_mode():
                result.append(self.model.generate(**inputs, streamer=streamer, **self._kwargs(max_tokens, temperature)))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if result:
            yield StreamEnd(self._finish_reason(result[0][0][inputs["input_ids"].shape[1] :], max_tokens))
