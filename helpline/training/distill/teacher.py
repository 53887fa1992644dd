"""Teacher answering with a resumable on-disk cache.

The cache is a JSONL file, one finished answer per line keyed by the hash of the exact request
(prompt with its passages, teacher model, decoding settings). Each line is flushed and fsynced as
soon as its answer arrives, so a run killed at any point loses at most the answers in flight; a
rerun asks only the prompts whose key is not in the file. A torn last line (killed mid-write) is
ignored and asked again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from helpline.engines.openai_http import OpenAIGenerator
from helpline.engines.protocol import Generator
from helpline.platform.errors import ConfigError, EngineError, NotFoundError
from helpline.platform.schemas import ChatMessage
from helpline.platform.settings import TeacherSettings
from helpline.serving.routing import VLLMBackend


@dataclass
class TeacherRequest:
    """One question to ask: the cache key and the messages the teacher sees."""

    key: str
    messages: list[ChatMessage]


class TeacherCache:
    """Finished teacher answers by request hash, backed by an append-only JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.torn_lines = 0
        self._newline_first = False  # a torn last line: the next answer must not be appended onto it
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8", errors="replace")  # a write cut inside a character
            self._newline_first = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    self.records[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.torn_lines += 1  # a run killed mid-write; that prompt is asked again

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def put(self, record: dict) -> None:
        """Append one answer durably (flush + fsync) before counting it as done."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(("\n" if self._newline_first else "") + json.dumps(record, ensure_ascii=False) + "\n")
            self._newline_first = False
            fh.flush()
            os.fsync(fh.fileno())
        self.records[record["key"]] = record


#: What a refused teacher key is told to do.
KEY_HINT = (
    "a key is sent only to the endpoint the workspace configures for it: set teacher.base_url and "
    "teacher.api_key_env in helpline.yaml (or HELPLINE_TEACHER__BASE_URL and HELPLINE_TEACHER__API_KEY_ENV) and use "
    "that URL as the config's teacher.base_url; an endpoint that needs no key takes teacher.api_key_env=null"
)


def teacher_api_key(api_key_env: str | None, *, base_url: str = "", allowed: TeacherSettings | None = None) -> str:
    """The teacher's API key from the environment ("unused" for a local server without one).

    Only the key the workspace configures (``allowed``: settings ``teacher``), and only for its endpoint: a distill
    config is built from presets and arguments that a console job passes on, so a config naming another variable
    or pointing the key at another URL is refused (ConfigError) before any request. Without ``allowed`` no key
    is read at all.
    """
    if not api_key_env:
        return "unused"
    own = allowed.api_key_env if allowed is not None else None
    if allowed is None or api_key_env != own:
        configured = f"its teacher key is {own}" if own else "it configures no teacher key"
        raise ConfigError(
            f"teacher.api_key_env names {api_key_env}: not this workspace's ({configured})", hint=KEY_HINT
        )
    if base_url.rstrip("/") != (allowed.base_url or "").rstrip("/"):
        raise ConfigError(
            f"teacher.base_url {base_url} is not the endpoint this workspace's teacher key is for ({allowed.base_url})",
            hint=KEY_HINT,
        )
    key = os.environ.get(api_key_env, "")
    if not key:
        raise ConfigError(
            f"teacher.api_key_env names {api_key_env}, which is not set",
            hint=f"export {api_key_env}=... before running, or set teacher.api_key_env=null for a local server",
        )
    return key


def open_teacher(
    base_url: str,
    model: str,
    *,
    api_key_env: str | None,
    timeout_s: float,
    stop: list[str] | None = None,
    allowed: TeacherSettings | None = None,
) -> Generator:
    """The teacher as serving's OpenAI-compatible generator; the key (the workspace's own, for its endpoint only:
    see ``teacher_api_key``) is read from the environment."""
    key = teacher_api_key(api_key_env, base_url=base_url, allowed=allowed)
    return OpenAIGenerator(base_url, model, api_key=key, timeout_s=timeout_s, stop=stop)


def served_teacher_name(
    base_url: str, model: str, *, api_key: str, registry: Any = None, timeout_s: float = 10.0
) -> str:
    """The name the endpoint serves ``model`` under: ``model`` itself when listed, else the served name
    of the registry adapter called ``model`` (vLLM serves each adapter version as ``name-<digest>``).

    Raises ConfigError naming the served models when neither is there, and EngineError when the
    endpoint does not answer, so a wrong URL or model fails before any prompt is built.
    """

    headers = {"Authorization": f"Bearer {api_key}"} if api_key and api_key != "unused" else {}
    try:
        resp = httpx.get(f"{base_url.rstrip('/')}/models", headers=headers, timeout=timeout_s)
        resp.raise_for_status()
        served = [m["id"] for m in resp.json().get("data", [])]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        raise EngineError(
            f"the teacher endpoint {base_url} did not list its models: {e}",
            hint="start it first (the preset's header says how), or fix teacher.base_url / teacher.api_key_env",
        ) from e
    if model in served:
        return model
    if registry is not None:
        try:
            name = VLLMBackend.served_name(registry.get_model(model))
        except NotFoundError:
            name = None
        if name in served:
            return name
    raise ConfigError(
        f"the teacher endpoint {base_url} does not serve {model!r}; it serves: {', '.join(served) or 'nothing'}",
        hint="set teacher.model to one of those (or serve the adapter: `helpline run` loads registered adapters)",
    )


def _ask(teacher: Generator, request: TeacherRequest, max_tokens: int, temperature: float) -> dict:
    start = time.perf_counter()
    generation = teacher.generate(request.messages, max_tokens=max_tokens, temperature=temperature)
    return {
        "key": request.key,
        "answer": generation.text,
        "teacher": generation.model,
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "finish_reason": generation.finish_reason,
        "seconds": round(time.perf_counter() - start, 3),
        "created_at": time.time(),
    }


def answer_all(
    requests: list[TeacherRequest],
    teacher: Generator,
    cache: TeacherCache,
    *,
    max_tokens: int,
    temperature: float = 0.0,
    concurrency: int = 1,
    on_answer: Callable[[int, int], None] | None = None,
) -> dict:
    """Ask the teacher every request not in the cache; returns counts (asked, cached).

    An engine error stops the run after the answers already finished are saved; rerunning resumes.
    """
    pending = [r for r in requests if r.key not in cache]
    done = len(requests) - len(pending)
    total = len(requests)
    if on_answer:
        on_answer(done, total)
    if concurrency == 1:
        for request in pending:
            cache.put(_ask(teacher, request, max_tokens, temperature))
            done += 1
            if on_answer:
                on_answer(done, total)
    else:
        pool = ThreadPoolExecutor(max_workers=concurrency)
        futures: set[Future] = {pool.submit(_ask, teacher, r, max_tokens, temperature) for r in pending}
        try:
            while futures:
                # Each answer is saved as it arrives: a run killed at any point keeps what finished.
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    if future.exception() is None:
                        cache.put(future.result())
                        done += 1
                        if on_answer:
                            on_answer(done, total)
                for future in finished:
                    future.result()  # re-raise the first engine error, after saving the successes
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for future in futures:  # answers that finished while the error propagated are kept too
                if future.done() and not future.cancelled() and future.exception() is None:
                    cache.put(future.result())
    return {"prompts": total, "cached_before": total - len(pending), "asked": len(pending)}
