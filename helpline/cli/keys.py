"""`helpline keys ...`: the gateway's API keys (only their hashes are stored)."""

from __future__ import annotations

import typer

from helpline.cli.output import console, print_json
from helpline.platform.context import Context
from helpline.serving.factory import open_gateway_store

keys_app = typer.Typer(no_args_is_help=True, help="API keys for the gateway (stored hashed).")


@keys_app.command("create")
def keys_create(
    role: str = typer.Option(..., help="customer | staff | engineer | admin"),
    name: str = typer.Option("", help="Who or what the key is for."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    key, record = open_gateway_store(Context.load()).create_key(role, name=name, actor="cli")  # type: ignore[arg-type]
    if as_json:
        print_json({"key": key, **record.model_dump()})
    else:
        console.print(f"[green]{role} key[/] (id {record.id}; shown only now):")
        print(key)


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Keys with their role and prefix (never the key)."""
    keys = [k.model_dump() for k in open_gateway_store(Context.load()).list_keys()]
    if as_json:
        print_json({"keys": keys})
        return
    for k in keys:
        state = "revoked" if k["revoked_at"] else "live"
        console.print(f"{k['id']:4d} {k['prefix']}… {k['role']:9s} {state:8s} {k['name']}", highlight=False)


@keys_app.command("revoke")
def keys_revoke(key_id: int = typer.Argument(..., help="Key id (see `helpline keys list`).")) -> None:
    """Revoke a key at once."""
    open_gateway_store(Context.load()).revoke_key(key_id, actor="cli")
    console.print(f"revoked key {key_id}")
