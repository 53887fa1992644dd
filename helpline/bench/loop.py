"""`helpline bench loop` (#26): staff corrections seeded through the gateway → `helpline improve` → what customers are
served afterwards.

On a scratch copy of the workspace (`helpline backup` then `restore`, with an empty gateway database and no earlier
improve runs), so the user's production alias, conversations and runs are never touched:

1. every answerable customer question of the sample help centre (``sample_kb/QUESTIONS.yaml``) is asked through the
   gateway app (the workspace's knowledge base, verifier and production model) as a customer, and judged as served by
   its expected phrases;
2. up to ``corrections`` of those served wrong or handed off are corrected as staff do: a thumbs-down, then the review
   route with the help centre's own words (the answering article's first sentence holding an expected phrase);
3. a second wording of each corrected question (``loop_paraphrases.yaml``) is asked by the model alone (staff
   answers off) and as served once the corrections are saved (staff answers on: no training yet);
4. `helpline improve` runs on them (the canary is skipped: a bench has no live traffic to split), unless ``train`` is
   off; then the paraphrases are asked again, by the model alone and as served. Held-out corrections (never trained
   on) are counted apart.

It reports the wall time of each step, the gate's verdict and suite summaries, and the paraphrases answered right at
each point.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from helpline.answering.extractive import split_units
from helpline.evaluation.answers import AnswerCase, ServedAnswer, judge, read_cases
from helpline.improve import ImproveOptions, improve, runs_root
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.platform.settings import GatewayLimits
from helpline.platform.text import contains
from helpline.retrieval import SAMPLE_KB
from helpline.serving.backup import backup_workspace, restore_workspace
from helpline.serving.factory import build_gateway, gateway_db
from helpline.serving.gateway.store import GatewayStore

PARAPHRASES = Path(__file__).with_name("loop_paraphrases.yaml")
#: Limits high enough that a measurement is never throttled.
LIMITS = GatewayLimits(requests_per_minute=100_000, burst=100_000, upstream_timeout_s=600)

Ask = Callable[[AnswerCase], tuple[str, ServedAnswer]]  # a case → (response id, what was served)


@dataclass
class Seeded:
    """A question production served wrong, and the correction staff saved for it."""

    case: AnswerCase
    paraphrase: AnswerCase
    response_id: str
    served: str
    correction: str


def help_centre_correction(case: AnswerCase, kb_dir: Path = SAMPLE_KB) -> str | None:
    """What staff would write: the answering article's first sentence (or list item) that holds an expected phrase."""
    article = kb_dir / f"{case.doc_id}.md"
    if not article.is_file():
        return None
    body = article.read_text(encoding="utf-8").split("---", 2)[-1]  # past the front matter
    return next((u.text for u in split_units(body) if any(contains(u.text, p) for p in case.expect)), None)


def paired_cases(questions: Path = SAMPLE_KB / "QUESTIONS.yaml", paraphrases: Path = PARAPHRASES) -> list[tuple]:
    """(case, its paraphrase as a case with the same expected phrases) for each answerable customer question that has
    a paraphrase."""
    reworded = yaml.safe_load(paraphrases.read_text(encoding="utf-8")) or {}
    pairs = []
    for case in read_cases(questions):
        if case.answerable and case.role == "customer" and case.question in reworded:
            again = case.model_copy(update={"id": f"{case.id}-reworded", "question": reworded[case.question]})
            pairs.append((case, again))
    return pairs


def scratch_workspace(ctx: Context, folder: Path) -> Context:
    """A copy of ``ctx``'s workspace in ``folder`` (backup + restore), with an empty gateway database and no improve
    runs, so what the bench seeds and promotes stays there."""
    backup_workspace(ctx.workspace, folder / "backup", settings=ctx.settings)
    target = folder / "workspace" / ".helpline"
    restore_workspace(folder / "backup", target, settings=ctx.settings)
    shutil.rmtree(folder / "backup")
    scratch = Context(ctx.settings.model_copy(update={"workspace": target}))
    gateway_db(scratch.workspace).unlink(missing_ok=True)
    shutil.rmtree(runs_root(scratch), ignore_errors=True)
    return scratch


