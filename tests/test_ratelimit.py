"""Rate limits: pure token buckets (injected clock) and the interceptor over a loopback gRPC server."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pydantic import ValidationError

from coordinator.api.errors import ErrorInterceptor
from coordinator.ratelimit import (
    CLASSES,
    RETRY_AFTER_KEY,
    Limits,
    RateLimiter,
    RateLimitInterceptor,
    method_class,
    peer_host,
    retry_after_s,
)
from gpumesh.v1 import artifacts_pb2, jobs_pb2, jobs_pb2_grpc, provider_pb2, provider_pb2_grpc


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- pure buckets ---------------------------------------------------------------------------


def test_burst_then_refusal_with_the_wait_until_the_next_token():
    clock = Clock()
    rl = RateLimiter(2.0, 3, clock=clock)
    assert [rl.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.allow("a") == pytest.approx(0.5)  # one token at 2/s
    assert rl.allow("a") == pytest.approx(0.5)  # a refusal takes nothing
    clock.now += 0.2
    assert rl.allow("a") == pytest.approx(0.3)


def test_refill_over_time_capped_at_burst():
    clock = Clock()
    rl = RateLimiter(1.0, 2, clock=clock)
    assert rl.allow("a") == rl.allow("a") == 0.0
    assert rl.allow("a") > 0
    clock.now += 1.0
    assert rl.allow("a") == 0.0
    assert rl.allow("a") == pytest.approx(1.0)
    clock.now += 100.0  # refills to burst (2), not 100
    assert rl.allow("a") == rl.allow("a") == 0.0
    assert rl.allow("a") == pytest.approx(1.0)


def test_cost_and_wait_for_a_costly_call():
    clock = Clock()
    rl = RateLimiter(10.0, 100, clock=clock)
    assert rl.allow("a", cost=60) == 0.0
    assert rl.allow("a", cost=60) == pytest.approx(2.0)  # 20 missing at 10/s
    clock.now += 2.0
    assert rl.allow("a", cost=60) == 0.0
    clock.now += 10.0  # full again
    assert rl.allow("a", cost=10_000) == 0.0  # clamped to the burst: needs a full bucket, empties it
    assert rl.allow("a", cost=1) == pytest.approx(0.1)


def test_keys_are_independent():
    rl = RateLimiter(1.0, 1, clock=Clock())
    assert rl.allow("a") == 0.0
    assert rl.allow("a") > 0
    assert rl.allow("b") == 0.0


def test_memory_is_bounded_and_an_evicted_key_restarts_full():
    clock = Clock()
    rl = RateLimiter(1.0, 2, clock=clock, max_keys=3)
    for i in range(50):
        rl.allow(f"k{i}")
        rl.allow(f"k{i}")
        assert len(rl) <= 3
    assert rl.allow("k49") > 0  # recent keys keep their state
    assert rl.allow("k0") == 0.0  # least recently used was evicted: full bucket again


def test_idle_full_buckets_are_dropped_without_changing_answers():
    clock = Clock()
    rl = RateLimiter(1.0, 2, clock=clock)
    for i in range(100):
        rl.allow(f"k{i}")
    assert len(rl) == 100
    clock.now += 2.0  # every bucket has refilled: dropping them loses nothing
    assert rl.allow("new") == 0.0
    assert len(rl) == 1


def test_rate_zero_is_unlimited_and_holds_nothing():
    rl = RateLimiter(0, 0, clock=Clock())
    assert rl.unlimited
    assert all(rl.allow("a", cost=1e9) == 0.0 for _ in range(10_000))
    assert len(rl) == 0


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError):
        RateLimiter(-1, 1, clock=Clock())
    with pytest.raises(ValueError):
        RateLimiter(1, 0, clock=Clock())
    with pytest.raises(ValidationError):
        Limits(read_per_s=-1)
    with pytest.raises(ValidationError):
        Limits(read_burst=0)


def test_limits_defaults_and_unlimited():
    limits = Limits()
    assert limits.limit("read") == (50, 200)
    assert limits.limit("submit") == (20, 100)
    assert limits.limit("auth") == (10, 50)
    assert limits.limit("openai") == (50, 200)  # the HTTP API, per key
    assert set(limits.limiters(Clock())) == set(CLASSES)
    assert all(rl.unlimited for rl in Limits.unlimited().limiters(Clock()).values())
    with pytest.raises(ValidationError):
        Limits(nope=1)


# --- method classes and peers ---------------------------------------------------------------


def test_every_api_method_has_a_class_and_health_and_reflection_none():
    for module, service in ((jobs_pb2, "SubmitterService"), (provider_pb2, "ProviderService"),
                            (artifacts_pb2, "ArtifactService")):
        desc = module.DESCRIPTOR.services_by_name[service]
        for m in desc.methods:
            assert method_class(f"/{desc.full_name}/{m.name}") in CLASSES, m.full_name
    assert method_class("/gpumesh.v1.SubmitterService/SubmitJob") == "submit"
    assert method_class("/gpumesh.v1.SubmitterService/WatchJob") == "read"
    assert method_class("/gpumesh.v1.ProviderService/Register") == "auth"
    assert method_class("/gpumesh.v1.ProviderService/Session") == "session"
    assert method_class("/gpumesh.v1.ArtifactService/Put") == "artifact"
    assert method_class("/grpc.health.v1.Health/Check") is None
    assert method_class("/grpc.health.v1.Health/Watch") is None
    assert method_class("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None


def test_http_retry_after_is_whole_seconds_never_early():
    assert [retry_after_s(w) for w in (0.001, 0.5, 1.0, 1.01, 29.2)] == ["1", "1", "1", "2", "30"]


def test_the_openai_app_limits_per_key_by_the_shared_limits_or_not_at_all():
    from types import SimpleNamespace

    from coordinator.api.openai.app import create_app

    service = SimpleNamespace(clock=Clock())
    limiter = create_app(service, limits=Limits(openai_per_s=2.0, openai_burst=3)).state.limiter
    assert (limiter.rate, limiter.burst, limiter.clock) == (2.0, 3.0, service.clock)
    assert create_app(service).state.limiter is None


def test_peer_host_strips_the_port():
    assert peer_host("ipv4:127.0.0.1:53422") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:53422") == "::1"
    assert peer_host("ipv6:%5B::1%5D:53422") == "::1"
    assert peer_host("unix:/tmp/sock") == "unix:/tmp/sock"
    assert peer_host("") == "unknown"


# --- end to end over loopback ---------------------------------------------------------------


class Fake:
    """Generic handlers under the real method names; counts the calls that reach them."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.target = ""  # the server's address

    def _hit(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def get_job(self, request, context):
        self._hit("GetJob")
        return jobs_pb2.Job(job_id=request.job_id)

    async def watch_job(self, request, context):
        self._hit("WatchJob")
        for _ in range(2):
            yield jobs_pb2.Job(job_id=request.job_id)

    async def get_challenge(self, request, context):
        self._hit("GetChallenge")
        return provider_pb2.GetChallengeResponse(challenge="c-" + request.address)

    async def session(self, request_iterator, context):
        self._hit("Session")
        async for _ in request_iterator:
            yield provider_pb2.CoordinatorMessage()

    def handlers(self):
        j, p = jobs_pb2, provider_pb2
        return [
            grpc.method_handlers_generic_handler("gpumesh.v1.SubmitterService", {
                "GetJob": grpc.unary_unary_rpc_method_handler(
                    self.get_job, j.GetJobRequest.FromString, j.Job.SerializeToString),
                "WatchJob": grpc.unary_stream_rpc_method_handler(
                    self.watch_job, j.WatchJobRequest.FromString, j.Job.SerializeToString),
            }),
            grpc.method_handlers_generic_handler("gpumesh.v1.ProviderService", {
                "GetChallenge": grpc.unary_unary_rpc_method_handler(
                    self.get_challenge, p.GetChallengeRequest.FromString, p.GetChallengeResponse.SerializeToString),
                "Session": grpc.stream_stream_rpc_method_handler(
                    self.session, p.ProviderMessage.FromString, p.CoordinatorMessage.SerializeToString),
            }),
        ]


TIGHT = Limits(read_per_s=1, read_burst=3, auth_per_s=2, auth_burst=2, session_per_s=1, session_burst=1)


def run_server(test, *, limits: Limits = TIGHT, rate_limit_first: bool = True):
    """Run ``await test(channel, fake, clock)`` against a loopback server with the interceptor."""

    async def main():
        clock, fake = Clock(), Fake()
        limiter, errors = RateLimitInterceptor(limits, clock), ErrorInterceptor()
        server = aio.server(interceptors=[limiter, errors] if rate_limit_first else [errors, limiter])
        server.add_generic_rpc_handlers(fake.handlers())
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        fake.target = f"127.0.0.1:{port}"
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        try:
            async with aio.insecure_channel(fake.target) as channel:
                await test(channel, fake, clock)
        finally:
            await server.stop(None)

    asyncio.run(main())


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


async def refused(call) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as info:
        await call
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    return info.value


def trailing(err: aio.AioRpcError) -> dict[str, str]:
    return dict(err.trailing_metadata() or ())


@pytest.mark.parametrize("rate_limit_first", [True, False], ids=["before-errors", "after-errors"])
def test_burst_then_resource_exhausted_with_message_and_retry_after(rate_limit_first):
    async def test(channel, fake, clock):
        stub = jobs_pb2_grpc.SubmitterServiceStub(channel)
        for _ in range(3):
            assert (await stub.GetJob(jobs_pb2.GetJobRequest(job_id="job_1"))).job_id == "job_1"
        err = await refused(stub.GetJob(jobs_pb2.GetJobRequest(job_id="job_1")))
        assert err.details() == "rate limit 'read' exceeded for this identity: retry in 1.0 s"
        assert trailing(err)[RETRY_AFTER_KEY] == "1000"
        assert fake.calls["GetJob"] == 3  # a refused call never reaches the handler
        clock.now += 0.25
        err = await refused(stub.GetJob(jobs_pb2.GetJobRequest(job_id="job_1")))
        assert trailing(err)[RETRY_AFTER_KEY] == "750"
        assert "retry in 0.8 s" in err.details()
        clock.now += 0.75  # one token refilled
        assert (await stub.GetJob(jobs_pb2.GetJobRequest(job_id="job_1"))).job_id == "job_1"
        await refused(stub.GetJob(jobs_pb2.GetJobRequest(job_id="job_1")))

    run_server(test, rate_limit_first=rate_limit_first)


def test_each_bearer_token_is_its_own_identity_apart_from_the_peer():
    async def test(channel, fake, clock):
        stub = jobs_pb2_grpc.SubmitterServiceStub(channel)
        req = jobs_pb2.GetJobRequest(job_id="job_1")
        for _ in range(3):
            await stub.GetJob(req, metadata=bearer("alice"))
        await refused(stub.GetJob(req, metadata=bearer("alice")))
        for _ in range(3):  # another token, and then the anonymous peer, each have a full burst
            await stub.GetJob(req, metadata=bearer("bob"))
        for _ in range(3):
            await stub.GetJob(req)
        await refused(stub.GetJob(req, metadata=bearer("bob")))
        await refused(stub.GetJob(req))
        assert fake.calls["GetJob"] == 9

    run_server(test)


def test_a_stream_open_is_limited_and_shares_its_class():
    async def test(channel, fake, clock):
        stub = jobs_pb2_grpc.SubmitterServiceStub(channel)
        got = [m.job_id async for m in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="job_2"))]
        assert got == ["job_2", "job_2"]
        await stub.GetJob(jobs_pb2.GetJobRequest(job_id="job_2"))
        await stub.GetJob(jobs_pb2.GetJobRequest(job_id="job_2"))
        call = stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="job_2"))
        err = await refused(call.read())
        assert "rate limit 'read'" in err.details()
        assert fake.calls["WatchJob"] == 1

    run_server(test)


