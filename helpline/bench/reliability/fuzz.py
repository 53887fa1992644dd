"""`helpline bench reliability --section fuzz`: schemathesis against the gateway's own OpenAPI description,
once per role's key (and once with no key), every operation, valid and invalid data.

What counts: a 5xx (schemathesis's ``not_a_server_error``) is a server error, reported with the smallest
request Hypothesis shrank it to and a curl line that repeats it. Other check failures (a 2xx whose body
breaks its documented schema, a wrong content type, invalid data accepted) are reported apart; they are
findings, not crashes. The gateway documents FastAPI's 422 but answers every refusal the OpenAI way (400,
401, 403, 404, 413), so undocumented statuses are counted, not failed.

Operations that would break the run for the sections that follow (revoke keys, delete or mirror the
knowledge base, move an alias, start a job) are sent only with keys the route refuses: that still
fuzzes their authorization, and never their effect. Documents the fuzzer manages to add are removed
and the canary share is put back when it ends.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from helpline.platform.errors import ConfigError
from helpline.platform.lazy_imports import require
from helpline.serving.gateway.store import ROLE_RANK

#: Keys the fuzzer runs with, lowest first; ``anonymous`` sends none.
ROLES = ("anonymous", "customer", "staff", "engineer", "admin")
#: A fuzzed chat asks for at most this many tokens: the point is the request path, not the model's prose.
CHAT_TOKENS = 16
REQUEST_TIMEOUT_S = 180.0
#: schemathesis settings (its TOML keys): 413 is how the gateway refuses a body over its size limit, which is
#: a rejection of invalid data like 400 (schemathesis's list lacks it).
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}


class Live(Protocol):
    """What the fuzzer needs of a running helpline (``LiveHelpline`` in ``harness.py``)."""

    base_url: str
    keys: dict[str, str]


@dataclass(frozen=True)
class Guarded:
    """An operation whose effect would break the run: fuzzed only with keys below ``allowed_from``."""

    method: str
    path: str
    allowed_from: str
    reason: str


GUARDED = (
    Guarded("DELETE", "/admin/keys/{key_id}", "admin", "revokes API keys, the bench's own among them"),
    Guarded("DELETE", "/admin/kb/documents/{doc_id}", "staff", "deletes the documents the other sections ask about"),
    Guarded("POST", "/admin/kb/sync", "admin", "mirrors a server folder into the knowledge base, deleting the rest"),
    Guarded("POST", "/admin/models/rollback", "engineer", "moves the production alias to an earlier model"),
    Guarded("POST", "/admin/models/promote", "engineer", "loads a model into the engine and moves an alias"),
    Guarded("POST", "/console/jobs", "engineer", "starts data/train/eval jobs on the cores serving needs"),
)


class ServerErrorFound(Exception):
    """Raised inside the Hypothesis test on a 5xx, so that Hypothesis shrinks the request."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(f"{report['method']} {report['path']} -> {report['status']}")
        self.report = report


@dataclass
class Tally:
    """What one role's run saw."""

    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    server_errors: list[dict[str, Any]] = field(default_factory=list)
    check_failures: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    undocumented: dict[str, set[str]] = field(default_factory=dict)
    no_invalid_input: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    added_docs: set[str] = field(default_factory=set)

    def add_server_error(self, report: dict[str, Any]) -> None:
        """One report per operation and status: the same fault found again (by invalid data, after the
        valid data found it) only adds its mode to the first report."""
        for known in self.server_errors:
            if (known["method"], known["path"], known["status"]) == (
                report["method"],
                report["path"],
                report["status"],
            ):
                known["modes"] = sorted({*known["modes"], report["mode"]})
                return
        self.server_errors.append({**report, "modes": [report["mode"]]})

    def summary(self, operations: int) -> dict[str, Any]:
        return {
            "operations": operations,
            "cases": self.cases,
            "server_errors": self.server_errors,
            "check_failures": {
                name: {"count": len(found), "examples": list({f["operation"]: f for f in found}.values())[:5]}
                for name, found in sorted(self.check_failures.items())
            },
            "statuses": dict(sorted((str(k), v) for k, v in self.statuses.items())),
            # status -> how many operations answered it without documenting it
            "undocumented_statuses": {s: len(ops) for s, ops in sorted(self.undocumented.items())},
            "no_invalid_input": self.no_invalid_input,
            "skipped": self.skipped,
        }


