"""``gpumesh keys``, ``gpumesh models`` and ``gpumesh batches``: the OpenAI-compatible API's
keys (bound to the submitter wallet), the served models, and a batch's per-line evidence."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from gpumesh.cli.main import KEY_FILE, TARGET, _submitter_client


@click.group()
def keys() -> None:
    """API keys for the OpenAI-compatible HTTP API, bound to the submitter wallet."""


@keys.command("create")
@TARGET
@KEY_FILE
@click.option("--name", default="", help="A label for the key.")
@click.option("--spend-cap", type=int, default=None, help="Most this key may spend, token base units.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the key to this file (mode 0600).")
def keys_create(target, key_file, name, spend_cap, output) -> None:
    """Create a key and print it once (the coordinator keeps only its hash)."""
    with _submitter_client(target, key_file) as client:
        info = client.create_api_key(name=name, spend_cap=spend_cap)
    if output is not None:
        from gpumesh.cli.chain_cmd import write_key

        write_key(output, info.key)
    click.echo(info.key)
    click.echo(f"key {info.key_id} for wallet {info.wallet}" + (f", cap {info.spend_cap}" if info.spend_cap else ""),
               err=True)


@keys.command("list")
@TARGET
@KEY_FILE
def keys_list(target, key_file) -> None:
    """This wallet's keys (ids, caps and spending; never the keys)."""
    with _submitter_client(target, key_file) as client:
        for k in client.list_api_keys():
            state = "revoked" if k.revoked else "active"
            click.echo(f"{k.key_id}  {state:8} spent {k.spent} of {k.spend_cap or 'no cap'}  {k.name}")


@keys.command("revoke")
@click.argument("key_id")
@TARGET
@KEY_FILE
def keys_revoke(key_id, target, key_file) -> None:
    with _submitter_client(target, key_file) as client:
        click.echo(f"{client.revoke_api_key(key_id).key_id} revoked")


@keys.command("fund")
@click.argument("amount", type=int)
@click.option("--spend-limit", type=int, default=None,
              help="What coordinators may commit of the account from now (default: the prepaid total).")
@TARGET
@KEY_FILE
def keys_fund(amount, spend_limit, target, key_file) -> None:
    """Prepay AMOUNT (base units) into this wallet's escrow account, which batches of its keys spend
    from (JobEscrow.fundAccount), and set the on-chain spend limit coordinators are held to."""
    from eth_account import Account

    with _submitter_client(target, key_file) as client:
        chain = client.chain()
        account = Account.from_key(client.wallet.private_key)
        if amount:
            chain.fund_account(account, amount)
        prepaid, _ = chain.account_of(account.address)
        chain.set_spend_limit(account, prepaid if spend_limit is None else spend_limit)
        prepaid, limit = chain.account_of(account.address)
    click.echo(f"{account.address}: prepaid {prepaid}, coordinators may commit {limit}")


@click.group()
def models() -> None:
    """Served models by name."""


@models.command("add")
@click.argument("name")
@click.argument("source")
@click.option("--min-memory-mb", type=int, default=0, help="Memory a node needs to serve it (0: estimated).")
@click.option("--replace", is_flag=True, help="Re-point a name this wallet registered.")
@click.option("--base", default="", help="For a LoRA adapter (a tar of a peft adapter directory): its base model.")
@TARGET
@KEY_FILE
def models_add(name, source, min_memory_mb, replace, base, target, key_file) -> None:
    """Register NAME for SOURCE: a model file (GGUF, or a tar of a Hugging Face directory), a LoRA
    adapter's tar (with --base), or its CID."""
    src = Path(source) if os.path.exists(source) else source
    with _submitter_client(target, key_file) as client:
        m = client.add_model(name, src, min_memory_mb=min_memory_mb, replace=replace, base=base)
    on = f"  on {m.base}" if m.base else ""
    click.echo(f"{m.name}  {m.cid}  {m.format}{on}  {m.size_bytes} bytes  needs {m.min_memory_mb} MiB")


@models.command("list")
@TARGET
def models_list(target) -> None:
    from gpumesh.client import Client

    with Client.connect(target) as client:
        for m in client.list_models():
            click.echo(f"{m.name}  {m.cid}  {m.format}  {m.size_bytes} bytes  needs {m.min_memory_mb} MiB")


BASE_URL = click.option("--base-url", envvar="OPENAI_BASE_URL", default="http://127.0.0.1:8000/v1",
                        show_default=True, help="The coordinator's OpenAI-compatible API.")
API_KEY = click.option("--api-key", envvar="OPENAI_API_KEY", required=True, help="A key from `gpumesh keys create`.")


@click.group()
def batches() -> None:
    """OpenAI-style batches (the HTTP API's, read with an API key)."""


@batches.command("evidence")
@click.argument("batch_id")
@BASE_URL
@API_KEY
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def batches_evidence(batch_id, base_url, api_key, as_json) -> None:
    """Who computed each line of a batch, how it was checked, the verdict, the result CID and its cost."""
    import httpx
    from rich.console import Console
    from rich.table import Table

    resp = httpx.get(f"{base_url.rstrip('/')}/batches/{batch_id}/evidence",
                     headers={"authorization": f"Bearer {api_key}"}, timeout=60)
    if resp.status_code != 200:
        raise click.ClickException(resp.json().get("error", {}).get("message", resp.text))
    rows = resp.json()["data"]
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    table = Table(title=f"evidence of {batch_id}")
    for col in ("custom_id", "provider", "task", "check", "verdict", "result", "tokens", "cost"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["custom_id"], r.get("provider", "")[:10], r.get("task_id", "").rsplit("-", 1)[-1],
                      r.get("check", ""), r.get("verdict", ""), r.get("result_cid", "")[:16] + "…",
                      str(r.get("usage", {}).get("total_tokens", "")), r.get("cost", ""))
    Console().print(table)
