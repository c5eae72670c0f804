"""Faults with real processes: a provider SIGKILLed mid-task, the coordinator SIGKILLed between
sending a settlement transaction and recording it, the chain node stopped while jobs settle, a
provider whose disk is full, the artifact node stopped mid-job. Each proves nothing is lost,
nothing is paid twice, and the failure is reported clearly. (tests/test_e2e.py has the unpaid kill and restart cases; these add money,
the settlement window, the chain, the disk and the artifact node.)

Measured figures are printed (run with -s to see them).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from gpumesh.client import Client
from gpumesh.identity import Wallet
from gpumesh.jobspec import InferenceParams, JobSpec
from gpumesh.localnet import LocalNetwork, wait_healthy
from tests.faults import (
    PersistentAnvil,
    RpcProxy,
    assert_paid_once,
    completions,
    connected,
    direct_completions,
    escrow_outcome,
    fill,
    prompts_jsonl,
    provider_ids,
    selector,
    tmpfs,
    tx_input,
    wait_for,
)

pytestmark = pytest.mark.e2e

PROMPTS = [f"fault {i}: tell me about {w}" for i, w in enumerate(["leases", "escrow", "disks", "chains"])]
TOKENS = 8
PRICE = 36_000_000  # per provider-hour: 10,000 base units a second
BUDGET = 10**9
NO_VERIFY = {"GPUMESH_COORDINATOR_VERIFY": "false"}  # the fault paths alone: no independent checker waits


@pytest.fixture(scope="module")
def expected(tiny_model, tmp_path_factory) -> list[str]:
    return direct_completions(tiny_model, PROMPTS, tmp_path_factory.mktemp("direct"), TOKENS)


def _spec(client: Client, model: Path, *, shard_size: int = 4, max_attempts: int = 3) -> JobSpec:
    return JobSpec(name="faults", model_cid=client.upload(model), input_cid=client.upload(prompts_jsonl(PROMPTS)),
                   inference=InferenceParams(max_new_tokens=TOKENS), shard_size=shard_size,
                   max_attempts=max_attempts)


def _submitter() -> Wallet:
    """The dev account that submits (it signs the uploads, owns the job and deposits its budget)."""
    from gpumesh.chain import dev_keys

    return Wallet.from_hex(dev_keys()[1])


def _funded_submitter(client: Client) -> Wallet:
    """The client's wallet (the submitter's), minted the job's budget."""
    from eth_account import Account

    client.chain().mint(Account.from_key(client.wallet.private_key), client.wallet.address, BUDGET)
    return client.wallet


def _settlement(client: Client, job_id: str, timeout: float = 60.0):
    return wait_for(lambda: (j := client.get_job(job_id).raw).settlement == "SETTLED" and j, timeout,
                    f"job {job_id} to be settled")


def _addresses(client: Client) -> dict[str, str]:
    return {p.name: p.address for p in client.list_providers()}


def _report(**figures: float) -> None:
    print("\nMEASURED " + " ".join(f"{k}={v:.2f}s" for k, v in figures.items()))


# ---- 1. a provider SIGKILLed mid-task, with settlement on ----------------------------------------


def test_killed_provider_is_not_paid_and_the_escrow_pays_the_rescuer_once(tmp_path, tiny_model, expected):
    with LocalNetwork(tmp_path / "net", lease_ttl_s=3, heartbeat_interval_s=0.5) as net:
        net.start_chain()
        net.start_coordinator(NO_VERIFY)
        victim = net.start_provider("victim", price=PRICE, threads=1)  # cheaper: leased first
        net.start_provider("rescuer", price=2 * PRICE, threads=1)
        net.wait_providers(2)
        with Client.connect(net.target, wallet=_submitter()) as client:
            submitter = _funded_submitter(client)
            handle = client.submit(_spec(client, tiny_model), budget=BUDGET, wallet=submitter)
            ids = provider_ids(client)
            task = lambda: client.get_job(handle.id).raw.tasks[0]  # noqa: E731
            wait_for(lambda: task().provider_id == ids["victim"], 60, "the victim to lease the task")
            victim.kill()  # SIGKILL mid-task: no goodbye, no result
            killed = time.monotonic()
            wait_for(lambda: task().provider_id == ids["rescuer"], 30, "the task to be leased again")
            requeued = time.monotonic() - killed
            status = handle.wait(timeout=180)
            done = time.monotonic() - killed
            (final,) = status.raw.tasks
            assert final.attempts == 2 and final.provider_id == ids["rescuer"]
            assert completions(client, handle.id) == expected  # the rescuer's outputs are the right ones

            job = _settlement(client, handle.id)
            settled = time.monotonic() - killed
            assert job.settle_tx
            outcome = escrow_outcome(client.chain(), job.escrow_key, _addresses(client), submitter.address)
            assert outcome.earned["victim"] == 0, "a killed provider is paid nothing for the task it dropped"
            assert outcome.earned["rescuer"] > 0
            assert_paid_once(outcome, BUDGET)
            tallies = {p.name: p.tasks_completed for p in client.list_providers()}
            assert tallies == {"victim": 0, "rescuer": 1}
    _report(requeue_after_kill=requeued, completed_after_kill=done, settled_after_kill=settled)


