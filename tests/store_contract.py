"""The Store port's contract: every adapter (SQLite now, PostgreSQL later) must pass it.

A test module binds it with ``from tests.store_contract import *`` and a ``store`` fixture.
"""

from __future__ import annotations

import pytest

from coordinator.store.base import Presence, StaleChecks
from coordinator.models import GpuSpec, Job, JobState, ProviderRecord, ProviderTier, Task, TaskState
from gpumesh.errors import FailedPrecondition, NotFound
from gpumesh.jobspec import JobSpec

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def make_job(store, job_id="job_1", n=3, key="", max_attempts=3, now=100.0, deadline=None, allow_unchecked=False):
    spec = JobSpec(model_cid=CID, input_cid=CID, max_attempts=max_attempts, deadline=deadline,
                   verification={"allow_unchecked": allow_unchecked})
    job = Job(job_id, spec, JobState.QUEUED, n, n * 2, now, now, idempotency_key=key)
    tasks = [Task(f"{job_id}-t{i}", job_id, i, TaskState.QUEUED, CID, 2) for i in range(n)]
    return store.create_job(job, tasks)


def make_provider(store, address="0x0000000000000000000000000000000000000001", pid="prov_a"):
    return store.upsert_provider(
        ProviderRecord(pid, address, "a", "{}", (GpuSpec("H100", 80_000),), 8, 64_000, 10,
                       ProviderTier.OPEN, 2, "bwrap", True)
    )


def lease_all(store, provider_id="prov_a", now=101.0, ttl=10.0):
    return [store.lease_task(t.task_id, provider_id, ttl=ttl, now=now) for t in store.queued_tasks(100)]


def submit(store, lease, now=102.0, cid=CID, provider_id="prov_a"):
    return store.submit_result(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id=provider_id,
                               output_cid=cid, signature=b"s", metrics_json="{}", now=now)


def test_create_get_and_idempotency_key(store):
    job = make_job(store, key="k1")
    assert store.get_job("job_1") == job
    again = make_job(store, job_id="job_2", key="k1")
    assert again.job_id == "job_1"
    assert store.find_job_by_key("k1").job_id == "job_1"
    with pytest.raises(NotFound):
        store.get_job("job_2")
    assert [t.index for t in store.list_tasks("job_1")] == [0, 1, 2]


def test_lease_is_exclusive_and_starts_the_job(store):
    make_job(store)
    make_provider(store)
    t = store.queued_tasks(10)[0]
    lease = store.lease_task(t.task_id, "prov_a", ttl=5, now=101)
    assert lease is not None and lease.task.attempts == 1 and lease.expires_at == 106
    assert store.lease_task(t.task_id, "prov_b", ttl=5, now=101) is None
    assert store.get_job("job_1").state is JobState.RUNNING
    assert len(store.queued_tasks(10)) == 2


def test_results_accepted_once_and_job_ready_when_all_done(store):
    make_job(store, n=2)
    make_provider(store)
    l1, l2 = lease_all(store)
    first = submit(store, l1)
    assert first.accepted and not first.job_ready
    dup = submit(store, l1)
    assert dup.accepted and dup.duplicate
    other = submit(store, l1, cid="bafkreiother")
    assert not other.accepted and "different result" in other.reason
    assert not submit(store, l2, provider_id="prov_x").accepted  # not the lease holder
    last = submit(store, l2)
    assert last.accepted and last.job_ready
    assert store.get_job("job_1").state is JobState.VERIFYING
    assert store.get_provider("prov_a").tasks_completed == 2
    job = store.finish_job("job_1", output_cid=CID, now=103)
    assert job.state is JobState.COMPLETED and job.output_cid == CID
    assert {t.state for t in store.list_tasks("job_1")} == {TaskState.VERIFIED}
    assert store.finish_job("job_1", output_cid=CID, now=104).state is JobState.COMPLETED  # idempotent


def test_expired_leases_requeue_then_fail_the_job_after_max_attempts(store):
    make_job(store, n=1, max_attempts=2)
    make_provider(store)
    (lease,) = lease_all(store, now=101, ttl=5)
    assert store.extend_leases("prov_a", [lease.lease_id], ttl=5, now=104) == [lease.lease_id]
    assert store.expire_leases(now=108) == []  # extended to 109
    assert store.next_lease_expiry() == 109
    (out,) = store.expire_leases(now=110)
    assert out.requeued and not out.job_failed
    assert not submit(store, lease).accepted  # the expired lease's late result is refused
    (lease2,) = lease_all(store, now=111, ttl=5)
    assert lease2.task.attempts == 2
    (out,) = store.expire_leases(now=120)
    assert not out.requeued and out.job_failed
    job = store.get_job("job_1")
    assert job.state is JobState.FAILED and "lease expired" in job.error


def _fail(store, lease, provider_id="prov_a", *, error="input line 3: bad", retryable=False, now=102.0):
    return store.fail_task(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id=provider_id,
                           error=error, retryable=retryable, now=now)


