"""Conversions between protobuf messages and domain objects (the only place that knows both)."""

from __future__ import annotations

from google.protobuf import json_format

from coordinator.core import JobView
from coordinator.models import ProviderRecord, ProviderTier
from coordinator.sessions import ProviderSession
from coordinator.store.base import Presence
from coordinator.verification.hardware import DeviceCheck
from gpumesh._convert import spec_from_proto, spec_to_proto, timestamp
from gpumesh.v1 import common_pb2, jobs_pb2

__all__ = ["job_to_proto", "provider_to_proto", "spec_from_proto", "spec_to_proto", "timestamp"]


def job_to_proto(view: JobView, *, with_tasks: bool = True) -> jobs_pb2.Job:
    job = view.job
    done = sum(1 for t in view.tasks if t.state.is_done())
    running = sum(1 for t in view.tasks if t.state.value == "LEASED")
    msg = jobs_pb2.Job(
        job_id=job.job_id,
        spec=spec_to_proto(job.spec),
        state=common_pb2.JobState.Value(f"JOB_STATE_{job.state.value}"),
        tasks_total=job.tasks_total,
        tasks_done=done,
        tasks_running=running,
        output_cid=job.output_cid,
        error=job.error,
        created_at=timestamp(job.created_at),
        updated_at=timestamp(job.updated_at),
        prompts_total=job.prompts_total,
        pending_reason=view.pending_reason,
        escrow_key=job.escrow_key,
        budget=str(job.budget) if job.escrow_key else "",
        submitter=job.submitter,
        settlement=job.settlement.value,
        settle_tx=job.settle_tx,
        output_key=view.output_key,
    )
    if with_tasks:
        msg.tasks.extend(
            jobs_pb2.TaskSummary(
                task_id=t.task_id,
                index=t.index,
                state=common_pb2.TaskState.Value(f"TASK_STATE_{t.state.value}"),
                provider_id=t.provider_id,
                attempts=t.attempts,
                output_cid=t.output_cid,
                error=t.error,
                metrics_json=t.metrics_json,
                role=t.role.value,
                verifies=t.verifies,
                verdict=t.verdict,
            )
            for t in (*view.tasks, *view.checks)
        )
    return msg


def provider_to_proto(record: ProviderRecord, session: ProviderSession | None,
                      remote: Presence | None = None) -> jobs_pb2.ProviderInfo:
    """A provider with its live session here, or as the replica holding it reports it (``remote``)."""
    if session is not None:
        running, last_seen = len(session.running), session.last_seen
    elif remote is not None:
        running, last_seen = remote.leased, remote.seen_at
    else:
        running, last_seen = 0, record.last_seen
    hardware = json_format.Parse(record.hardware_json, common_pb2.Hardware())
    msg = jobs_pb2.ProviderInfo(
        provider_id=record.provider_id,
        address=record.address,
        name=record.name,
        hardware=hardware,
        price_per_hour=str(record.price_per_hour),
        tier=common_pb2.PROVIDER_TIER_CENTRALIZED
        if record.tier is ProviderTier.CENTRALIZED
        else common_pb2.PROVIDER_TIER_OPEN,
        connected=session is not None or remote is not None,
        slots=record.slots,
        running=running,
        runtime=record.runtime,
        isolated=record.isolated,
        last_seen=timestamp(last_seen),
        tasks_completed=record.tasks_completed,
        verified_valid=record.total_valid,
        verified_invalid=record.total_invalid,
        slashed=record.slashed,
        reputation=record.reputation.score(),
        operator=record.operator_id,
        hardware_checks=[device_check_to_proto(c) for c in record.hardware_checks or ()],
        hardware_verified=record.hardware_verified,
        edge_records=record.edge_records,
    )
    if session is not None:
        msg.telemetry.extend(session.telemetry)
    return msg


def device_check_to_proto(check: DeviceCheck) -> jobs_pb2.DeviceCheck:
    cls = check.verified_class
    return jobs_pb2.DeviceCheck(device=check.device, claimed=check.claimed, verified=check.verified,
                                verified_label=cls.label if cls is not None else "", tflops=check.tflops,
                                checked_at=timestamp(check.checked_at), source=check.source, note=check.note)
