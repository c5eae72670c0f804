"""Submitter authentication: EIP-191 signed requests with nonce and timestamp, over a real socket."""

from __future__ import annotations

import time

import grpc
import pytest

from gpumesh.client import Client
from gpumesh.errors import AlreadyExists, PermissionDenied, Unauthenticated
from gpumesh.identity import Wallet
from gpumesh.jobspec import JobSpec
from gpumesh.signing import NONCE, SIGNATURE, TIMESTAMP, sign_request, verify_request
from gpumesh.v1 import jobs_pb2, jobs_pb2_grpc

SUBMIT = "/gpumesh.v1.SubmitterService/SubmitJob"
GET = "/gpumesh.v1.SubmitterService/GetJob"


def _request(name: str = "job") -> jobs_pb2.SubmitJobRequest:
    return jobs_pb2.SubmitJobRequest(spec=jobs_pb2.JobSpec(name=name))


# ---- the signature itself (pure) ------------------------------------------------------------

def test_a_signature_verifies_and_binds_method_body_and_time():
    wallet = Wallet.generate()
    req = _request()
    md = sign_request(wallet, SUBMIT, req, now=1000.0)
    signed = verify_request(md, SUBMIT, req, now=1000.0, max_skew_s=300)
    assert signed.address == wallet.address and signed.timestamp_ms == 1_000_000
    with pytest.raises(Unauthenticated, match="signature was made by"):
        verify_request(md, GET, req, now=1000.0, max_skew_s=300)  # another method
    with pytest.raises(Unauthenticated, match="signature was made by"):
        verify_request(md, SUBMIT, _request("other"), now=1000.0, max_skew_s=300)  # another body
    with pytest.raises(Unauthenticated) as err:
        verify_request(md, SUBMIT, req, now=1000.0 + 301, max_skew_s=300)
    assert err.value.field == TIMESTAMP and "behind" in err.value.message
    with pytest.raises(Unauthenticated, match="ahead"):
        verify_request(md, SUBMIT, req, now=1000.0 - 301, max_skew_s=300)


def test_malformed_headers_are_refused_naming_the_header():
    wallet = Wallet.generate()
    req = _request()
    good = dict(sign_request(wallet, SUBMIT, req, now=1000.0))
    for header, value in ((NONCE, "xyz"), (TIMESTAMP, "-5"), (SIGNATURE, "0x1234"),
                          ("x-gpumesh-address", "not-an-address")):
        with pytest.raises(Unauthenticated) as err:
            verify_request(list({**good, header: value}.items()), SUBMIT, req, now=1000.0, max_skew_s=300)
        assert err.value.field == header
    with pytest.raises(Unauthenticated) as err:
        verify_request([(k, v) for k, v in good.items() if k != SIGNATURE], SUBMIT, req, now=1000.0,
                       max_skew_s=300)
    assert err.value.field == SIGNATURE and "unsigned" in err.value.message
    # A signature by one wallet presented under another's address.
    other = Wallet.generate()
    with pytest.raises(Unauthenticated, match="not " + other.address):
        verify_request(list({**good, "x-gpumesh-address": other.address}.items()), SUBMIT, req,
                       now=1000.0, max_skew_s=300)


# ---- over the wire --------------------------------------------------------------------------

@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def _job(server) -> tuple[Client, str]:
    client = Client.connect(server.target, wallet=Wallet.generate())
    model = client.upload(b"model bytes")
    data = client.upload(b'{"prompt": "hi"}\n')
    handle = client.submit(JobSpec(name="owned", model_cid=model, input_cid=data))
    return client, handle.id


def test_unsigned_calls_that_name_a_job_are_unauthenticated(server, channel):
    stub = jobs_pb2_grpc.SubmitterServiceStub(channel)
    for call, request in ((stub.SubmitJob, _request()), (stub.GetJob, jobs_pb2.GetJobRequest(job_id="job_x")),
                          (stub.CancelJob, jobs_pb2.CancelJobRequest(job_id="job_x"))):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "x-gpumesh-signature" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="job_x"), timeout=10))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The provider list and settlement info name no job: public.
    assert stub.GetSettlementInfo(jobs_pb2.GetSettlementInfoRequest(), timeout=10).enabled is False
    stub.ListProviders(jobs_pb2.ListProvidersRequest(), timeout=10)


