"""``gpumesh dev``: the whole stack on embedded defaults, up until Ctrl-C or SIGTERM.

A py-evm chain with the contracts, a coordinator (gRPC, the OpenAI-compatible API, the
dashboard; SQLite and the embedded blockstore), N providers, one model registered by name,
and a submitter wallet with a funded escrow account and an API key: point the official
``openai`` client at the printed ``OPENAI_BASE_URL`` with the key and run a batch file.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from pathlib import Path

from gpumesh.cli import progress
from gpumesh.cli.output import console as make_console
from gpumesh.client import Client
from gpumesh.localnet import LocalNetwork, free_port

MODEL_NAMES = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct", "tiny": "gpumesh/tiny-llama"}
ACCOUNT = 100 * 10**18  # what the submitter prepays into its escrow account (GMT base units)
PRICE = 100 * 10**18  # each provider's price per hour


def run_dev(*, model: str = "tiny", providers: int = 2, workdir: Path | None = None, openai_listen: str = "",
            dashboard_listen: str = "", stop: threading.Event | None = None) -> None:
    from gpumesh.cli.demo import _model_file, _submitter

    root = Path(workdir or tempfile.mkdtemp(prefix="gpumesh-dev-"))
    root.mkdir(parents=True, exist_ok=True)
    openai_listen = openai_listen or f"127.0.0.1:{free_port()}"
    dashboard_listen = dashboard_listen or f"127.0.0.1:{free_port()}"
    stop = stop or _stop_on_signals()
    console = make_console(stderr=True)  # stdout has the three KEY=value lines only
    with LocalNetwork(root, lease_ttl_s=30, heartbeat_interval_s=2) as net:
        net.start_chain()
        net.start_coordinator({"GPUMESH_COORDINATOR_OPENAI_LISTEN": openai_listen,
                               "GPUMESH_COORDINATOR_MODEL_REGISTRARS": json.dumps([_submitter().address]),
                               "GPUMESH_COORDINATOR_DASHBOARD_LISTEN": dashboard_listen,
                               # one machine: an idle node checks the others' results at once
                               **({"GPUMESH_COORDINATOR_VERIFY": "false"} if providers < 2 else {})})
        threads = max(1, (os.cpu_count() or 2) // max(1, providers))
        for i in range(providers):
            net.start_provider(f"provider-{i + 1}", price=PRICE, threads=threads)
        net.wait_providers(providers)
        path, _ = _model_file(model, root, console)
        with Client.connect(net.target, wallet=_submitter()) as client:
            entry = client.add_model(MODEL_NAMES[model], progress.upload(client, path, console), replace=True)
            _fund_account(client)
            key = client.create_api_key(name="gpumesh dev").key
        (root / "api-key").write_text(key + "\n")
        os.chmod(root / "api-key", 0o600)
        host, port = openai_listen.rsplit(":", 1)
        base_url = f"http://{host}:{port}/v1"
        console.print(f"chain        {net.chain_url}\ncoordinator  grpc://{net.target}\n"
                      f"dashboard    http://{dashboard_listen}/\nproviders    {providers}\n"
                      f"model        {entry.name} ({entry.cid})\nstate, logs  {root}")
        print(f"OPENAI_BASE_URL={base_url}\nOPENAI_API_KEY={key}\nGPUMESH_COORDINATOR={net.target}", flush=True)
        console.print("[bold]up[/bold]: Ctrl-C to stop")
        stop.wait()
    console.print("stopped")


def _fund_account(client: Client) -> None:
    """Mint the dev submitter tokens and prepay them into its escrow account for its API keys."""
    from eth_account import Account

    chain = client.chain()
    account = Account.from_key(client.wallet.private_key)
    chain.mint(account, account.address, ACCOUNT)
    chain.fund_account(account, ACCOUNT)
    prepaid, _ = chain.account_of(account.address)
    chain.set_spend_limit(account, prepaid)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
