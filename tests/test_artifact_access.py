"""Artifacts are readable only by who may read them, over a real coordinator socket: the job's
submitter, the provider while its lease needs them; never another wallet, an anonymous caller, an
unrelated provider, or the provider once its lease is over. Quotas bound what one wallet stores
and queues, and the operator can cancel any job."""

from __future__ import annotations

import json
import os
import stat

import grpc
import pytest
from click.testing import CliRunner

from gpumesh.artifacts.remote import RemoteArtifactStore
from gpumesh.client import Client
from gpumesh.errors import NotFound, ResourceExhausted, Unauthenticated
from gpumesh.identity import Wallet
from gpumesh.jobspec import JobSpec
from gpumesh.signing import SigningInterceptor
from gpumesh.v1 import common_pb2, provider_pb2, provider_pb2_grpc
from tests.conftest import ServerThread
from tests.scripted import ScriptedProvider

PROMPTS = b'{"prompt": "one"}\n{"prompt": "two"}\n'


@pytest.fixture
def srv(coordinator_settings):
    srv = ServerThread(coordinator_settings.model_copy(update={"verify": False})).start()
    yield srv
    srv.stop()


def signed_store(target: str, wallet: Wallet):
    channel = grpc.insecure_channel(target)
    return channel, RemoteArtifactStore(grpc.intercept_channel(channel, SigningInterceptor(wallet)), timeout=10)


def refused(store: RemoteArtifactStore, cid: str) -> bool:
    """Neither the bytes nor the size: NOT_FOUND, whether or not the CID exists."""
    for call in (store.get_bytes, store.size):
        with pytest.raises(NotFound):
            call(cid)
    return True


def test_each_artifact_of_a_job_is_readable_only_by_its_submitter_and_its_leases(srv):
    alice = Client.connect(srv.target, wallet=Wallet.generate())
    model, data = alice.upload(b"model bytes"), alice.upload(PROMPTS)
    job = alice.submit(JobSpec(name="private", model_cid=model, input_cid=data))
    stranger_channel, stranger = signed_store(srv.target, Wallet.generate())
    anonymous_channel = grpc.insecure_channel(srv.target)
    anonymous = RemoteArtifactStore(anonymous_channel, timeout=10)
    worker = ScriptedProvider(srv.target, name="worker", price=1)
    bystander = None
    try:
        lease = worker.next("lease")
        bystander = ScriptedProvider(srv.target, name="bystander", price=1)  # registered, connected, no lease
        shard = lease.input_cid
        # While leased: the worker reads what its task needs; nobody else reads anything of the job.
        records = [json.loads(line) for line in worker.artifacts.get_bytes(shard).splitlines()]
        assert [r["prompt"] for r in records] == ["one", "two"]
        assert worker.artifacts.get_bytes(model) == b"model bytes"
        for cid in (model, data, shard):
            assert refused(stranger, cid) and refused(bystander.artifacts, cid)
            with pytest.raises(Unauthenticated):
                anonymous.get_bytes(cid)
        assert alice.download(model) == b"model bytes" and alice.download(data) == PROMPTS

        worker.answer(lease)
        done = job.wait(timeout=30)
        outputs = [done.output_cid, *(t.output_cid for t in done.raw.tasks)]
        assert all(outputs) and len(alice.download(done.output_cid).splitlines()) == 2
        # After: the submitter reads its outputs; the worker, its lease over, no longer reads the job's
        # input or model (its own upload, the output, it had anyway).
        for cid in (model, data, shard, *outputs):
            assert refused(stranger, cid) and refused(bystander.artifacts, cid)
            with pytest.raises(Unauthenticated):
                anonymous.size(cid)
        for cid in (model, shard):
            assert refused(worker.artifacts, cid)
        # A CID nobody stored gets the same answer: no oracle of what others keep.
        assert refused(stranger, "bafkreie5cvv4h45feyk4ahtdywbxmkhwtmlb7fy4fpd24cwdzfe4ncjfxe")
    finally:
        worker.close()
        if bystander is not None:
            bystander.close()
        stranger_channel.close()
        anonymous_channel.close()
        alice.close()


def test_naming_someone_elses_cid_in_a_job_does_not_make_it_readable(srv):
    with Client.connect(srv.target, wallet=Wallet.generate()) as alice, \
            Client.connect(srv.target, wallet=Wallet.generate()) as mallory:
        model, data = alice.upload(b"alice's model"), alice.upload(PROMPTS)
        own = mallory.upload(b"mallory's model")
        for spec, field in ((JobSpec(model_cid=own, input_cid=data), "spec.input_cid"),
                            (JobSpec(model_cid=model, input_cid=mallory.upload(PROMPTS + b'{"prompt": "3"}\n')),
                             "spec.model_cid")):
            with pytest.raises(NotFound) as err:
                mallory.submit(spec)
            assert err.value.field == field
        with pytest.raises(NotFound):
            mallory.download(data)
        # Having the bytes is the proof: uploading the same content makes it readable (it is the uploader's too).
        assert mallory.upload(PROMPTS) == data and mallory.download(data) == PROMPTS


