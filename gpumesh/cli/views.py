"""What the read commands show: providers, jobs and the market as tables (``gpumesh.cli.tables``)
and as ``--json`` documents."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from gpumesh.cli.output import proto_doc
from gpumesh.cli.tables import MORE, Column, print_table
from gpumesh.v1 import common_pb2

PROVIDER_COLUMNS = (
    Column("id", key=True), Column("name", key=True), Column("address", rank=1, wrap=False),
    Column("claimed", rank=7), Column("verified", rank=8), Column("price/h", rank=6, wrap=False, justify="right"),
    Column("tier", rank=3, wrap=False), Column("runtime", rank=2), Column("online", rank=9, wrap=False),
    Column("done", rank=5, wrap=False, justify="right"), Column("checked ok/bad", rank=4),
    Column("reputation", rank=6, wrap=False, justify="right"),
)


def providers_table(console: Console, providers: Sequence, *, more: str = MORE) -> None:
    rows = []
    for p in providers:
        claimed = ", ".join(g.name for g in p.hardware.gpus) or f"CPU x{p.hardware.cpu_count}"
        rows.append((
            p.provider_id, p.name, p.address, claimed, verified_hardware(p), p.price_per_hour,
            common_pb2.ProviderTier.Name(p.tier).removeprefix("PROVIDER_TIER_").lower(),
            f"{p.runtime}{'' if p.isolated else ' (unisolated)'}", "yes" if p.connected else "no",
            p.tasks_completed,
            f"{p.verified_valid}/{p.verified_invalid}" + (f" (slashed {p.slashed}x)" if p.slashed else ""),
            f"{p.reputation:.2f}",
        ))
    print_table(console, PROVIDER_COLUMNS, rows, title="providers", more=more)


def providers_doc(providers: Sequence) -> dict[str, Any]:
    return {"providers": [proto_doc(p) for p in providers]}


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


JOB_COLUMNS = (
    Column("id", key=True), Column("state", rank=9, wrap=False), Column("tasks", rank=8, wrap=False, justify="right"),
    Column("name", rank=6), Column("created", rank=5, wrap=False), Column("cost", rank=3, wrap=False, justify="right"),
)


def jobs_table(console: Console, statuses: Sequence) -> None:
    rows = [(s.job_id, s.state, f"{s.tasks_done}/{s.tasks_total}", s.raw.spec.name,
             time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.raw.created_at.seconds)), s.raw.cost or "")
            for s in statuses]
    print_table(console, JOB_COLUMNS, rows, title="jobs")


def jobs_doc(statuses: Sequence, next_page_token: str = "") -> dict[str, Any]:
    """The jobs as ``jobs get --json`` prints one (without their tasks), and where the list goes on."""
    return {"jobs": [proto_doc(s.raw, drop=("tasks",)) for s in statuses], "next_page_token": next_page_token}


MARKET_COLUMNS = (
    Column("class", key=True), Column("tier", rank=3, wrap=False), Column("providers", rank=7, justify="right"),
    Column("free/slots", rank=8, wrap=False, justify="right"), Column("ask/h p50", rank=9, wrap=False, justify="right"),
    Column("ask/h p10-p90", rank=4), Column("tokens/s", rank=6, wrap=False, justify="right"),
    Column("speed", rank=5, wrap=False, justify="right"), Column("memory", rank=2, wrap=False, justify="right"),
)


def market_table(console: Console, view) -> None:
    """The verified GPU classes online (fastest first) and a line on the queue and the fallback."""
    rows = [(c.label or c.key, c.tier.lower(), c.providers, f"{c.slots_free}/{c.slots_total}", amount(c.price_p50),
             f"{amount(c.price_p10)} - {amount(c.price_p90)}", f"{c.tokens_per_s:.1f}" if c.samples else "-",
             f"{c.speed:.2f}", f"{c.memory_mb} MiB" if c.memory_mb else "-") for c in view.classes]
    print_table(console, MARKET_COLUMNS, rows, title="market (asks in token base units per provider-hour)")
    f = view.fallback
    console.print(Text(f"{view.providers} provider(s); {view.queue_depth} task(s) queued, {view.running} running; "
                       f"centralized: {f.centralized_providers} provider(s), {f.tasks_on_centralized} task(s) "
                       f"there, {f.instances_live} launched instance(s)"))


def amount(text: str) -> str:
    """A decimal amount with thousands separators (as it is when not a number)."""
    try:
        return f"{int(text):,}"
    except ValueError:
        return text
