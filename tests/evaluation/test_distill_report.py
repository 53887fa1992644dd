"""The distillation report's targets, its table, and the memory probe on a tiny saved model."""

from __future__ import annotations

import pytest

from helpline.evaluation.distill_report import Contender, ReportOptions, engine_speeds, markdown, targets
from helpline.evaluation.model_probe import run_probe


def _models(teacher_score: float, before: float, after: float, teacher_tps: float, after_tps: float) -> dict:
    def row(name: str, score: float, tps: float) -> dict:
        return {
            "name": name,
            "regression": {"score": score, "pass_rate": score, "n": 10},
            "speed": {"output_tokens_per_s": tps, "ttft_p50_s": 0.1},
            "memory": {"output_tokens_per_s": tps / 4, "peak_rss_mb": 900.0},
        }

    return {
        "teacher": row("gemma", teacher_score, teacher_tps),
        "student_before": row("smol", before, after_tps),
        "student_after": row("smol-distilled", after, after_tps),
    }


def test_targets_met_when_the_student_keeps_90_percent_at_1_8x_speed():
    t = targets(_models(0.80, 0.60, 0.73, 20.0, 37.0))
    assert t["score_ratio_vs_teacher"] == pytest.approx(0.9125, abs=1e-3)
    assert t["score_ratio_met"] and t["beats_student_before"]
    assert t["speed_ratio_engine"] == pytest.approx(1.85) and t["speed_ratio_engine_met"]
    assert t["speed_ratio_transformers"] == pytest.approx(1.85)


def test_targets_missed_are_reported_as_missed():
    t = targets(_models(0.80, 0.75, 0.70, 20.0, 30.0))
    assert t["score_ratio_vs_teacher"] == pytest.approx(0.875) and not t["score_ratio_met"]
    assert not t["beats_student_before"]
    assert t["speed_ratio_engine"] == pytest.approx(1.5) and not t["speed_ratio_engine_met"]


def test_targets_without_speed_figures_are_not_met():
    models = _models(0.8, 0.6, 0.75, 20.0, 40.0)
    models["teacher"].pop("memory")  # a remote teacher: no in-process figures
    t = targets(models)
    assert t["speed_ratio_transformers"] is None and not t["speed_ratio_transformers_met"]
    assert t["speed_ratio_engine_met"]


def test_speed_target_compares_equal_length_figures_when_both_have_them():
    models = _models(0.8, 0.6, 0.75, 20.0, 30.0)  # as answered: 1.5x (the student stops early)
    models["teacher"]["speed"]["equal_length"] = {"output_tokens_per_s": 20.0}
    models["student_after"]["speed"]["equal_length"] = {"output_tokens_per_s": 41.0}
    t = targets(models)
    assert t["speed_ratio_engine"] == pytest.approx(2.05) and t["speed_ratio_engine_met"]
    assert t["speed_ratio_engine_basis"] == "equal length"
    assert t["speed_ratio_engine_as_answered"] == pytest.approx(1.5)
    models["teacher"]["speed"]["equal_length"] = None  # an endpoint that could not be timed at equal length
    t = targets(models)
    assert t["speed_ratio_engine"] == pytest.approx(1.5) and t["speed_ratio_engine_basis"] == "as answered"


class _Endpoint:
    """A generator that stands for an HTTP endpoint (the report times it through `level`)."""

    def __init__(self, name: str) -> None:
        self.name, self.base_url, self.warmed = name, f"http://{name}/v1", 0

    def generate(self, messages, *, max_tokens: int, temperature: float = 0.0):  # type: ignore[no-untyped-def]
        self.warmed += 1


