"""Terminal rendering for the CLI: a job progress bar and tables."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpumesh.client import Client, JobStatus
from gpumesh.v1 import common_pb2

console = Console(stderr=True)


def watch_job(client: Client, job_id: str) -> JobStatus:
    """Show a live progress bar of tasks done (a fine-tune's steps and loss) until the job is
    terminal; returns the last status. Outside a terminal the bar prints plain lines instead."""
    status = client.get_job(job_id)
    if status.raw.spec.kind == "finetune":
        return _watch_finetune(client, status)
    with Progress(
        TextColumn("[bold]{task.fields[job]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks  {task.fields[state]}  {task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task("job", total=status.tasks_total or None, job=job_id, state="", note="")
        for status in client.watch(job_id):
            note = f"{status.tasks_running} running" if status.tasks_running else ""
            if status.pending_reason:
                note = f"waiting: {status.pending_reason}"
            progress.update(bar, completed=status.tasks_done, total=status.tasks_total,
                            state=status.state, note=note)
    if status.state == "COMPLETED":
        console.print(f"[green]completed[/green]: output {status.output_cid}")
    else:
        console.print(f"[red]{status.state.lower()}[/red]: {status.error}")
    cost_line(client.get_job(job_id))
    return status


def cost_line(status: JobStatus) -> None:
    """What the job cost next to what it was quoted at submission."""
    job = status.raw
    if not job.cost:
        return
    text = f"cost: {int(job.cost):,} base units"
    if job.HasField("quote") and job.quote.servable:
        q = job.quote
        text += (f" (quoted {int(q.cost_expected):,}, band {int(q.cost_low):,} to {int(q.cost_high):,}; "
                 f"ETA {q.eta_s:.0f} s, took {job.updated_at.seconds - job.created_at.seconds} s)")
    console.print(text)


def _watch_finetune(client: Client, status: JobStatus, *, poll_s: float = 1.0, settle_wait_s: float = 30.0
                    ) -> JobStatus:
    """Steps done and the latest training loss from the job's events; at the end, what it cost
    (the settlement's event, waited for a while on a settling coordinator)."""
    import json
    import time

    total = int(json.loads(status.raw.spec.finetune_json or "{}").get("steps") or 0) or None
    seen, settled = 0, None
    with Progress(TextColumn("[bold]{task.fields[job]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("steps  {task.fields[state]}  {task.fields[note]}"), TimeElapsedColumn(),
                  console=console, transient=False, disable=not console.is_terminal) as progress:
        bar = progress.add_task("job", total=total, job=status.job_id, state=status.state, note="")
        while True:
            for e in client.job_events(status.job_id, after=seen, limit=1000):
                seen = e.seq
                data = json.loads(e.data_json or "{}")
                if e.type == "metrics":
                    progress.update(bar, completed=data["step"], note=f"loss {data['train_loss']:.4f}")
                elif e.type == "settled":
                    settled = data
                if not console.is_terminal:
                    console.print(f"{status.job_id}  {e.message}")
            status = client.get_job(status.job_id)
            progress.update(bar, state=status.state)
            if status.terminal:
                break
            time.sleep(poll_s)
    if status.state == "COMPLETED":
        console.print(f"[green]completed[/green]: output {status.output_cid}")
        deadline = time.monotonic() + (settle_wait_s if status.raw.settlement else 0)
        while settled is None and time.monotonic() < deadline:
            for e in client.job_events(status.job_id, after=seen, limit=1000):
                seen = e.seq
                if e.type == "settled":
                    settled = json.loads(e.data_json)
            time.sleep(poll_s)
        if settled is not None:
            console.print(f"settled: {settled['paid']} base units paid, {settled['refund']} refunded "
                          f"(budget {status.raw.budget})")
        cost_line(client.get_job(status.job_id))
    else:
        console.print(f"[red]{status.state.lower()}[/red]: {status.error}")
    return status


def providers_table(providers) -> None:
    table = Table(title="providers")
    for col in ("id", "name", "address", "claimed", "verified", "price/h", "tier", "runtime", "online", "done",
                "checked ok/bad", "reputation"):
        table.add_column(col)
    for p in providers:
        claimed = ", ".join(g.name for g in p.hardware.gpus) or f"CPU x{p.hardware.cpu_count}"
        table.add_row(
            p.provider_id, p.name, p.address[:10] + "…", claimed, verified_hardware(p), str(p.price_per_hour),
            common_pb2.ProviderTier.Name(p.tier).removeprefix("PROVIDER_TIER_").lower(),
            f"{p.runtime}{'' if p.isolated else ' (unisolated)'}",
            "yes" if p.connected else "no", str(p.tasks_completed),
            f"{p.verified_valid}/{p.verified_invalid}" + (f" (slashed {p.slashed}x)" if p.slashed else ""),
            f"{p.reputation:.2f}",
        )
    Console().print(table)


def verified_hardware(p) -> str:
    """Per device, what its timed hardware check verified and measured ("unchecked" before one)."""
    if not p.hardware_checks:
        return "unchecked"
    parts = []
    for c in p.hardware_checks:
        if not c.verified:
            parts.append(f"not verified ({c.claimed or 'CPU'}: {c.note or 'no answer'})")
        elif c.source == "trusted":
            parts.append(f"{c.verified_label} (trusted)")
        else:
            parts.append(f"{c.verified_label} {c.tflops:.3g} TFLOPS")
    return ", ".join(parts)
