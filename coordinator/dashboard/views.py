"""What the dashboard shows, as JSON-able dicts built from store records. Pure; no I/O.

Token amounts are decimal strings (uint256 does not fit a JavaScript number); times are Unix
seconds. Nothing secret leaves here: no session tokens, keys, signatures or escrow keys, and a
job's verification rows (which of its tasks are checks of which) only once the job has ended, so
a provider cannot learn from the dashboard that a lease it holds is a check.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from coordinator.models import GpuSpec, Job, JobProgress, JobState, ProviderRecord, ProviderTier, Task
from coordinator.reputation import eligible
from coordinator.settlement.payouts import Claim, JobPayout, TaskCharge, job_payout, task_cost, within_claims
from coordinator.store.base import Charge, Slash
from coordinator.verification.hardware import DeviceCheck
from gpumesh.errors import InvalidArgument

MAX_ID = 128  # longest job or provider id a request may name


@dataclass(frozen=True)
class Live:
    """A connected provider as a replica sees it: where its session is, what it runs now."""

    where: str  # "here" or "replica <id>"
    running: int = 0
    gpu_utilization: tuple[float, ...] = field(default_factory=tuple)  # percent, per GPU


# ---- request parameters -------------------------------------------------------------------------


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise InvalidArgument(f"expected an integer from 1 to {maximum}, got {raw[:20]!r}", field="limit")
    return int(raw)


def parse_job_state(raw: str | None) -> JobState | None:
    if not raw:
        return None
    try:
        return JobState(raw.upper())
    except ValueError:
        raise InvalidArgument(f"unknown job state {raw[:20]!r} (one of {', '.join(JobState)})", field="state") from None


def job_cursor(job: Job) -> str:
    return f"{job.created_at!r}~{job.job_id}"


def parse_job_cursor(raw: str | None) -> tuple[float, str] | None:
    """The ``next`` of a page of jobs back as ``(created_at, job_id)``."""
    if not raw:
        return None
    at, sep, job_id = raw.partition("~")
    try:
        created = float(at)
    except ValueError:
        created = math.nan
    if not sep or not job_id or len(job_id) > MAX_ID or not math.isfinite(created):
        raise InvalidArgument("not a cursor this dashboard gave", field="before")
    return created, job_id


def task_cursor(task: Task) -> str:
    return f"{task.index}~{task.task_id}"


def parse_task_cursor(raw: str | None) -> tuple[int, str] | None:
    if not raw:
        return None
    idx, sep, task_id = raw.partition("~")
    if not sep or not idx.isdigit() or not task_id or len(task_id) > 2 * MAX_ID:
        raise InvalidArgument("not a cursor this dashboard gave", field="after")
    return int(idx), task_id


def check_id(raw: str, *, field: str) -> str:
    if not raw or len(raw) > MAX_ID:
        raise InvalidArgument(f"expected 1 to {MAX_ID} characters", field=field)
    return raw


# ---- amounts --------------------------------------------------------------------------------------


def _charges(charges: Sequence[Charge]) -> list[TaskCharge]:
    return [TaskCharge(f"{c.provider_id}@{c.price_per_hour}", c.address or c.provider_id, c.price_per_hour, c.seconds)
            for c in charges]


def owed(charges: Sequence[Charge], budget: int) -> JobPayout:
    """What the charged work of one job comes to, as the settler computes it: price x measured
    time, scaled down to the escrowed ``budget`` if it would overdraw it (no escrow: uncapped).
    Each provider's time at one price is rounded up once, not once per task, so this may fall
    short of the settled amount by less than one base unit per task."""
    tc = _charges(charges)
    return job_payout(tc, budget if budget > 0 else sum(task_cost(c) for c in tc))


# ---- records -> views ---------------------------------------------------------------------------------


def gpu_summary(gpus: Sequence[GpuSpec]) -> str:
    """``"2x H100 (80 GB)"``; ``"CPU only"`` without GPUs."""
    if not gpus:
        return "CPU only"
    groups: dict[tuple[str, int], int] = defaultdict(int)
    for g in gpus:
        groups[(g.name, g.memory_total_mb)] += 1
    return ", ".join(f"{n}x {name} ({round(mb / 1024)} GB)" for (name, mb), n in groups.items())


def device_check_view(check: DeviceCheck) -> dict[str, Any]:
    """One device: claimed vs verified, and the TFLOPS its timed check measured."""
    cls = check.verified_class
    return {**check.as_dict(), "verified_label": cls.label if cls is not None else "",
            "claimed": check.claimed or "CPU"}


def provider_view(record: ProviderRecord, live: Live | None, *, now: float, half_life_s: float,
                  max_invalid_rate: float) -> dict[str, Any]:
    rep = record.reputation.decayed(now, half_life_s)
    trusted = record.tier is ProviderTier.CENTRALIZED
    return {
        "provider_id": record.provider_id,
        "name": record.name,
        "address": record.address,
        "operator": record.operator_id,
        "tier": record.tier.value,
        "gpus": [{"name": g.name, "memory_total_mb": g.memory_total_mb} for g in record.gpus],
        "gpu_summary": gpu_summary(record.gpus),  # as claimed
        "verified_gpu_summary": gpu_summary(record.verified_gpus),  # what the scheduler uses
        "hardware_verified": record.hardware_verified,
        "hardware_checks": [device_check_view(c) for c in record.hardware_checks or ()],
        "cpu_count": record.cpu_count,
        "memory_total_mb": record.memory_total_mb,
        "price_per_hour": str(record.price_per_hour),
        "slots": record.slots,
        "runtime": record.runtime,
        "isolated": record.isolated,
        "connected": live is not None,
        "where": live.where if live is not None else "",
        "running": live.running if live is not None else 0,
        "gpu_utilization": list(live.gpu_utilization) if live is not None else [],
        "reputation": {
            "mean": rep.alpha / (rep.alpha + rep.beta),
            "lower": rep.score(),  # lower 5% quantile: what the scheduler ranks by
            "reliability": rep.reliability(),
            "eligible": trusted or eligible(rep, max_invalid_rate),
            "trusted": trusted,
        },
        "tasks_done": record.tasks_completed,
        "tasks_rejected": record.total_invalid,
        "tasks_valid": record.total_valid,
        "leases_abandoned": record.leases_abandoned,
        "slashed": record.slashed,
        "edge_records": record.edge_records,
        "registered_at": record.registered_at,
        "last_seen": record.last_seen,
    }


def job_view(job: Job, progress: JobProgress | None, charges: Sequence[Charge]) -> dict[str, Any]:
    progress = progress or JobProgress()
    total = job.tasks_total or progress.total
    return {
        "job_id": job.job_id,
        "name": job.spec.name,
        "kind": job.spec.kind,
        "state": job.state.value,
        "submitter": job.submitter,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "tasks_total": total,
        "tasks_done": progress.done,
        "tasks_running": progress.running,
        "progress": progress.done / total if total else 0.0,
        "prompts_total": job.prompts_total,
        "budget": str(job.budget),
        "cost": str(owed(charges, job.budget).paid),
        "settlement": job.settlement.value or "NONE",
        "settle_tx": job.settle_tx,
        # Whether there is an output, never its CID: the dashboard is unauthenticated, and a CID is
        # what an artifact is fetched by (the artifact service checks who asks; a public IPFS node does not).
        "has_output": bool(job.output_cid),
        "error": job.error,
        "pending_reason": job.pending_reason,
    }


def task_view(task: Task, *, ended: bool) -> dict[str, Any]:
    """One task row; its verdict (whether and how it was checked) only once the job has ``ended``."""
    return {
        "task_id": task.task_id,
        "index": task.index,
        "role": task.role.value,
        "state": task.state.value,
        "provider_id": task.provider_id,
        "attempts": task.attempts,
        "prompts": task.prompts,
        "has_output": bool(task.output_cid),
        "error": task.error,
        "verdict": task.verdict if ended else "",
        "price_per_hour": str(task.price_per_hour),
        "leased_at": task.leased_at,
        "submitted_at": task.submitted_at,
        "seconds": max(0.0, task.submitted_at - task.leased_at) if task.submitted_at and task.leased_at else None,
    }


def job_detail_view(job: Job, progress: JobProgress | None, charges: Sequence[Charge], tasks: Sequence[Task],
                    checks: Sequence[Task], *, next_after: str | None) -> dict[str, Any]:
    ended = job.state.is_terminal()
    return {
        "job": job_view(job, progress, charges),
        "tasks": [task_view(t, ended=ended) for t in tasks],
        "next": next_after,
        "checks": [task_view(t, ended=True) for t in checks] if ended else [],
        "checks_hidden": not ended,  # shown once the job has ended
    }


def payouts_view(jobs: Sequence[Job], charges: Sequence[Charge], slashes: Sequence[Slash],
                 names: Mapping[str, str], claims: Mapping[str, Mapping[str, tuple[int, bytes]]]) -> dict[str, Any]:
    """Settled jobs (newest first) with what each provider was paid and what went back; the
    providers' totals over these jobs; recent slashes. ``names``: provider id -> name;
    ``claims``: job id -> each provider's signed claim (lower-case address -> (amount, signature)),
    which bounds what the escrow paid it, as the settler bounds it."""
    by_job: dict[str, list[Charge]] = defaultdict(list)
    for c in charges:
        by_job[c.job_id].append(c)
    totals: dict[str, dict[str, Any]] = {}
    out_jobs = []
    for job in jobs:
        who = {c.address or c.provider_id: c for c in by_job[job.job_id]}
        payout = owed(by_job[job.job_id], job.budget)
        if job.escrow_key:
            signed = {a: Claim(amount, sig) for a, (amount, sig) in claims.get(job.job_id, {}).items()}
            payout = within_claims(payout, signed, job.budget)
        rows = []
        for address, amount in payout.payouts:
            c = who[address]
            rows.append({"address": address, "provider_id": c.provider_id, "name": c.name, "amount": str(amount)})
            t = totals.setdefault(address, {"address": address, "provider_id": c.provider_id, "name": c.name,
                                            "amount": 0, "jobs": 0})
            t["amount"] += amount
            t["jobs"] += 1
        out_jobs.append({"job_id": job.job_id, "name": job.spec.name, "submitter": job.submitter,
                         "settle_tx": job.settle_tx, "budget": str(job.budget), "paid": str(payout.paid),
                         "refund": str(payout.refund), "payouts": rows})
    providers = sorted(totals.values(), key=lambda t: (-t["amount"], t["address"]))
    return {
        "jobs": out_jobs,
        "providers": [{**t, "amount": str(t["amount"])} for t in providers],
        "slashes": [slash_view(s, names.get(s.provider_id, "")) for s in slashes],
    }


def slash_view(slash: Slash, name: str) -> dict[str, Any]:
    return {
        "provider_id": slash.provider_id,
        "name": name,
        "address": slash.address,
        "job_id": slash.job_id,
        "task_id": slash.task_id,
        "amount": str(slash.amount),
        "slashed_amount": str(slash.slashed_amount),
        "state": slash.state.value,
        "reason": slash.reason,
        "tx": slash.tx,
    }


def summary_view(task_counts: Mapping[str, int], *, providers_connected: int, providers_here: int,
                 leases_running: int, leader: bool, replica_id: str, settles: bool, refresh_s: float,
                 now: float) -> dict[str, Any]:
    return {
        "queue_depth": task_counts.get("QUEUED", 0),
        "tasks": dict(sorted(task_counts.items())),
        "providers_connected": providers_connected,
        "providers_here": providers_here,
        "leases_running": leases_running,
        "leader": leader,
        "replica_id": replica_id,
        "settles": settles,
        "refresh_s": refresh_s,
        "now": now,
    }
