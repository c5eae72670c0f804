"""The verifier's glue over a real store and blockstore: what a primary result needs, what a
check's result decides, and a coordinator restart with a check left unread."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace

import pytest

from coordinator.config import CoordinatorSettings
from coordinator.core import Coordinator
from coordinator.models import (
    GpuSpec,
    Job,
    JobState,
    ProviderRecord,
    ProviderTier,
    Task,
    TaskRole,
    TaskState,
)
from coordinator.sealing import KeyBroker, SealedView
from coordinator.store.sqlite import SqliteStore
from coordinator.verification.inputs import jsonl, records
from coordinator.verifier import Verifier
from gpumesh.artifacts import EmbeddedBlockstore
from gpumesh.jobspec import JobSpec
from gpumesh.sealing import SealingKey

PROMPTS = ["alpha", "beta", "gamma", "delta"]


@pytest.fixture
def env(tmp_path):
    store = SqliteStore(tmp_path / "c.db")
    # What the coordinator hands its verifier: the store seen through its key broker.
    blocks = SealedView(EmbeddedBlockstore(tmp_path / "blocks"), KeyBroker(SealingKey.generate(), store, lambda: 10.0))
    settings = CoordinatorSettings(data_dir=tmp_path, replication_p_new=1.0)  # newcomers replicated: the replica path
    for pid, addr, tier in (("prov_a", "0x" + "a" * 40, ProviderTier.OPEN), ("prov_b", "0x" + "b" * 40, ProviderTier.OPEN),
                            ("prov_r", "0x" + "c" * 40, ProviderTier.CENTRALIZED)):
        store.upsert_provider(ProviderRecord(pid, addr, pid, "{}", (GpuSpec("H100", 80_000),), 8, 64_000, 10, tier, 1,
                                             "bwrap", True))
    inp = jsonl([{"id": i, "prompt": p} for i, p in enumerate(PROMPTS)])
    cid = blocks.put_bytes(inp)
    spec = JobSpec(model_cid=cid, input_cid=cid)
    store.create_job(Job("job_1", spec, JobState.QUEUED, 1, 4, 1.0, 1.0), [Task("job_1-t00000", "job_1", 0, TaskState.QUEUED, cid, 4)])
    verifier = Verifier(settings, store, blocks, clock=lambda: 10.0, rng=random.Random(3))
    yield store, blocks, verifier, settings, inp
    store.close()


def _output(inp: bytes, completion=lambda p: p.upper()) -> bytes:
    return jsonl([{**r, "completion": completion(r["prompt"]), "completion_ids": [len(r["prompt"])]}
                  for r in records(inp)])


def _run(store, blocks, task_id: str, provider_id: str, output: bytes, verdict: str = "", check=None):
    lease = store.lease_task(task_id, provider_id, ttl=100, now=5.0)
    cid = blocks.put_bytes(output)
    store.submit_result(lease_id=lease.lease_id, task_id=task_id, provider_id=provider_id, output_cid=cid,
                        signature=b"s", metrics_json="{}", now=6.0, verdict=verdict, check=check)
    return lease, cid


def _submit_primary(store, blocks, verifier, inp):
    """prov_a's honest result, submitted with what the verifier decided for it."""
    lease = store.lease_task("job_1-t00000", "prov_a", ttl=100, now=5.0)
    out_cid = blocks.put_bytes(_output(inp))
    decision = verifier.on_primary(lease.task, store.get_job("job_1"), store.get_provider("prov_a"), out_cid)
    store.submit_result(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id="prov_a", output_cid=out_cid,
                        signature=b"s", metrics_json="{}", now=6.0, verdict=decision.verdict, check=decision.check)
    return decision


def test_an_output_that_does_not_answer_its_input_is_rejected(env):
    store, blocks, verifier, _, inp = env
    lease = store.lease_task("job_1-t00000", "prov_a", ttl=100, now=5.0)
    shuffled = jsonl(list(reversed(records(_output(inp)))))
    decision = verifier.on_primary(lease.task, store.get_job("job_1"), store.get_provider("prov_a"),
                                   blocks.put_bytes(shuffled))
    assert decision.reject.startswith("result does not answer the task's input") and decision.check is None


