"""End to end with money: a py-evm chain process with the compiled contracts, a coordinator that
requires escrowed deposits and settles in batches, providers that withdraw what they earned."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpumesh.client import Client
from gpumesh.errors import AlreadyExists, FailedPrecondition, InvalidArgument
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


def _refused_unregistered(target: str) -> None:
    """A provider not registered in the ProviderRegistry cannot be paid, so it is given no work."""
    import grpc

    from gpumesh.sealing import SealingKey
    from gpumesh.signing import sign_registration
    from gpumesh.v1 import common_pb2, provider_pb2, provider_pb2_grpc

    wallet = Wallet.generate()
    with grpc.insecure_channel(target) as channel:
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        challenge = stub.GetChallenge(provider_pb2.GetChallengeRequest(address=wallet.address)).challenge
        with pytest.raises(grpc.RpcError) as err:
            stub.Register(sign_registration(wallet, provider_pb2.RegisterRequest(
                address=wallet.address, challenge=challenge, name="unregistered", slots=1, price_per_hour="1",
                runtime="process", sealing_public_key=SealingKey.generate().public_bytes,
                hardware=common_pb2.Hardware(cpu_count=2, memory_total_mb=4000))))
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "address: " in err.value.details() and "gpumesh provider register" in err.value.details()


def test_deposit_run_settle_withdraw_and_refund(tmp_path, tiny_model):
    from eth_account import Account

    from gpumesh.chain import JobStatus, dev_keys, escrow_key, fund_dev_gas, job_key_hex

    from gpumesh.localnet import free_port
    from tests.test_metrics import samples

    metrics_port, alice_metrics = free_port(), free_port()
    with LocalNetwork(tmp_path / "net", lease_ttl_s=5, heartbeat_interval_s=0.5) as net:
        net.start_chain()
        net.start_coordinator({"GPUMESH_COORDINATOR_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"})
        for name in ("alice", "bob"):
            net.start_provider(name, price=PRICE, threads=1, extra_env={
                "GPUMESH_PROVIDER_METRICS_LISTEN": f"127.0.0.1:{alice_metrics}"} if name == "alice" else None)
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
            # Someone else's deposit cannot pay for a stranger's job: deposits are keyed by their depositor.
            chain.mint(Account.from_key(submitter.private_key), submitter.address, 1000)
            chain.deposit(Account.from_key(submitter.private_key), job_key_hex("paid-2"), 1000,
                          chain.block_timestamp() + 7200)
            with Client.connect(net.target, wallet=Wallet.generate()) as stranger:
                with pytest.raises(FailedPrecondition, match="escrow_key: no confirmed deposit"):
                    _raw_submit(stranger, spec, idempotency_key="paid-2", escrow_key=job_key_hex("paid-2"))
            _refused_unregistered(net.target)
            # A retried submit is the same job and does not deposit again.
            assert client.submit(spec, budget=BUDGET, wallet=submitter, idempotency_key="paid-1").id == handle.id

            handle.wait(timeout=180)
            job = _settled(client, handle.id)
            assert job.budget == str(BUDGET) and job.submitter == submitter.address and job.settle_tx
            assert job.escrow_key == "0x" + escrow_key(submitter.address, job_key_hex("paid-1")).hex()
            assert chain.job(submitter.address, job_key_hex("paid-1")).status is JobStatus.SETTLED

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
            # Each is paid by the second for at most the time the job took (rounded up per task), and
            # exactly what it claimed: its own running total, kept in its data dir and signed.
            elapsed = time.monotonic() - started
            assert all(amount <= PRICE * elapsed / 3600 + len(job.tasks) for amount in earned.values())
            for name, amount in earned.items():
                claims = json.loads((net.root / name / "claims.json").read_text())
                assert [int(c["total"]) for c in claims.values()] == [amount], (name, claims)

            _earnings_shown(net, client, chain, providers, earned, alice_metrics)
            for name in ("alice", "bob"):
                key = Wallet.from_hex(provider_key_path(net.root / name).read_text())
                fund_dev_gas(chain, key.address)  # gas money
                if name == "alice":  # with the CLI, from its data dir
                    out = _cli("provider", "earnings", "-c", net.target, "--data-dir", str(net.root / name),
                               "--withdraw")
                    assert f"withdrew  {earned[name]} to the wallet (tx 0x" in out and "\x1b" not in out, out
                    assert "escrow    0 withdrawable" in out and f"wallet    {earned[name]}" in out, out
                else:
                    chain.withdraw(Account.from_key(key.private_key))
                assert chain.token_balance(key.address) == earned[name] and chain.escrow_balance(key.address) == 0
            chain.withdraw(Account.from_key(submitter.private_key))
            assert chain.token_balance(submitter.address) == refund
            settled_events = chain.events("JobEscrow", "JobSettled")
            assert len(settled_events) == 1  # paid exactly once


def _cli(*args: str) -> str:
    from click.testing import CliRunner

    from gpumesh.cli.main import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _earnings_shown(net: LocalNetwork, client: Client, chain, providers, earned, alice_metrics: int) -> None:
    """Each provider's earnings as the coordinator reports them are what the escrow credited it,
    nothing left pending; the CLI shows the same with the chain's balances; alice's daemon exports them."""
    import urllib.request

    from tests.test_metrics import samples

    for name, p in providers.items():
        e = client.earnings(p.address)
        assert (e.address, int(e.paid), e.pending, list(e.provider_ids)) == (p.address, earned[name], "0",
                                                                            [p.provider_id])
        assert e.tasks_paid > 0 and e.tasks_pending == 0 and e.slashed == "0"
    shown = json.loads(_cli("provider", "earnings", "-c", net.target, "--data-dir", str(net.root / "alice"), "--json"))
    alice = providers["alice"].address
    assert (shown["address"], shown["paid"], shown["pending"], shown["settles"]) == (alice, str(earned["alice"]), "0",
                                                                                     True)
    assert shown["escrow_balance"] == str(earned["alice"]) and shown["wallet_balance"] == "0"
    assert shown["stake"]["active"] == str(chain.stake_of(alice).active) != "0"
    # The daemon read its figures when it started (then every minute): the gauges are there, the stake read.
    with urllib.request.urlopen(f"http://127.0.0.1:{alice_metrics}/metrics", timeout=10) as resp:
        got = samples(resp.read().decode())
    assert ("gpumesh_provider_earnings_paid", ()) in got and ("gpumesh_provider_earnings_pending", ()) in got
    assert got[("gpumesh_provider_stake", ())] == chain.stake_of(alice).active


def test_a_paid_result_needs_its_providers_claim_and_is_paid_no_more(tmp_path, tiny_model):
    """A provider speaking the protocol by hand: a result of a paid job without a claim, or with a
    claim someone else signed, is refused; one with a valid claim is accepted, and the escrow pays
    that provider exactly its claim (below what its measured time would earn), refunding the rest."""
    from eth_account import Account

    from gpumesh.chain import dev_keys, escrow_key, fund_dev_gas, job_key_hex
    from tests.scripted import ScriptedProvider

    with LocalNetwork(tmp_path / "net", lease_ttl_s=30, heartbeat_interval_s=0.5) as net:
        net.start_chain()
        net.start_coordinator({"GPUMESH_COORDINATOR_VERIFY": "false"})
        submitter = Wallet.from_hex(dev_keys()[1])
        with Client.connect(net.target, wallet=submitter) as client:
            chain = client.chain()
            wallet = Wallet.generate()
            fund_dev_gas(chain, wallet.address)
            chain.register(Account.from_key(wallet.private_key))
            minimum = int(client.settlement_info().min_stake)  # derived from the floor check rate
            assert minimum > 0
            chain.mint(Account.from_key(dev_keys()[2]), wallet.address, minimum)
            chain.stake(Account.from_key(wallet.private_key), minimum)
            provider = ScriptedProvider(net.target, name="scripted", price=PRICE, wallet=wallet)
            try:
                chain.mint(Account.from_key(submitter.private_key), submitter.address, BUDGET)
                handle = client.submit(_spec(client, tiny_model, n=2), budget=BUDGET, wallet=submitter,
                                       idempotency_key="claimed")
                lease = provider.next("lease")
                key = escrow_key(submitter.address, job_key_hex("claimed"))
                assert lease.claim_job == key  # the lease names the escrow key to claim under
                domain = chain.claim_domain

                ack = provider.answer(lease, check=False)
                assert not ack.accepted and "claim_amount" in ack.reason
                ack = provider.answer(lease, claim=("٥", domain.sign(wallet.private_key, key, 5)), check=False)
                assert not ack.accepted and "claim_amount" in ack.reason  # Arabic-Indic 5: not a decimal uint256
                forged = domain.sign(Wallet.generate().private_key, key, 5)
                ack = provider.answer(lease, claim=("5", forged), check=False)
                assert not ack.accepted and "claim_signature" in ack.reason
                ack = provider.answer(lease, claim=("5", domain.sign(wallet.private_key, key, 5)), check=False)
                assert ack.accepted, ack.reason

                handle.wait(timeout=60)
                _settled(client, handle.id)
                assert chain.escrow_balance(wallet.address) == 5
                assert chain.escrow_balance(submitter.address) == BUDGET - 5
            finally:
                provider.close()
            # The operator's command: register a fresh wallet (gas from a dev account), idempotently.
            import subprocess
            import sys

            cmd = [sys.executable, "-m", "gpumesh", "provider", "register", "-c", net.target,
                   "--data-dir", str(tmp_path / "fresh"), "--dev-gas"]
            first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            fresh = Wallet.from_hex(provider_key_path(tmp_path / "fresh").read_text())
            assert first.returncode == 0 and f"{fresh.address} registered" in first.stdout, first.stderr
            assert chain.is_registered(fresh.address)
            again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            assert "is registered" in again.stdout and len(chain.events("ProviderRegistry", "Registered",
                                                                        provider=fresh.address)) == 1


def test_a_batch_pays_a_provider_under_its_invoice_and_a_forger_under_its_claims(tmp_path, tiny_model):
    """Four paid jobs settle in one transaction. Each of two providers, paid twice there, is asked over its
    session to sign one invoice of its lines: the honest one's signature pays it (one signature on chain for
    both jobs); a reply under another's invoice id is ignored, and a forged signature is dropped, so the forger
    is paid under its per-job claims and the batch still goes through."""
    from eth_account import Account

    from gpumesh.chain import dev_keys, fund_dev_gas
    from gpumesh.v1 import provider_pb2
    from tests.scripted import ScriptedProvider

    import urllib.request

    from gpumesh.localnet import free_port
    from tests.test_metrics import samples

    metrics_port = free_port()
    with LocalNetwork(tmp_path / "net", lease_ttl_s=30, heartbeat_interval_s=0.5) as net:
        net.start_chain()
        net.start_coordinator({"GPUMESH_COORDINATOR_VERIFY": "false",
                               "GPUMESH_COORDINATOR_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
                               # the four jobs go in one batch, sent when the fourth is done
                               "GPUMESH_COORDINATOR_SETTLE_BATCH_SIZE": "4",
                               "GPUMESH_COORDINATOR_SETTLE_INTERVAL_S": "300"})
        submitter = Wallet.from_hex(dev_keys()[1])
        with Client.connect(net.target, wallet=submitter) as client:
            chain = client.chain()
            domain = chain.claim_domain
            minimum = int(client.settlement_info().min_stake)
            providers = []
            try:
                for name in ("ivy", "mallory"):
                    wallet = Wallet.generate()
                    fund_dev_gas(chain, wallet.address)
                    chain.register(Account.from_key(wallet.private_key))
                    chain.mint(Account.from_key(dev_keys()[2]), wallet.address, minimum)
                    chain.stake(Account.from_key(wallet.private_key), minimum)
                    providers.append(ScriptedProvider(net.target, name=name, price=PRICE, wallet=wallet, slots=2))
                ivy, mallory = providers
                chain.mint(Account.from_key(submitter.private_key), submitter.address, 4 * BUDGET)
                handles = [client.submit(_spec(client, tiny_model, n=2), budget=BUDGET, wallet=submitter,
                                         idempotency_key=f"invoiced-{i}") for i in range(4)]
                leases = {p: [p.next("lease", timeout=60), p.next("lease", timeout=60)] for p in providers}
                for p, its in leases.items():  # four tasks, four slots: two each, answered together
                    for lease in its:
                        p.answer(lease, claim=("5", domain.sign(p.wallet.private_key, lease.claim_job, 5)))
                for handle in handles:
                    handle.wait(timeout=60)

                asked = {p: p.next("invoice", timeout=60) for p in providers}
                for p, request in asked.items():
                    assert sorted((line.job, line.amount) for line in request.lines) == sorted(
                        (lease.claim_job, "5") for lease in leases[p])
                mallory._out.put(provider_pb2.ProviderMessage(invoice=provider_pb2.InvoiceReply(
                    invoice_id=asked[ivy].invoice_id, signature=b"\1" * 65)))  # not its invoice: ignored
                lines = [(line.job, int(line.amount)) for line in asked[ivy].lines]
                ivy._out.put(provider_pb2.ProviderMessage(invoice=provider_pb2.InvoiceReply(
                    invoice_id=asked[ivy].invoice_id, signature=domain.sign_invoice(ivy.wallet.private_key, lines))))
                forged = [(line.job, int(line.amount)) for line in asked[mallory].lines]
                mallory._out.put(provider_pb2.ProviderMessage(invoice=provider_pb2.InvoiceReply(
                    invoice_id=asked[mallory].invoice_id,
                    signature=domain.sign_invoice(Wallet.generate().private_key, forged))))

                txs = {_settled(client, h.id).settle_tx for h in handles}
                assert len(txs) == 1, txs  # one batch
                tx = chain.web3.eth.get_transaction(txs.pop())
                _, args = chain.escrow.decode_function_input(tx["input"])
                invoiced = [args["payees"][invoice["payee"]] for invoice in args["invoices"]]
                assert invoiced == [ivy.wallet.address]  # mallory's forgery was not sent: its claims pay it
                # each job: mallory's claim payout or ivy's line
                assert sorted((len(s["payouts"]), len(s["lines"])) for s in args["settlements"]) == [(0, 1), (0, 1),
                                                                                                    (1, 0), (1, 0)]
                assert chain.escrow_balance(ivy.wallet.address) == 10 == chain.escrow_balance(mallory.wallet.address)
                assert chain.escrow_balance(submitter.address) == 4 * BUDGET - 20
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
                    got = samples(resp.read().decode())  # what an operator's Prometheus scrapes
                assert {o: got.get(("gpumesh_settlement_invoices_total", (("outcome", o),)))
                        for o in ("signed", "bad_signature")} == {"signed": 1, "bad_signature": 1}
            finally:
                for p in providers:
                    p.close()
