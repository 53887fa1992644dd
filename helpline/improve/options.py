"""The typed options of `helpline improve`: every field with its help text, checked once, every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from helpline.platform.errors import ConfigError, validation_problems


class ImproveOptions(BaseModel):
    """One run of the loop: collect → train (SFT, then DPO/ORPO) → export gate → promotion gate → canary."""

    model_config = ConfigDict(extra="forbid")

    # collect and mix ---------------------------------------------------------------------------
    min_corrections: int = Field(
        1,
        ge=0,
        description="Do nothing (recorded) when fewer new staff corrections than this came in since the "
        "last run; they wait for the next one.",
    )
    staff_facing: bool = Field(False, description="The model answers staff: turns from internal passages may teach it.")
    heldout_share: float = Field(0.2, ge=0, lt=1, description="Share of corrected conversations held out for the gate.")
    replay_rows: int = Field(200, ge=0, description="Rows of production's own training set mixed in (old behaviour).")
    seed: int = Field(0, description="Seed of the split, the replay sample and the training order.")

    # train -----------------------------------------------------------------------------------------
    sft_config: str = Field("smollm2-135m-grounded-cpu", description="SFT preset (a YAML file or a shipped stem).")
    sft_steps: int | None = Field(None, ge=1, description="SFT optimizer steps (default: the preset's).")
    sft_set: list[str] = Field(default_factory=list, description="KEY=VALUE overrides of the SFT preset.")
    pref_config: str = Field("smollm2-135m-dpo-cpu", description="Preference preset (a YAML file or a shipped stem).")
    pref_steps: int | None = Field(None, ge=1, description="Preference optimizer steps (default: the preset's).")
    pref_set: list[str] = Field(default_factory=list, description="KEY=VALUE overrides of the preference preset.")
    method: Literal["dpo", "orpo"] = Field("dpo", description="Preference method on the (chosen, rejected) pairs.")

    # gate ------------------------------------------------------------------------------------------
    gate_config: Path | None = Field(None, description="Promotion gate YAML (default: helpline/evaluation/gate.yaml).")
    gate_limit: int | None = Field(None, ge=0, description="Cases per suite in the gate (default: the config's).")
    data_dir: Path = Field(Path("../shared/data"), description="Folder the gate's data-driven suites read.")

    # canary ----------------------------------------------------------------------------------------
    canary_share: float = Field(10.0, gt=0, le=100, description="Percent of new conversations the canary answers.")
    canary_wait_s: float = Field(
        0.0,
        ge=0,
        description="How long this run watches the canary before leaving it running (0: look once); the "
        "next `helpline improve` (or `--every` tick) resumes it.",
    )
    canary_poll_s: float = Field(60.0, gt=0, description="Seconds between two looks at the canary while watching.")
    skip_canary: bool = Field(
        False, description="Promote right after the gate, with no canary: for a workspace that has no live traffic."
    )
    abandon: bool = Field(False, description="Give up an unfinished run (recorded) and start a new one.")

    @field_validator("sft_set", "pref_set")
    @classmethod
    def _pairs(cls, pairs: list[str]) -> list[str]:
        bad = [p for p in pairs if "=" not in p or p.startswith("=")]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))} not KEY=VALUE")
        return pairs


def load_options(**values: object) -> ImproveOptions:
    """The options, every invalid one reported in one ConfigError."""
    try:
        return ImproveOptions(**values)  # type: ignore[arg-type]
    except ValidationError as e:
        raise ConfigError(
            f"invalid improve options: {'; '.join(validation_problems(e.errors()))}",
            hint="see `helpline improve --help`",
        ) from e