def test_a_newcomer_is_replicated_on_a_disguised_input_and_agreement_verifies_both(env):
    store, blocks, verifier, _, inp = env
    lease = store.lease_task("job_1-t00000", "prov_a", ttl=100, now=5.0)
    out_cid = blocks.put_bytes(_output(inp))
    decision = verifier.on_primary(lease.task, store.get_job("job_1"), store.get_provider("prov_a"), out_cid)
    check = decision.check
    assert check.role is TaskRole.REPLICA and check.kind == "inference" and check.exclude == ("0x" + "a" * 40,)
    disguised = records(blocks.get_bytes(check.input_cid))
    assert sorted(r["prompt"] for r in disguised) == sorted(PROMPTS) and {r["id"] for r in disguised}.isdisjoint(range(4))
    store.submit_result(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id="prov_a", output_cid=out_cid,
                        signature=b"s", metrics_json="{}", now=6.0, verdict=decision.verdict, check=check)
    _run(store, blocks, check.task_id, "prov_b", _output(blocks.get_bytes(check.input_cid)))
    update = verifier.read(store.get_task(check.task_id))
    assert update.states == [(check.task_id, TaskState.VERIFIED, "replica: 4 records identical")]
    assert set(update.observations) == {("prov_a", True), ("prov_b", True)} and not update.slashes
    assert store.apply_verification(update, now=7.0, half_life_s=1e9)  # the job is ready


def test_a_disputed_replica_goes_to_a_centralized_referee_that_rescores_both_sides(env):
    store, blocks, verifier, _, inp = env
    decision = _submit_primary(store, blocks, verifier, inp)
    _run(store, blocks, decision.check.task_id, "prov_b",
         _output(blocks.get_bytes(decision.check.input_cid), completion=lambda p: p[::-1]))
    update = verifier.read(store.get_task(decision.check.task_id))
    (referee,) = update.new_rows
    assert referee.role is TaskRole.REFEREE and referee.kind == "rescore" and referee.require_tier == "CENTRALIZED"
    assert set(referee.exclude) == {"0x" + "a" * 40, "0x" + "b" * 40}
    claims, prompts = records(blocks.get_bytes(referee.input_cid)), records(blocks.get_bytes(referee.aux_cid))
    assert [c["completion"] for c in claims] == [p.upper() for p in PROMPTS] + [p[::-1] for p in PROMPTS]
    assert [p["prompt"] for p in prompts] == PROMPTS * 2  # aligned with the claims
    assert update.verdicts[0][1].startswith("disputed: replica: 4 of 4 records differ")
    assert not store.apply_verification(update, now=7.0, half_life_s=1e9)  # the referee is still to run


def test_a_restarted_coordinator_reads_the_check_its_predecessor_left_unread(env):
    store, blocks, verifier, settings, inp = env
    decision = _submit_primary(store, blocks, verifier, inp)
    _run(store, blocks, decision.check.task_id, "prov_b", _output(blocks.get_bytes(decision.check.input_cid)))
    assert store.unread_checks()  # the process died here, before reading it

    core = Coordinator(settings, store, blocks)
    asyncio.run(core._recover())
    assert store.unread_checks() == []
    job = store.get_job("job_1")
    assert job.state is JobState.COMPLETED and job.output_cid
    assert json.loads(blocks.get_bytes(job.output_cid).decode().splitlines()[0])["completion"] == "ALPHA"
    assert store.get_provider("prov_b").total_valid == 1


def test_the_replication_floor_rises_to_cost_over_reward_plus_stake(env, tmp_path):
    store, blocks, _, _, _ = env
    paid = CoordinatorSettings(data_dir=tmp_path, chain_url="http://127.0.0.1:1", slash_amount=30, min_stake=200)
    verifier = Verifier(paid, store, blocks, clock=lambda: 3600.0, rng=random.Random(1))
    task = Task("t", "job_1", 0, TaskState.LEASED, "", 1, leased_at=0.0, price_per_hour=10)  # earns 10 in the hour
    assert verifier.p_min(task) == pytest.approx(10 / (10 + 30))  # a quarter of 200 covers the slash of 30
    slashed = replace(store.get_provider("prov_a"), stake=40)  # what is left after slashes: 10 per incident
    assert verifier.p_min(task, slashed) == pytest.approx(10 / (10 + 10))
    assert verifier.p_min(task, replace(slashed, stake=0)) == 1.0
    plan = verifier.plan_for(store.get_job("job_1").spec, task)
    assert plan.replication.p_floor == pytest.approx(0.25)  # above the configured 0.02
    unstaked = Verifier(CoordinatorSettings(data_dir=tmp_path, chain_url="http://127.0.0.1:1", min_stake=0), store,
                        blocks, clock=lambda: 3600.0)
    assert unstaked.p_min(task) == 1.0  # nothing surely slashable: only checking everything deters
    derived = Verifier(CoordinatorSettings(data_dir=tmp_path, chain_url="http://127.0.0.1:1"), store, blocks,
                       clock=lambda: 3600.0)
    assert derived.p_min(task) == pytest.approx(10 / (10 + 10**18))  # the default stake lets a slash take 1 GMT
    unpaid = Verifier(CoordinatorSettings(data_dir=tmp_path), store, blocks, clock=lambda: 3600.0)
    assert unpaid.p_min(task) == 0.0  # nobody is paid: nothing to gain by cheating