class GatewayClient:
    """The gateway app of a workspace in-process (transformers engine): chat as a customer, review as staff.
    ``staff_answers`` off answers every question with the model (what it has learnt), on serves staff corrections
    again as `helpline run` does by default."""

    def __init__(self, ctx: Context, *, staff_answers: bool = False) -> None:
        store = GatewayStore(gateway_db(ctx.workspace))
        self.keys = {role: store.create_key(role, name=f"bench-loop-{role}")[0] for role in ("customer", "staff")}
        settings = ctx.settings.model_copy(deep=True)
        settings.answers.staff_answers = staff_answers
        ctx = Context(settings, workspace=ctx.workspace, registry=ctx.registry)
        self._client = TestClient(build_gateway(ctx, engine="transformers", limits=LIMITS))

    def __enter__(self) -> GatewayClient:
        self._client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.__exit__(*exc)

    def _headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def ask(self, case: AnswerCase) -> tuple[str, ServedAnswer]:
        start = time.perf_counter()
        body = {"model": "helpline-support", "messages": [m.model_dump() for m in case.messages()]}
        r = self._client.post("/v1/chat/completions", json=body, headers=self._headers("customer"))
        r.raise_for_status()
        data = r.json()
        served = ServedAnswer(
            text=data["choices"][0]["message"]["content"], outcome=data.get("outcome", "answered"),
            citations=[c.get("doc_id", "") for c in data.get("citations") or []],
            latency_ms=(time.perf_counter() - start) * 1000,
        )  # fmt: skip
        return data["id"], served

    def correct(self, response_id: str, correction: str) -> None:
        """What staff do in the Review page: the customer's thumbs-down, then the correct answer."""
        r = self._client.post("/v1/feedback", json={"response_id": response_id, "rating": "down"},
                              headers=self._headers("customer"))  # fmt: skip
        r.raise_for_status()
        r = self._client.post(f"/console/review/{response_id}", json={"answer": correction},
                              headers=self._headers("staff"))  # fmt: skip
        r.raise_for_status()


def seed(ask: Ask, correct: Callable[[str, str], None], pairs: list[tuple], *, limit: int) -> tuple[list[Seeded], dict]:
    """Ask every question; correct up to ``limit`` of those not served right (in question order). Returns the seeded
    corrections and how production did on all questions."""
    seeded: list[Seeded] = []
    right = 0
    for case, reworded in pairs:
        rid, served = ask(case)
        if judge(case, served).correct:
            right += 1
            continue
        correction = help_centre_correction(case)
        if correction is None or len(seeded) >= limit:
            continue
        correct(rid, correction)
        seeded.append(Seeded(case, reworded, rid, served.text, correction))
    return seeded, {"asked": len(pairs), "correct_before": right}


def fixed_on(ask: Ask, seeded: list[Seeded]) -> dict[str, bool]:
    """Each seeded correction's paraphrase asked as served: correct or not, by response id of the correction."""
    return {s.response_id: judge(s.paraphrase, ask(s.paraphrase)[1]).correct for s in seeded}


def rate(fixed: dict[str, bool], ids: list[str]) -> float | None:
    picked = [fixed[i] for i in ids if i in fixed]
    return round(sum(picked) / len(picked), 4) if picked else None


def _seed(ctx: Context, pairs: list[tuple], limit: int) -> tuple[list[Seeded], dict, dict[str, bool]]:
    """Seed through a gateway of its own (its models freed when it returns, before training loads others), without
    staff answers (a question corrected earlier in the run must not answer a later one); the paraphrases as the model
    alone answers them."""
    with GatewayClient(ctx) as gw:
        seeded, before_all = seed(gw.ask, gw.correct, pairs, limit=limit)
        return seeded, before_all, fixed_on(gw.ask, seeded)


def _ask_served(ctx: Context, seeded: list[Seeded]) -> dict[str, bool]:
    """The paraphrases as served by default: staff corrections served again to questions asked alike."""
    with GatewayClient(ctx, staff_answers=True) as gw:
        return fixed_on(gw.ask, seeded)