def test_a_final_failure_fails_the_job_once_an_independent_provider_confirms_it(store):
    make_job(store, n=3, max_attempts=1)
    make_provider(store)
    make_provider(store, address="0x" + "2" * 40, pid="prov_b")
    l1, l2, _ = lease_all(store)
    assert store.fail_task(lease_id="nope", task_id=l1.task.task_id, provider_id="prov_a",
                           error="x", retryable=True, now=102) is None
    out = _fail(store, l1)
    assert out.requeued and not out.job_failed  # one open-market word is not enough, whatever attempts are left
    task = store.get_task(l1.task.task_id)
    assert task.state is TaskState.QUEUED and task.final_by == "prov_a" and "0x" + "0" * 39 + "1" in task.exclude
    assert store.get_job("job_1").state is JobState.RUNNING
    again = store.lease_task(task.task_id, "prov_b", ttl=10, now=103.0)
    out = _fail(store, again, "prov_b", now=104.0)
    assert out.job_failed and not out.requeued
    states = [t.state for t in store.list_tasks("job_1")]
    assert states == [TaskState.FAILED, TaskState.CANCELLED, TaskState.CANCELLED]
    error = store.get_job("job_1").error
    assert "input line 3" in error and "confirmed by an independent provider" in error
    # the cause was the task's: neither provider is blamed
    assert store.get_provider("prov_a").leases_abandoned == store.get_provider("prov_b").leases_abandoned == 0


def test_a_result_after_a_final_report_completes_the_task_and_charges_the_reporter(store):
    make_job(store, n=1)
    make_provider(store)
    make_provider(store, address="0x" + "2" * 40, pid="prov_b")
    (lease,) = lease_all(store)
    assert _fail(store, lease).requeued
    again = store.lease_task(lease.task.task_id, "prov_b", ttl=10, now=103.0)
    out = submit(store, again, now=104.0, provider_id="prov_b")
    assert out.accepted and out.job_ready
    assert store.get_task(lease.task.task_id).final_by == ""
    assert store.get_provider("prov_a").leases_abandoned == 1  # its "bad for good" was wrong
    assert store.get_provider("prov_b").leases_abandoned == 0


def test_a_final_failure_on_centralized_capacity_fails_the_job_at_once(store):
    make_job(store, n=1)
    store.upsert_provider(ProviderRecord("prov_c", "0x" + "c" * 40, "c", "{}", (GpuSpec("H100", 80_000),), 8,
                                         64_000, 10, ProviderTier.CENTRALIZED, 2, "bwrap", True))
    (lease,) = lease_all(store, provider_id="prov_c")
    out = _fail(store, lease, "prov_c", error="model_cid: model artifact x: member \"a\" is both a file and a directory")
    assert out.job_failed
    error = store.get_job("job_1").error
    assert 'member "a" is both a file and a directory' in error and "centralized capacity" in error
    assert store.get_provider("prov_c").leases_abandoned == 0


def test_cancel_returns_leased_tasks_and_blocks_results(store):
    make_job(store, n=2)
    make_provider(store)
    t0 = store.queued_tasks(1)[0]
    l1 = store.lease_task(t0.task_id, "prov_a", ttl=10, now=101)
    job, leased = store.cancel_job("job_1", reason="user", now=105)
    assert job.state is JobState.CANCELLED and [t.task_id for t in leased] == [l1.task.task_id]
    assert not submit(store, l1).accepted
    assert {t.state for t in store.list_tasks("job_1")} == {TaskState.CANCELLED}
    assert store.queued_tasks(10) == []
    with pytest.raises(FailedPrecondition):
        store.cancel_job("job_1", reason="again", now=106)


def test_provider_upsert_by_address_keeps_id(store):
    p = make_provider(store)
    again = make_provider(store, pid="prov_new")
    assert again.provider_id == p.provider_id == "prov_a"
    assert store.get_provider("prov_a").gpus == (GpuSpec("H100", 80_000),)


def test_nonces_are_single_use_per_address(store):
    assert store.use_nonce(address="0xA", nonce="n1", expires_at=200, now=100)
    assert not store.use_nonce(address="0xA", nonce="n1", expires_at=300, now=150)  # a replay
    assert store.use_nonce(address="0xB", nonce="n1", expires_at=200, now=100)  # another signer's
    for i in range(200):  # the occasional purge forgets only expired nonces
        assert store.use_nonce(address="0xC", nonce=f"x{i}", expires_at=10_000, now=250)
    assert not store.use_nonce(address="0xC", nonce="x0", expires_at=10_000, now=250)


def test_sealed_keys_first_write_wins(store):
    assert store.sealed_keys([]) == {}
    store.put_sealed_key("bafyA", "wrapped-1", now=1)
    store.put_sealed_key("bafyA", "wrapped-2", now=2)
    store.put_sealed_key("bafyB", "wrapped-3", now=2)
    assert store.sealed_keys(["bafyA", "bafyB", "bafyC"]) == {"bafyA": "wrapped-1", "bafyB": "wrapped-3"}


