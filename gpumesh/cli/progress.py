"""Terminal rendering for the CLI: a job progress bar and tables."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpumesh.client import Client, JobStatus
from gpumesh.v1 import common_pb2

console = Console(stderr=True)


def watch_job(client: Client, job_id: str) -> JobStatus:
    """Show a live progress bar of tasks done until the job is terminal; returns the last status."""
    status = client.get_job(job_id)
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
