"""`helpline ask` (one answer in the terminal) and `helpline run` (engine, gateway and UI), added to the root."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

import typer

from helpline.cli.output import console, print_json
from helpline.engines.vllm_external import ExternalVLLM
from helpline.engines.vllm_server import VLLMServer
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.platform.lazy_imports import require
from helpline.platform.processes import die_with_parent, run_until_stopped, stop_group
from helpline.platform.schemas import ChatMessage
from helpline.platform.settings import load_settings
from helpline.retrieval.factory import chroma_server_for
from helpline.serving.factory import (
    build_gateway,
    build_generator,
    build_pipeline,
    build_verifier,
    open_gateway_store,
)
from helpline.serving.gateway.job_runner import JobRunner
from helpline.serving.routing import startup_adapters
from helpline.ui.launch import start_streamlit, streamlit_command

serving_app = typer.Typer()


@serving_app.command("ask")
def ask(
    question: str = typer.Argument(..., help="The customer's question."),
    engine: str = typer.Option(None, help="auto | vllm | transformers (default: settings.engine)."),
    role: str = typer.Option("customer", help="customer sees public articles; staff also internal."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Answer one question with citations, as the gateway serves it (verified, with the fallback and staff's
    corrections). Uses the running engine if `helpline run` is up."""
    ctx = Context.load()
    with console.status("loading the model and the knowledge base"):
        generator = build_generator(ctx, engine=engine)  # type: ignore[arg-type]
        pipeline = build_pipeline(ctx, generator=generator, verifier=build_verifier(ctx), store=open_gateway_store(ctx))
    answer = pipeline.answer([ChatMessage(role="user", content=question)], role=role)
    if as_json:
        print_json(answer.model_dump(exclude={"citations": {"__all__": {"text"}}}))
        return
    console.print(answer.answer, highlight=False)
    for i, c in enumerate(answer.citations, 1):
        console.print(f"  [dim][{i}] {c.title} ({c.doc_id}, score {c.score:.2f})[/]")


def _default_engine(ctx: Context) -> str:
    """vllm when a server runs elsewhere (a gateway image has no vllm package) or vllm is installed."""
    external = ctx.settings.vllm.url is not None
    return "vllm" if external or importlib.util.find_spec("vllm") is not None else "transformers"


def _bootstrap_keys(ctx: Context) -> None:
    """First start: one key per role, printed once (only hashes are stored)."""
    store = open_gateway_store(ctx)
    if store.list_keys():
        console.print("keys: use yours, or create one with `helpline keys create --role customer`")
        return
    console.print("[bold]first start: created one API key per role (shown only now; store them):[/]")
    for role in ("customer", "staff", "engineer", "admin"):
        key, _ = store.create_key(role, name=f"bootstrap-{role}", actor="helpline run")  # type: ignore[arg-type]
        console.print(f"  {role:9s} {key}", highlight=False)


@serving_app.command("run")
def run(
    engine: str = typer.Option(None, help="vllm (supervised server; default when installed) or transformers."),
    host: str = typer.Option(None, help="Gateway interface (default: settings.gateway.host)."),
    port: int = typer.Option(None, help="Gateway port (default: settings.gateway.port)."),
    ui: bool = typer.Option(True, "--ui/--no-ui", help="Also serve the Streamlit app (settings.ui.port)."),
) -> None:
    """Start the engine (supervised vLLM on loopback; with vllm.url, wait for the one run elsewhere), the gateway
    and the UI; Ctrl-C, SIGTERM or SIGHUP stops them (SIGTERM and SIGHUP exit 0: a stop asked for, as systemd and
    `docker stop` ask)."""
    uvicorn = require("uvicorn", "serve")

    ctx = Context.load()
    s = ctx.settings
    engine = engine or _default_engine(ctx)
    host, port = host or s.gateway.host, port or s.gateway.port
    children = _Children(chroma=chroma_server_for(s, ctx.workspace))

    def serve() -> None:
        if children.chroma is not None:
            _start_chroma(children.chroma, ctx)
        if engine == "vllm":
            children.server = _vllm_server(ctx)  # kept before it starts: a failed start is still stopped
            _start_vllm(children.server)
        with console.status("loading the knowledge base and the gateway"):
            app = build_gateway(ctx, server=children.server, engine=engine)  # type: ignore[arg-type]
        url = f"http://{host}:{port}"
        _print_endpoints(url, children.server)
        _bootstrap_keys(ctx)
        children.ui = _start_ui(ctx, gateway_url=f"http://127.0.0.1:{port}") if ui else None
        _print_example_request(url)
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)

    signum = run_until_stopped(serve, children.stop)
    if signum is not None:
        console.print(f"stopped on {signal.Signals(signum).name}")


