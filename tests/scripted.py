"""A provider speaking the real protocol by hand, for tests that script what it does."""

from __future__ import annotations

import json
import queue
import threading
import time

import grpc

from gpumesh.artifacts.remote import RemoteArtifactStore
from gpumesh.identity import Wallet, result_text
from gpumesh.sealing import SealingKey
from gpumesh.signing import SigningInterceptor, sign_registration
from gpumesh.v1 import common_pb2, provider_pb2, provider_pb2_grpc
from provider_node.hardware import GpuInfo, HardwareInfo
from provider_node.hwcheck import CheckRunner


class ScriptedProvider:
    """A provider speaking the real protocol by hand: registers with a signed challenge, holds its
    Session stream, and answers a lease when the test says so."""

    def __init__(self, target: str, *, name: str, price: int, wallet: Wallet | None = None,
                 gpus: tuple[tuple[str, int], ...] = (("H100", 81_559),), slots: int = 1) -> None:
        self.wallet = wallet or Wallet.generate()
        self.channel = grpc.insecure_channel(target)
        stub = provider_pb2_grpc.ProviderServiceStub(self.channel)
        challenge = stub.GetChallenge(provider_pb2.GetChallengeRequest(address=self.wallet.address)).challenge
        resp = stub.Register(sign_registration(self.wallet, provider_pb2.RegisterRequest(
            address=self.wallet.address, challenge=challenge, name=name, slots=slots, price_per_hour=str(price),
            runtime="process", sealing_public_key=SealingKey.generate().public_bytes,
            hardware=common_pb2.Hardware(cpu_count=8, memory_total_mb=64_000, gpus=[
                common_pb2.GpuInfo(index=k, name=n, memory_total_mb=mib) for k, (n, mib) in enumerate(gpus)]))))
        self.provider_id = resp.provider_id
        self.session_token = resp.session_token
        # Its artifact calls are signed by its wallet: the coordinator serves what its leases need.
        self.artifacts = RemoteArtifactStore(grpc.intercept_channel(self.channel, SigningInterceptor(self.wallet)))
        # It runs on this CPU: its claimed H100 fails its check (no CUDA), its CPU passes.
        self.checks = CheckRunner(HardwareInfo(gpus=tuple(GpuInfo(k, "", n, mib, "", "", "")
                                                          for k, (n, mib) in enumerate(gpus)), cpu_count=8,
                                               memory_total_mb=64_000, cpu_model="", platform=""))
        self._out: queue.Queue = queue.Queue()
        self._in: queue.Queue = queue.Queue()
        bearer = (("authorization", f"Bearer {resp.session_token}"),)
        self.call = stub.Session(iter(self._out.get, None), metadata=bearer)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for msg in self.call:
                if msg.WhichOneof("body") == "check":  # hardware checks: answered as the daemon does
                    threading.Thread(target=self._check, args=(msg.check,), daemon=True).start()
                    continue
                self._in.put(msg)
        except grpc.RpcError:
            pass

    def _check(self, check) -> None:
        self._out.put(provider_pb2.ProviderMessage(check=self.checks.handle(check)))

    def next(self, kind: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while True:
            msg = self._in.get(timeout=max(0.01, deadline - time.monotonic()))
            if msg.WhichOneof("body") == kind:
                return getattr(msg, kind)

    def answer(self, lease, client=None, *, claim: tuple[str, bytes] | None = None, check: bool = True):
        """Return one completion per prompt of the lease's input, signed (with ``claim``: its
        amount and signature for a paid job); returns the coordinator's ack."""
        inp = self.artifacts.get_bytes(lease.input_cid)
        records = [json.loads(line) for line in inp.splitlines() if line.strip()]
        cid = self.artifacts.put_bytes("".join(json.dumps({**r, "completion": "ok"}) + "\n" for r in records).encode())
        amount, signature = claim or ("", b"")
        self._out.put(provider_pb2.ProviderMessage(result=provider_pb2.TaskResult(
            lease_id=lease.lease_id, task_id=lease.task_id, output_cid=cid,
            signature=self.wallet.sign_text(result_text(lease.task_id, cid)), metrics_json='{"engine": "scripted"}',
            claim_amount=amount, claim_signature=signature)))
        ack = self.next("ack")
        if check:
            assert ack.accepted, ack.reason
        return ack

    def close(self) -> None:
        self._out.put(None)
        self.call.cancel()
        self.channel.close()
