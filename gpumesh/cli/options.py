"""Options and the signed client that several ``gpumesh`` commands share."""

from __future__ import annotations

from pathlib import Path

import click

TARGET = click.option(
    "--coordinator", "-c", "target", envvar="GPUMESH_COORDINATOR", default="127.0.0.1:50051",
    show_default=True, help="Coordinator address (host:port).",
)


KEY_FILE = click.option(
    "--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None, envvar="GPUMESH_KEY_FILE",
    help="Hex private key of the submitter wallet: it signs the calls, owns the jobs and deposits their "
         "budgets [default: ~/.gpumesh/submitter.key, created on first use].")


def submitter_client(target: str, key_file: Path | None):
    """A Client signing as the submitter's wallet (the same one across commands, so a job
    submitted by one command can be watched or cancelled by the next)."""
    from gpumesh.client import Client
    from gpumesh.identity import Wallet

    if key_file is not None and key_file.exists():
        wallet = Wallet.from_hex(key_file.read_text())
    else:
        wallet = Wallet.load_or_create(key_file or Path.home() / ".gpumesh" / "submitter.key")
    return Client.connect(target, wallet=wallet)
