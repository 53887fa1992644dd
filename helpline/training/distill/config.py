"""The typed config of `helpline train distill`: a YAML preset plus ``key=value`` overrides.

Nested fields are overridden with dots (``teacher.base_url=http://...``, ``sft.max_steps=3``). Field
errors and cross-field checks are reported together, once, as one ConfigError listing every problem.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from helpline.platform.errors import ConfigError, validation_problems
from helpline.training.sft.config import SFTConfig, parse_overrides, read_preset, validated

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: Teacher answers that teach the student nothing (or the wrong thing). Case-insensitive regexes.
DEFAULT_REFUSALS = [
    r"\bas an ai\b",
    r"\bi (?:can ?not|can't|am unable to|'m unable to) (?:help|assist|answer|provide)",
    r"\bi don'?t know\b",
    r"\bi do not know\b",
    r"\bno information (?:about|on) (?:that|this)\b",
]


class TeacherConfig(BaseModel):
    """Any OpenAI-compatible chat endpoint: the local vLLM, or a remote provider."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(..., description="Endpoint root, e.g. http://127.0.0.1:8001/v1.")
    model: str = Field(..., description="Model name the endpoint serves (vLLM: the served name or LoRA name).")
    api_key_env: str | None = Field(
        None,
        description="Environment variable holding the API key (None: no key). Only the workspace's own teacher key "
        "(settings teacher.api_key_env), and then base_url must be the workspace's teacher.base_url: a key goes only "
        "to the endpoint configured for it, whatever a preset or the arguments of a console job say.",
    )
    max_tokens: int = Field(256, ge=8, description="Longest teacher answer.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy: reproducible answers.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout.")
    concurrency: int = Field(1, ge=1, le=64, description="Requests in flight (vLLM batches them).")
    stop: list[str] = Field(
        default_factory=list, description='Stop sequences sent to the teacher, e.g. ["\\n\\n"] for one paragraph.'
    )


class SourcesConfig(BaseModel):
    """Where the questions come from; every enabled source is mixed into one prompt set."""

    model_config = ConfigDict(extra="forbid")

    kb_questions: bool = Field(True, description="Questions generated from the KB's section headings.")
    kb_max_questions: int = Field(200, ge=0, description="At most this many KB questions (0: none).")
    bitext_csv: str | None = Field(None, description="Bitext CSV (instruction/response/intent): its instructions.")
    bitext_limit: int = Field(200, ge=0, description="Seeded sample of at most this many Bitext instructions.")
    reviewed_jsonl: str | None = Field(None, description="Reviewed conversations JSONL (data prepare's reviewed:).")
    reviewed_limit: int = Field(200, ge=0, description="At most this many reviewed conversations.")
    seed: int = Field(0, description="Seed of the samples.")


class FilterConfig(BaseModel):
    """Which teacher answers are kept."""

    model_config = ConfigDict(extra="forbid")

    min_words: int = Field(5, ge=0, description="Shorter answers are dropped.")
    max_words: int = Field(300, ge=1, description="Longer answers are dropped (often a rambling or looping teacher).")
    refusal_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSALS),
        description='Case-insensitive regexes; a matching answer is dropped. Remove the "don\'t know" ones to '
        "also teach abstentions.",
    )
    max_answer_repeats: int = Field(2, ge=1, description="The same (normalized) answer is kept at most N times.")
    max_ngram_repeats: int = Field(
        2, ge=1, description="An answer repeating any 6-word sequence more than N times is dropped (a looping teacher)."
    )
    drop_truncated: bool = Field(True, description="Drop answers cut at teacher.max_tokens (finish_reason length).")
    detector: str | None = Field(
        "helpline-detector",
        description="Registry name of the groundedness detector; None: skip. Missing from the registry: skipped "
        "with a warning in the manifest.",
    )
    detector_threshold: float | None = Field(None, description="Detector cutoff (default: its calibrated one).")


class DistillConfig(BaseModel):
    """Distil a teacher endpoint into a small student: prompts → teacher answers → filtered dataset → SFT."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("default", description="Dataset name suffix: <workspace>/datasets/distill-<name>/vN.")
    teacher: TeacherConfig
    student: str = Field("smollm2-135m-instruct", description="Registry name/alias or folder of the student base.")
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    top_k: int = Field(4, ge=1, le=20, description="Passages retrieved per question (as in serving).")
    role: str = Field("customer", description="Retrieval role: customer sees public passages only.")
    filters: FilterConfig = Field(default_factory=FilterConfig)
    validation: float = Field(0.1, gt=0, lt=0.5, description="Share of kept examples held out for validation.")
    test: float = Field(0.1, ge=0, lt=0.5, description="Share held out for testing (eval sft).")
    seed: int = Field(0, description="Seed of the split.")
    max_prompts: int | None = Field(None, ge=1, description="Ask at most this many prompts (smoke runs).")
    train: bool = Field(True, description="Fine-tune the student after writing the dataset.")
    sft: dict = Field(
        default_factory=dict,
        description="SFTConfig fields for the student (helpline train sft --help-config); dataset and base_model "
        "are filled in.",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> DistillConfig:
        problems = []
        if not _NAME.match(self.name):
            problems.append(f"name {self.name!r}: use letters, digits, '-', '_' or '.'")
        s = self.sources
        kb = s.kb_questions and s.kb_max_questions > 0
        if not (kb or s.bitext_csv or s.reviewed_jsonl):
            problems.append("sources: enable kb_questions or give bitext_csv or reviewed_jsonl")
        for label, path in (("sources.bitext_csv", s.bitext_csv), ("sources.reviewed_jsonl", s.reviewed_jsonl)):
            if path and not Path(path).expanduser().is_file():
                problems.append(f"{label}: {path} does not exist")
        if self.filters.min_words >= self.filters.max_words:
            problems.append("filters.min_words must be below filters.max_words")
        for pattern in self.filters.refusal_patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                problems.append(f"filters.refusal_patterns: {pattern!r} is not a regex ({e})")
        if self.validation + self.test >= 0.6:
            problems.append("validation + test leave too little to train on")
        for key in ("dataset", "base_model"):
            if key in self.sft:
                problems.append(f"sft.{key} is filled in by distill; set `student` instead of sft.base_model")
        if self.train:
            try:
                SFTConfig(**{"dataset": "-", "base_model": self.student, **self.sft})
            except ValidationError as e:
                problems.extend(validation_problems(e.errors(), prefix="sft."))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def sft_config(self, dataset: str) -> SFTConfig:
        """The student's SFT config on the written dataset."""
        return SFTConfig(
            **{"run_name": f"distill-{self.name}", **self.sft, "dataset": dataset, "base_model": self.student}
        )


def _set_dotted(data: dict, key: str, value: object) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section", hint="e.g. teacher.model=NAME")
    node[parts[-1]] = value


def load_distill_config(path: str | Path | None, overrides: list[str] | None = None) -> DistillConfig:
    """Read a preset (a path, or the stem of a shipped one) and apply dotted ``key=value`` overrides."""
    data, _ = read_preset(path, hint="see helpline/training/configs/distill-*.yaml")
    for key, value in parse_overrides(overrides or []).items():
        _set_dotted(data, key, value)
    hint = "fix the preset or the key=value overrides (`helpline train distill --help-config` lists fields)"
    return validated(DistillConfig, data, what="distillation config", hint=hint)
