"""Distillation pipeline: prompts, teacher answering and its resumable cache, filters, dataset, config."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from helpline.answering.rag import Verdict
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, DataError, EngineError, NotFoundError
from helpline.platform.schemas import Chunk, ScoredChunk
from helpline.platform.settings import TeacherSettings
from helpline.testing import FakeGenerator
from helpline.training.distill.config import DistillConfig, FilterConfig, load_distill_config
from helpline.training.distill.prompts import kb_questions, question_from_heading
from helpline.training.distill.run import apply_filters, distill_dataset, load_verifier
from helpline.training.distill.teacher import TeacherCache

Request = pytest.importorskip("fastapi").Request  # module level: FastAPI resolves the annotation here
CONFIGS = Path(__file__).resolve().parents[2] / "helpline" / "training" / "configs"
_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"a", "about", "an", "can", "explain", "how", "i", "me", "t", "tell", "the", "to", "you", "your"}

CHUNKS = [
    Chunk(chunk_id="returns#0", doc_id="returns", title="Returning an item", section="How to return",
          text="Open My Orders, choose the item and click Return. Print the label and drop the parcel off."),
    Chunk(chunk_id="returns#1", doc_id="returns", title="Returning an item", section="Refund timing",
          text="Refunds reach your card five to seven business days after the parcel arrives."),
    Chunk(chunk_id="password#0", doc_id="password", title="Resetting your password", section="Request a reset link",
          text="Click Forgot password on the sign-in page and follow the link we email you."),
    Chunk(chunk_id="password#1", doc_id="password", title="Resetting your password",
          section="Can't access the old mailbox?", text="Contact support with your order number to verify."),
    Chunk(chunk_id="shipping#0", doc_id="shipping", title="Shipping", section="",
          text="Standard shipping takes two to four days; express arrives next day."),
]  # fmt: skip


def fake_search(query: str, *, k: int, role: str = "customer", history: list[str] | None = None) -> list[ScoredChunk]:
    """Word overlap between the query and each chunk; nothing for a query sharing no word."""
    words = set(_WORD.findall(" ".join([*(history or []), query]).lower())) - _STOP
    scored = [(len(words & set(_WORD.findall(f"{c.title} {c.section} {c.text}".lower()))), c) for c in CHUNKS]
    return [ScoredChunk(chunk=c, score=float(s)) for s, c in sorted(scored, key=lambda x: -x[0]) if s > 0][:k]


def grounded_answer(messages) -> str:
    """A teacher that copies the first passage's text: long enough, grounded, distinct per question."""
    system = messages[0].content
    passage = system.split('">', 1)[1].split("</passage>", 1)[0].strip() if "<passage" in system else ""
    return f"Here is what to do: {passage}"