def test_challenges_are_single_use_and_expire(store):
    store.put_challenge(address="0xA", text="c1", expires_at=200)
    assert not store.take_challenge(address="0xB", text="c1", now=100)
    assert store.take_challenge(address="0xA", text="c1", now=100)
    assert not store.take_challenge(address="0xA", text="c1", now=100)
    store.put_challenge(address="0xA", text="c2", expires_at=200)
    assert not store.take_challenge(address="0xA", text="c2", now=201)


def test_sessions_resolve_until_expiry(store):
    make_provider(store)
    store.put_session(token_hash="h", provider_id="prov_a", expires_at=200)
    assert store.session_provider("h", now=199) == "prov_a"
    assert store.session_provider("h", now=201) is None
    assert store.session_provider("other", now=1) is None


def test_jobs_past_their_deadline_fail_and_release_leases(store):
    from datetime import datetime, timezone

    make_job(store, n=2, deadline=datetime.fromtimestamp(150, timezone.utc))
    make_job(store, job_id="job_2", n=1)
    make_provider(store)
    t0 = store.queued_tasks(1)[0]
    lease = store.lease_task(t0.task_id, "prov_a", ttl=100, now=101)
    assert store.fail_overdue_jobs(now=149) == []
    ((job, leased),) = store.fail_overdue_jobs(now=151)
    assert job.job_id == "job_1" and job.state is JobState.FAILED and "deadline" in job.error
    assert [t.lease_id for t in leased] == [lease.lease_id]
    assert {t.state for t in store.list_tasks("job_1")} == {TaskState.CANCELLED}
    assert store.get_job("job_2").state is JobState.QUEUED
    assert store.fail_overdue_jobs(now=500) == []


def test_settlement_states_move_once_and_settle_tasks(store):
    from coordinator.models import SettlementState as S

    spec = JobSpec(model_cid=CID, input_cid=CID)
    job = Job("job_e", spec, JobState.QUEUED, 1, 1, 100.0, 100.0, escrow_key="0x" + "ab" * 32,
              budget=500, submitter="0x00000000000000000000000000000000000000aa")
    store.create_job(job, [Task("job_e-t0", "job_e", 0, TaskState.QUEUED, CID, 1)])
    make_job(store, job_id="job_free", n=1)  # no escrow: never settled on chain
    make_provider(store)
    assert store.find_job_by_escrow("0x" + "ab" * 32).job_id == "job_e"
    assert store.queue_settlements(now=101) == 0  # not terminal yet
    (lease,) = [store.lease_task(t.task_id, "prov_a", ttl=10, now=102) for t in store.queued_tasks(10)
                if t.job_id == "job_e"]
    assert store.list_tasks("job_e")[0].leased_at == 102
    assert submit(store, lease, now=105).job_ready
    task = store.list_tasks("job_e")[0]
    assert (task.submitted_at, task.price_per_hour) == (105, 10)  # price as of the lease
    store.finish_job("job_e", output_cid=CID, now=106)
    assert store.queue_settlements(now=107) == 1 and store.queue_settlements(now=108) == 0
    assert [j.job_id for j in store.jobs_in_settlement(S.PENDING)] == ["job_e"]
    assert store.get_job("job_e").budget == 500
    assert store.set_settlement(["job_e"], S.PENDING, S.SENT, now=109) == 1
    assert store.set_settlement(["job_e"], S.PENDING, S.SENT, now=109) == 0  # conditional
    assert store.set_settlement(["job_e"], S.SENT, S.SETTLED, now=110, tx="0xfeed") == 1
    job = store.get_job("job_e")
    assert job.settlement is S.SETTLED and job.settle_tx == "0xfeed"
    assert [t.state for t in store.list_tasks("job_e")] == [TaskState.SETTLED]
    store.cancel_job("job_free", reason="x", now=111)
    assert store.queue_settlements(now=112) == 0  # terminal, but nothing escrowed


def test_one_escrow_pays_for_one_job(store):
    from gpumesh.errors import AlreadyExists

    spec = JobSpec(model_cid=CID, input_cid=CID)
    key = "0x" + "cd" * 32
    store.create_job(Job("job_a", spec, JobState.QUEUED, 0, 0, 1.0, 1.0, escrow_key=key, budget=1), [])
    with pytest.raises(AlreadyExists) as err:
        store.create_job(Job("job_b", spec, JobState.QUEUED, 0, 0, 1.0, 1.0, escrow_key=key, budget=1), [])
    assert err.value.field == "escrow_key"
    with pytest.raises(NotFound):
        store.get_job("job_b")