def test_engine_speeds_interleave_rounds_and_report_medians(monkeypatch):
    from helpline.evaluation import distill_report
    from helpline.platform.schemas import ChatMessage

    calls: list[tuple[str, bool]] = []
    per_round = {"t": [10.0, 30.0, 20.0], "s": [40.0, 44.0, 90.0]}  # one slow and one fast outlier

    def fake_level(base_url, key, model, prompts, *, concurrency, n, max_tokens, full_length=False):  # type: ignore[no-untyped-def]
        assert concurrency == 1 and n == 2 and max_tokens == 16
        calls.append((model, full_length))
        rate = per_round[model][sum(1 for m, f in calls if m == model and f == full_length) - 1]
        tokens = 16 * n if full_length else 5 * n
        return {"requests": n, "failed": 0, "output_tokens": tokens, "output_tokens_per_s": rate / (1 if full_length
                else 2), "ttft_p50_s": 0.1, "e2e_p50_s": 0.1 + 15 / rate, "e2e_p95_s": 1.0, "errors": []}  # fmt: skip

    monkeypatch.setattr(distill_report, "level", fake_level)  # the load generator, where the report calls it
    models = [Contender("teacher", "t", _Endpoint("t")), Contender("student_after", "s", _Endpoint("s"))]
    prompts = [[ChatMessage(role="user", content="Where is my refund?")]]
    out = engine_speeds(models, prompts, ReportOptions(speed_prompts=2, speed_max_tokens=16, speed_rounds=3))
    assert [m for m, _ in calls][:4] == ["t", "t", "s", "s"]  # round by round, not model by model
    assert len(calls) == 12 and all(c.generator.warmed == 1 for c in models)
    assert out["teacher"]["equal_length"]["output_tokens_per_s"] == 20.0  # the median, not the mean
    assert out["student_after"]["equal_length"]["output_tokens_per_s"] == 44.0
    assert out["student_after"]["output_tokens_per_s"] == 22.0 and out["student_after"]["tokens_per_answer"] == 5.0
    assert out["student_after"]["equal_length"]["decode_tokens_per_s"] == pytest.approx(44.0)  # 15 tokens / (15/44) s
    assert out["teacher"]["rounds"] == 3 and len(out["teacher"]["runs"]["equal_length"]) == 3
    assert targets({"teacher": {"regression": {"score": 1}, **{"speed": out["teacher"]}},
                    "student_before": {"regression": {"score": 1}},
                    "student_after": {"regression": {"score": 1}, "speed": out["student_after"]}})[
        "speed_ratio_engine"] == pytest.approx(2.2)  # fmt: skip


def test_markdown_has_a_column_per_model_and_the_targets():
    report = {"models": _models(0.8, 0.6, 0.75, 20.0, 40.0)}
    report["targets"] = targets(report["models"])
    text = markdown(report)
    assert "teacher (gemma)" in text and "student_after (smol-distilled)" in text
    assert "| regression score (mean case score) | 0.8 | 0.6 | 0.75 |" in text
    assert "| doc2dial citation correct | – | – | – |" in text  # not measured reads as a dash
    assert "score_ratio_met=True" in text


def test_probe_measures_memory_and_speed_in_a_child_process(tmp_path):
    from helpline.testing.training import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    prompts = [[{"role": "user", "content": "Where is my refund?"}], [{"role": "user", "content": "Return an item"}]]
    out = run_probe(str(model_dir), None, prompts, n=2, max_tokens=8, workdir=tmp_path)
    assert out["requests"] == 2 and out["failed"] == 0
    assert out["output_tokens"] > 0 and out["output_tokens_per_s"] > 0
    assert out["peak_rss_mb"] >= out["rss_after_load_mb"] > 50  # torch alone is more than 50 MB
    assert out["parameters_m"] < 1


def test_probe_failure_names_the_model(tmp_path):
    with pytest.raises(RuntimeError, match="model probe failed for /nonexistent"):
        run_probe("/nonexistent", None, [[{"role": "user", "content": "hi"}]], n=1, max_tokens=4, workdir=tmp_path)


def test_probe_of_an_adapter_uses_the_chat_template_saved_with_it(tmp_path):
    """Gemma 3 270M has no chat template; its adapters carry the one they were trained with."""
    from peft import LoraConfig, get_peft_model

    from helpline.testing.training import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    model = tiny_llama(tokenizer)
    model.save_pretrained(base)
    template, tokenizer.chat_template = tokenizer.chat_template, None
    tokenizer.save_pretrained(base)  # a base without a template
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(adapter)
    out = run_probe(str(base), str(adapter), [[{"role": "user", "content": "hi"}]], n=1, max_tokens=4, workdir=tmp_path)
    assert out["requests"] == 1 and out["failed"] == 0