class PassageTeacher(FakeGenerator):
    """FakeGenerator answering from the passages; raises after ``fail_after`` answers (an interrupted run)."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__(name="teacher")
        self.fail_after = fail_after

    def _text(self, messages):  # type: ignore[no-untyped-def]
        if self.fail_after is not None and len(self.requests) > self.fail_after:
            raise EngineError("teacher went away", hint="rerun")
        return grounded_answer(messages)


def make_config(**kw) -> DistillConfig:
    base = {"name": "t", "teacher": {"base_url": "http://127.0.0.1:1/v1", "model": "teacher"}, "train": False,
            "filters": {"detector": None, "min_words": 3}, "test": 0.0}  # fmt: skip
    return DistillConfig(**{**base, **kw})


def run(cfg: DistillConfig, tmp_path: Path, teacher, verifier=None) -> dict:
    return distill_dataset(
        cfg, datasets_dir=tmp_path / "datasets", teacher=teacher, search=fake_search, chunks=CHUNKS, verifier=verifier
    )


def test_kb_questions_come_from_headings_deterministically() -> None:
    questions = [p.question for p in kb_questions(CHUNKS, 10)]
    assert questions == [p.question for p in kb_questions(list(reversed(CHUNKS)), 10)]
    assert "How to return?" in questions
    assert "Can't access the old mailbox?" in questions
    assert "About returning an item: can you explain refund timing?" in questions
    assert "Can you tell me about shipping?" in questions
    assert len(kb_questions(CHUNKS, 2)) == 2
    assert question_from_heading("Shipping", "Shipping") == "Can you tell me about shipping?"


def test_dataset_rows_are_support_prompt_with_passages_and_teacher_answer(tmp_path: Path) -> None:
    teacher = PassageTeacher()
    manifest = run(make_config(), tmp_path, teacher)
    rows = [json.loads(x) for s in ("train", "validation", "test")
            for x in (Path(manifest["path"]) / f"{s}.jsonl").read_text().splitlines()]  # fmt: skip
    assert len(rows) == manifest["counts"]["kept"] == 5
    row = rows[0]
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert '<passage id="1"' in row["messages"][0]["content"]
    assert "customer-support assistant" in row["messages"][0]["content"]
    # the teacher saw exactly the prompt the student is trained on
    asked = {tuple(m.content for m in req) for req in teacher.requests}
    assert tuple(m["content"] for m in row["messages"][:-1]) in asked
    assert row["messages"][-1]["content"].startswith("Here is what to do:")


def test_manifest_records_teacher_sources_counts_and_splits(tmp_path: Path) -> None:
    bitext = tmp_path / "bitext.csv"
    bitext.write_text("instruction,response,intent\nhow do i return an item,old answer,return\n"
                      "how do i return an item,dup,return\nnothing matches zzz,x,other\n")  # fmt: skip
    cfg = make_config(sources={"bitext_csv": str(bitext)})
    manifest = run(cfg, tmp_path, PassageTeacher())
    counts = manifest["counts"]
    assert manifest["name"] == "distill-t" and manifest["version"] == "v1"
    assert manifest["teacher"]["model"] == "teacher" and manifest["student"] == "smollm2-135m-instruct"
    assert manifest["prompt_template"]["name"] == "support"
    assert counts["per_source"] == {"kb": 5, "bitext": 3}
    assert counts["duplicate_prompts_dropped"] == 1
    assert counts["no_passages_skipped"] == 1  # "nothing matches zzz" retrieves nothing: serving abstains there
    assert counts["teacher"] == {"prompts": 6, "cached_before": 0, "asked": 6}
    assert sum(s["count"] for s in manifest["splits"].values()) == counts["kept"]
    assert manifest["splits"]["validation"]["count"] >= 1
    assert len(manifest["sources"]["bitext_csv"]["sha256"]) == 64
    on_disk = json.loads((Path(manifest["path"]) / "manifest.json").read_text())
    assert on_disk["dataset_hash"] == manifest["dataset_hash"]
    assert run(cfg, tmp_path, PassageTeacher())["version"] == "v2"


def test_interrupted_run_resumes_without_asking_finished_prompts(tmp_path: Path) -> None:
    cfg = make_config()
    interrupted = PassageTeacher(fail_after=3)
    with pytest.raises(EngineError):
        run(cfg, tmp_path, interrupted)
    finished = {r[-1].content for r in interrupted.requests[:3]}
    cache_file = tmp_path / "datasets" / "distill-t" / "teacher_cache.jsonl"
    assert len(cache_file.read_text().splitlines()) == 3
    assert not list((tmp_path / "datasets" / "distill-t").glob("v*"))  # no dataset from a partial run
    first_questions = {json.loads(x)["key"] for x in cache_file.read_text().splitlines()}

    resumed = PassageTeacher()
    manifest = run(cfg, tmp_path, resumed)
    assert len(resumed.requests) == 2
    assert manifest["counts"]["teacher"] == {"prompts": 5, "cached_before": 3, "asked": 2}
    asked_again = {r[-1].content for r in resumed.requests}
    assert not asked_again & finished  # the 3 finished prompts were not asked again
    cached = TeacherCache(cache_file)
    assert len(cached.records) == 5 and first_questions <= set(cached.records)
    assert len(asked_again) == 2

    again = PassageTeacher()
    run(cfg, tmp_path, again)
    assert again.requests == []  # everything answered: a third run asks nothing


def test_concurrent_answers_are_saved_as_they_finish(tmp_path: Path) -> None:
    """With requests in flight, every finished answer is already on disk (a kill loses only those in flight)."""
    from helpline.platform.schemas import ChatMessage
    from helpline.training.distill.teacher import TeacherRequest, answer_all

    release = threading.Event()

    class Teacher(FakeGenerator):
        def generate(self, messages, *, max_tokens, temperature=0.0):
            if messages[-1].content == "slow":
                release.wait(10)
            return super().generate(messages, max_tokens=max_tokens, temperature=temperature)

    requests = [TeacherRequest(f"k{i}", [ChatMessage(role="user", content=q)])
                for i, q in enumerate(["slow", "a", "b", "c"])]  # fmt: skip
    cache_file = tmp_path / "cache.jsonl"
    worker = threading.Thread(
        target=answer_all,
        args=(requests, Teacher(), TeacherCache(cache_file)),
        kwargs={"max_tokens": 8, "concurrency": 2},
    )
    worker.start()
    for _ in range(200):
        if cache_file.exists() and len(cache_file.read_text().splitlines()) == 3:
            break
        time.sleep(0.02)
    saved = {json.loads(line)["key"] for line in cache_file.read_text().splitlines()}
    release.set()
    worker.join(10)
    assert saved == {"k1", "k2", "k3"}  # written while "slow" was still being answered
    assert len(TeacherCache(cache_file).records) == 4


def test_torn_last_cache_line_is_asked_again(tmp_path: Path) -> None:
    cfg = make_config()
    run(cfg, tmp_path, PassageTeacher())
    cache_file = tmp_path / "datasets" / "distill-t" / "teacher_cache.jsonl"
    lines = cache_file.read_text().splitlines()
    cache_file.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    teacher = PassageTeacher()
    run(cfg, tmp_path, teacher)
    assert len(teacher.requests) == 1
    again = PassageTeacher()  # the answer asked again went on a line of its own, not onto the torn one
    run(cfg, tmp_path, again)
    assert again.requests == []


class _Ex:
    def __init__(self, answer: str, truncated: bool = False) -> None:
        self.answer, self.passages, self.dropped, self.truncated = answer, [], "", truncated


class WordVerifier:
    """Ungrounded when the answer mentions 'lifetime' (a fake detector)."""

    def verify(self, answer: str, passages) -> Verdict:  # type: ignore[no-untyped-def]
        return Verdict(grounded="lifetime" not in answer)


def test_filters_drop_short_long_refusals_repeats_and_ungrounded() -> None:
    good = "Open My Orders and click Return on the item."
    examples = [_Ex(a) for a in [
        good, "Sure.", "word " * 40, "As an AI language model I cannot see your orders at all.",
        "I'm sorry, I don't know the answer to that from our help centre.", good, good,
        "You get a lifetime warranty on every single item we sell.", "Refunds take five to seven business days.",
    ]]  # fmt: skip
    dropped = apply_filters(examples, FilterConfig(min_words=3, max_words=30, max_answer_repeats=2), WordVerifier())
    assert [e.dropped for e in examples] == ["", "too_short", "too_long", "refusal", "refusal", "",
                                             "duplicate_answer", "ungrounded", ""]  # fmt: skip
    assert dropped == {"too_short": 1, "too_long": 1, "refusal": 2, "duplicate_answer": 1, "ungrounded": 1}


def test_filters_drop_looping_and_truncated_answers() -> None:
    loop = "Do you want to change your account? " * 4
    once = "To change your account, open Settings. If you want to change your account name, use Profile."
    examples = [_Ex(loop), _Ex(once), _Ex(once + " Then save.", truncated=True)]
    dropped = apply_filters(examples, FilterConfig(min_words=3, max_words=100), None)
    assert [e.dropped for e in examples] == ["repetitive", "", "truncated"]
    assert dropped == {"repetitive": 1, "truncated": 1}
    examples = [_Ex(loop), _Ex(once + " Then save.", truncated=True)]
    apply_filters(examples, FilterConfig(max_ngram_repeats=4, drop_truncated=False), None)
    assert [e.dropped for e in examples] == ["", ""]  # both filters can be loosened


def test_teacher_cache_records_why_an_answer_ended(tmp_path: Path) -> None:
    cfg = make_config(teacher={"base_url": "http://127.0.0.1:1/v1", "model": "t", "max_tokens": 8})
    with pytest.raises(DataError, match="only 0 teacher answer"):  # every answer was cut: none is kept
        run(cfg, tmp_path, PassageTeacher())
    records = TeacherCache(tmp_path / "datasets" / "distill-t" / "teacher_cache.jsonl").records.values()
    assert {r["finish_reason"] for r in records} == {"length"}  # the fake teacher's answers exceed 8 tokens


def test_missing_detector_is_skipped_with_a_manifest_warning(tmp_path: Path) -> None:
    ctx = Context.load(workspace=tmp_path / "ws")
    verifier, warning = load_verifier(ctx, FilterConfig(detector="helpline-detector"))
    assert verifier is None and "helpline-detector" in warning
    with pytest.warns(UserWarning):
        manifest = distill_dataset(
            make_config(),
            datasets_dir=tmp_path / "d",
            teacher=PassageTeacher(),
            search=fake_search,
            chunks=CHUNKS,
            verifier=None,
            verifier_warning=warning,
        )
    assert manifest["warnings"] == [warning] and manifest["filters"]["groundedness"] == "off"


def test_too_few_kept_answers_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="passed the filters"):
        run(make_config(), tmp_path, FakeGenerator(reply="I don't know."))


def test_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    preset = tmp_path / "p.yaml"
    preset.write_text("name: 'bad name'\nteacher: {base_url: http://x/v1, model: m}\n"
                      "sources: {kb_questions: false, bitext_csv: /no/such.csv}\n"
                      "filters: {min_words: 50, max_words: 10, refusal_patterns: ['(']}\n"
                      "sft: {dataset: x, lora_r: 0}\n")  # fmt: skip
    with pytest.raises(ConfigError) as e:
        load_distill_config(preset)
    message = str(e.value)
    for expected in ("bad name", "/no/such.csv", "min_words", "not a regex", "sft.dataset", "lora_r"):
        assert expected in message
    with pytest.raises(ConfigError, match="teacher"):
        load_distill_config(None, ["name=x"])
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        load_distill_config(preset, ["teacher.model"])


def test_shipped_presets_are_valid_and_dotted_overrides_apply() -> None:
    for preset in sorted(CONFIGS.glob("distill-*.yaml")):
        load_distill_config(preset)
    cfg = load_distill_config("distill-gemma-to-smollm2", ["teacher.model=other", "sft.max_steps=3", "train=false"])
    assert cfg.teacher.model == "other" and cfg.sft["max_steps"] == 3 and cfg.train is False
    sft = cfg.sft_config("/data/v1")
    assert sft.dataset == "/data/v1" and sft.base_model == "smollm2-135m-pruned14-healed" and sft.max_steps == 3
    assert load_distill_config("distill-gemma-to-smollm2-full").student == "smollm2-135m-instruct"


def test_api_key_env_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpline.training.distill.teacher import open_teacher

    monkeypatch.delenv("DISTILL_TEST_KEY", raising=False)
    allowed = TeacherSettings(base_url="http://127.0.0.1:1/v1", api_key_env="DISTILL_TEST_KEY")
    with pytest.raises(ConfigError, match="DISTILL_TEST_KEY, which is not set"):
        open_teacher("http://127.0.0.1:1/v1", "m", api_key_env="DISTILL_TEST_KEY", timeout_s=1, allowed=allowed)


@pytest.fixture
def fake_endpoint():
    """An OpenAI-compatible /v1/chat/completions in a thread; records requests and their auth header."""
    pytest.importorskip("uvicorn")
    from fastapi import FastAPI

    seen: list[dict] = []
    app = FastAPI()
    app.state.served = ["remote-teacher"]

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": m, "object": "model"} for m in app.state.served]}

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        from helpline.platform.schemas import ChatMessage

        text = grounded_answer([ChatMessage(**m) for m in body["messages"]])
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}}  # fmt: skip

    from helpline.testing.serving import serve_in_thread

    with serve_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}/v1", seen, app  # app.state.served: what GET /v1/models lists


def test_teacher_behind_an_openai_compatible_endpoint(fake_endpoint, tmp_path, monkeypatch) -> None:
    from helpline.training.distill.teacher import open_teacher

    url, seen, _ = fake_endpoint
    monkeypatch.setenv("DISTILL_TEST_KEY", "sk-test")
    cfg = make_config(teacher={"base_url": url, "model": "remote-teacher", "api_key_env": "DISTILL_TEST_KEY",
                               "concurrency": 3, "max_tokens": 64})  # fmt: skip
    allowed = TeacherSettings(base_url=url, api_key_env="DISTILL_TEST_KEY")
    teacher = open_teacher(url, "remote-teacher", api_key_env="DISTILL_TEST_KEY", timeout_s=10, allowed=allowed)
    manifest = run(cfg, tmp_path, teacher)
    assert len(seen) == 5 and manifest["counts"]["kept"] == 5
    assert {r["body"]["model"] for r in seen} == {"remote-teacher"}
    assert {r["auth"] for r in seen} == {"Bearer sk-test"}
    assert all(r["body"]["max_tokens"] == 64 and r["body"]["messages"][0]["role"] == "system" for r in seen)
    assert "sk-test" not in (Path(manifest["path"]) / "manifest.json").read_text()


def test_distill_command_is_registered_and_lists_its_fields() -> None:
    from typer.testing import CliRunner

    from helpline.cli.train import train_app

    result = CliRunner().invoke(train_app, ["distill", "--help-config"])
    assert result.exit_code == 0, result.output
    assert "teacher.base_url" in result.output and "filters.refusal_patterns" in result.output


def test_teacher_name_is_checked_against_what_the_endpoint_serves(fake_endpoint) -> None:
    from types import SimpleNamespace

    from helpline.platform.errors import EngineError, NotFoundError
    from helpline.serving.routing import VLLMBackend
    from helpline.training.distill.teacher import served_teacher_name

    url, _, app = fake_endpoint
    record = SimpleNamespace(kind="adapter", name="gemma-support", path="/a/gemma-support", created_at=1.5)

    class Registry:
        def get_model(self, name: str):
            if name != record.name:
                raise NotFoundError(f"no model {name}")
            return record

    served = VLLMBackend.served_name(record)  # type: ignore[arg-type]
    app.state.served = ["remote-teacher", served]
    assert served_teacher_name(url, "remote-teacher", api_key="unused") == "remote-teacher"
    assert served_teacher_name(url, "gemma-support", api_key="unused", registry=Registry()) == served
    with pytest.raises(ConfigError, match=r"does not serve 'other'; it serves: remote-teacher, gemma-support-"):
        served_teacher_name(url, "other", api_key="unused", registry=Registry())
    with pytest.raises(EngineError, match="did not list its models"):
        served_teacher_name("http://127.0.0.1:1/v1", "remote-teacher", api_key="unused", timeout_s=2)


def test_teacher_stop_sequences_are_sent_and_key_the_cache(fake_endpoint) -> None:
    from helpline.platform.schemas import ChatMessage
    from helpline.training.distill.prompts import prompt_hash
    from helpline.training.distill.teacher import open_teacher

    url, seen, _ = fake_endpoint
    teacher = open_teacher(url, "remote-teacher", api_key_env=None, timeout_s=10, stop=["\n\n"])
    teacher.generate([ChatMessage(role="user", content="hi")], max_tokens=8)
    assert seen[-1]["body"]["stop"] == ["\n\n"]
    open_teacher(url, "remote-teacher", api_key_env=None, timeout_s=10).generate(
        [ChatMessage(role="user", content="hi")], max_tokens=8
    )
    assert "stop" not in seen[-1]["body"]
    msgs = [{"role": "user", "content": "hi"}]
    assert prompt_hash(msgs, "t", 8, 0.0) == prompt_hash(msgs, "t", 8, 0.0, [])  # old caches keep their keys
    assert prompt_hash(msgs, "t", 8, 0.0) != prompt_hash(msgs, "t", 8, 0.0, ["\n\n"])


def test_earlier_student_run_or_unknown_student_is_refused_before_the_teacher_is_asked(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from helpline.platform.registry import Registry
    from helpline.training.distill.run import run_distill

    (tmp_path / "distill-t" / "checkpoints" / "checkpoint-40").mkdir(parents=True)
    ctx = SimpleNamespace(workspace=SimpleNamespace(adapters=tmp_path), registry=Registry(tmp_path / "r.sqlite"))
    teacher = PassageTeacher()
    cfg = make_config(train=True, sft={"max_steps": 3})
    with pytest.raises(ConfigError, match="already has checkpoints") as err:
        run_distill(cfg, ctx=ctx, teacher=teacher)  # type: ignore[arg-type]
    assert "sft.overwrite=true" in err.value.hint and "sft.run_name=NEW" in err.value.hint
    assert teacher.requests == []
    resumed = make_config(train=True, sft={"max_steps": 3, "resume": True, "run_name": "fresh"})
    with pytest.raises(ConfigError, match=r"sft\.resume=true but"):
        run_distill(resumed, ctx=ctx, teacher=teacher)  # type: ignore[arg-type]
    unknown = make_config(train=True, student="no-such-student", sft={"max_steps": 3, "run_name": "fresh"})
    with pytest.raises(NotFoundError, match="student: no model or alias named 'no-such-student'") as err:
        run_distill(unknown, ctx=ctx, teacher=teacher)  # type: ignore[arg-type]
    assert "train prune" in err.value.hint
    assert teacher.requests == []


def test_cache_cut_inside_a_character_loads_the_finished_answers(tmp_path: Path) -> None:
    path = tmp_path / "teacher_cache.jsonl"
    good = json.dumps({"key": "a", "answer": "Le café est prêt."}, ensure_ascii=False) + "\n"
    path.write_bytes(good.encode() + b'{"key": "b", "answer": "caf' + "é".encode()[:1])
    cache = TeacherCache(path)
    assert "a" in cache and "b" not in cache and cache.torn_lines == 1
    cache.put({"key": "b", "answer": "Prêt."})
    assert set(TeacherCache(path).records) == {"a", "b"}
