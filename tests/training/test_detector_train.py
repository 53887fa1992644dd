"""Detector settings: where the cross-encoder trains and in what precision it runs; bad settings refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from helpline.guard.detector import resolve_precision
from helpline.platform.errors import ConfigError
from helpline.training.detector.train import load_config, training_device


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


def _halueval(folder: Path) -> Path:
    """Hand-written rows in HaluEval's format: the hallucinated answers add names the knowledge lacks."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "qa_data.jsonl", "w") as qa, open(folder / "dialogue_data.jsonl", "w") as dialogue:
        for i in range(120):
            knowledge = f"Shop {i} opens at {i % 12 + 1} o'clock and sells bread."
            qa.write(
                json.dumps(
                    {
                        "knowledge": knowledge,
                        "question": f"When does shop {i} open?",
                        "right_answer": f"{i % 12 + 1} o'clock",
                        "hallucinated_answer": f"Shop {i} opens at midnight in Paris, says Napoleon.",
                    }
                )
                + "\n"
            )
            dialogue.write(
                json.dumps(
                    {
                        "knowledge": knowledge,
                        "dialogue_history": f"[Human]: Does shop {i} sell bread?",
                        "right_response": "yes it sells bread",
                        "hallucinated_response": f"Actually, shop {i} sells Ferraris made by Enzo in Modena.",
                    }
                )
                + "\n"
            )
    return folder


def test_a_failed_retrain_leaves_the_detector_already_there_as_it_was(tmp_path: Path) -> None:
    import shutil

    from helpline.platform.errors import DataError, NotFoundError
    from helpline.training.detector.train import DetectorTrainConfig, train

    cfg = DetectorTrainConfig(halueval_dir=_halueval(tmp_path / "halueval"), train_cross_encoder=False, val_items=40)
    output = tmp_path / "models" / "helpline-detector"
    report = train(cfg, base_path=tmp_path, output=output, log=lambda _: None)
    assert report["qa"]["features"]["balanced_accuracy"] > 0.9  # the features see the invented names
    before = {p.name: p.read_bytes() for p in output.iterdir()}

    broken = tmp_path / "broken-halueval"
    shutil.copytree(cfg.halueval_dir, broken)
    with open(broken / "qa_data.jsonl", "a") as fh:
        fh.write('{"knowledge": "a line cut off while it was written\n')  # the retrain fails half-way
    with pytest.raises(DataError):
        train(cfg.model_copy(update={"halueval_dir": broken}), base_path=tmp_path, output=output, log=lambda _: None)
    with pytest.raises(NotFoundError, match="not a saved cross-encoder"):
        train(cfg.model_copy(update={"cross_encoder_from": tmp_path / "nothing"}), base_path=tmp_path, output=output)
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert sorted(p.name for p in output.parent.iterdir()) == ["helpline-detector"]  # no half-built folder left


def test_eval_hallucination_checks_its_arguments_before_building_a_detector(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from helpline.cli.app import app
    from helpline.platform.errors import NotFoundError

    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    # No HaluEval here, so no detector can be built: an argument checked late would fail on that instead.
    monkeypatch.setenv("HELPLINE_HALUEVAL_DIR", str(tmp_path / "no-halueval"))
    data = _halueval(tmp_path / "halueval") / "dialogue_data.jsonl"
    runner = CliRunner()
    missing = runner.invoke(app, ["eval", "hallucination", "--dataset", f"halueval-qa:{tmp_path / 'absent.jsonl'}"])
    assert isinstance(missing.exception, NotFoundError) and "does not exist" in str(missing.exception)
    split = runner.invoke(app, ["eval", "hallucination", "--dataset", f"halueval-dialogue:{data}", "--split", "bogus"])
    assert isinstance(split.exception, ConfigError) and "unknown split 'bogus'" in str(split.exception)


def test_calibrate_detector_refits_a_saved_detector_in_place(tmp_path: Path, monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from helpline.cli.app import app
    from helpline.training.detector.train import DetectorTrainConfig, train

    halueval = _halueval(tmp_path / "halueval")
    cfg = DetectorTrainConfig(halueval_dir=halueval, train_cross_encoder=False, val_items=40)
    output = tmp_path / "models" / "my-detector"
    train(cfg, base_path=tmp_path, output=output, log=lambda _: None)
    (output / "detector.json").write_text(
        json.dumps({**json.loads((output / "detector.json").read_text()), "heads": {}, "thresholds": {}})
    )  # a detector whose heads were lost: recalibration fits them again
    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    args = ["eval", "calibrate-detector", "--detector", str(output), "--json", f"halueval_dir={halueval}"]
    args.append("val_items=40")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((output / "detector.json").read_text())
    assert set(saved["heads"]) >= {"qa"} and saved["thresholds"]["qa"] > 0
    assert json.loads(result.stdout)["qa"]["features"]["balanced_accuracy"] > 0.9
