"""``gpumesh keys``, ``gpumesh models`` and ``gpumesh batches``: the OpenAI-compatible API's
keys (bound to the submitter wallet), the served models, and a batch's per-line evidence."""

from __future__ import annotations

import os
from pathlib import Path

import click

from gpumesh.cli.options import KEY_FILE, TARGET, submitter_client
from gpumesh.cli.output import JSON_OPTION


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
    with submitter_client(target, key_file) as client:
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
@JSON_OPTION
def keys_list(target, key_file, as_json) -> None:
    """This wallet's keys (ids, caps and spending; never the keys)."""
    from gpumesh.cli.output import emit_json, proto_doc

    with submitter_client(target, key_file) as client:
        found = client.list_api_keys()
    if as_json:
        emit_json({"keys": [proto_doc(k, drop=("key",)) for k in found]})
    else:
        for k in found:
            state = "revoked" if k.revoked else "active"
            click.echo(f"{k.key_id}  {state:8} spent {k.spent} of {k.spend_cap or 'no cap'}  {k.name}")


@keys.command("revoke")
@click.argument("key_id")
@TARGET
@KEY_FILE
def keys_revoke(key_id, target, key_file) -> None:
    with submitter_client(target, key_file) as client:
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

    with submitter_client(target, key_file) as client:
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
    from gpumesh.cli import progress
    from gpumesh.cli.output import console

    with submitter_client(target, key_file) as client:
        src = progress.upload(client, Path(source), console(stderr=True)) if os.path.exists(source) else source
        m = client.add_model(name, src, min_memory_mb=min_memory_mb, replace=replace, base=base)
    on = f"  on {m.base}" if m.base else ""
    click.echo(f"{m.name}  {m.cid}  {m.format}{on}  {m.size_bytes} bytes  needs {m.min_memory_mb} MiB")


@models.command("list")
@TARGET
@JSON_OPTION
def models_list(target, as_json) -> None:
    """The served models: name, CID, format, size, the memory a node needs (one line each)."""
    from gpumesh.cli.output import emit_json, proto_doc
    from gpumesh.client import Client

    with Client.connect(target) as client:
        found = client.list_models()
    if as_json:
        emit_json({"models": [proto_doc(m) for m in found]})
        return
    for m in found:
        on = f"  on {m.base}" if m.base else ""
        click.echo(f"{m.name}  {m.cid}  {m.format}{on}  {m.size_bytes} bytes  needs {m.min_memory_mb} MiB")


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

    from gpumesh.cli.output import console, emit_json
    from gpumesh.cli.tables import Column, print_table

    resp = httpx.get(f"{base_url.rstrip('/')}/batches/{batch_id}/evidence",
                     headers={"authorization": f"Bearer {api_key}"}, timeout=60)
    if resp.status_code != 200:
        raise click.ClickException(resp.json().get("error", {}).get("message", resp.text))
    rows = resp.json()["data"]
    if as_json:
        for r in rows:
            emit_json(r)
        return
    table = [(r["custom_id"], r.get("provider", ""), r.get("task_id", "").rsplit("-", 1)[-1], r.get("check", ""),
              r.get("verdict", ""), r.get("result_cid", ""), r.get("usage", {}).get("total_tokens", ""),
              r.get("cost", "")) for r in rows]
    columns = (Column("custom_id", key=True), Column("provider", rank=6, wrap=False), Column("task", rank=3, wrap=False),
               Column("check", rank=7), Column("verdict", rank=8), Column("result", rank=4, wrap=False),
               Column("tokens", rank=5, wrap=False, justify="right"), Column("cost", rank=5, wrap=False, justify="right"))
    print_table(console(), columns, table, title=f"evidence of {batch_id}")
