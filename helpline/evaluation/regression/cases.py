"""The suite file format (YAML or JSONL), validated strictly on load.

A malformed suite is refused with one message that names the file, the case and the field, so a
typo such as ``must_contian`` fails loudly instead of silently checking nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from helpline.platform.errors import DataError, NotFoundError
from helpline.platform.files import read_jsonl
from helpline.platform.lazy_imports import require

Phrase = str | list[str]  # a list means "any of these"
SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"  # the bundled suites
MAX_SUITE_BYTES = 32 * 2**20  # hand-written suites are kilobytes; this refuses a wrong file before reading it


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Turn(_Strict):
    """One earlier turn of the conversation."""

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class ContextDoc(_Strict):
    """A document given to the model directly (generator-only runs) instead of retrieved."""

    doc_id: str = Field(min_length=1)
    title: str = ""
    text: str = Field(min_length=1)


class Structure(_Strict):
    """Shape of the answer."""

    min_words: int | None = Field(None, ge=0, description="At least this many words.")
    max_words: int | None = Field(None, ge=1, description="At most this many words.")
    numbered_steps: bool | None = Field(None, description="True: must contain a numbered list; False: must not.")
    max_sentences: int | None = Field(None, ge=1, description="At most this many sentences.")


class Tone(_Strict):
    """Register of the answer."""

    polite: bool = Field(True, description="No rude, blaming or dismissive phrases.")
    no_shouting: bool = Field(True, description="No words in capitals (beyond acronyms) and no '!!'.")
    forbidden: list[str] = Field(default_factory=list, description="Extra phrases that must not appear.")


class Expectations(_Strict):
    """What a good answer to the case must (not) do. Every field is optional; unset means unchecked."""

    must_contain: list[Phrase] = Field(default_factory=list, description="Each entry (or one of its alternatives).")
    must_not_contain: list[str] = Field(default_factory=list)
    regex: list[str] = Field(default_factory=list, description="Python regexes that must match (case-insensitive).")
    json_schema: dict[str, Any] | None = Field(None, description="The answer must be JSON valid under this schema.")
    must_cite: list[str] = Field(default_factory=list, description="doc_ids that must be among the citations.")
    must_abstain: bool | None = Field(None, description="True: must say it does not know; False: must answer.")
    structure: Structure | None = None
    tone: Tone | None = None
    reference: str | None = Field(None, description="A reference answer (scored by ROUGE-L and similarity).")
    min_rouge_l: float = Field(0.2, ge=0, le=1, description="ROUGE-L F1 to the reference that passes.")
    min_similarity: float = Field(0.5, ge=-1, le=1, description="Embedding cosine to the reference that passes.")

    @model_validator(mode="after")
    def _something_to_check(self) -> Expectations:
        checks = (
            self.must_contain,
            self.must_not_contain,
            self.regex,
            self.json_schema,
            self.must_cite,
            self.must_abstain is not None,
            self.structure,
            self.tone,
            self.reference,
        )
        if not any(checks):
            raise ValueError("expect has no checks; add at least one (must_contain, reference, ...)")
        if self.json_schema is not None:
            jsonschema = require("jsonschema", "eval")

            try:
                jsonschema.Draft202012Validator.check_schema(self.json_schema)
            except jsonschema.SchemaError as e:
                raise ValueError(f"json_schema is not a valid JSON Schema: {e.message}") from e
        for pattern in self.regex:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"regex {pattern!r} does not compile: {e}") from e
        return self


class Case(_Strict):
    """One question with its expectations."""

    id: str = Field(min_length=1, description="Unique within the suite; shown in reports.")
    category: str = Field("general", description="Groups cases in reports and gate thresholds.")
    question: str = Field(min_length=1)
    history: list[Turn] = Field(default_factory=list)
    context: list[ContextDoc] = Field(default_factory=list)
    expect: Expectations
    tags: list[str] = Field(default_factory=list)


class GeneratorSpec(_Strict):
    """Cases built at run time from a dataset (rows are never copied into the repository)."""

    source: Literal["bitext", "doc2dial"]
    path: str = Field(description="File or folder; relative paths resolve against --data-dir.")
    n: int = Field(20, ge=1, le=5000, description="How many cases to draw.")
    seed: int = 0


class Suite(_Strict):
    """A named list of cases, plus generators that add cases from data at run time."""

    name: str = Field(min_length=1)
    description: str = ""
    cases: list[Case] = Field(default_factory=list)
    generate: list[GeneratorSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> Suite:
        seen: set[str] = set()
        dupes = [c.id for c in self.cases if c.id in seen or seen.add(c.id)]  # type: ignore[func-returns-value]
        if dupes:
            raise ValueError(f"duplicate case ids: {', '.join(sorted(set(dupes)))}")
        if not self.cases and not self.generate:
            raise ValueError("the suite has no cases and no generators")
        return self


def suite_path(ref: str | Path) -> Path:
    """The file a suite reference names: ``ref`` itself when it exists or has a folder in it, else a
    bundled suite (``support`` or ``support.yaml`` is helpline/evaluation/suites/support.yaml)."""
    path = Path(ref)
    if path.exists() or len(path.parts) > 1:
        return path
    return SUITES_DIR / (path.name if path.suffix else f"{path.name}.yaml")


def load_suite(path: str | Path) -> Suite:
    """Read a ``.yaml``/``.yml`` suite or a ``.jsonl`` file of cases (name = file stem); a bare name
    is a bundled suite (:func:`suite_path`)."""
    path = suite_path(path)
    if not path.is_file():
        bundled = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
        raise NotFoundError(
            f"suite file {path} does not exist",
            hint=f"pass a YAML or JSONL file, or a bundled suite by name ({bundled}); see {SUITES_DIR}",
        )
    size = path.stat().st_size
    if size > MAX_SUITE_BYTES:
        raise DataError(
            f"{path}: {size / 2**20:.1f} MiB, over the {MAX_SUITE_BYTES // 2**20} MiB a suite file may have",
            hint="split it into several suites, or generate the cases (see suites/generated.yaml)",
        )
    if path.suffix == ".jsonl":
        data: Any = {"name": path.stem, "cases": read_jsonl(path)}
    else:
        try:
            data = yaml.safe_load(path.read_text("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason})", hint="save the suite as UTF-8 YAML or JSONL") from e
        except yaml.YAMLError as e:
            raise DataError(f"{path}: cannot parse ({e})", hint="fix the syntax; YAML and JSONL are accepted") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: a suite must be a mapping with name and cases", hint="see suites/support.yaml")
    try:
        return Suite(**data)
    except ValidationError as e:
        raise DataError(f"{path}: invalid suite: {_describe(e, data)}", hint="fix the fields named above") from e


def _describe(error: ValidationError, data: dict) -> str:
    """One line per problem: 'case <id> (#n) field a.b: message'."""
    problems = []
    cases = data.get("cases") if isinstance(data.get("cases"), list) else []
    for err in error.errors():
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
            case = cases[loc[1]] if loc[1] < len(cases) else {}
            case_id = case.get("id", "?") if isinstance(case, dict) else "?"
            where = f"case {case_id!r} (#{loc[1] + 1}) "
            loc = loc[2:]
        field = ".".join(str(p) for p in loc) or "(whole entry)"
        problems.append(f"{where}field {field}: {err['msg']}")
    return "; ".join(problems)
