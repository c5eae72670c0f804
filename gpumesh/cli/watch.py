"""Following a job until it ends: tasks done (a fine-tune's steps and loss) as progress on
stderr, then its outcome and cost; or, with ``--json``, the job as JSON lines on stdout."""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.text import Text

from gpumesh.cli.output import console as make_console
from gpumesh.cli.output import emit_json, interactive, proto_doc
from gpumesh.cli.progress import progress
from gpumesh.cli.progress import status as waiting
from gpumesh.client import Client, JobStatus


def watch_job(client: Client, job_id: str, *, console: Console | None = None) -> JobStatus:
    """Show progress (see ``gpumesh.cli.progress``) until the job is terminal; returns the last status."""
    console = console or make_console(stderr=True)
    status = client.get_job(job_id)
    if status.raw.spec.kind == "finetune":
        return _watch_finetune(client, status, console)
    with progress(console, job_id, total=status.tasks_total or None, unit="tasks", interval_s=30.0) as bar:
        for status in client.watch(job_id):
            bar.update(status.tasks_done, total=status.tasks_total or None, stage=status.state, note=_note(status))
    _outcome(console, status)
    cost_line(console, client.get_job(job_id))
    return status


def watch_json(client: Client, job_id: str) -> JobStatus:
    """Each status change as one JSON line: the job as ``jobs get --json`` prints it, less its tasks."""
    status = client.get_job(job_id)
    for status in client.watch(job_id):
        emit_json(proto_doc(status.raw, drop=("tasks",)))
    return status


def _note(status: JobStatus) -> str:
    if status.pending_reason:
        return f"waiting: {status.pending_reason}"
    return f"{status.tasks_running} running" if status.tasks_running else ""


def _outcome(console: Console, status: JobStatus) -> None:
    if status.state == "COMPLETED":
        console.print(f"[green]completed[/green]: output {status.output_cid}")
    else:
        console.print(f"[red]{status.state.lower()}[/red]: ", Text(status.error), sep="")


def cost_line(console: Console, status: JobStatus) -> None:
    """What the job cost next to what it was quoted at submission."""
    job = status.raw
    if not job.cost:
        return
    text = f"cost: {int(job.cost):,} base units"
    if job.HasField("quote") and job.quote.servable:
        q = job.quote
        text += (f" (quoted {int(q.cost_expected):,}, band {int(q.cost_low):,} to {int(q.cost_high):,}; "
                 f"ETA {q.eta_s:.0f} s, took {job.updated_at.seconds - job.created_at.seconds} s)")
    console.print(Text(text))


def _watch_finetune(client: Client, status: JobStatus, console: Console, *, poll_s: float = 1.0,
                    settle_wait_s: float = 30.0) -> JobStatus:
    """Steps done and the latest training loss from the job's events (outside a terminal, its
    other events as lines too); at the end, what it cost (the settlement's event, waited for a
    while on a settling coordinator)."""
    plain = not interactive(console.file)
    total = int(json.loads(status.raw.spec.finetune_json or "{}").get("steps") or 0) or None
    seen, settled, step, note = 0, None, 0, ""
    with progress(console, status.job_id, total=total, unit="steps") as bar:
        bar.update(0, stage=status.state)
        while True:
            for e in client.job_events(status.job_id, after=seen, limit=1000):
                seen = e.seq
                data = json.loads(e.data_json or "{}")
                if e.type == "metrics":
                    step = data["step"]
                    note = e.message if plain else f"loss {data['train_loss']:.4f}"
                    bar.update(step, stage=status.state, note=note)
                    continue
                if e.type == "settled":
                    settled = data
                if plain:
                    console.print(Text(f"{status.job_id}: {e.message}"))
            status = client.get_job(status.job_id)
            bar.update(step, stage=status.state, note=note)
            if status.terminal:
                break
            time.sleep(poll_s)
    _outcome(console, status)
    if status.state != "COMPLETED":
        return status
    if settled is None and status.raw.settlement:
        deadline = time.monotonic() + settle_wait_s
        with waiting(console, "waiting for the settlement on-chain ..."):
            while settled is None and time.monotonic() < deadline:
                for e in client.job_events(status.job_id, after=seen, limit=1000):
                    seen = e.seq
                    if e.type == "settled":
                        settled = json.loads(e.data_json)
                if settled is None:
                    time.sleep(poll_s)
    if settled is not None:
        console.print(Text(f"settled: {settled['paid']} base units paid, {settled['refund']} refunded "
                           f"(budget {status.raw.budget})"))
    cost_line(console, client.get_job(status.job_id))
    return status
