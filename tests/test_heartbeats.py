"""A provider's result and heartbeats on its session: a result counts only under the provider's
signature; a heartbeat right after a result does not cancel the lease it still lists (it is
finished, not lost), while a lease that really is no longer its own is cancelled."""

from __future__ import annotations

import asyncio
import json

from coordinator.config import CoordinatorSettings
from coordinator.core import Coordinator
from coordinator.models import Job, JobState, ProviderRecord, ProviderTier, Task, TaskState
from coordinator.store.sqlite import SqliteStore
from gpumesh.artifacts import EmbeddedBlockstore
from gpumesh.identity import Wallet, result_text
from gpumesh.jobspec import JobSpec
from gpumesh.v1 import provider_pb2

NOW = 1_000.0


def _drain(session) -> list[provider_pb2.CoordinatorMessage]:
    out = []
    while not session.outbox.empty():
        out.append(session.outbox.get_nowait())
    return out


def _leased(tmp_path):
    """A coordinator, one provider session and the lease it was just given (one one-prompt task)."""
    core = Coordinator(CoordinatorSettings(data_dir=tmp_path, verify=False), SqliteStore(tmp_path / "c.db"),
                       EmbeddedBlockstore(tmp_path / "blocks"), clock=lambda: NOW)
    wallet = Wallet.generate()
    core.store.upsert_provider(ProviderRecord("prov_a", wallet.address, "a", "{}", (), 4, 16_000, 0,
                                              ProviderTier.OPEN, 2, "process", False))
    session = core.sessions.open(core.store.get_provider("prov_a"), now=NOW)
    inp = b'{"id": 0, "prompt": "hi"}\n'
    cid = core.artifacts.put_bytes(inp)
    core.store.create_job(Job("job_1", JobSpec(model_cid=cid, input_cid=cid), JobState.QUEUED, 1, 1, NOW, NOW),
                          [Task("job_1-t00000", "job_1", 0, TaskState.QUEUED, cid, 1)])
    assert core.schedule_once() == 1
    (msg,) = [m for m in _drain(session) if m.WhichOneof("body") == "lease"]
    return core, session, wallet, msg.lease


def _send_result(core, session, lease, out: str, signature: bytes) -> provider_pb2.ResultAck:
    result = provider_pb2.TaskResult(lease_id=lease.lease_id, task_id=lease.task_id, output_cid=out,
                                     signature=signature)
    asyncio.run(core.on_message(session, provider_pb2.ProviderMessage(result=result)))
    (ack,) = _drain(session)
    return ack.ack


def test_a_result_counts_only_under_its_providers_signature(tmp_path):
    """The result commitment is signed by the provider's wallet over task id and output CID: another
    key's signature, or the provider's over another output, is refused and nothing is recorded;
    the provider's own signature then goes through."""
    core, session, wallet, lease = _leased(tmp_path)
    out = core.artifacts.put_bytes(json.dumps({"id": 0, "prompt": "hi", "completion": " there"}).encode() + b"\n")
    other = core.artifacts.put_bytes(b'{"id": 0, "prompt": "hi", "completion": " else"}\n')
    for signature in (Wallet.generate().sign_text(result_text(lease.task_id, out)),
                      wallet.sign_text(result_text(lease.task_id, other)), b"\x00" * 65, b""):
        ack = _send_result(core, session, lease, out, signature)
        assert not ack.accepted and "signature" in ack.reason, ack.reason
        assert core.store.get_task(lease.task_id).state is TaskState.LEASED
    ack = _send_result(core, session, lease, out, wallet.sign_text(result_text(lease.task_id, out)))
    assert ack.accepted, ack.reason
    assert core.store.get_task(lease.task_id).state is TaskState.VERIFIED


def test_a_just_finished_lease_is_not_cancelled_but_a_foreign_one_is(tmp_path):
    core, session, wallet, lease = _leased(tmp_path)
    out = core.artifacts.put_bytes(json.dumps({"id": 0, "prompt": "hi", "completion": " there"}).encode() + b"\n")
    ack = _send_result(core, session, lease, out, wallet.sign_text(result_text(lease.task_id, out)))
    assert ack.accepted, ack.reason
    # Its next heartbeat still lists the lease (the ack was in flight) and one it never held.
    hb = provider_pb2.Heartbeat(lease_ids=[lease.lease_id, "lease-of-someone-else"], free_slots=1)
    asyncio.run(core.on_message(session, provider_pb2.ProviderMessage(heartbeat=hb)))
    cancels = [m.cancel.lease_id for m in _drain(session) if m.WhichOneof("body") == "cancel"]
    assert cancels == ["lease-of-someone-else"]
    # Once it stops listing the finished lease, the coordinator forgets it.
    asyncio.run(core.on_message(session, provider_pb2.ProviderMessage(heartbeat=provider_pb2.Heartbeat())))
    assert session.finished == set()
    assert core.store.get_task(lease.task_id).state is TaskState.VERIFIED  # the result stands