def test_abandoned_leases_lower_reliability(store):
    make_job(store, n=3)
    make_provider(store)
    make_provider(store, address="0x0000000000000000000000000000000000000002", pid="prov_b")
    assert store.get_provider("prov_a").reliability == pytest.approx(0.05, abs=1e-6)  # Beta(1,1) prior
    la = [store.lease_task(t.task_id, "prov_a", ttl=5, now=101) for t in store.queued_tasks(2)]
    (lb,) = [store.lease_task(t.task_id, "prov_b", ttl=5, now=101) for t in store.queued_tasks(1)]
    submit(store, la[0], now=103)
    submit(store, lb, now=103, provider_id="prov_b")
    store.expire_leases(now=200)  # prov_a walks away from its second lease
    a, b = store.get_provider("prov_a"), store.get_provider("prov_b")
    assert (a.tasks_completed, a.leases_abandoned, b.tasks_completed, b.leases_abandoned) == (1, 1, 1, 0)
    assert a.reliability == pytest.approx(0.1354, abs=1e-3)  # Beta(2, 2)
    assert b.reliability == pytest.approx(0.05 ** 0.5, abs=1e-6)  # Beta(2, 1)


# ---- verification -----------------------------------------------------------------------------

def _check_row(primary: Task, role=None, suffix="c1", exclude=("0xop",)) -> Task:
    from coordinator.models import TaskRole

    return Task(f"{primary.task_id}-{suffix}", primary.job_id, primary.index, TaskState.QUEUED, CID, primary.prompts,
                role=role or TaskRole.REPLICA, verifies=primary.task_id, kind="inference", exclude=exclude,
                check_json='{"names": []}')


def test_a_checked_job_is_ready_only_once_its_checks_are_read(store):
    from coordinator.models import TaskRole
    from coordinator.store.base import VerificationUpdate

    make_job(store, n=1)
    make_provider(store)
    make_provider(store, address="0x0000000000000000000000000000000000000002", pid="prov_b")
    (lease,) = lease_all(store)
    out = store.submit_result(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id="prov_a",
                              output_cid=CID, signature=b"s", metrics_json="{}", now=102.0,
                              verdict="checking (replica)", check=_check_row(lease.task))
    assert out.accepted and not out.job_ready  # the replica is still queued
    assert store.job_progress("job_1").done == 1  # progress counts the job's own tasks only
    (check,) = store.list_checks("job_1")
    assert check.role is TaskRole.REPLICA and check.exclude == ("0xop",) and check.verifies == lease.task.task_id
    assert [t.task_id for t in store.list_tasks("job_1")] == [lease.task.task_id]
    assert store.queued_tasks(10) == [check]  # checks are scheduled like any task
    replica = store.lease_task(check.task_id, "prov_b", ttl=10, now=103.0)
    out = store.submit_result(lease_id=replica.lease_id, task_id=check.task_id, provider_id="prov_b",
                              output_cid=CID, signature=b"s", metrics_json="{}", now=104.0)
    assert out.accepted and not out.job_ready  # submitted but not read yet
    assert [t.task_id for t in store.unread_checks()] == [check.task_id]
    ready = store.apply_verification(VerificationUpdate(
        "job_1", states=[(check.task_id, TaskState.VERIFIED, "identical")],
        verdicts=[(lease.task.task_id, "verified by replica")],
        observations=[("prov_a", True), ("prov_b", True)]), now=105.0, half_life_s=1e9)
    assert ready and store.get_job("job_1").state is JobState.VERIFYING
    assert store.unread_checks() == []
    a = store.get_provider("prov_a")
    assert (a.consecutive_valid, a.total_valid, a.total_invalid) == (1, 1, 0) and a.rep_alpha == 2.0
    store.finish_job("job_1", output_cid=CID, now=106.0)
    assert {t.state for t in (*store.list_tasks("job_1"), *store.list_checks("job_1"))} == {TaskState.VERIFIED}


def test_an_invalid_result_is_requeued_for_another_operator_and_slashed_once(store):
    from coordinator.store.base import Slash, SlashState, VerificationUpdate

    make_job(store, n=1)
    make_provider(store)
    (lease,) = lease_all(store)
    slash = Slash("prov_a", lease.task.task_id, "job_1", "0x0000000000000000000000000000000000000001", 10, "", "bad")
    out = store.reject_result(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id="prov_a",
                              reason="does not answer its input", slash=slash, now=102.0, half_life_s=1e9)
    assert not out.accepted and out.reason == "does not answer its input"
    (task,) = store.list_tasks("job_1")
    assert task.state is TaskState.QUEUED and task.provider_id == "" and task.error == "does not answer its input"
    assert task.exclude == ("0x0000000000000000000000000000000000000001",)  # its operator never gets it again
    a = store.get_provider("prov_a")
    assert (a.consecutive_valid, a.total_invalid, a.slashed) == (0, 1, 1) and a.rep_beta == 2.0
    # The same slash queued again (a retried read) is still one slash.
    store.apply_verification(VerificationUpdate("job_1", slashes=[slash]), now=103.0, half_life_s=1e9)
    assert [s.task_id for s in store.slashes_in_state(SlashState.PENDING)] == [task.task_id]
    assert store.get_provider("prov_a").slashed == 1
    assert store.set_slash("prov_a", task.task_id, SlashState.PENDING, SlashState.SENT, now=104.0)
    assert not store.set_slash("prov_a", task.task_id, SlashState.PENDING, SlashState.SENT, now=104.0)
    assert store.set_slash("prov_a", task.task_id, SlashState.SENT, SlashState.DONE, now=105.0, tx="0xt",
                           slashed_amount=7)
    (done,) = store.list_slashes("prov_a")
    assert (done.state, done.tx, done.slashed_amount) == (SlashState.DONE, "0xt", 7)


