"""HTML reports: summary table, per-category plots (matplotlib, embedded PNG), failing cases side by side."""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from helpline.evaluation.regression.runner import CaseResult, SuiteResult
from helpline.platform.lazy_imports import require

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;vertical-align:top}
.pass{color:#176f2c;font-weight:600}.fail{color:#b00020;font-weight:600}
.answer{white-space:pre-wrap;font-size:.9em;max-width:480px}
"""


@dataclass
class Check:
    """One comparison of the gate."""

    name: str
    candidate: float
    baseline: float | None
    limit: str
    passed: bool


@dataclass
class GateReport:
    """The gate's verdict, its checks, and where the HTML report is."""

    candidate: str
    baseline: str
    passed: bool
    checks: list[Check]
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    report_path: str = ""
    at: float = field(default_factory=time.time)
    tracking: dict[str, Any] | None = None  # the gate's tracked run (platform/tracking.py), once logged

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def category_plot(cand: SuiteResult, base: SuiteResult) -> str:
    """Per category: pass rate (solid) and mean case score (hatched), baseline vs candidate, as a base64 PNG."""
    matplotlib = require("matplotlib", "eval")

    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "eval")

    c, b = cand.summary()["categories"], base.summary()["categories"]
    cats = sorted(set(c) | set(b))
    xs = range(len(cats))
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(cats) + 2), 3))
    bars = [("baseline", b, -0.3, "tab:blue"), ("candidate", c, 0.1, "tab:orange")]
    for label, data, offset, color in bars:
        ax.bar(
            [x + offset for x in xs],
            [data.get(k, {}).get("pass_rate", 0) for k in cats],
            0.2,
            color=color,
            label=f"{label} pass rate",
        )
        ax.bar(
            [x + offset + 0.2 for x in xs],
            [data.get(k, {}).get("mean_score", 0) for k in cats],
            0.2,
            color=color,
            alpha=0.5,
            hatch="//",
            label=f"{label} mean score",
        )
    ax.set_xticks(list(xs), cats, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(cand.suite)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _case_cell(case: CaseResult | None) -> str:
    if case is None:
        return "<td>—</td>"
    reasons = "<br>".join(
        f"<span class='{'pass' if s.passed else 'fail'}'>{html.escape(s.name)}</span>: {html.escape(s.reason)}"
        for s in case.scores
    )
    cited = html.escape(", ".join(case.citations) or "none")
    hall = "" if case.hallucination is None else f"<br>hallucination {case.hallucination:.2f}"
    return (
        f"<td><div class='answer'>{html.escape(case.answer)}</div><small>cited: {cited}{hall}<br>{reasons}</small></td>"
    )


def _row(*cells: object, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def write_gate_report(report: GateReport, cand: list[SuiteResult], base: list[SuiteResult], path: Path) -> Path:
    """Write the gate's HTML report to ``path`` and return it."""
    verdict = "PASSED" if report.passed else "FAILED"
    css = "pass" if report.passed else "fail"
    title = f"{html.escape(report.candidate)} vs {html.escape(report.baseline)}"
    parts = [f"<html><head><meta charset='utf-8'><title>gate {title}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>Gate: {title} — <span class='{css}'>{verdict}</span></h1>")
    parts.append("<h2>Checks</h2><table>" + _row("check", "candidate", "baseline", "limit", "", header=True))
    for c in report.checks:
        base_value = "" if c.baseline is None else f"{c.baseline:.3f}"
        mark = "<span class='pass'>ok</span>" if c.passed else "<span class='fail'>REGRESSION</span>"
        parts.append(_row(html.escape(c.name), f"{c.candidate:.3f}", base_value, html.escape(c.limit), mark))
    parts.append("</table>")
    for cr, br in zip(cand, base):
        cs, bs = cr.summary(), br.summary()
        parts.append(f"<h2>Suite {html.escape(cr.suite)}</h2><table>" + _row("", "baseline", "candidate", header=True))
        for key in ("n", "pass_rate", "mean_score", "abstention_rate", "hallucination_mean", "median_latency_ms"):
            parts.append(_row(key, bs[key], cs[key]))
        for name in sorted(set(cs["evaluators"]) | set(bs["evaluators"])):
            parts.append(
                _row(f"mean {html.escape(name)}", bs["evaluators"].get(name, ""), cs["evaluators"].get(name, ""))
            )
        plot = category_plot(cr, br)
        parts.append(f"</table><img alt='pass rate per category' src='data:image/png;base64,{plot}'>")
        base_by_id = {c.id: c for c in br.cases}
        failing = [c for c in cr.cases if not c.passed]
        parts.append(f"<h3>Failing candidate cases ({len(failing)})</h3>")
        if failing:
            parts.append("<table><tr><th>case</th><th>baseline</th><th>candidate</th></tr>")
            for c in failing:
                parts.append(
                    f"<tr><td><b>{html.escape(c.id)}</b><br><small>{html.escape(c.category)}</small><br>{html.escape(c.question)}</td>{_case_cell(base_by_id.get(c.id))}{_case_cell(c)}</tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
