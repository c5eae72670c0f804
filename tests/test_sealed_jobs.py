"""Sealed jobs: inputs encrypted by the submitter, data keys brokered by the coordinator to the
assigned providers only, outputs sealed back to the submitter; nothing readable at rest."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from coordinator.models import ProviderRecord, ProviderTier
from gpumesh.client import Client, JobHandle
from gpumesh.errors import IntegrityError, InvalidArgument
from gpumesh.identity import Wallet
from gpumesh.jobspec import InferenceParams, JobSpec
from gpumesh.localnet import LocalNetwork
from gpumesh.sealing import SealingKey, is_sealed, new_data_key, seal, wrap_key
from gpumesh.v1 import common_pb2, jobs_pb2
from tests.test_e2e import PROMPTS, expected  # noqa: F401  (the direct run's outputs, a fixture)

SECRET = b"tell me about"  # in every prompt, and so in every output record


def _prompts() -> bytes:
    return "".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS).encode()


# ---- in process ---------------------------------------------------------------------------------

def test_sealed_upload_keeps_the_plaintext_off_the_artifact_network(server):
    with Client.connect(server.target, wallet=Wallet.generate()) as client:
        cid = client.upload(_prompts(), seal=True)
        raw = server.core.raw_artifacts.get_bytes(cid)  # what any fetcher of the CID gets
        assert is_sealed(raw) and SECRET not in raw
        assert client.download(cid) == _prompts()  # the uploader kept its key
        with pytest.raises(IntegrityError):
            client.download(cid, data_key=new_data_key())


def test_submitted_keys_must_fit_the_input(server):
    with Client.connect(server.target, wallet=Wallet.generate()) as client:
        model = client.upload(b"model")
        key = new_data_key()
        sealed_cid = client.artifacts.put_bytes(seal(_prompts(), key))
        plain_cid = client.upload(b'{"prompt": "clear"}\n')
        coordinator_key = client.coordinator_sealing_key()
        stub = client._stub
        spec = jobs_pb2.JobSpec(name="s", model_cid=model, input_cid=sealed_cid)
        cases = [
            ([common_pb2.SealedKey(cid=sealed_cid, wrapped_key=wrap_key(key, SealingKey.generate().public_bytes))],
             "input_keys[0].wrapped_key"),  # wrapped to someone else
            ([common_pb2.SealedKey(cid=sealed_cid, wrapped_key=wrap_key(new_data_key(), coordinator_key))],
             "input_keys[0].wrapped_key"),  # the wrong data key: the ciphertext does not authenticate
            ([common_pb2.SealedKey(cid=model, wrapped_key=wrap_key(key, coordinator_key))], "input_keys[0].cid"),
        ]
        for keys, field in cases:
            with pytest.raises(grpc.RpcError) as err:
                stub.SubmitJob(jobs_pb2.SubmitJobRequest(spec=spec, input_keys=keys), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()
        # A key cannot be pinned on a CID that is not sealed, poisoning other jobs that use it.
        plain = jobs_pb2.JobSpec(name="s", model_cid=model, input_cid=plain_cid)
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJob(jobs_pb2.SubmitJobRequest(
                spec=plain, input_keys=[common_pb2.SealedKey(cid=plain_cid, wrapped_key=wrap_key(key, coordinator_key))]),
                timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert not server.core.keys.is_sealed(plain_cid)
        with pytest.raises(InvalidArgument, match="spec.output_sealing_key"):
            client.submit(JobSpec(name="f", kind="finetune", model_cid=model, input_cid=plain_cid,
                                  finetune={"steps": 1}), seal_output=True)


def test_a_lease_carries_the_keys_for_its_provider_alone(server):
    core = server.core
    with Client.connect(server.target, wallet=Wallet.generate()) as client:
        handle = client.submit(JobSpec(name="s", model_cid=client.upload(b"m"),
                                       input_cid=client.upload(_prompts(), seal=True), shard_size=3))
        tasks = core.store.list_tasks(handle.id)
        assert len(tasks) == 3 and all(core.keys.is_sealed(t.input_cid) for t in tasks)  # shards sealed too
        assert SECRET not in b"".join(core.raw_artifacts.get_bytes(t.input_cid) for t in tasks)
        assert SECRET in core.artifacts.get_bytes(tasks[0].input_cid)  # the coordinator itself can read them
        assert core.get_job(handle.id).job.spec.output_sealing_key == client.sealing_key.public_bytes.hex()
    alice, bob = SealingKey.generate(), SealingKey.generate()
    record = ProviderRecord("prov_a", "0x" + "a" * 40, "a", "{}", (), 2, 1000, 0, ProviderTier.OPEN, 1, "bwrap",
                            True, sealing_key=alice.public_bytes.hex())
    (key,) = core._lease_keys(tasks[0], record)
    assert key.cid == tasks[0].input_cid
    assert alice.unwrap(key.wrapped_key) == core.keys.data_key(tasks[0].input_cid)
    with pytest.raises(IntegrityError):
        bob.unwrap(key.wrapped_key)


# ---- end to end: real providers, verification on ------------------------------------------------

@pytest.mark.e2e
def test_a_sealed_job_runs_checked_and_nothing_is_readable_at_rest(tmp_path, tiny_model, expected):  # noqa: F811
    with LocalNetwork(tmp_path / "net", lease_ttl_s=5, heartbeat_interval_s=0.5) as net:
        net.start_coordinator()  # verification on: every result is checked (audited, or re-executed elsewhere)
        net.start_provider("alice", threads=1)
        net.start_provider("bob", threads=1)
        net.wait_providers(2)
        with Client.connect(net.target, wallet=Wallet.generate()) as client:
            spec = JobSpec(name="sealed", model_cid=client.upload(tiny_model),
                           input_cid=client.upload(_prompts(), seal=True),
                           inference=InferenceParams(max_new_tokens=8), shard_size=4)
            handle = client.submit(spec)
            status = handle.wait(timeout=240)
            job = status.raw
            assert job.output_key and {t.role for t in job.tasks} & {"replica", "audit"} and "primary" in {
                t.role for t in job.tasks}
            outputs = handle.outputs()  # opened with this client's key
            assert [o["prompt"] for o in outputs] == PROMPTS
            assert [o["completion"] for o in outputs] == [e["completion"] for e in expected]
            assert is_sealed(client.download(status.output_cid))  # without the key: ciphertext
            with Client.connect(net.target, wallet=Wallet.generate()) as stranger:
                with pytest.raises(Exception, match="belongs to"):
                    JobHandle(stranger, handle.id).outputs()
        # At rest on the coordinator (blocks, database) no prompt or output is in the clear.
        leaks = [p for p in Path(net.root / "coordinator").rglob("*") if p.is_file() and SECRET in p.read_bytes()]
        assert not leaks, leaks
