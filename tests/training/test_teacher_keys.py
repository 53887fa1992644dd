"""A distill config sends an API key only to the endpoint the workspace configures for it.

A config is built from a preset and ``key=value`` arguments, which a console job passes on from an HTTP request:
those must not be able to name another secret of the environment, nor send the teacher key elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.platform.settings import Settings, TeacherSettings
from helpline.training.distill.config import DistillConfig, load_distill_config
from helpline.training.distill.run import resolve_teacher

Request = pytest.importorskip("fastapi").Request  # module level: FastAPI resolves the annotation here
KEY_VAR = "TEACHERTEST_KEY"


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[str | None]]]:
    """An OpenAI-compatible endpoint serving `teacher`; records the Authorization header of every request."""
    from fastapi import FastAPI

    from helpline.testing.serving import serve_in_thread

    seen: list[str | None] = []
    app = FastAPI()

    @app.get("/v1/models")
    def models(request: Request) -> dict:
        seen.append(request.headers.get("authorization"))
        return {"object": "list", "data": [{"id": "teacher", "object": "model"}]}

    with serve_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}/v1", seen


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, "sk-teacher")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-aws-secret")


def _ctx(tmp_path: Path, teacher: TeacherSettings) -> Context:
    return Context(Settings(workspace=tmp_path / ".helpline", teacher=teacher))


def _config(*overrides: str) -> DistillConfig:
    return load_distill_config("distill-gemma-to-smollm2", ["train=false", "teacher.model=teacher", *overrides])


def test_the_workspace_teacher_key_goes_to_its_own_endpoint(tmp_path: Path, endpoint, secrets) -> None:
    url, seen = endpoint
    ctx = _ctx(tmp_path, TeacherSettings(base_url=url, api_key_env=KEY_VAR))
    resolve_teacher(_config(f"teacher.base_url={url}/", f"teacher.api_key_env={KEY_VAR}"), ctx)
    assert seen == ["Bearer sk-teacher"]


def test_arguments_naming_another_secret_are_refused_before_any_request(tmp_path: Path, endpoint, secrets) -> None:
    url, seen = endpoint
    ctx = _ctx(tmp_path, TeacherSettings(base_url=url, api_key_env=KEY_VAR))
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY") as refused:
        resolve_teacher(_config(f"teacher.base_url={url}", "teacher.api_key_env=AWS_SECRET_ACCESS_KEY"), ctx)
    assert "HELPLINE_TEACHER__API_KEY_ENV" in (refused.value.hint or "")
    assert seen == []


def test_arguments_pointing_the_teacher_key_at_another_url_are_refused(tmp_path: Path, endpoint, secrets) -> None:
    elsewhere, seen = endpoint  # stands for an address the key must not reach
    ctx = _ctx(tmp_path, TeacherSettings(base_url="https://teacher.example/v1", api_key_env=KEY_VAR))
    with pytest.raises(ConfigError, match="not the endpoint"):
        resolve_teacher(_config(f"teacher.base_url={elsewhere}", f"teacher.api_key_env={KEY_VAR}"), ctx)
    assert seen == []


def test_another_url_may_be_used_without_a_key(tmp_path: Path, endpoint, secrets) -> None:
    url, seen = endpoint
    ctx = _ctx(tmp_path, TeacherSettings(base_url="https://teacher.example/v1", api_key_env=KEY_VAR))
    resolve_teacher(_config(f"teacher.base_url={url}", "teacher.api_key_env=null"), ctx)
    assert seen == [None]


def test_a_workspace_without_a_teacher_key_gives_none(tmp_path: Path, endpoint, secrets) -> None:
    url, seen = endpoint
    with pytest.raises(ConfigError, match="configures no teacher key"):
        resolve_teacher(
            _config(f"teacher.base_url={url}", f"teacher.api_key_env={KEY_VAR}"), _ctx(tmp_path, TeacherSettings())
        )
    assert seen == []


def test_a_teacher_key_setting_needs_its_endpoint() -> None:
    with pytest.raises(ValidationError, match="needs base_url"):
        TeacherSettings(api_key_env=KEY_VAR)
    with pytest.raises(ValidationError, match="not an environment variable name"):
        TeacherSettings(base_url="https://teacher.example/v1", api_key_env="A KEY; curl")
