"""``gpumesh chain``: a local py-evm chain over JSON-RPC, contract deployment, balances."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import click

TARGET_RPC = click.option("--rpc", "rpc", envvar="GPUMESH_CHAIN_URL", default="http://127.0.0.1:8545",
                          show_default=True, help="JSON-RPC endpoint.")


def write_key(path: Path, key_hex: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as fh:
        fh.write(key_hex + "\n")


def deploy_dev(rpc: str, out_dir: Path) -> Path:
    """Deploy the contracts with dev account 0 (admin and coordinator); write
    ``deployment.json`` and ``coordinator.key`` into ``out_dir``; returns the deployment path."""
    from gpumesh.chain import ChainClient, dev_keys, json_rpc_web3

    admin = dev_keys()[0]
    deployment = ChainClient.deploy(json_rpc_web3(rpc), admin)
    out_dir.mkdir(parents=True, exist_ok=True)
    deployment.save(out_dir / "deployment.json")
    write_key(out_dir / "coordinator.key", admin)
    return out_dir / "deployment.json"


@click.group()
def chain() -> None:
    """Local settlement chain: serve, deploy, inspect."""


@chain.command("serve")
@click.option("--port", type=int, default=8545, show_default=True)
@click.option("--deploy-to", type=click.Path(path_type=Path), default=None,
              help="Also deploy the contracts and write deployment.json + coordinator.key here.")
def chain_serve(port, deploy_to) -> None:
    """Serve an in-process py-evm chain over JSON-RPC on 127.0.0.1 (prefunded dev accounts)."""
    from gpumesh.chain import DevNode

    node = DevNode(port=port).start()
    click.echo(f"py-evm dev chain on {node.url}")
    if deploy_to is not None:
        path = deploy_dev(node.url, deploy_to)
        click.echo(f"contracts deployed: {path}")
    click.echo("dev accounts (test keys, never use them for real funds):")
    for i, key in enumerate(node.keys[:4]):
        click.echo(f"  [{i}] {key}")
    try:
        node.serve_forever()
    except KeyboardInterrupt:
        pass


@chain.command("deploy")
@TARGET_RPC
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for deployment.json.")
def chain_deploy(rpc, out) -> None:
    """Deploy TestToken, ProviderRegistry and JobEscrow with dev account 0 (a local chain)."""
    click.echo(deploy_dev(rpc, out))