def _start_chroma(chroma, ctx: Context) -> None:
    """Start the Chroma server the settings ask for (loopback)."""
    r = ctx.settings.retrieval
    with console.status(f"starting the Chroma server on {r.chroma_host}:{r.chroma_port}"):
        chroma.start()
    console.print(f"[green]chroma[/]  server at {chroma.host}:{chroma.port} (loopback; data {chroma.path})")


@serving_app.command("engine")
def engine_only() -> None:
    """Serve only the engine, for gateways on other hosts (vllm.url): the supervised vLLM for the chat model's base
    (restarted when it exits or hangs) with runtime LoRA loading on, bound to vllm.host:vllm.port. The gateways load
    adapters into it. Ctrl-C, SIGTERM or SIGHUP stops it."""
    ctx = Context.load()
    if ctx.settings.vllm.url is not None:
        raise ConfigError(
            f"vllm.url is set ({ctx.settings.vllm.url}): this host is configured to use an engine elsewhere",
            hint="unset vllm.url (HELPLINE_VLLM__URL) on the engine host; set it on the gateways",
        )
    children = _Children()
    stopped = threading.Event()

    def serve() -> None:
        children.server = _vllm_server(ctx)
        _start_vllm(children.server)
        s = ctx.settings.vllm
        console.print(f"[green]engine[/]  vLLM at {children.server.base_url} for {children.server.served_name} "
                      f"(supervised); gateways: vllm.url=http://<this host>:{s.port}")  # fmt: skip
        if s.host in ("127.0.0.1", "localhost", "::1"):
            console.print("[yellow]note:[/] bound to loopback; set vllm.host to the private interface gateways reach")
        stopped.wait()

    signum = run_until_stopped(serve, children.stop)
    if signum is not None:
        console.print(f"stopped on {signal.Signals(signum).name}")


@serving_app.command("worker")
def worker(
    once: bool = typer.Option(False, "--once", help="Run what is queued now, wait for it to end, then exit."),
    every: float = typer.Option(1.0, min=0.1, help="Seconds between looks at the queue and the running jobs."),
) -> None:
    """Run the console's jobs (`helpline train ...` started from the Models page) on this host: claim the queued
    ones from the gateway's database (database_url, shared with the gateways), run them, copy their output into
    it and stop the cancelled ones. For a dedicated worker host, with gateway.job_runner: external on the gateways.
    Ctrl-C, SIGTERM or SIGHUP stops it; the jobs it runs go on, and it watches them again when it starts."""
    ctx = Context.load()
    runner = JobRunner(open_gateway_store(ctx), ctx.workspace)
    if once:
        runner.step()
        while runner.store.jobs(state="running", host=runner.host, limit=1):
            time.sleep(every)
            runner.watch()
        console.print("no job queued or running on this host")
        return
    stopped = threading.Event()
    console.print(f"[green]worker[/]  running console jobs on {runner.host} ({runner.store.location})")
    signum = run_until_stopped(lambda: runner.run(stopped, every_s=every), stopped.set)
    if signum is not None:
        console.print(f"stopped on {signal.Signals(signum).name}")


