"""End to end with money: a py-evm chain process with the compiled contracts, a coordinator that
requires escrowed deposits and settles in batches, providers that withdraw what they earned."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpumesh.client import Client
from gpumesh.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied
from gpumesh.identity import Wallet, provider_key_path
from gpumesh.jobspec import InferenceParams, JobSpec
from gpumesh.localnet import LocalNetwork

pytestmark = pytest.mark.e2e

PRICE = 36_000_000  # per provider-hour: 10,000 base units a second
BUDGET = 10**9


def _spec(client: Client, model: Path, n: int = 4) -> JobSpec:
    prompts = "".join(json.dumps({"prompt": f"settle me {i}"}) + "\n" for i in range(n)).encode()
    return JobSpec(name="paid", model_cid=client.upload(model), input_cid=client.upload(prompts),
                   inference=InferenceParams(max_new_tokens=4), shard_size=2)


def _raw_submit(client: Client, spec: JobSpec, **request) -> None:
    """SubmitJob without the SDK's deposit step."""
    from gpumesh._convert import spec_to_proto
    from gpumesh.rpc import translate_rpc_error
    from gpumesh.v1 import jobs_pb2

    with translate_rpc_error():
        client._stub.SubmitJob(jobs_pb2.SubmitJobRequest(spec=spec_to_proto(spec), **request))


def _settled(client: Client, job_id: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while (job := client.get_job(job_id).raw).settlement != "SETTLED":
        assert time.monotonic() < deadline, f"job not settled: {job.settlement}"
        time.sleep(0.2)
    return job


def test_deposit_run_settle_withdraw_and_refund(tmp_path, tiny_model):
    from eth_account import Account

    from gpumesh.chain import JobStatus, dev_keys, job_key_hex

    from gpumesh.localnet import free_port
    from tests.test_metrics import samples

    metrics_port = free_port()
    with LocalNetwork(tmp_path / "net", lease_ttl_s=5, heartbeat_interval_s=0.5) as net:
        net.start_chain()
        net.start_coordinator({"GPUMESH_COORDINATOR_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"})
        for name in ("alice", "bob"):
            net.start_provider(name, price=PRICE, threads=1)
        net.wait_providers(2)
        submitter = Wallet.from_hex(dev_keys()[1])
        with Client.connect(net.target, wallet=submitter) as client:
            chain = client.chain()
            chain.mint(Account.from_key(submitter.private_key), submitter.address, BUDGET)
            spec = _spec(client, tiny_model)

            with pytest.raises(FailedPrecondition, match="escrow_key"):  # no deposit, no job
                _raw_submit(client, spec)
            with pytest.raises(InvalidArgument, match="budget"):
                client.submit(spec, wallet=submitter)

            started = time.monotonic()
            handle = client.submit(spec, budget=BUDGET, wallet=submitter, idempotency_key="paid-1")
            assert chain.token_balance(submitter.address) == 0  # all of it is in escrow now
            with pytest.raises(AlreadyExists, match="escrow_key"):  # one deposit pays for one job
                _raw_submit(client, spec, idempotency_key="other", escrow_key=job_key_hex("paid-1"))
            # Someone else's deposit cannot pay for a stranger's job (the signer must be the depositor).
            chain.mint(Account.from_key(submitter.private_key), submitter.address, 1000)
            chain.deposit(Account.from_key(submitter.private_key), job_key_hex("paid-2"), 1000,
                          chain.block_timestamp() + 7200)
            with Client.connect(net.target, wallet=Wallet.generate()) as stranger:
                with pytest.raises(PermissionDenied, match="escrow_key: the deposit was made by " + submitter.address):
                    _raw_submit(stranger, spec, idempotency_key="paid-2", escrow_key=job_key_hex("paid-2"))
            # A retried submit is the same job and does not deposit again.
            assert client.submit(spec, budget=BUDGET, wallet=submitter, idempotency_key="paid-1").id == handle.id

            handle.wait(timeout=180)
            job = _settled(client, handle.id)
            assert job.budget == str(BUDGET) and job.submitter == submitter.address and job.settle_tx
            assert chain.job(job.escrow_key).status is JobStatus.SETTLED

            providers = {p.name: p for p in client.list_providers()}
            earned = {name: chain.escrow_balance(p.address) for name, p in providers.items()}
            refund = chain.escrow_balance(submitter.address)
            assert all(amount > 0 for amount in earned.values()), earned
            assert sum(earned.values()) + refund == BUDGET  # nothing created, nothing lost
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
                got = samples(resp.read().decode())
            assert got[("gpumesh_paid_base_units_total", ())] == sum(earned.values())
            assert got[("gpumesh_refunded_base_units_total", ())] == refund
            # Each is paid by the second for at most the time the job took (rounded up per task).
            elapsed = time.monotonic() - started
            assert all(amount <= PRICE * elapsed / 3600 + len(job.tasks) for amount in earned.values())

            for name in ("alice", "bob"):
                key = Wallet.from_hex(provider_key_path(net.root / name).read_text())
                chain.send_value(Account.from_key(dev_keys()[2]), key.address, 10**17)  # gas money
                chain.withdraw(Account.from_key(key.private_key))
                assert chain.token_balance(key.address) == earned[name]
            chain.withdraw(Account.from_key(submitter.private_key))
            assert chain.token_balance(submitter.address) == refund
            settled_events = chain.events("JobEscrow", "JobSettled")
            assert len(settled_events) == 1  # paid exactly once