def test_a_failed_check_goes_to_another_checker_then_to_centralized_capacity(store):
    make_job(store, n=1, max_attempts=2)
    make_provider(store)
    make_provider(store, address="0x" + "2" * 40, pid="prov_b")
    (lease,) = lease_all(store)
    store.submit_result(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id="prov_a",
                        output_cid=CID, signature=b"s", metrics_json="{}", now=102.0, check=_check_row(lease.task))
    (check,) = store.list_checks("job_1")
    replica = store.lease_task(check.task_id, "prov_b", ttl=10, now=103.0)
    outcome = store.fail_task(lease_id=replica.lease_id, task_id=check.task_id, provider_id="prov_b",
                              error="bad input", retryable=False, now=104.0)
    assert outcome.requeued and not outcome.job_ready  # the primary does not stand on a checker's refusal
    (check,) = store.list_checks("job_1")
    assert check.state is TaskState.QUEUED and "0x" + "2" * 40 in check.exclude and check.require_tier == ""
    b = store.get_provider("prov_b")
    assert b.total_invalid == 1 and b.leases_abandoned == 1  # calling bad an input the primary ran: suspect
    again = store.lease_task(check.task_id, "prov_b", ttl=10, now=105.0)  # (the store leases what it is told)
    store.fail_task(lease_id=again.lease_id, task_id=check.task_id, provider_id="prov_b", error="oom",
                    retryable=True, now=106.0)
    (check,) = store.list_checks("job_1")
    assert check.state is TaskState.QUEUED and check.require_tier == "CENTRALIZED"  # out of attempts: the referee tier
    assert store.get_job("job_1").state is JobState.RUNNING


def test_a_failed_attempt_is_avoided_next_time_and_counts_against_the_provider(store):
    make_job(store, n=1)
    make_provider(store)
    (lease,) = lease_all(store)
    out = store.fail_task(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id="prov_a", error="oom",
                          retryable=True, now=102.0)
    assert out.requeued
    (task,) = store.list_tasks("job_1")
    assert "0x" + "0" * 39 + "1" in task.avoid and task.exclude == ()
    assert store.get_provider("prov_a").leases_abandoned == 1


def test_a_stale_check_goes_to_centralized_capacity_unless_the_job_allows_unchecked(store):
    make_job(store, n=1)
    make_provider(store)
    (lease,) = lease_all(store)
    store.submit_result(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id="prov_a",
                        output_cid=CID, signature=b"s", metrics_json="{}", now=102.0, check=_check_row(lease.task))
    assert store.escalate_stale_checks(older_than=101.0, now=150.0) == StaleChecks([], [], [])  # queued at 102
    (check,) = store.list_checks("job_1")
    assert store.escalate_stale_checks(older_than=103.0, now=400.0) == StaleChecks([], [], [("job_1", check.task_id)])
    (check,) = store.list_checks("job_1")
    assert check.state is TaskState.QUEUED and check.require_tier == "CENTRALIZED"  # never silently unchecked
    assert store.get_job("job_1").state is JobState.RUNNING
    assert store.escalate_stale_checks(older_than=1000.0, now=1000.0) == StaleChecks([], [], [])  # it waits there

    make_job(store, job_id="job_2", n=1, allow_unchecked=True)
    lease = store.lease_task("job_2-t0", "prov_a", ttl=10, now=1000.5)
    store.submit_result(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id="prov_a",
                        output_cid=CID, signature=b"s", metrics_json="{}", now=1001.0, check=_check_row(lease.task))
    (check,) = store.list_checks("job_2")
    assert store.escalate_stale_checks(older_than=1002.0, now=1400.0) == StaleChecks(["job_2"], [check.task_id], [])
    (check,) = store.list_checks("job_2")
    assert check.state is TaskState.FAILED and check.verdict.startswith("check not run")
    (primary,) = store.list_tasks("job_2")
    assert primary.verdict.startswith("delivered unchecked")
    assert store.get_job("job_2").state is JobState.VERIFYING


