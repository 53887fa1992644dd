"""`helpline ask` and `helpline run`."""

from __future__ import annotations

import typer

from helpline.platform.cli import console, print_json
from helpline.platform.context import Context
from helpline.platform.schemas import ChatMessage

serving_app = typer.Typer()


@serving_app.command("ask")
def ask(
    question: str = typer.Argument(..., help="The customer's question."),
    engine: str = typer.Option(None, help="auto | vllm | transformers (default: settings.engine)."),
    role: str = typer.Option("customer", help="customer sees public articles; staff also internal."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Answer one question with citations. Uses the running engine if `helpline run` is up."""
    from helpline.serving.factory import build_generator, build_pipeline

    ctx = Context.load()
    with console.status("loading the model and the knowledge base"):
        generator = build_generator(ctx.settings, ctx.registry, engine=engine)  # type: ignore[arg-type]
        pipeline = build_pipeline(ctx.settings, ctx.workspace, ctx.registry, generator=generator)
    answer = pipeline.answer([ChatMessage(role="user", content=question)], role=role)
    if as_json:
        print_json(answer.model_dump(exclude={"citations": {"__all__": {"text"}}}))
        return
    console.print(answer.answer, highlight=False)
    for i, c in enumerate(answer.citations, 1):
        console.print(f"  [dim][{i}] {c.title} ({c.doc_id}, score {c.score:.2f})[/]")


@serving_app.command("run")
def run(
    engine: str = typer.Option("vllm", help="vllm (supervised server) or transformers (in-process)."),
) -> None:
    """Start the engine and the gateway on this machine and print where to go."""
    import uvicorn

    from helpline.serving.engines.vllm_server import VLLMServer
    from helpline.serving.factory import build_generator, build_pipeline
    from helpline.serving.gateway.app import create_app

    ctx = Context.load()
    s = ctx.settings
    server = None
    if engine == "vllm":
        base = ctx.registry.get_model(s.chat_model)
        server = VLLMServer(
            model_path=base.path,
            served_name=base.name,
            settings=s.vllm,
            log_path=ctx.workspace.logs / "vllm.log",
        )
        with console.status(f"starting vLLM for {base.name} (about a minute on CPU; log: {server.log_path})"):
            server.start()
    try:
        generator = build_generator(s, ctx.registry, engine=engine)  # type: ignore[arg-type]
        pipeline = build_pipeline(s, ctx.workspace, ctx.registry, generator=generator)
        app = create_app(pipeline)
        url = f"http://{s.gateway.host}:{s.gateway.port}"
        console.print(f"[green]gateway[/] {url}  (OpenAI-compatible: {url}/v1/chat/completions)")
        if server is not None:
            console.print(f"[green]engine[/]  vLLM at {server.base_url} (loopback only)")
        console.print(
            "try: curl -s " + url + "/v1/chat/completions -H 'content-type: application/json' "
            '-d \'{"model":"helpline-support","messages":[{"role":"user","content":'
            '"How do I return an item?"}]}\''
        )
        uvicorn.run(app, host=s.gateway.host, port=s.gateway.port, log_level="warning")
    finally:
        if server is not None:
            server.stop()


# `helpline bench serving` lives here (mounted by helpline/cli.py).
bench_app = typer.Typer()
