"""Several coordinator replicas on one PostgreSQL: leader election, relayed signals, failover."""

from __future__ import annotations

import threading
import time

import pytest

from coordinator.cluster import AdvisoryLockLeadership, PgSignalRelay


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_exactly_one_replica_holds_the_leadership_and_it_passes_on_when_the_leader_dies(pg_dsn):
    import psycopg

    a, b, c = (AdvisoryLockLeadership(pg_dsn, name=n) for n in "abc")
    assert [x.step() for x in (a, b, c)] == [True, False, False]
    assert [x.step() for x in (a, b, c)] == [True, False, False]  # holding it is stable
    # The leader's connection dies (its process crashed, or the server dropped it).
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        [(killed,)] = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gpumesh-leader a'"
        ).fetchall()
        assert killed
    _wait(lambda: not a.step(), 5, "the old leader to notice and step down")
    assert sum(x.step() for x in (b, c)) == 1  # one successor, never two
    for x in (a, b, c):
        x.close()


def test_a_clean_close_releases_the_leadership_at_once(pg_dsn):
    a, b = AdvisoryLockLeadership(pg_dsn), AdvisoryLockLeadership(pg_dsn)
    assert a.step() and not b.step()
    a.close()
    assert b.step() and not a.is_leader
    b.close()


def test_signals_reach_the_other_replicas_but_not_back_to_their_origin(pg_dsn):
    got: dict[str, list[str]] = {"r1": [], "r2": []}
    done = threading.Event()

    def sink(name):
        def deliver(key):
            got[name].append(key)
            if len(got["r2"]) >= 2:
                done.set()
        return deliver

    r1 = PgSignalRelay(pg_dsn, "r1", sink("r1")).start()
    r2 = PgSignalRelay(pg_dsn, "r2", sink("r2")).start()
    r1.publish("job_1")
    r1.publish("lease:prov_a")
    assert done.wait(10)
    time.sleep(0.3)
    assert sorted(got["r2"]) == ["job_1", "lease:prov_a"]
    assert got["r1"] == []
    r1.close()
    r2.close()


@pytest.mark.e2e
def test_a_job_survives_the_leader_replica_being_killed(pg_dsn, tmp_path, tiny_model):
    """Replica A (leader) and B share the database; alice is connected to A, bob to B, the job is
    submitted to B. A is SIGKILLed mid-job: B takes the leadership, alice's leases expire and
    requeue, bob finishes the job; GetJob on B shows it all."""
    import json
    import sys

    import psycopg

    from gpumesh.client import Client
    from gpumesh.jobspec import InferenceParams, JobSpec
    from gpumesh.localnet import Proc, free_port, wait_healthy

    def leader() -> str:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'gpumesh-leader%'"
            ).fetchall()
        return rows[0][0].removeprefix("gpumesh-leader ") if len(rows) == 1 else ""

    env = {**__import__("os").environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
           "GPUMESH_COORDINATOR_VERIFY": "false"}
    ports = {"A": free_port(), "B": free_port()}
    procs: list[Proc] = []

    def coordinator(name: str) -> Proc:
        proc = Proc(name, [sys.executable, "-m", "gpumesh", "coordinator", "serve", "--listen",
                           f"127.0.0.1:{ports[name]}", "--data-dir", str(tmp_path / "shared"),
                           "--store", "postgresql", "--postgres-dsn", pg_dsn, "--replica-id", name,
                           "--lease-ttl", "3", "--heartbeat-interval", "0.5"],
                    tmp_path / f"{name}.log", env).start()
        procs.append(proc)
        wait_healthy(f"127.0.0.1:{ports[name]}")
        return proc

    def provider(name: str, replica: str) -> Proc:
        proc = Proc(name, [sys.executable, "-m", "gpumesh", "provider", "run", "--coordinator",
                           f"127.0.0.1:{ports[replica]}", "--data-dir", str(tmp_path / name), "--name", name,
                           "--slots", "1", "--runtime", "process", "--unisolated", "--threads", "1"],
                    tmp_path / f"{name}.log", env).start()
        procs.append(proc)
        return proc

    try:
        a = coordinator("A")
        coordinator("B")
        assert _wait(leader, 10, "a leader") == "A"
        provider("alice", "A")
        provider("bob", "B")
        with Client.connect(f"127.0.0.1:{ports['B']}") as client:
            # B lists both: alice through A's presence report.
            _wait(lambda: len(client.list_providers(connected_only=True)) == 2, 60, "both providers")
            prompts = [f"prompt {i} about replicas" for i in range(6)]
            spec = JobSpec(name="failover", model_cid=client.upload(tiny_model),
                           input_cid=client.upload("".join(json.dumps({"prompt": p}) + "\n" for p in prompts).encode()),
                           inference=InferenceParams(max_new_tokens=4), shard_size=1)
            job_id = client.submit(spec).id
            # Work reaches bob, though only A schedules: A leased it, B sent it.
            bob = _pid(client, "bob")
            _wait(lambda: any(pid == bob for pid, _ in _tasks(client, job_id)), 60, "a task on bob (via replica B)")
            _wait(lambda: sum(st == "SUBMITTED" for _, st in _tasks(client, job_id)) >= 2, 90, "progress")
            a.kill()
            assert _wait(lambda: leader() == "B", 30, "B to take the leadership")
            job = None
            for job in client.watch(job_id, timeout=240):
                pass
            assert job.state == "COMPLETED", job.error
            tasks = client.get_job(job_id).raw.tasks
            assert len(tasks) == 6 and all(t.output_cid for t in tasks)
            assert {t.provider_id for t in tasks} <= {_pid(client, "alice"), bob}
            assert "replica B leads" in (tmp_path / "B.log").read_text()
    finally:
        for proc in reversed(procs):
            proc.stop()


def _pid(client, name: str) -> str:
    return next(p.provider_id for p in client.list_providers() if p.name == name)


def _tasks(client, job_id: str) -> list[tuple[str, str]]:
    from gpumesh.v1 import common_pb2

    return [(t.provider_id, common_pb2.TaskState.Name(t.state).removeprefix("TASK_STATE_"))
            for t in client.get_job(job_id).raw.tasks]
