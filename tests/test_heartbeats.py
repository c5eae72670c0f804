"""A provider's heartbeat right after its result: the lease it still lists is not cancelled
(it is finished, not lost), while a lease that really is no longer its own is."""

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


def test_a_just_finished_lease_is_not_cancelled_but_a_foreign_one_is(tmp_path):
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
    lease = msg.lease
    out = core.artifacts.put_bytes(json.dumps({"id": 0, "prompt": "hi", "completion": " there"}).encode() + b"\n")
    result = provider_pb2.TaskResult(lease_id=lease.lease_id, task_id=lease.task_id, output_cid=out,
                                     signature=wallet.sign_text(result_text(lease.task_id, out)))
    asyncio.run(core.on_message(session, provider_pb2.ProviderMessage(result=result)))
    (ack,) = _drain(session)
    assert ack.ack.accepted, ack.ack.reason
    # Its next heartbeat still lists the lease (the ack was in flight) and one it never held.
    hb = provider_pb2.Heartbeat(lease_ids=[lease.lease_id, "lease-of-someone-else"], free_slots=1)
    asyncio.run(core.on_message(session, provider_pb2.ProviderMessage(heartbeat=hb)))
    cancels = [m.cancel.lease_id for m in _drain(session) if m.WhichOneof("body") == "cancel"]
    assert cancels == ["lease-of-someone-else"]
    # Once it stops listing the finished lease, the coordinator forgets it.
    asyncio.run(core.on_message(session, provider_pb2.ProviderMessage(heartbeat=provider_pb2.Heartbeat())))
    assert session.finished == set()
    assert core.store.get_task(lease.task_id).state is TaskState.VERIFIED  # the result stands