def test_presence_follows_the_newest_session_and_counts_open_leases(store):
    s = store
    make_job(s, n=2)
    make_provider(s)
    s.put_presence("r1", [Presence("prov_a", opened_at=10.0, cached_models=frozenset({"m"}))], now=50.0)
    s.put_presence("r2", [Presence("prov_a", opened_at=20.0)], now=51.0)  # it reconnected to r2
    s.put_presence("r1", [Presence("prov_a", opened_at=10.0)], now=52.0)  # r1's stale report loses
    [p] = s.live_presence(since=0.0)
    assert (p.replica_id, p.opened_at, p.cached_models, p.leased) == ("r2", 20.0, frozenset(), 0)
    lease_all(s)
    assert s.live_presence(since=0.0)[0].leased == 2
    assert [t.task_id for t in s.open_leases("prov_a")] == [t.task_id for t in s.list_tasks("job_1")]
    assert s.live_presence(since=60.0) == []
    s.drop_presence("r1", ["prov_a"])  # not r1's any more: stays
    assert len(s.live_presence(since=0.0)) == 1
    s.drop_presence("r2", ["prov_a"])
    assert s.live_presence(since=0.0) == []


def test_dashboard_reads_are_bounded_pages_newest_first(store):
    from coordinator.models import SettlementState as S
    from coordinator.store.base import Slash, VerificationUpdate

    for i, at in enumerate((100.0, 200.0, 200.0, 300.0)):  # two jobs created at the same instant
        make_job(store, job_id=f"job_{i}", n=2, now=at)
    make_provider(store)
    make_provider(store, address="0x0000000000000000000000000000000000000002", pid="prov_b")
    assert [j.job_id for j in store.recent_jobs(limit=10)] == ["job_3", "job_2", "job_1", "job_0"]
    first = store.recent_jobs(limit=2)
    assert [j.job_id for j in first] == ["job_3", "job_2"]
    after = (first[-1].created_at, first[-1].job_id)
    assert [j.job_id for j in store.recent_jobs(limit=2, before=after)] == ["job_1", "job_0"]  # the tie kept
    la = store.lease_task("job_1-t0", "prov_a", ttl=10, now=301.0)
    lb = store.lease_task("job_1-t1", "prov_b", ttl=10, now=301.0)
    assert [j.job_id for j in store.recent_jobs(state=JobState.RUNNING)] == ["job_1"]
    assert [j.job_id for j in store.recent_jobs(state=JobState.QUEUED, limit=1, before=(300.0, "job_3"))] == ["job_2"]
    submit(store, la, now=311.0)
    progress = store.jobs_progress(["job_1", "job_0", "job_nope"])
    assert set(progress) == {"job_1", "job_0"}
    assert (progress["job_1"].done, progress["job_1"].running, progress["job_1"].total) == (1, 1, 2)
    assert store.jobs_progress([]) == {}
    # Tasks by index, paged; checks apart.
    assert [t.index for t in store.page_tasks("job_1", limit=1)] == [0]
    assert [t.index for t in store.page_tasks("job_1", limit=5, after=(0, "job_1-t0"))] == [1]
    assert store.page_tasks("job_1", checks=True) == []
    submit(store, lb, now=304.0, provider_id="prov_b")
    # What the results cost, per provider and price (durations lease -> result added up).
    charges = store.job_charges(["job_1", "job_0"], [TaskState.SUBMITTED, TaskState.VERIFIED])
    assert [(c.job_id, c.provider_id, c.address[-1], c.price_per_hour, c.seconds, c.tasks) for c in charges] == [
        ("job_1", "prov_a", "1", 10, 10.0, 1), ("job_1", "prov_b", "2", 10, 3.0, 1)]
    assert store.job_charges(["job_1"], [TaskState.SETTLED]) == [] and store.job_charges([], [TaskState.SETTLED]) == []
    # Settled jobs, latest first.
    spec = JobSpec(model_cid=CID, input_cid=CID)
    for i in range(3):
        key = "0x" + f"{i:02x}" * 32
        store.create_job(Job(f"job_e{i}", spec, JobState.QUEUED, 0, 0, 400.0 + i, 400.0 + i, escrow_key=key, budget=5),
                         [])
        store.cancel_job(f"job_e{i}", reason="x", now=401.0)
    store.queue_settlements(now=402.0)
    for job_id, at in (("job_e2", 410.0), ("job_e0", 420.0), ("job_e1", 415.0)):
        store.set_settlement([job_id], S.PENDING, S.SETTLED, now=at)
    assert [j.job_id for j in store.latest_in_settlement(S.SETTLED, limit=2)] == ["job_e0", "job_e1"]
    # Slashes newest first; providers by id, paged.
    for n, pid in enumerate(("prov_a", "prov_b")):
        slash = Slash(pid, f"t{n}", "job_1", "0x01", 7, "", f"bad {n}")
        store.apply_verification(VerificationUpdate("job_1", slashes=[slash]), now=500.0 + n, half_life_s=1e9)
    assert [s.reason for s in store.recent_slashes(limit=5)] == ["bad 1", "bad 0"]
    assert [s.reason for s in store.recent_slashes(limit=1)] == ["bad 1"]
    assert [p.provider_id for p in store.page_providers(limit=1)] == ["prov_a"]
    assert [p.provider_id for p in store.page_providers(limit=5, after="prov_a")] == ["prov_b"]