def test_a_replayed_request_is_refused(server, channel):
    client, job_id = _job(server)
    stub = jobs_pb2_grpc.SubmitterServiceStub(channel)
    req = jobs_pb2.GetJobRequest(job_id=job_id)
    md = sign_request(client.wallet, GET, req)
    assert stub.GetJob(req, metadata=md, timeout=10).job_id == job_id
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJob(req, metadata=md, timeout=10)  # the same bytes, captured and sent again
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-gpumesh-nonce" in err.value.details() and "replayed" in err.value.details()
    # A stale signature (older than the skew window) is refused before its nonce is even looked at.
    stale = sign_request(client.wallet, GET, req, now=time.time() - 3600)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJob(req, metadata=stale, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "x-gpumesh-timestamp" in err.value.details()
    # A signature over one job id does not authorise another request.
    with pytest.raises(grpc.RpcError) as err:
        stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), metadata=sign_request(client.wallet, GET, req),
                       timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert client.get_job(job_id).state == "QUEUED"  # nothing happened to the job
    client.close()


def test_only_the_submitter_reads_or_cancels_its_job(server):
    owner, job_id = _job(server)
    with Client.connect(server.target, wallet=Wallet.generate()) as stranger:
        with pytest.raises(PermissionDenied) as err:
            stranger.get_job(job_id)
        assert str(err.value).startswith("job_id:") and owner.wallet.address in str(err.value)
        with pytest.raises(PermissionDenied):
            stranger.cancel(job_id)
        with pytest.raises(PermissionDenied):
            next(stranger.watch(job_id))
    assert owner.get_job(job_id).state == "QUEUED"
    assert owner.get_job(job_id).raw.submitter == owner.wallet.address
    assert owner.cancel(job_id).state == "CANCELLED"
    owner.close()


def test_an_idempotency_key_is_the_submitters_own(server):
    a = Client.connect(server.target, wallet=Wallet.generate())
    spec = JobSpec(name="k", model_cid=a.upload(b"m"), input_cid=a.upload(b'{"prompt": "p"}\n'))
    first = a.submit(spec, idempotency_key="same-key")
    assert a.submit(spec, idempotency_key="same-key").id == first.id  # a retry gets the first job
    with Client.connect(server.target, wallet=Wallet.generate()) as b:
        with pytest.raises(AlreadyExists) as err:
            b.submit(spec, idempotency_key="same-key")
        assert str(err.value).startswith("idempotency_key:")
    a.close()


@pytest.fixture
def open_server(coordinator_settings):
    from tests.conftest import ServerThread

    srv = ServerThread(coordinator_settings.model_copy(update={"require_signed_requests": False})).start()
    yield srv
    srv.stop()


def test_with_signing_off_unsigned_calls_are_served_but_signed_jobs_stay_owned(open_server):
    from gpumesh.artifacts.remote import RemoteArtifactStore
    from gpumesh.errors import NotFound

    with grpc.insecure_channel(open_server.target) as ch:
        stub = jobs_pb2_grpc.SubmitterServiceStub(ch)
        anonymous = RemoteArtifactStore(ch)
        owner, job_id = _job(open_server)
        # A job submitted signed stays its signer's: an unsigned call may neither read nor cancel it...
        for call in (stub.GetJob, stub.WatchJob, stub.CancelJob):
            with pytest.raises(grpc.RpcError) as err:
                reply = call(jobs_pb2.GetJobRequest(job_id=job_id) if call is not stub.CancelJob
                             else jobs_pb2.CancelJobRequest(job_id=job_id), timeout=10)
                list(reply) if call is stub.WatchJob else reply
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, call
        with Client.connect(open_server.target, wallet=Wallet.generate()) as stranger:
            with pytest.raises(PermissionDenied):
                stranger.cancel(job_id)  # a signature is still checked, and the job is not theirs
        # ... nor read its signed uploads.
        spec = owner.get_job(job_id).raw.spec
        with pytest.raises(NotFound):
            anonymous.get_bytes(spec.input_cid)
        assert owner.get_job(job_id).state == "QUEUED"
        # An unsigned job is everyone's: any unsigned call reads it and its unsigned inputs.
        data = anonymous.put_bytes(b'{"prompt": "open"}\n')
        open_spec = jobs_pb2.JobSpec(name="open", model_cid=anonymous.put_bytes(b"m"), input_cid=data)
        open_job = stub.SubmitJob(jobs_pb2.SubmitJobRequest(spec=open_spec), timeout=10).job
        assert not open_job.submitter
        assert stub.GetJob(jobs_pb2.GetJobRequest(job_id=open_job.job_id), timeout=10).job_id == open_job.job_id
        assert anonymous.get_bytes(data) == b'{"prompt": "open"}\n'
        owner.close()
