"""The UI's HTTP client for the gateway: one method per call, errors as readable GatewayErrors.

Only httpx and helpline.platform are imported, so the UI image needs no torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from helpline.platform.errors import HelplineError
from helpline.platform.schemas import ChatMessage, Citation

UIRole = Literal["customer", "staff", "engineer", "admin"]
#: The gateway's role order (a higher role may do everything a lower one may).
ROLE_RANK: dict[str, int] = {"customer": 0, "staff": 1, "engineer": 2, "admin": 3}


class GatewayError(HelplineError):
    """The gateway refused or failed a call; ``message`` is the gateway's own explanation."""

    def __init__(self, message: str, *, status: int = 0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.http_status = status


class GatewayUnavailable(GatewayError):
    """Nothing answers at the gateway's address (stopped, starting, or a wrong URL)."""


@dataclass(frozen=True)
class Principal:
    """Who the signed-in key belongs to, as the gateway reports it."""

    id: int
    role: UIRole
    name: str = ""
    prefix: str = ""

    def may(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


@dataclass
class ChatStream:
    """One streamed answer: iterate for text deltas; afterwards the final event's fields are set."""

    response: Any
    response_id: str = ""
    conversation_id: str = ""
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False
    verification: dict[str, Any] = field(default_factory=dict)
    #: answered (generated), fallback (the help centre quoted) or handoff (no answer; how to reach a person).
    outcome: str = "answered"

    def __iter__(self) -> Iterator[str]:
        try:
            for line in self.response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    err = event["error"]
                    raise GatewayError(f"the answer stopped: {err.get('message', 'unknown error')}", status=500)
                self.response_id = event.get("id", self.response_id)
                delta = event["choices"][0]["delta"].get("content")
                if delta:
                    yield delta
                if "citations" in event:
                    self.citations = [Citation(**c) for c in event["citations"]]
                    self.abstained = bool(event.get("abstained"))
                    self.conversation_id = event.get("conversation_id", "")
                    self.verification = event.get("verification") or {}
                    self.outcome = event.get("outcome", "handoff" if self.abstained else "answered")
        except httpx.TransportError as e:
            raise GatewayUnavailable(f"the connection to the gateway broke mid-answer ({type(e).__name__})") from e
        finally:
            self.response.close()


class GatewayClient:
    """Calls the gateway with one API key. Every failure becomes a GatewayError."""

    def __init__(
        self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0, transport: Any = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        # Generation on a CPU can take minutes; the gateway itself gives up after its upstream timeout.
        self._chat_timeout = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=5.0)

    def close(self) -> None:
        self._http.close()

    # plumbing -------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise self._unavailable(e) from e
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _unavailable(self, e: Exception) -> GatewayUnavailable:
        return GatewayUnavailable(
            f"the helpline gateway at {self.base_url} is not answering ({type(e).__name__})",
            hint="it may still be starting or be stopped: start it with `helpline run`, then try again",
        )

    # health and identity ----------------------------------------------------------------------

    def health(self) -> bool:
        """True when the gateway process answers (no key needed)."""
        try:
            return self._http.get("/health", timeout=3.0).status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> dict[str, Any]:
        """Readiness of engine, index and embedder (``{"ready": bool, "checks": {...}}``)."""
        try:
            response = self._http.get("/ready", timeout=5.0)
        except httpx.TransportError as e:
            raise self._unavailable(e) from e
        return response.json()

    def whoami(self) -> Principal:
        data = self._json("GET", "/console/whoami")
        return Principal(id=data["id"], role=data["role"], name=data.get("name", ""), prefix=data.get("prefix", ""))

    # chat -------------------------------------------------------------------------------------

    def chat_stream(self, messages: list[ChatMessage], *, conversation_id: str | None = None) -> ChatStream:
        """Start a streamed answer; refusals (limits, auth) raise here, before any text."""
        body: dict[str, Any] = {
            "model": "helpline-support",
            "stream": True,
            "messages": [m.model_dump() for m in messages],
        }
        if conversation_id:
            body["conversation_id"] = conversation_id
        request = self._http.build_request("POST", "/v1/chat/completions", json=body, timeout=self._chat_timeout)
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as e:
            raise self._unavailable(e) from e
        if response.status_code >= 400:
            response.read()
            response.close()
            raise _error_from(response)
        return ChatStream(response)

    def passages(self, response_id: str) -> list[Citation]:
        """The passages an answer was based on, with their text."""
        data = self._json("GET", f"/console/responses/{response_id}/passages")
        return [Citation(**p) for p in data["passages"]]

    def feedback(self, response_id: str, rating: Literal["up", "down"], comment: str = "") -> dict[str, Any]:
        return self._json(
            "POST", "/v1/feedback", json={"response_id": response_id, "rating": rating, "comment": comment}
        )

    # knowledge base ---------------------------------------------------------------------------

    def kb_documents(self) -> list[dict[str, Any]]:
        return self._json("GET", "/console/kb/documents")["documents"]

    def upload_file(self, filename: str, content: bytes, *, access: str | None = None) -> dict[str, Any]:
        params = {"filename": filename, **({"access": access} if access else {})}
        return self._json("POST", "/console/kb/files", params=params, content=content, timeout=300.0)

    def delete_document(self, doc_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/admin/kb/documents/{doc_id}")

    def resync(self) -> dict[str, Any]:
        return self._json("POST", "/console/kb/resync", timeout=600.0)

    def kb_search(self, query: str, *, k: int = 5, role: str = "customer") -> dict[str, Any]:
        return self._json("GET", "/console/kb/search", params={"q": query, "k": k, "role": role})

    def kb_versions(self) -> list[dict[str, Any]]:
        return self._json("GET", "/console/kb/versions")["versions"]

    def connectors(self) -> list[dict[str, Any]]:
        return self._json("GET", "/admin/kb/connectors")["connectors"]

    def add_connector(self, name: str, source: str, every: str) -> dict[str, Any]:
        return self._json("POST", "/admin/kb/connectors", json={"name": name, "source": source, "every": every})

    def remove_connector(self, name: str) -> dict[str, Any]:
        return self._json("DELETE", f"/admin/kb/connectors/{name}")

    def sync_connector(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/admin/kb/connectors/{name}/sync", timeout=600.0)

    # review -----------------------------------------------------------------------------------

    def review_queue(self, status: str = "open") -> list[dict[str, Any]]:
        return self._json("GET", "/console/review", params={"status": status})["items"]

    def save_review(self, response_id: str, answer: str) -> dict[str, Any]:
        return self._json("POST", f"/console/review/{response_id}", json={"answer": answer})

    # models -----------------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        return self._json("GET", "/admin/models")

    def alias_history(self) -> dict[str, list[dict[str, Any]]]:
        return self._json("GET", "/console/models/history")["history"]

    def promote(self, name: str, alias: str) -> dict[str, Any]:
        return self._json("POST", "/admin/models/promote", json={"name": name, "alias": alias}, timeout=600.0)

    def rollback(self, alias: str) -> dict[str, Any]:
        return self._json("POST", "/admin/models/rollback", json={"alias": alias}, timeout=600.0)

    def set_canary(self, percent: float) -> dict[str, Any]:
        return self._json("PUT", "/admin/models/canary", json={"percent": percent})

    def reports(self) -> list[dict[str, Any]]:
        return self._json("GET", "/console/reports")["reports"]

    def report_file(self, path: str) -> tuple[str, bytes]:
        """(content type, bytes) of one report file."""
        response = self._send("GET", "/console/reports/file", params={"path": path})
        return response.headers.get("content-type", ""), response.content

    def job_commands(self) -> list[str]:
        return self._json("GET", "/console/jobs/commands")["commands"]

    def start_job(self, command: str, args: list[str]) -> dict[str, Any]:
        return self._json("POST", "/console/jobs", json={"command": command, "args": args})

    def jobs(self) -> list[dict[str, Any]]:
        return self._json("GET", "/console/jobs")["jobs"]

    def job(self, job_id: str, *, tail: int = 200) -> dict[str, Any]:
        return self._json("GET", f"/console/jobs/{job_id}", params={"tail": tail})

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/console/jobs/{job_id}/cancel")


def _error_from(response: httpx.Response) -> GatewayError:
    """The gateway's OpenAI-shaped error body as a GatewayError (or the raw status if it has none)."""
    status = response.status_code
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"the gateway answered HTTP {status}"
    hints = {
        401: "sign in again with a valid API key",
        403: "ask an administrator for a key with this role",
        429: "wait a moment and try again",
        503: "the assistant is busy or starting; try again in a minute",
        504: "the model took too long; try again",
    }
    return GatewayError(message, status=status, hint=hints.get(status))