# ---- the HTTP API's tables: keys, models, files, batches (coordinator.store.api) ----------------


def test_api_keys_are_found_by_hash_capped_and_revoked(store):
    from coordinator.store.api import ApiKey
    from gpumesh.errors import ResourceExhausted

    store.put_api_key("h1", ApiKey("key_1", "0xAbC", "ci", 100, 0, 1.0))
    store.put_api_key("h2", ApiKey("key_2", "0xAbC", "", None, 0, 2.0))
    assert store.api_key("h1").wallet == "0xAbC" and store.api_key("nope") is None
    assert store.charge_api_key("key_1", 60) == 60
    with pytest.raises(ResourceExhausted):
        store.charge_api_key("key_1", 50)
    assert store.api_key("h1").spent == 60 and store.charge_api_key("key_2", 10**30) == 10**30  # no cap
    assert not store.revoke_api_key("key_1", "0xother", now=3.0)  # only its own wallet's
    assert store.revoke_api_key("key_1", "0xAbC", now=3.0) and store.api_key("h1") is None
    assert [k.key_id for k in store.api_keys_of("0xAbC")] == ["key_1", "key_2"]


def test_models_by_name_are_replaced_only_when_asked(store):
    from coordinator.store.api import ModelEntry
    from gpumesh.errors import AlreadyExists

    store.put_model(ModelEntry("org/m", CID, "gguf", 10, 256, "0xa", 1.0))
    with pytest.raises(AlreadyExists):
        store.put_model(ModelEntry("org/m", CID, "hf-tar", 20, 300, "0xa", 2.0))
    store.put_model(ModelEntry("org/m", CID, "hf-tar", 20, 300, "0xa", 2.0), replace=True)
    assert store.get_model("org/m").format == "hf-tar" and store.get_model("x") is None
    assert [m.name for m in store.list_models()] == ["org/m"]
    store.put_model(ModelEntry("ft:org/m:s:ftjob-1", CID, "lora", 5, 0, "0xa", 3.0, base=CID))
    assert store.get_model("ft:org/m:s:ftjob-1").base == CID and store.get_model("org/m").base == ""


def test_finetunes_are_their_owners_and_job_events_keep_their_order(store):
    from coordinator.store.api import BatchEntry

    for i in range(3):
        store.put_finetune(BatchEntry(f"ftjob-{i}", "0xA", {"status": "validating_files"}, "", float(i)))
    store.update_finetune("ftjob-1", body={"status": "running"}, job_id="job_7")
    got = store.get_finetune("ftjob-1", "0xA")
    assert (got.body, got.job_id) == ({"status": "running"}, "job_7")
    with pytest.raises(NotFound):
        store.get_finetune("ftjob-1", "0xB")
    assert [f.batch_id for f in store.list_finetunes("0xA", limit=2)] == ["ftjob-2", "ftjob-1"]
    assert [f.batch_id for f in store.list_finetunes("0xA", after="ftjob-1")] == ["ftjob-0"]
    seqs = [store.add_job_event("job_7", level="info", type="metrics", message=f"step {i}", data={"step": i},
                                now=10.0 + i) for i in range(1, 5)]
    store.add_job_event("job_8", level="info", type="message", message="other", now=1.0)
    assert seqs == [1, 2, 3, 4]
    assert [e.data["step"] for e in store.job_events("job_7", after=1, limit=2)] == [2, 3]
    assert [e.seq for e in store.job_events("job_7", before=4, limit=2, newest_first=True)] == [3, 2]
    assert store.has_job_event("job_7", "metrics") and not store.has_job_event("job_7", "cancel_requested")
    assert [e.message for e in store.job_events("job_8")] == ["other"]


def test_files_and_batches_are_their_owners_and_page_newest_first(store):
    from coordinator.store.api import BatchEntry, FileEntry

    for i in range(3):
        store.put_file(FileEntry(f"file-{i}", "0xA", "batch", f"f{i}", 10, CID, float(i)))
        store.put_batch(BatchEntry(f"batch_{i}", "0xA", {"status": "validating"}, "", float(i)))
    store.put_file(FileEntry("file-0", "0xA", "batch", "again", 99, CID, 9.0))  # an id is written once
    assert store.get_file("file-0", "0xa").filename == "f0"
    with pytest.raises(NotFound):
        store.get_file("file-0", "0xB")
    assert [f.file_id for f in store.list_files("0xA", limit=2)] == ["file-2", "file-1"]
    assert [f.file_id for f in store.list_files("0xA", after="file-1")] == ["file-0"]
    assert store.delete_file("file-1", "0xA") and not store.delete_file("file-1", "0xA")
    assert [f.file_id for f in store.list_files("0xA")] == ["file-2", "file-0"]
    store.update_batch("batch_1", body={"status": "in_progress"}, job_id="job_9")
    got = store.get_batch("batch_1", "0xA")
    assert (got.body, got.job_id) == ({"status": "in_progress"}, "job_9")
    with pytest.raises(NotFound):
        store.get_batch("batch_1", "0xB")
    assert [b.batch_id for b in store.list_batches("0xA", limit=2, after="batch_2")] == ["batch_1", "batch_0"]
    assert store.list_batches("0xB") == []