def run_fuzz(
    live: Live, *, max_examples: int = 25, roles: tuple[str, ...] = ROLES, only: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Fuzz every operation of ``live``'s gateway (or those ``only`` names, as "GET /v1/models") with each
    role's key; see the module docstring. ``max_examples`` is per operation, role and mode (valid data,
    then invalid data)."""
    st = require("schemathesis", "dev")
    started = time.perf_counter()
    raw = fetch_openapi(live)
    schema = st.openapi.from_dict(raw, config=st.Config.from_dict(CONFIG))
    operations = [r.ok() for r in schema.get_all_operations() if hasattr(r, "ok")]
    operations = [op for op in operations if not only or f"{op.method.upper()} {op.path}" in only]
    operations.sort(key=lambda op: (_guard(op) is not None, op.path, op.method))  # guarded ones last
    share = _canary_share(live)
    report: dict[str, Any] = {"roles": {}, "max_examples": max_examples, "schemathesis": st.__version__}
    added: set[str] = set()
    try:
        for role in roles:
            tally, fuzzed = Tally(), 0
            for op in operations:
                guard = _guard(op)
                if guard is not None and role != "anonymous" and ROLE_RANK[role] >= ROLE_RANK[guard.allowed_from]:
                    tally.skipped.append({"operation": f"{op.method.upper()} {op.path}", "reason": guard.reason})
                    continue
                fuzzed += 1
                modes = [st.GenerationMode.POSITIVE]
                if _has_invalid_input(op):
                    modes.append(st.GenerationMode.NEGATIVE)
                else:
                    tally.no_invalid_input.append(f"{op.method.upper()} {op.path}")
                for mode in modes:
                    _fuzz_operation(op, mode, live=live, role=role, tally=tally, max_examples=max_examples)
            report["roles"][role] = tally.summary(fuzzed)
            added |= tally.added_docs
    finally:
        report["cleanup"] = _clean_up(live, added, share)
    report["excluded"] = [
        {"operation": f"{g.method} {g.path}", "fuzzed_with": [r for r in roles if _refused(r, g)], "reason": g.reason}
        for g in GUARDED
    ]
    report["operations"] = len(operations)
    report["cases"] = sum(r["cases"] for r in report["roles"].values())
    report["server_errors"] = sum(len(r["server_errors"]) for r in report["roles"].values())
    report["passed"] = report["server_errors"] == 0  # the target: no 5xx under fuzzing
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def fetch_openapi(live: Live) -> dict[str, Any]:
    """The gateway's OpenAPI description (served to engineer keys only)."""
    key = live.keys.get("engineer") or live.keys.get("admin")
    if key is None:
        raise ConfigError("fuzzing needs an engineer or admin key to read /openapi.json", hint="pass one in keys")
    response = httpx.get(f"{live.base_url}/openapi.json", headers=_auth(key), timeout=30)
    response.raise_for_status()
    return response.json()


def _fuzz_operation(op: Any, mode: Any, *, live: Live, role: str, tally: Tally, max_examples: int) -> None:
    """One operation in one mode for one role. A 5xx stops it and Hypothesis shrinks it to the smallest
    request that still fails; other check failures are recorded and generation goes on."""
    hypothesis = require("hypothesis", "dev")
    requests = require("requests", "dev")
    session = requests.Session()
    headers = _auth(live.keys[role]) if role != "anonymous" else {}
    label = f"{op.method.upper()} {op.path}"

    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run, so two runs compare
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=(hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink),
        report_multiple_bugs=False,
        verbosity=hypothesis.Verbosity.quiet,
    )
    @hypothesis.given(case=op.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        _tame(case)
        response = _send(case, live.base_url, session, headers)
        tally.cases += 1
        tally.statuses[response.status_code] += 1
        _record(case, response, role=role, mode=mode.value, tally=tally, headers=headers)

    try:
        fuzz()
    except ServerErrorFound as e:
        tally.add_server_error(e.report)
    except hypothesis.errors.FlakyFailure as e:  # failed once, not again while shrinking: still a 5xx
        for found in [x.report for x in e.exceptions if isinstance(x, ServerErrorFound)][:1]:
            tally.add_server_error({**found, "flaky": True})
    except hypothesis.errors.Unsatisfiable as e:
        if mode.value == "negative":  # nothing in the request can be invalid (no parameters, any string)
            tally.no_invalid_input.append(label)
        else:
            tally.skipped.append({"operation": label, "reason": f"{type(e).__name__}: {e}"[:300]})
    except hypothesis.errors.InvalidArgument as e:
        tally.skipped.append({"operation": label, "reason": f"{mode.value}: {type(e).__name__}: {e}"[:300]})
    except requests.RequestException as e:  # the gateway did not answer at all
        tally.add_server_error({"method": op.method.upper(), "path": op.path, "status": None, "mode": mode.value,
                                "role": role, "error": f"{type(e).__name__}: {e}"[:500]})  # fmt: skip
    finally:
        session.close()


def _send(case: Any, base_url: str, session: Any, headers: dict[str, str]) -> Any:
    """Send the case; one polite retry when the per-key rate limit answers 429 with a short Retry-After."""
    response = case.call(base_url=base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S)
    wait = response.headers.get("retry-after", "")
    if response.status_code == 429 and wait.isdigit() and int(wait) <= 10:
        time.sleep(int(wait))
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S)
    return response