@serving_app.command("ui")
def ui_only(
    gateway_url: str = typer.Option(None, help="The gateway the app talks to (default: settings.ui.gateway_url)."),
    host: str = typer.Option("127.0.0.1", help="Interface to serve the app on (0.0.0.0 in a container)."),
    port: int = typer.Option(None, help="Port (default: settings.ui.port)."),
) -> None:
    """Serve only the Streamlit app, in the foreground, for a gateway elsewhere (the UI image's command). It talks to
    the gateway only, with the key each user signs in with; it needs neither torch nor a workspace."""
    s = load_settings()
    url = (gateway_url or s.ui.gateway_url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"gateway url {url!r} is not an address", hint="e.g. --gateway-url http://gateway:8000")
    require("streamlit", "ui")
    command = streamlit_command(port or s.ui.port, host=host)
    console.print(f"[green]ui[/]      http://{host}:{port or s.ui.port}  (gateway {url})")
    os.execvpe(command[0], command, {**os.environ, "HELPLINE_UI__GATEWAY_URL": url})  # Streamlit gets the signals


def _vllm_server(ctx: Context) -> VLLMServer | ExternalVLLM:
    """The engine (not started): the supervised vLLM server for the chat model's base, or the one at vllm.url; with
    the adapters to load at start."""
    s = ctx.settings
    record = ctx.registry.chat_model(s.chat_model)
    if s.vllm.url is not None:
        base_name = record.base_model if record.kind == "adapter" and record.base_model else record.name
        return ExternalVLLM(
            served_name=base_name,
            settings=s.vllm,
            workspace_root=ctx.workspace.root,
            lora_modules=startup_adapters(ctx.registry, base_name, chat_model=record.name),
        )
    base = ctx.registry.base_of(record)
    return VLLMServer(
        model_path=base.path,
        served_name=base.name,
        settings=s.vllm,
        log_path=ctx.workspace.logs / "vllm.log",
        lora_modules=startup_adapters(ctx.registry, base.name, chat_model=record.name),
    )


def _start_vllm(server) -> None:
    """Start vLLM, showing where it logs while it loads (or wait for the one run elsewhere)."""
    if isinstance(server, ExternalVLLM):
        status = f"waiting for the vLLM server at {server.root_url} ({server.served_name})"
    else:
        status = f"starting vLLM for {server.served_name} (about a minute on CPU; log: {server.log_path})"
    with console.status(status):
        server.start()


def _print_endpoints(url: str, server) -> None:
    """Where the gateway listens and which engine answers."""
    api = f"OpenAI-compatible base_url: {url}/v1; {url}/openapi.json with an engineer key"
    console.print(f"[green]gateway[/] {url}  ({api})")
    if isinstance(server, ExternalVLLM):
        console.print(f"[green]engine[/]  vLLM at {server.base_url} (run elsewhere; adapters loaded at run time)")
    elif server is not None:
        console.print(f"[green]engine[/]  vLLM at {server.base_url} (loopback only; supervised)")
    else:
        console.print("[green]engine[/]  transformers, in-process")


def _print_example_request(url: str) -> None:
    """A curl command that asks the gateway one question."""
    console.print(
        f"try: curl -s {url}/v1/chat/completions -H 'authorization: Bearer <customer key>' "
        "-H 'content-type: application/json' "
        '-d \'{"model":"helpline-support","messages":[{"role":"user","content":"How do I return an item?"}]}\''
    )


@dataclass
class _Children:
    """What `helpline run` started, each kept as soon as it exists so that however `run` ends, it is stopped."""

    chroma: Any = None
    server: VLLMServer | ExternalVLLM | None = None
    ui: subprocess.Popen | None = None

    def stop(self) -> None:
        """Stop them, the UI first and the Chroma server last."""
        if self.ui is not None:
            stop_group(self.ui, timeout_s=30)
        if self.server is not None:
            self.server.stop()
        if self.chroma is not None:
            self.chroma.stop()
        console.print("stopped")


def _start_ui(ctx: Context, *, gateway_url: str):
    """Serve the Streamlit app beside the gateway; it only talks to the gateway over HTTP."""
    port = ctx.settings.ui.port
    process = start_streamlit(gateway_url, port, log_path=ctx.workspace.logs / "ui.log", preexec_fn=die_with_parent)
    console.print(f"[green]ui[/]      http://127.0.0.1:{port}  (sign in with a key above)")
    return process