def test_jobs_of_a_submitter_page_newest_first(store):
    for i in range(3):
        job = make_job(store, job_id=f"job_{i}", n=1, now=100.0 + i)
    assert store.jobs_of("") and store.jobs_of("0xnobody") == []
    first = store.jobs_of(job.submitter, limit=2)
    assert [j.job_id for j in first] == ["job_2", "job_1"]
    rest = store.jobs_of(job.submitter, before=(first[-1].created_at, first[-1].job_id))
    assert [j.job_id for j in rest] == ["job_0"]


def test_earnings_of_reads_a_wallets_jobs_results_claims_and_slashes(store):
    """Every registration of one wallet (any case), the jobs they have results on with every
    provider's results there, the wallet's claims, and what its done slashes took."""
    from coordinator.models import SettlementState as S
    from coordinator.store.base import Slash, SlashState, VerificationUpdate

    mixed, lower = "0x00000000000000000000000000000000000000Ab", "0x00000000000000000000000000000000000000ab"
    make_provider(store, address=mixed, pid="prov_a1")
    make_provider(store, address=lower, pid="prov_a2")  # the same wallet registered again, spelled otherwise
    make_provider(store, address="0x0000000000000000000000000000000000000002", pid="prov_b")
    spec = JobSpec(model_cid=CID, input_cid=CID)
    store.create_job(Job("job_e", spec, JobState.QUEUED, 3, 3, 100.0, 100.0, escrow_key="0x" + "ee" * 32, budget=77,
                         submitter="0x00000000000000000000000000000000000000aa"),
                     [Task(f"job_e-t{i}", "job_e", i, TaskState.QUEUED, CID, 1) for i in range(3)])
    make_job(store, job_id="job_other", n=1)  # prov_b's alone: not read
    make_job(store, job_id="job_open", n=2)  # running: a2 and b have results
    make_job(store, job_id="job_leased", n=1)  # a1 holds a lease, no result: not read
    for task_id, pid, at in (("job_e-t0", "prov_a1", 101.0), ("job_e-t1", "prov_a2", 102.0), ("job_e-t2", "prov_b", 103.0),
                             ("job_other-t0", "prov_b", 101.0), ("job_open-t0", "prov_a2", 101.0),
                             ("job_open-t1", "prov_b", 101.0), ("job_leased-t0", "prov_a1", 101.0)):
        lease = store.lease_task(task_id, pid, ttl=100, now=at)
        if task_id != "job_leased-t0":
            submit(store, lease, now=at + 9.5, provider_id=pid)
    store.finish_job("job_e", output_cid=CID, now=120.0)
    store.queue_settlements(now=121.0)
    store.set_settlement(["job_e"], S.PENDING, S.SETTLED, now=122.0, tx="0xt")
    store.record_claim("job_e", mixed, 40, b"c")
    store.record_claim("job_e", "0x0000000000000000000000000000000000000002", 9, b"c")
    for n, pid in enumerate(("prov_a1", "prov_a2", "prov_b")):  # slashed for results of a running job
        slash = Slash(pid, f"job_open-t{n}", "job_open", mixed, 10, "", "bad")
        store.apply_verification(VerificationUpdate("job_open", slashes=[slash]), now=130.0 + n, half_life_s=1e9)
    store.set_slash("prov_a1", "job_open-t0", SlashState.PENDING, SlashState.DONE, now=140.0, slashed_amount=7)
    store.set_slash("prov_b", "job_open-t2", SlashState.PENDING, SlashState.DONE, now=140.0, slashed_amount=5)

    got = store.earnings_of(lower.upper().replace("0X", "0x"))
    assert got.provider_ids == ("prov_a1", "prov_a2") and got.slashed == (7,)  # a2's slash is not done yet
    assert [(j.job_id, j.budget, j.escrowed, j.settlement, j.claim) for j in got.jobs] == [
        ("job_e", 77, True, S.SETTLED, 40), ("job_open", 0, False, S.NONE, None)]
    assert [(t.task_id, t.address, t.state, t.price_per_hour, t.seconds) for t in got.tasks] == [
        ("job_e-t0", mixed, TaskState.SETTLED, 10, 9.5), ("job_e-t1", lower, TaskState.SETTLED, 10, 9.5),
        ("job_e-t2", "0x0000000000000000000000000000000000000002", TaskState.SETTLED, 10, 9.5),
        ("job_open-t0", lower, TaskState.SUBMITTED, 10, 9.5),
        ("job_open-t1", "0x0000000000000000000000000000000000000002", TaskState.SUBMITTED, 10, 9.5)]
    nobody = store.earnings_of("0x00000000000000000000000000000000000000ff")
    assert (nobody.provider_ids, nobody.jobs, nobody.tasks, nobody.slashed) == ((), (), (), ())