def test_uploads_and_queued_tasks_are_bounded_per_wallet(coordinator_settings):
    settings = coordinator_settings.model_copy(update={
        "verify": False, "max_stored_bytes_per_submitter": 4096, "max_open_tasks_per_submitter": 3})
    srv = ServerThread(settings).start()
    try:
        with Client.connect(srv.target, wallet=Wallet.generate()) as greedy:
            model = greedy.upload(b"m" * 1000)
            assert greedy.upload(b"m" * 1000) == model  # the same CID counts once
            with pytest.raises(ResourceExhausted, match="4096-byte store quota") as err:
                greedy.upload(b"x" * 4000)
            assert err.value.field == "data"
            prompts = greedy.upload(b"".join(b'{"prompt": "p%d"}\n' % i for i in range(5)))
            first = greedy.submit(JobSpec(model_cid=model, input_cid=prompts, shard_size=3))  # 2 tasks
            with pytest.raises(ResourceExhausted, match="has 2 tasks queued or running; this job adds 2") as err:
                greedy.submit(JobSpec(model_cid=model, input_cid=prompts, shard_size=3))
            assert err.value.field == "spec.shard_size"
            greedy.cancel(first.id)  # cancelled tasks no longer count
            greedy.submit(JobSpec(model_cid=model, input_cid=prompts, shard_size=3))
        with Client.connect(srv.target, wallet=Wallet.generate()) as other:  # quotas are per wallet
            other.upload(b"x" * 4000)
    finally:
        srv.stop()


def test_the_operator_cancels_any_job_from_beside_the_coordinator(srv, coordinator_settings):
    from gpumesh.cli.main import main

    with Client.connect(srv.target, wallet=Wallet.generate()) as someone:
        job = someone.submit(JobSpec(model_cid=someone.upload(b"m"), input_cid=someone.upload(PROMPTS)))
        runner = CliRunner()
        data_dir = str(coordinator_settings.data_dir)
        listed = runner.invoke(main, ["coordinator", "jobs", "list", "--data-dir", data_dir])
        assert listed.exit_code == 0 and job.id in listed.output and someone.wallet.address in listed.output
        result = runner.invoke(main, ["coordinator", "jobs", "cancel", job.id, "--data-dir", data_dir,
                                      "--reason", "abuse"])
        assert result.exit_code == 0, result.output
        assert f"{job.id}: CANCELLED" in result.output
        status = someone.get_job(job.id)
        assert status.state == "CANCELLED" and "abuse" in status.error
        again = runner.invoke(main, ["coordinator", "jobs", "cancel", job.id, "--data-dir", data_dir])
        assert again.exit_code == 1 and "not cancelled" in again.output


def test_the_coordinators_database_is_private(srv, coordinator_settings):
    for path in [coordinator_settings.db_path, *coordinator_settings.data_dir.glob("coordinator.db-*")]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(coordinator_settings.data_dir).st_mode) == 0o700


@pytest.mark.parametrize("field,hardware", [
    ("hardware.memory_total_mb", common_pb2.Hardware(memory_total_mb=2**63)),
    ("hardware.memory_total_mb", common_pb2.Hardware(memory_total_mb=2**40)),
    ("hardware.cpu_count", common_pb2.Hardware(cpu_count=2**31)),
    ("hardware.gpus[0].memory_total_mb",
     common_pb2.Hardware(gpus=[common_pb2.GpuInfo(name="H100", memory_total_mb=2**60)])),
])
def test_out_of_range_numbers_are_invalid_argument_naming_the_field(srv, field, hardware):
    from gpumesh.sealing import SealingKey
    from gpumesh.signing import sign_registration

    wallet = Wallet.generate()
    with grpc.insecure_channel(srv.target) as channel:
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        challenge = stub.GetChallenge(provider_pb2.GetChallengeRequest(address=wallet.address)).challenge
        request = sign_registration(wallet, provider_pb2.RegisterRequest(
            address=wallet.address, challenge=challenge, name="big", slots=1, price_per_hour="1",
            hardware=hardware, sealing_public_key=SealingKey.generate().public_bytes))
        with pytest.raises(grpc.RpcError) as err:
            stub.Register(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:"), err.value.details()
    assert "Overflow" not in err.value.details()
