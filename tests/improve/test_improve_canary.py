"""The canary step: a candidate not worse than production is promoted, a worse one rolled back, an undecided one
left running at the canary step for the next run to look at again."""

from __future__ import annotations

from improve_support import BALANCED, FEW, WORSE, Loop, options, seed_correction

from helpline.improve.run import improve
from helpline.platform.runs import read_state


def seed(loop: Loop) -> None:
    for doc in ("refunds", "address", "express"):
        seed_correction(loop.store, doc)


def share_changes(loop: Loop) -> list[float]:
    return [e["detail"]["percent"] for e in reversed(loop.store.audit_log(1000)) if e["action"] == "model.canary_share"]


def test_a_canary_not_worse_than_production_is_promoted_and_gets_no_more_share(loop: Loop) -> None:
    seed(loop)
    loop.arms.looks = [(BALANCED, BALANCED)]

    result = improve(loop.ctx, options(canary_share=25.0), parts=loop.parts())

    candidate = result["candidate"]
    assert result["status"] == "promoted" and result["canary"]["decision"] == "promote"
    assert loop.ctx.registry.aliases() == {"production": candidate, "canary": candidate}
    assert share_changes(loop) == [25.0, 0.0] and loop.store.get_setting("canary_share") == "0.0"
    assert loop.arms.asked[0] == {"production": "base", "canary": candidate, "since": loop.clock.t}
    history = loop.ctx.registry.alias_history("production")
    assert (history[-1].model_name, history[-1].previous, history[-1].actor) == (candidate, "base", "helpline improve")
    promoted = [e for e in loop.store.audit_log() if e["action"] == "model.promote" and e["target"] == "production"]
    assert promoted and promoted[0]["actor"] == "helpline improve" and promoted[0]["detail"]["model_name"] == candidate


def test_a_canary_worse_than_production_is_rolled_back_and_production_stays(loop: Loop) -> None:
    seed(loop)
    loop.arms.looks = [(BALANCED, WORSE)]

    result = improve(loop.ctx, options(), parts=loop.parts())

    assert result["status"] == "rolled_back" and "thumbs_down" in result["canary"]["reasons"][0]
    assert loop.ctx.registry.aliases() == {"production": "base", "canary": "base"}  # the canary alias cleared
    assert share_changes(loop) == [10.0, 0.0]
    assert "model.canary_cleared" in loop.actions() and loop.actions()[-1] == "improve.canary"


def test_an_undecided_canary_keeps_the_run_at_its_canary_step_until_a_later_run_decides(loop: Loop) -> None:
    seed(loop)
    loop.arms.looks = [(BALANCED, FEW)]

    pending = improve(loop.ctx, options(canary_wait_s=120.0, canary_poll_s=60.0), parts=loop.parts())

    assert pending["status"] == "canary_pending" and pending["canary"]["action"] == "continue"
    assert len(loop.arms.asked) == 3 and loop.clock.slept == [60.0, 60.0]  # looked at 0 s, 60 s and 120 s
    state = read_state(loop.ctx.workspace.root / "runs" / "improve" / pending["run"])
    assert state is not None and state.steps["canary"].status == "failed"
    assert state.steps["canary"].error.startswith("CanaryPending")
    assert [n for n, r in state.steps.items() if r.status == "done"][-1] == "canary_start"
    assert loop.ctx.registry.aliases()["production"] == "base"
    assert loop.store.get_setting("canary_share") == "10.0" and "improve.canary.pending" in loop.actions()

    loop.arms.looks.append((BALANCED, BALANCED))  # the traffic since made it clear
    done = improve(loop.ctx, options(), parts=loop.parts())

    assert done["resumed"] and done["run"] == pending["run"] and done["status"] == "promoted"
    assert loop.training.count("sft") == 1 and loop.training.count("export") == 1 and len(loop.gate.calls) == 1
    assert loop.arms.asked[-1]["since"] == loop.arms.asked[0]["since"]  # counted from the canary's start
    assert loop.ctx.registry.aliases()["production"] == done["candidate"]


def test_a_canary_is_rolled_back_when_production_moved_meanwhile(loop: Loop) -> None:
    seed(loop)
    loop.arms.looks = [(BALANCED, FEW)]
    pending = improve(loop.ctx, options(), parts=loop.parts())
    (loop.ctx.workspace.root / "other").mkdir()
    loop.ctx.registry.register_model("other", kind="base", path=loop.ctx.workspace.root / "other")
    loop.ctx.registry.set_alias("production", "other", actor="admin")

    done = improve(loop.ctx, options(), parts=loop.parts())

    assert done["run"] == pending["run"] and done["status"] == "rolled_back"
    assert "production moved to other" in done["canary"]["reasons"][0]
    assert loop.ctx.registry.aliases() == {"production": "other", "canary": "other"}