def _record(case: Any, response: Any, *, role: str, mode: str, tally: Tally, headers: dict[str, str]) -> None:
    """Run the checks on one response; raise ServerErrorFound on a 5xx, record the other failures."""
    st = require("schemathesis", "dev")
    openapi_checks = require("schemathesis.specs.openapi.checks", "dev")
    checks = [st.checks.not_a_server_error, openapi_checks.response_schema_conformance,
              openapi_checks.content_type_conformance]  # fmt: skip
    if mode == "negative":
        checks.append(openapi_checks.negative_data_rejection)
    status = response.status_code
    if str(status) not in case.operation.definition.raw.get("responses", {}):
        tally.undocumented.setdefault(str(status), set()).add(f"{case.method.upper()} {case.path}")
    _note_added_document(case, response, tally)
    try:
        case.validate_response(response, checks=checks, headers=headers)
    except st.errors.SchemathesisError:
        raise
    except BaseExceptionGroup as group:
        failures = list(group.exceptions)
        for failure in failures:
            if type(failure).__name__ == "ServerError":
                raise ServerErrorFound(_server_error(case, response, role=role, mode=mode)) from None
        for failure in failures:
            tally.check_failures.setdefault(type(failure).__name__, []).append(
                {
                    "operation": f"{case.method.upper()} {case.path}",
                    "status": status,
                    "mode": mode,
                    "message": str(getattr(failure, "title", "")) or str(failure)[:300],
                }
            )


def _server_error(case: Any, response: Any, *, role: str, mode: str) -> dict[str, Any]:
    """A 5xx as a report: the request (body, query, path parameters), the answer, and a curl line that
    repeats it (add ``-H 'Authorization: Bearer <the role's key>'``; keys never go into reports)."""
    return {
        "method": case.method.upper(),
        "path": case.path,
        "url_path": case.formatted_path,
        "role": role,
        "mode": mode,
        "status": response.status_code,
        "query": case.query or None,
        "body": None if _is_unset(case.body) else case.body,
        "response": response.text[:1000],
        "request_id": _request_id(response),  # the gateway's log has the traceback under it
        "curl": case.as_curl_command(),
    }


def _tame(case: Any) -> None:
    """Cap the tokens a fuzzed chat may ask for (a valid request may ask for the gateway's maximum, and
    generating it on CPU would spend the run on prose)."""
    body = case.body
    if case.path == "/v1/chat/completions" and isinstance(body, dict):
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > CHAT_TOKENS:
                body[name] = CHAT_TOKENS


def _note_added_document(case: Any, response: Any, tally: Tally) -> None:
    """Remember documents a fuzzed upload added, to remove them when fuzzing ends."""
    if response.status_code != 200 or case.method.upper() != "POST":
        return
    if case.path == "/admin/kb/documents" and isinstance(case.body, dict):
        tally.added_docs |= {d["doc_id"] for d in case.body.get("documents", []) if isinstance(d, dict)}
    elif case.path == "/console/kb/files":
        tally.added_docs.add(response.json().get("doc_id", ""))
    tally.added_docs.discard("")


def _clean_up(live: Live, added: set[str], canary_share: float | None) -> dict[str, Any]:
    """Remove the documents fuzzing added and put the canary share back."""
    removed, failed = [], []
    headers = _auth(live.keys.get("admin") or live.keys["staff"])
    with httpx.Client(base_url=live.base_url, headers=headers, timeout=60) as client:
        for doc_id in sorted(added):
            response = client.delete(f"/admin/kb/documents/{doc_id}")
            (removed if response.status_code < 400 else failed).append(doc_id)
        if canary_share is not None:
            client.put("/admin/models/canary", json={"percent": canary_share})
    return {"documents_removed": removed, "documents_not_removed": failed, "canary_share_restored": canary_share}


def _canary_share(live: Live) -> float | None:
    key = live.keys.get("engineer") or live.keys.get("admin")
    if key is None:
        return None
    response = httpx.get(f"{live.base_url}/admin/models", headers=_auth(key), timeout=30)
    return response.json().get("canary_share") if response.status_code == 200 else None


def _has_invalid_input(op: Any) -> bool:
    """Whether a request to ``op`` can be invalid: it takes a body, or a parameter that is not any string
    at all (Hypothesis would spend a thousand draws before finding there is no invalid request)."""
    raw = op.definition.raw
    plain = ({}, {"type": "string"})
    return "requestBody" in raw or any(
        {k: v for k, v in p.get("schema", {}).items() if k != "title"} not in plain for p in raw.get("parameters", [])
    )


def _guard(op: Any) -> Guarded | None:
    return next((g for g in GUARDED if g.method == op.method.upper() and g.path == op.path), None)


def _refused(role: str, guard: Guarded) -> bool:
    return role == "anonymous" or ROLE_RANK[role] < ROLE_RANK[guard.allowed_from]


def _request_id(response: Any) -> str | None:
    try:
        return response.json()["error"].get("request_id")
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.headers.get("x-request-id")


def _is_unset(value: Any) -> bool:
    return type(value).__name__ == "NotSet"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
