"""``gpumesh provider earnings``: what this provider's wallet earned through a coordinator (paid,
pending, slashed), its stake, and the escrow's withdrawable balance; ``--withdraw`` moves that
balance to the wallet. Amounts are token base units."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gpumesh.cli.output import JSON_OPTION, emit_json


@click.command("earnings")
@click.option("--coordinator", "-c", "target", envvar="GPUMESH_COORDINATOR", default=None,
              help="Coordinator address (host:port) [default: the provider config file's, else 127.0.0.1:50051].")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Where the provider's wallet key is.")
@click.option("--withdraw", is_flag=True, default=False,
              help="Move the escrow's withdrawable balance to the wallet (a transaction from it: it needs gas).")
@JSON_OPTION
def earnings(target, data_dir, withdraw, as_json) -> None:
    """Paid (settled on-chain to this wallet), pending (results not settled yet), slashed, the stake
    in the ProviderRegistry, the escrow's withdrawable balance and the wallet's token balance."""
    from gpumesh.client import Client
    from provider_node.config import ProviderSettings
    from provider_node.secret_files import load_wallet

    settings = ProviderSettings(**{k: v for k, v in dict(coordinator=target, data_dir=data_dir).items()
                                   if v is not None})
    wallet = load_wallet(settings.key_file, legacy=settings.data_dir / "wallet.key")
    with Client.connect(settings.coordinator, tls=settings.tls_config()) as client:
        e = client.earnings(wallet.address)  # by address: a public read, no request signature needed
        report: dict[str, Any] = {
            "address": e.address, "provider_ids": list(e.provider_ids), "coordinator": settings.coordinator,
            "paid": e.paid, "pending": e.pending, "slashed": e.slashed,
            "tasks_paid": e.tasks_paid, "tasks_pending": e.tasks_pending, "slashes": e.slashes,
        }
        chain = client.chain()
        report["settles"] = chain is not None
        if chain is None:
            if withdraw:
                raise click.ClickException("this coordinator does not settle on-chain: nothing to withdraw")
        else:
            report.update(_balances(chain, wallet.address))
            if withdraw:
                report["withdrawn"] = _withdraw(chain, wallet, int(report["escrow_balance"]))
                report.update(_balances(chain, wallet.address))
    if as_json:
        emit_json(report)
    else:
        for line in _lines(report, styled=sys.stdout.isatty()):
            click.echo(line)


def _balances(chain, address: str) -> dict[str, Any]:
    stake = chain.stake_of(address)
    return {"stake": {"active": str(stake.active), "unbonding": str(stake.unbonding), "unlock_at": stake.unlock_at},
            "escrow_balance": str(chain.escrow_balance(address)), "wallet_balance": str(chain.token_balance(address))}


def _withdraw(chain, wallet, balance: int) -> dict[str, str]:
    """The escrow pays out by pull: ``withdraw()`` from the wallet moves all of its balance."""
    from eth_account import Account

    if balance == 0:
        return {"amount": "0", "tx": ""}
    before = chain.token_balance(wallet.address)
    tx = chain.withdraw(Account.from_key(wallet.private_key))
    return {"amount": str(chain.token_balance(wallet.address) - before), "tx": tx.tx_hash}


def _lines(r: dict[str, Any], *, styled: bool) -> list[str]:
    def row(label: str, text: str) -> str:
        label = f"{label:<9}"
        return (click.style(label, bold=True) if styled else label) + " " + text

    def plural(n: int, word: str, many: str = "") -> str:
        return f"{n} {word if n == 1 else many or word + 's'}"

    ids = ", ".join(r["provider_ids"]) or "not registered with this coordinator"
    out = [f"{r['address']} at {r['coordinator']} ({ids})",
           row("paid", f"{r['paid']} ({plural(r['tasks_paid'], 'task')})"),
           row("pending", f"{r['pending']} ({plural(r['tasks_pending'], 'task')})"),
           row("slashed", f"{r['slashed']} ({plural(r['slashes'], 'slash', 'slashes')})")]
    if not r["settles"]:
        out.append("this coordinator does not settle on-chain: its figures only, nothing is paid out")
        return out
    stake = r["stake"]
    unbonding = f", unbonding {stake['unbonding']}" + (f" (withdrawable from {stake['unlock_at']})"
                                                       if int(stake["unbonding"]) else "")
    out.append(row("stake", f"active {stake['active']}{unbonding}"))
    if "withdrawn" in r:
        moved = r["withdrawn"]
        out.append(row("withdrew", f"{moved['amount']} to the wallet" + (f" (tx {moved['tx']})" if moved["tx"]
                                                                           else ": nothing to withdraw")))
    hint = " (gpumesh provider earnings --withdraw)" if int(r["escrow_balance"]) and "withdrawn" not in r else ""
    out.append(row("escrow", f"{r['escrow_balance']} withdrawable{hint}"))
    out.append(row("wallet", r["wallet_balance"]))
    return out
