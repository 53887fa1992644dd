"""Typed settings: defaults, overridden by a YAML config file, overridden by ``HELPLINE_*`` env vars.

The config file is ``$HELPLINE_CONFIG`` if set, else ``./helpline.yaml`` if it exists. Nested
fields use ``__`` in env vars, e.g. ``HELPLINE_VLLM__PORT=8101``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from helpline.platform.engine_settings import VLLM_OWN_ARGS as VLLM_OWN_ARGS  # re-exported
from helpline.platform.engine_settings import VLLMSettings
from helpline.platform.errors import ConfigError, validation_problems
from helpline.platform.gateway_settings import GatewayLimits as GatewayLimits  # re-exported
from helpline.platform.gateway_settings import GatewaySettings

__all__ = [
    "VLLM_OWN_ARGS", "GatewayLimits", "GatewaySettings", "Settings", "TrackingSettings", "VLLMSettings",
    "load_settings",
]  # fmt: skip

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RetrievalSettings(BaseModel):
    """How the knowledge base is chunked and searched."""

    top_k: int = Field(4, ge=1, le=50, description="Passages given to the model per answer.")
    chunk_size: int = Field(900, ge=100, le=8000, description="Target chunk size in characters.")
    chunk_overlap: int = Field(120, ge=0, description="Characters shared by neighbouring chunks.")
    mode: Literal["dense", "bm25", "hybrid"] = Field("hybrid", description="Search method.")
    min_score: float = Field(0.0, description="Below this relevance of the best passage the assistant abstains.")
    store: Literal["embedded", "server"] = Field(
        "embedded", description="Chroma in-process (PersistentClient) or a `chroma run` server."
    )
    chroma_host: str = Field("127.0.0.1", description="Chroma server host (store=server).")
    chroma_port: int = Field(8002, description="Chroma server port (store=server).")
    collection: str = Field("helpline-kb", description="Chroma collection name.")
    embedder_backend: Literal["torch", "onnx-int8", "openvino-int8"] = Field(
        "torch",
        description="torch: sentence-transformers fp32. onnx-int8: ONNX Runtime with int8 weights (about 2.4-2.9x "
        "faster ingest on 2 cores). openvino-int8: OpenVINO with int8 weights and activations (3.2-3.9x). The int8 "
        "models are exported once into the workspace. Run `helpline kb sync --rebuild` after changing it.",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> RetrievalSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self


class GenerationSettings(BaseModel):
    """Sampling defaults for answers."""

    max_new_tokens: int = Field(
        96,
        ge=1,
        le=4096,
        description="Upper bound on answer length (a support answer is a few sentences; past them a small model "
        "repeats itself, and what repeats is cut from what is served).",
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 means greedy decoding.")


class AnswerSettings(BaseModel):
    """What becomes of a generated answer (``serving/decision.py``)."""

    fallback: bool = Field(
        True,
        description="When the generated answer is not served (unsupported, off the point, or 'I don't know'), quote "
        "the passage sentences that answer the question, with their citation; false hands off instead.",
    )
    min_quote_score: float = Field(
        0.45,
        ge=0.0,
        le=1.0,
        description="How well a passage sentence must match the question (0-1: embedding similarity and shared "
        "words) to be quoted or to back a generated answer; below it the customer gets the handoff.",
    )
    staff_answers: bool = Field(
        True,
        description="Serve a staff correction again, at once, to a question asked alike (while the retrieved "
        "passages still back it); false answers every question anew until the model has learnt it.",
    )
    staff_answer_similarity: float = Field(
        0.75,
        ge=0.5,
        le=1.0,
        description="How close (embedding cosine) a question must be to a corrected one for staff's correction to be "
        "served. On the sample help centre's 50 questions and a rewording of each, 0.75 matched 21 rewordings and no "
        "question to another's correction; 0.65 matched 33 and one wrongly.",
    )


class UISettings(BaseModel):
    """The Streamlit app."""

    port: int = Field(8501, description="Streamlit port.")
    gateway_url: str = Field("http://127.0.0.1:8000", description="Gateway the UI calls.")


class TeacherSettings(BaseModel):
    """The distillation teacher endpoint this workspace trusts with an API key (`train distill`, `eval distill-report`).

    A key goes only where it is configured to go: a distill config may name ``teacher.api_key_env`` only when it is
    this variable and its ``teacher.base_url`` is this URL. A config's other fields come from presets and
    arguments (a console job's, say), so they can point at no other secret and send this one nowhere else.
    """

    base_url: str | None = Field(
        None,
        description="The endpoint that may receive the key named by api_key_env, e.g. https://api.example.com/v1. "
        "A distill config whose teacher.base_url is another address may name no key (teacher.api_key_env=null).",
    )
    api_key_env: str | None = Field(
        None,
        description="Environment variable holding the teacher's API key; None: no teacher gets a key. The only "
        "variable a distill config may name as teacher.api_key_env, and the only secret a console job's "
        "environment carries.",
    )

    @model_validator(mode="after")
    def _key_has_its_endpoint(self) -> TeacherSettings:
        if self.api_key_env is None:
            return self
        if not _ENV_NAME.fullmatch(self.api_key_env):
            raise ValueError(f"api_key_env {self.api_key_env!r} is not an environment variable name")
        if not self.base_url:
            raise ValueError("api_key_env needs base_url: the one endpoint that may receive the key")
        return self


class CanarySettings(BaseModel):
    """When a canary is promoted or rolled back (``serving/canary.py``). Margins say how much worse than production
    the canary may be and still count as not worse; a metric whose margin is null is not tested."""

    alpha: float = Field(
        0.05,
        gt=0.0,
        lt=0.5,
        description="Chance, over the whole canary however often it is looked at, that any decision rests on a "
        "wrong bound (a false rollback or a false promotion).",
    )
    thumbs_down_margin: float | None = Field(0.02, ge=0.0, le=1.0, description="Thumbs-down rate: +2 points.")
    handoff_margin: float | None = Field(0.05, ge=0.0, le=1.0, description="Handoff rate: +5 points.")
    withdrawal_margin: float | None = Field(
        0.03, ge=0.0, le=1.0, description="Rate of answers withdrawn by verification: +3 points."
    )
    wrong_served_margin: float | None = Field(
        0.05, ge=0.0, le=1.0, description="Wrong-served rate among sampled answers judged by the detector: +5 points."
    )
    latency_margin: float | None = Field(
        0.2, ge=0.0, description="Median latency: the canary's may be at most (1 + this) times production's."
    )
    min_answers: int = Field(200, ge=1, description="Canary answers before it may be promoted.")
    max_answers: int = Field(
        20000, ge=1, description="Canary answers after which a canary still undecided is rolled back."
    )
    max_hours: float = Field(72.0, gt=0.0, description="Hours after which a canary still undecided is rolled back.")

    @model_validator(mode="after")
    def _consistent(self) -> CanarySettings:
        margins = (self.thumbs_down_margin, self.handoff_margin, self.withdrawal_margin, self.wrong_served_margin)
        problems = []
        if all(m is None for m in margins) and self.latency_margin is None:
            problems.append("every margin is null: at least one metric must be tested")
        if self.max_answers < self.min_answers:
            problems.append(f"max_answers ({self.max_answers}) must not be below min_answers ({self.min_answers})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class TrackingSettings(BaseModel):
    """Run tracking (``platform/tracking.py``): each training and evaluation run logged to MLflow."""

    enabled: bool | None = Field(
        None,
        description="None: on when mlflow is installed (pip install 'helpline[track]'), off otherwise; true: on, "
        "and an error naming the extra when mlflow is missing; false: off.",
    )
    uri: str | None = Field(
        None,
        description="MLflow tracking URI. None: the SQLite store sqlite:///<workspace>/mlflow.db (MLflow 3 refuses "
        "a plain ./mlruns folder). A server: http://HOST:5000; any database MLflow takes: postgresql://...",
    )
    experiment: str = Field("helpline", min_length=1, description="MLflow experiment that runs are logged to.")
    timeout_s: float = Field(
        5.0, gt=0, description="Longest wait for a tracking server's answer; past it the run goes on untracked."
    )

    @model_validator(mode="after")
    def _uri_is_a_store(self) -> TrackingSettings:
        if self.uri is not None and "://" not in self.uri and not self.uri.startswith("databricks"):
            raise ValueError(
                f"uri {self.uri!r} is not a tracking URI: MLflow 3 refuses a folder store; use "
                "sqlite:///PATH/mlflow.db, http://HOST:5000 or a database URL"
            )
        return self


class Settings(BaseSettings):
    """All of helpline's settings. See the README for the config file format."""

    model_config = SettingsConfigDict(env_prefix="HELPLINE_", env_nested_delimiter="__", extra="forbid")

    workspace: Path = Field(Path(".helpline"), description="Folder for models, indexes, logs.")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto",
        description="vllm: the server `helpline run` supervises; transformers: in-process; "
        "auto: vllm when its server is up, else transformers (one-off `helpline ask`).",
    )
    chat_model: str = Field("production", description="Registry name or alias of the model that answers customers.")
    embedder: str = Field("all-minilm-l6-v2", description="Registry name of the embedder.")
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    answers: AnswerSettings = Field(default_factory=AnswerSettings)
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    ui: UISettings = Field(default_factory=UISettings)
    teacher: TeacherSettings = Field(
        default_factory=TeacherSettings, description="The distillation teacher trusted with an API key."
    )
    canary: CanarySettings = Field(
        default_factory=CanarySettings, description="When a canary is promoted or rolled back."
    )
    tracking: TrackingSettings = Field(
        default_factory=TrackingSettings, description="Where training and evaluation runs are logged (MLflow)."
    )
    redis_url: str | None = Field(
        None,
        description="Redis shared by the gateway replicas, e.g. redis://redis:6379/0: each key's rate limit and the "
        "concurrency cap (gateway.limits) then hold across all of them, not per replica. None: each gateway limits "
        "on its own (one replica). Redis unreachable: each replica falls back to its own limits until it is back.",
    )
    database_url: str | None = Field(
        None,
        description="PostgreSQL database of the gateway (keys, audit log, conversations, feedback, connectors), "
        "shared by every replica, e.g. postgresql://helpline:PASSWORD@postgres:5432/helpline (an empty database of "
        "its own: the gateway creates and migrates its tables). None: the SQLite file gateway.sqlite in the "
        "workspace. The model registry stays in the workspace's registry.sqlite either way.",
    )

    @model_validator(mode="after")
    def _addresses(self) -> Settings:
        problems = []
        if self.redis_url is not None and not re.fullmatch(r"rediss?://\S+", self.redis_url):
            problems.append(f"redis_url {self.redis_url!r} is not a Redis address such as redis://redis:6379/0")
        if self.database_url is not None and not re.fullmatch(r"postgres(ql)?(\+psycopg)?://\S+", self.database_url):
            scheme = self.database_url.partition("://")[0] if "://" in self.database_url else "no scheme"
            problems.append(
                f"database_url is not a PostgreSQL address such as postgresql://USER:PASSWORD@HOST:5432/DATABASE "
                f"(it has {scheme!r}); unset it to keep the gateway's database in the workspace"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def _config_file() -> Path | None:
    explicit = os.environ.get("HELPLINE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(
                f"config file {path} does not exist",
                hint="fix HELPLINE_CONFIG or unset it to use the defaults",
            )
        return path
    default = Path("helpline.yaml")
    return default if default.is_file() else None


def unknown_env_settings(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """``HELPLINE_<SECTION>__<FIELD>`` variables that name no setting, e.g. HELPLINE_VLLM__GPU_MEMORY_UTILIZATIN.

    pydantic-settings ignores them, so a typo in a deployment's environment would silently leave the default in
    place. Only names under a real section are checked: other HELPLINE_* variables (HELPLINE_CONFIG) are not
    settings."""
    unknown = []
    for name in environ:
        if not name.upper().startswith("HELPLINE_") or "__" not in name:
            continue
        parts = name[len("HELPLINE_") :].lower().split("__")
        model: type[BaseModel] | None = Settings
        for i, part in enumerate(parts):
            field = model.model_fields.get(part) if model is not None else None
            if field is None:
                if i > 0:
                    unknown.append(name)
                break
            annotation = field.annotation
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if model is None and i < len(parts) - 1:
                unknown.append(name)  # a field that has no fields of its own
                break
    return sorted(unknown)


def load_settings(**overrides: object) -> Settings:
    """Load settings, turning validation failures into one ConfigError listing every problem."""
    unknown = unknown_env_settings(os.environ)
    if unknown:
        raise ConfigError(
            f"invalid settings: {', '.join(unknown)} name no setting",
            hint="fix the variable's name: HELPLINE_ then the setting's path joined by __ (README, 'Configuration')",
        )
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        problems = "; ".join(validation_problems(e.errors()))
        raise ConfigError(
            f"invalid settings: {problems}",
            hint="fix helpline.yaml / HELPLINE_* variables (see README, 'Configuration')",
        ) from e
