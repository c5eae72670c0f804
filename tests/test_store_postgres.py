"""The Store contract on PostgreSQL, plus what only several writers on one database can show."""

from __future__ import annotations

import threading

import pytest

from coordinator.models import JobState, TaskState
from coordinator.store.postgres import PostgresStore, pg_schema
from tests.store_contract import *  # noqa: F403  (the shared Store contract)
from tests.store_contract import lease_all, make_job, make_provider, submit


@pytest.fixture
def store(pg_dsn):
    s = PostgresStore(pg_dsn)
    yield s
    s.close()


def test_the_schema_uses_postgres_types():
    ddl = pg_schema()
    assert "BYTEA NOT NULL DEFAULT ''::bytea" in ddl and "DOUBLE PRECISION" in ddl
    assert " REAL" not in ddl and "BLOB" not in ddl


def test_state_is_shared_by_two_replicas_and_survives_reconnecting(pg_dsn):
    a, b = PostgresStore(pg_dsn), PostgresStore(pg_dsn)  # the second also runs the (idempotent) setup
    make_job(a, n=2)
    make_provider(a)
    [lease, _] = lease_all(b)
    assert a.get_task(lease.task.task_id).state is TaskState.LEASED
    a.close()
    b.close()
    c = PostgresStore(pg_dsn)
    assert c.get_job("job_1").state is JobState.RUNNING
    c.close()


def test_concurrent_lease_of_one_task_has_one_winner(pg_dsn):
    stores = [PostgresStore(pg_dsn, pool_size=2) for _ in range(4)]
    make_job(stores[0], n=1)
    make_provider(stores[0])
    task_id = stores[0].queued_tasks(1)[0].task_id
    barrier = threading.Barrier(len(stores))
    won = []

    def take(s, i):
        barrier.wait()
        lease = s.lease_task(task_id, "prov_a", ttl=5, now=101.0 + i)
        if lease is not None:
            won.append(lease)

    threads = [threading.Thread(target=take, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert stores[1].get_task(task_id).lease_id == won[0].lease_id
    assert stores[1].get_task(task_id).attempts == 1
    for s in stores:
        s.close()


def test_last_results_racing_on_two_replicas_make_the_job_ready_exactly_once(pg_dsn):
    """Under READ COMMITTED each would see the other's task still open and neither finish the job."""
    for round_ in range(5):
        a, b = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
        job_id = f"job_r{round_}"
        make_job(a, job_id=job_id, n=2)
        pids = ("prov_a", "prov_b")  # two providers: no shared row serialises the two results
        for i, pid in enumerate(pids):
            make_provider(a, address=f"0x{i + 1:040x}", pid=pid)
        leases = [a.lease_task(t.task_id, pid, ttl=10, now=101.0) for t, pid in zip(a.list_tasks(job_id), pids)]
        barrier = threading.Barrier(2)
        outcomes = []

        def send(s, lease):
            barrier.wait()
            outcomes.append(submit(s, lease, provider_id=lease.provider_id))

        threads = [threading.Thread(target=send, args=(s, lease)) for s, lease in zip((a, b), leases)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(o.accepted for o in outcomes)
        assert sum(o.job_ready for o in outcomes) == 1
        assert a.get_job(job_id).state is JobState.VERIFYING
        a.close()
        b.close()


def test_expiry_passes_over_a_lease_another_replica_is_writing(pg_dsn):
    import psycopg

    s = PostgresStore(pg_dsn)
    make_job(s, n=2)
    make_provider(s)
    leases = lease_all(s, ttl=1.0)
    held = leases[0].task.task_id
    with psycopg.connect(pg_dsn) as other:  # another replica mid-transaction on one of the rows
        other.execute("SELECT 1 FROM tasks WHERE task_id = %s FOR UPDATE", (held,))
        expired = s.expire_leases(now=200.0)
        assert [o.task_id for o in expired] == [leases[1].task.task_id]
        other.rollback()
    assert [o.task_id for o in s.expire_leases(now=200.0)] == [held]
    s.close()