def test_provider_sessions_are_limited_per_token():
    async def test(channel, fake, clock):
        stub = provider_pb2_grpc.ProviderServiceStub(channel)

        async def one(token: str) -> grpc.StatusCode:
            call = stub.Session(metadata=bearer(token))
            await call.write(provider_pb2.ProviderMessage())
            await call.read()
            await call.done_writing()
            assert await call.read() is aio.EOF
            return await call.code()

        assert await one("p1") is grpc.StatusCode.OK
        assert await one("p2") is grpc.StatusCode.OK
        call = stub.Session(metadata=bearer("p1"))
        err = await refused(call.read())
        assert "rate limit 'session'" in err.details()
        assert fake.calls["Session"] == 2

    run_server(test)


def test_auth_is_keyed_by_peer_host_whatever_the_token():
    async def test(channel, fake, clock):
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        req = provider_pb2.GetChallengeRequest(address="0xabc")
        assert (await stub.GetChallenge(req, metadata=bearer("x"))).challenge == "c-0xabc"
        await stub.GetChallenge(req, metadata=bearer("y"))
        err = await refused(stub.GetChallenge(req, metadata=bearer("z")))
        assert err.details() == "rate limit 'auth' exceeded for this identity: retry in 0.5 s"
        assert trailing(err)[RETRY_AFTER_KEY] == "500"
        # a fresh channel is a new connection (new port) from the same host: same key
        async with aio.insecure_channel(fake.target) as other:
            await refused(provider_pb2_grpc.ProviderServiceStub(other).GetChallenge(req))

    run_server(test)