def _ask_model(ctx: Context, seeded: list[Seeded]) -> dict[str, bool]:
    with GatewayClient(ctx) as gw:
        return fixed_on(gw.ask, seeded)


def _rates(ids: list[str], heldout: list[str], *, before: dict, corrected: dict, after: dict, served: dict) -> dict:
    """Paraphrases answered right: by the model alone before, as served once corrected (staff answers), by the model
    alone and as served after the run; the model's before/after also over trained and held-out corrections apart."""
    trained = [i for i in ids if i not in heldout]
    return {
        "before": rate(before, ids), "with_staff_answers": rate(corrected, ids),
        "after": rate(after, ids), "after_served": rate(served, ids),
        "trained_before": rate(before, trained), "trained_after": rate(after, trained),
        "heldout_before": rate(before, heldout), "heldout_after": rate(after, heldout),
        "n": len(ids), "n_heldout": len([i for i in ids if i in heldout]),
    }  # fmt: skip


def run_loop_bench(
    ctx: Context, *, corrections: int, options: ImproveOptions, log: Callable[[str], None], train: bool = True
) -> dict:
    """The bench (see the module docstring) on a scratch copy of ``ctx``'s workspace; returns the figures."""
    if corrections < 1:
        raise ConfigError("--corrections must be at least 1", hint="seed 30 as the issue's target does")
    pairs = paired_cases()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="helpline-bench-loop-") as tmp:
        log("copying the workspace (backup + restore) …")
        scratch = scratch_workspace(ctx, Path(tmp))
        production = scratch.registry.chat_model("production").name
        t = time.perf_counter()
        log(f"asking {len(pairs)} questions as served; correcting up to {corrections} …")
        seeded, before_all, before = _seed(scratch, pairs, corrections)
        seed_s = time.perf_counter() - t
        if not seeded:
            raise ConfigError("production served every question right: nothing to correct",
                              hint="the bench needs questions the production model answers wrong")  # fmt: skip
        log("asking the paraphrases with staff answers …")
        t = time.perf_counter()
        corrected = _ask_served(scratch, seeded)
        corrected_s = time.perf_counter() - t
        result: dict = {"status": "not trained", "production": production, "candidate": None, "gate": None,
                        "steps": {}}  # fmt: skip
        after, after_served, improve_s = before, corrected, 0.0
        if train:
            log("running helpline improve …")
            t = time.perf_counter()
            result = improve(scratch, options)
            improve_s = time.perf_counter() - t
            log(f"improve: {result['status']}; asking the paraphrases again …")
            after, after_served = _ask_model(scratch, seeded), _ask_served(scratch, seeded)
    heldout = ((result["steps"].get("collect") or {}).get("outputs") or {}).get("response_ids", {}).get("heldout", [])
    ids = [s.response_id for s in seeded]
    preference = (result["steps"].get("train_preference") or {}).get("outputs") or {}
    return {
        "corrections_seeded": len(seeded),
        "questions": before_all,
        "production_before": production,
        "production_after": result["production"],
        "status": result["status"],
        "candidate": result["candidate"],
        "paraphrases_fixed": _rates(ids, heldout, before=before, corrected=corrected, after=after, served=after_served),
        "gate": result["gate"],
        "preference": {k: preference.get(k) for k in ("method", "train_pairs", "heldout_pairs", "train_loss")},
        "step_seconds": {name: s["seconds"] for name, s in result["steps"].items()},
        "seed_seconds": round(seed_s, 1),
        "staff_answers_seconds": round(corrected_s, 1),
        "improve_seconds": round(improve_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "seeded": [{"question": s.case.question, "paraphrase": s.paraphrase.question, "served": s.served,
                    "correction": s.correction, "fixed_before": before[s.response_id],
                    "fixed_with_staff_answers": corrected[s.response_id], "fixed_after": after[s.response_id],
                    "fixed_after_served": after_served[s.response_id], "heldout": s.response_id in heldout}
                   for s in seeded],
    }  # fmt: skip
