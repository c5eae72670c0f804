"""The gRPC surface over a real socket: validation, status codes, auth, health, reflection."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gpumesh.client import Client
from gpumesh.errors import FailedPrecondition, InvalidArgument, NotFound
from gpumesh.identity import Wallet
from gpumesh.signing import SigningInterceptor, sign_registration
from gpumesh.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc, provider_pb2, provider_pb2_grpc

MISSING = "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvhdmmbkqwfqmltd4y"


@pytest.fixture
def wallet() -> Wallet:
    return Wallet.generate()


@pytest.fixture
def channel(server, wallet):
    """A channel whose submitter calls are signed by ``wallet`` (tests/test_signed_requests.py
    covers unsigned and forged ones)."""
    with grpc.insecure_channel(server.target) as ch:
        yield grpc.intercept_channel(ch, SigningInterceptor(wallet))


@pytest.fixture
def client(server, wallet):
    with Client.connect(server.target, wallet=wallet) as c:
        yield c


def rpc_error(fn, *args, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kw)
    return err.value


def submit(channel, **spec):
    return jobs_pb2_grpc.SubmitterServiceStub(channel).SubmitJob(
        jobs_pb2.SubmitJobRequest(spec=jobs_pb2.JobSpec(**spec)), timeout=10
    )


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="gpumesh.v1.SubmitterService")).status == 1
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (resp,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in resp.list_services_response.service}
    assert {"gpumesh.v1.SubmitterService", "gpumesh.v1.ProviderService", "gpumesh.v1.ArtifactService",
            "grpc.health.v1.Health"} <= names


def test_malformed_specs_are_invalid_argument_naming_the_field(channel, client):
    cid = client.upload(b'{"prompt": "hi"}\n')
    err = rpc_error(submit, channel, input_cid=cid)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "spec.model_cid" in err.details()
    err = rpc_error(submit, channel, model_cid="not-a-cid", input_cid=cid)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "spec.model_cid" in err.details()
    err = rpc_error(submit, channel, model_cid=cid, input_cid=cid, max_price_per_hour="-5")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "spec.max_price_per_hour" in err.details()
    err = rpc_error(submit, channel, model_cid=cid, input_cid=cid, kind="training")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "spec.kind" in err.details()
    err = rpc_error(submit, channel, model_cid=cid, input_cid=cid,
                    inference=jobs_pb2.InferenceParams(max_new_tokens=100_000))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "spec.inference.max_new_tokens" in err.details()
    stub = jobs_pb2_grpc.SubmitterServiceStub(channel)
    err = rpc_error(stub.SubmitJob, jobs_pb2.SubmitJobRequest())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "spec" in err.details()


def test_bad_jsonl_input_names_the_line(channel, client):
    model = client.upload(b"model bytes")
    bad = client.upload(b'{"prompt": "ok"}\n{"prompt": 3}\n')
    err = rpc_error(submit, channel, model_cid=model, input_cid=bad)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'input line 2: "prompt": Input should be a valid string' in err.details()


def test_unknown_cids_and_jobs_are_not_found(channel, client):
    cid = client.upload(b'{"prompt": "hi"}\n')
    err = rpc_error(submit, channel, model_cid=MISSING, input_cid=cid)
    assert err.code() == grpc.StatusCode.NOT_FOUND and "spec.model_cid" in err.details()
    assert MISSING in err.details()
    with pytest.raises(NotFound, match="job_id"):
        client.get_job("job_nope")
    with pytest.raises(NotFound):
        client.download(MISSING)
    with pytest.raises(InvalidArgument):
        client.get_job("")


def test_oversized_message_is_resource_exhausted(channel):
    err = rpc_error(submit, channel, name="x" * 300_000, model_cid=MISSING, input_cid=MISSING)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_submit_is_idempotent_and_cancel_twice_is_failed_precondition(channel, client):
    model = client.upload(b"model bytes")
    inp = client.upload(b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"}\n')
    stub = jobs_pb2_grpc.SubmitterServiceStub(channel)
    req = jobs_pb2.SubmitJobRequest(
        spec=jobs_pb2.JobSpec(model_cid=model, input_cid=inp, shard_size=2), idempotency_key="k-1"
    )
    first, again = stub.SubmitJob(req), stub.SubmitJob(req)
    assert first.job.job_id == again.job.job_id
    assert first.job.tasks_total == 2 and first.job.prompts_total == 3
    deadline = time.monotonic() + 5
    while client.get_job(first.job.job_id).pending_reason != "no provider is connected":
        assert time.monotonic() < deadline, "a queued job with no providers must say why"
        time.sleep(0.05)
    status = client.cancel(first.job.job_id, "changed my mind")
    assert status.state == "CANCELLED"
    with pytest.raises(FailedPrecondition):
        client.cancel(first.job.job_id)


def _register(stub, wallet, *, challenge=None, signer=None, price="", tier=common_pb2.PROVIDER_TIER_OPEN,
              tamper=None, sealing_key=b"\x09" * 32):
    ch = challenge or stub.GetChallenge(provider_pb2.GetChallengeRequest(address=wallet.address)).challenge
    req = sign_registration(signer or wallet, provider_pb2.RegisterRequest(
        address=wallet.address, challenge=ch, slots=1, price_per_hour=price, tier=tier,
        hardware=common_pb2.Hardware(cpu_count=2, memory_total_mb=1000), sealing_public_key=sealing_key,
    ))
    if tamper is not None:
        tamper(req)  # changed after signing, as a man in the middle would
    return stub.Register(req), ch


def test_only_trusted_wallets_register_as_centralized_capacity(channel, server):
    stub = provider_pb2_grpc.ProviderServiceStub(channel)
    wallet = Wallet.generate()
    err = rpc_error(_register, stub, wallet, tier=common_pb2.PROVIDER_TIER_CENTRALIZED)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "tier" in err.details() and f"gpumesh coordinator trust {wallet.address}" in err.details()
    resp, _ = _register(stub, wallet)  # as an open-market provider it is welcome
    assert resp.provider_id
    store = server.core.store
    store.trust_address(wallet.address, note="ops node", expires_at=time.time() + 60)
    resp, _ = _register(stub, wallet, tier=common_pb2.PROVIDER_TIER_CENTRALIZED)
    assert store.get_provider(resp.provider_id).tier.value == "CENTRALIZED"
    store.trust_address(wallet.address, expires_at=time.time() - 1)  # a launched node's trust ran out
    assert rpc_error(_register, stub, wallet, tier=common_pb2.PROVIDER_TIER_CENTRALIZED).code() == \
        grpc.StatusCode.PERMISSION_DENIED
    assert store.distrust_address(wallet.address) and not store.distrust_address(wallet.address)


def test_provider_auth(channel):
    stub = provider_pb2_grpc.ProviderServiceStub(channel)
    wallet, mallory = Wallet.generate(), Wallet.generate()
    err = rpc_error(_register, stub, wallet, signer=mallory)  # signature by another key
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = rpc_error(_register, stub, wallet, tamper=lambda r: setattr(r, "price_per_hour", "1"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED  # the signature covers the offer, not only the challenge
    err = rpc_error(_register, stub, wallet, sealing_key=b"")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "sealing_public_key" in err.details()
    err = rpc_error(_register, stub, wallet, price="12.5")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "price_per_hour" in err.details()
    resp, used = _register(stub, wallet, price=str(150 * 10**18))  # uint256 amounts, beyond int64
    assert resp.session_token and resp.provider_id.startswith("prov_")
    err = rpc_error(_register, stub, wallet, challenge=used)  # replayed challenge
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "challenge" in err.details()
    err = rpc_error(stub.GetChallenge, provider_pb2.GetChallengeRequest(address="0xnope"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "address" in err.details()
    for metadata in ((), (("authorization", "Bearer forged"),)):
        call = stub.Session(iter(()), metadata=metadata)
        err = rpc_error(next, call)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    jobs = jobs_pb2_grpc.SubmitterServiceStub(channel)
    (me,) = [p for p in jobs.ListProviders(jobs_pb2.ListProvidersRequest()).providers if p.address == wallet.address]
    assert me.price_per_hour == str(150 * 10**18)
    call = stub.Session(iter(()), metadata=(("authorization", f"Bearer {resp.session_token}"),))
    first = next(call)
    assert first.accepted.provider_id == resp.provider_id
    call.cancel()