def test_health_checks_are_never_limited():
    async def test(channel, fake, clock):
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(100):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    tiny = {f"{name}_per_s": 0.001 for name in CLASSES} | {f"{name}_burst": 1 for name in CLASSES}
    run_server(test, limits=Limits(**tiny))


def test_unlimited_limits_never_refuse():
    async def test(channel, fake, clock):
        stub = jobs_pb2_grpc.SubmitterServiceStub(channel)
        for _ in range(300):
            await stub.GetJob(jobs_pb2.GetJobRequest(job_id="job_3"))
        assert fake.calls["GetJob"] == 300

    run_server(test, limits=Limits.unlimited())


def test_the_coordinator_server_applies_its_configured_limits(tmp_path):
    """The real composition root: settings -> interceptor -> RESOURCE_EXHAUSTED through the SDK."""
    from coordinator.config import CoordinatorSettings
    from gpumesh.client import Client
    from gpumesh.errors import ResourceExhausted
    from gpumesh.localnet import free_port
    from tests.conftest import ServerThread

    settings = CoordinatorSettings(listen=f"127.0.0.1:{free_port()}", data_dir=tmp_path / "c",
                                   rate_limits=Limits(read_per_s=0.1, read_burst=2))
    srv = ServerThread(settings).start()
    try:
        with Client.connect(srv.target) as client:
            assert client.list_providers() == [] and client.list_providers() == []
            with pytest.raises(ResourceExhausted) as err:
                client.list_providers()
            assert "rate limit 'read' exceeded" in str(err.value)
            client.upload(b"artifacts have their own bucket")  # another class is unaffected
    finally:
        srv.stop()