# ---- 2. the coordinator SIGKILLed between sending the settlement tx and recording it -----------


def _settlement_row(net: LocalNetwork, job_id: str) -> tuple[str, str]:
    """The dead coordinator's own record of the job's settlement (state, tx)."""
    db = sqlite3.connect(f"file:{net.root / 'coordinator' / 'coordinator.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT settlement, settle_tx FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        db.close()


@pytest.mark.parametrize("when", ["after_send", "before_send"])
def test_coordinator_killed_mid_settlement_settles_exactly_once_after_restart(tmp_path, tiny_model, expected, when):
    """The coordinator settles through a JSON-RPC proxy; the proxy SIGKILLs it on the settleBatch
    transaction itself: after the node mined it (the coordinator never hears the hash) or before
    it reaches the node (the job is marked SENT, nothing is on chain)."""
    from gpumesh.chain import ChainClient, Deployment, JobStatus

    with LocalNetwork(tmp_path / "net", lease_ttl_s=3, heartbeat_interval_s=0.5) as net:
        net.start_chain()
        proxy = RpcProxy(net.chain_url)
        chain_url, net.chain_port = net.chain_url, proxy.port  # the coordinator's chain is the proxy
        try:
            settle_batch = selector("JobEscrow", "settleBatch")
            net.start_coordinator(NO_VERIFY)
            proxy.trap(lambda raw: tx_input(raw)[:4] == settle_batch, net.coordinator.kill,
                       before=when == "before_send")
            net.start_provider("alice", price=PRICE, threads=1)
            net.wait_providers(1)
            chain = ChainClient.connect(chain_url, Deployment.load(net.root / "chain" / "deployment.json"))
            with Client.connect(net.target, chain_url=chain_url, wallet=_submitter()) as client:
                submitter = _funded_submitter(client)
                handle = client.submit(_spec(client, tiny_model), budget=BUDGET, wallet=submitter)
                escrow_key = client.get_job(handle.id).raw.escrow_key
                handle.wait(timeout=180)
                assert proxy.fired.wait(60), "the coordinator never sent a settlement"
                assert not net.coordinator.alive
                on_chain = chain.job_at(bytes.fromhex(escrow_key[2:])).status
                assert on_chain is (JobStatus.SETTLED if when == "after_send" else JobStatus.FUNDED)
                assert _settlement_row(net, handle.id) == ("SENT", "")  # the kill landed in the window

                restarted = time.monotonic()
                net.start_coordinator()
                job = _settlement(client, handle.id)
                recovered = time.monotonic() - restarted
                outcome = escrow_outcome(chain, escrow_key, _addresses(client), submitter.address)
                assert_paid_once(outcome, BUDGET)
                assert outcome.earned["alice"] > 0
                assert completions(client, handle.id) == expected  # the job's outputs survived the crash
                # Where the tx went through, its hash is known on chain; the record should show it.
                assert job.settle_tx == outcome.settled_events[0]["tx_hash"]
        finally:
            proxy.close()
    _report(**{f"settlement_recovery_{when}": recovered})


# ---- 3. the chain node stopped while a job settles, then restarted with its state ---------------


def test_chain_node_restart_settlement_retries_and_pays_once(tmp_path, tiny_model, expected):
    """anvil keeps its state across the restart (py-evm's ``gpumesh chain serve`` cannot persist)."""
    from gpumesh.chain import ChainClient, Deployment, JobStatus, job_key_hex
    from gpumesh.cli.chain_cmd import deploy_dev
    from gpumesh.signing import SigningInterceptor
    from gpumesh.v1 import jobs_pb2, jobs_pb2_grpc

    anvil = PersistentAnvil(tmp_path / "anvil-state.json").start()
    try:
        with LocalNetwork(tmp_path / "net", lease_ttl_s=3, heartbeat_interval_s=0.5) as net:
            deployment = deploy_dev(anvil.url, net.root / "chain")
            net.chain_port = anvil.port
            net.start_coordinator(NO_VERIFY)
            net.start_provider("alice", price=PRICE, threads=1)
            net.wait_providers(1)
            chain = ChainClient.connect(anvil.url, Deployment.load(deployment))
            with Client.connect(net.target, wallet=_submitter()) as client:
                submitter = _funded_submitter(client)
                handle = client.submit(_spec(client, tiny_model), budget=BUDGET, wallet=submitter)
                escrow_key = client.get_job(handle.id).raw.escrow_key
                wait_for(lambda: client.get_job(handle.id).tasks_running == 1, 60, "the task to run")
                anvil.stop()  # the chain goes away while the job runs; it settles into the outage
                down = time.monotonic()
                status = handle.wait(timeout=180)
                log = net.coordinator.log_tail
                wait_for(lambda: log(50_000).count("will retry") >= 2, 30, "two failed settlement attempts")

                # Meanwhile the coordinator serves: health, reads, providers, and a clear answer
                # (not INTERNAL) to a submission it cannot check against the chain.
                wait_healthy(net.target, timeout=5)
                job = client.get_job(handle.id).raw
                assert status.state == "COMPLETED" and job.settlement in ("PENDING", "SENT")
                assert connected(client) == {"alice"}
                with grpc.insecure_channel(net.target) as channel:
                    stub = jobs_pb2_grpc.SubmitterServiceStub(
                        grpc.intercept_channel(channel, SigningInterceptor(submitter)))
                    with pytest.raises(grpc.RpcError) as err:
                        stub.SubmitJob(jobs_pb2.SubmitJobRequest(
                            spec=job.spec, idempotency_key="during-outage",
                            escrow_key=job_key_hex("during-outage")), timeout=30)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
                assert "chain node unavailable" in err.value.details()
                outage = time.monotonic() - down

                anvil.start()  # same port, same state
                up = time.monotonic()
                job = _settlement(client, handle.id)
                recovered = time.monotonic() - up
                assert chain.job_at(bytes.fromhex(escrow_key[2:])).status is JobStatus.SETTLED
                assert len(chain.events("JobEscrow", "Deposited", key=bytes.fromhex(escrow_key[2:]))) == 1  # the restarted node kept the deposit
                outcome = escrow_outcome(chain, escrow_key, _addresses(client), submitter.address)
                assert_paid_once(outcome, BUDGET)
                assert outcome.earned["alice"] > 0 and job.settle_tx == outcome.settled_events[0]["tx_hash"]
                assert completions(client, handle.id) == expected
                assert "Traceback" not in net.coordinator.log_tail(200_000)
    finally:
        anvil.stop()
    _report(chain_outage=outage, settled_after_chain_back=recovered)


# ---- 4. a provider whose disk is full ----------------------------------------------------------


def _registrations(proc) -> int:
    return proc.log_tail(200_000).count("registered as")


def test_full_model_cache_fails_the_job_naming_disk_space_and_the_provider_recovers(tmp_path, tiny_model, expected):
    """The model (470 KiB) cannot be stored in a 64 KiB cache: each attempt fails retryably, the job
    fails naming the disk; the provider keeps its session and, once the disk grows, runs the next."""
    from tests.faults import resize

    with LocalNetwork(tmp_path / "net", lease_ttl_s=3, heartbeat_interval_s=0.5) as net:
        net.start_coordinator(NO_VERIFY)
        with tmpfs(net.root / "full" / "models", 64 * 1024) as cache:
            full = net.start_provider("full", threads=1)
            net.wait_providers(1)
            with Client.connect(net.target) as client:
                handle = client.submit(_spec(client, tiny_model, max_attempts=2))
                status = None
                for status in handle.watch(timeout=120):
                    pass
                assert status.state == "FAILED"
                assert "failed after 2 attempt(s)" in status.error and "No space left on device" in status.error
                (task,) = status.raw.tasks
                assert task.attempts == 2 and "No space left on device" in task.error
                log = full.log_tail(200_000)
                assert "failed (retryable)" in log and "No space left on device" in log
                assert full.alive and connected(client) == {"full"} and _registrations(full) == 1
                assert not any(p.name != ".filler" for p in cache.rglob("*") if p.is_file()), \
                    "a failed fetch leaves nothing half-written in the cache"

                resize(cache, 16 * 1024 * 1024)
                again = client.submit(_spec(client, tiny_model)).wait(timeout=120)
                assert completions(client, again.job_id) == expected
                assert _registrations(full) == 1  # the same session all along


def test_full_work_dir_fails_the_task_retryably_and_another_provider_finishes_it(tmp_path, tiny_model, expected):
    """A work directory with room for the input but not the output: the workload fails writing,
    the task is requeued, and a provider with disk finishes it."""
    with LocalNetwork(tmp_path / "net", lease_ttl_s=3, heartbeat_interval_s=0.5) as net:
        net.start_coordinator(NO_VERIFY)
        with tmpfs(net.root / "full" / "work", 64 * 1024) as work:
            fill(work, leave=4096)  # one page: the input shard fits, the outputs do not
            full = net.start_provider("full", price=1000, threads=1)
            net.wait_providers(1)
            with Client.connect(net.target) as client:
                handle = client.submit(_spec(client, tiny_model, max_attempts=20))
                task = lambda: client.get_job(handle.id).raw.tasks[0]  # noqa: E731
                first = wait_for(lambda: "No space left on device" in (t := task()).error and t, 120,
                                 "the first failure")
                net.start_provider("healthy", price=1, threads=1)  # cheaper: preferred once free
                status = handle.wait(timeout=180)
                (final,) = status.raw.tasks
                ids = provider_ids(client)
                assert final.provider_id == ids["healthy"] and final.attempts >= 2
                assert completions(client, handle.id) == expected
                log = full.log_tail(200_000)
                assert "failed (retryable)" in log and "No space left on device" in log
                assert full.alive and connected(client) == {"full", "healthy"} and _registrations(full) == 1
                print(f"\nMEASURED full-disk task error: {first.error[-300:]!r}")


# ---- 5. the artifact node (IPFS) down while a job runs ---------------------------------------


def _node_retries(net: LocalNetwork) -> int:
    """Calls the coordinator retried because the artifact node did not answer (its log says so)."""
    return sum("artifact node" in line and "retry" in line for line in net.coordinator.log_tail(10**7).splitlines())


def test_artifact_node_down_mid_job_is_retried_and_the_job_is_paid_once(tmp_path, tiny_model, expected):
    """The coordinator keeps artifacts on an IPFS node (a real js-ipfs daemon) and the node is stopped
    after the first task until a call has met it, then started again on its repository: calls made
    meanwhile are retried with backoff (or, past the budget, fail retryably and the task is leased
    again), and the job completes with every output, paid exactly once."""
    from tests.ipfs_node import IpfsNode, skip_or_fail_without_node

    skip_or_fail_without_node()
    with IpfsNode(tmp_path / "ipfs") as node, \
            LocalNetwork(tmp_path / "net", lease_ttl_s=5, heartbeat_interval_s=0.5) as net:
        net.start_chain()
        net.start_coordinator({**NO_VERIFY, "GPUMESH_COORDINATOR_ARTIFACT_STORE": "kubo",
                               "GPUMESH_COORDINATOR_KUBO_URL": node.api_url})
        net.start_provider("steady", price=PRICE, threads=1)
        net.wait_providers(1)
        with Client.connect(net.target, wallet=_submitter()) as client:
            submitter = _funded_submitter(client)
            handle = client.submit(_spec(client, tiny_model, shard_size=1), budget=BUDGET, wallet=submitter)
            wait_for(lambda: client.get_job(handle.id).raw.tasks_done >= 1, 120, "the first task")
            node.stop()
            stopped = time.monotonic()
            assert client.get_job(handle.id).state == "RUNNING"  # the rest still needs the node
            wait_for(lambda: _node_retries(net), 60, "a call to meet the stopped node")
            time.sleep(2)
            node.start()
            down = time.monotonic() - stopped
            status = handle.wait(timeout=180)
            done = time.monotonic() - stopped
            assert status.raw.tasks_done == len(PROMPTS)
            assert completions(client, handle.id) == expected
            outcome = escrow_outcome(client.chain(), _settlement(client, handle.id).escrow_key, _addresses(client),
                                     submitter.address)
            assert outcome.earned["steady"] > 0
            assert_paid_once(outcome, BUDGET)
            attempts = sum(t.attempts for t in status.raw.tasks)
        retried = _node_retries(net)
    print(f"\nMEASURED node_down={down:.2f}s completed_after_stop={done:.2f}s task_attempts={attempts} "
          f"retries={retried}")
