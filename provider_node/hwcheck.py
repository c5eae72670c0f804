"""Answering the coordinator's timed hardware checks (``gpumesh.hwcheck``) on the devices this
node claims: the CPU, and each claimed GPU on its own CUDA device.

PREPARE warms the device (not timed); START runs the seeded matmul chain there and commits to its
row digests; OPEN sends the leaves the coordinator asks for. Work past the deadline is abandoned.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from gpumesh import hwcheck
from gpumesh.v1 import provider_pb2
from provider_node.hardware import HardwareInfo

log = logging.getLogger(__name__)

PREPARE, START, OPEN = (provider_pb2.CHECK_PHASE_PREPARE, provider_pb2.CHECK_PHASE_START,
                        provider_pb2.CHECK_PHASE_OPEN)
MAX_N, MAX_ROWS, MAX_ROUNDS = 16_384, 1 << 26, 64  # beyond these a check is refused as malformed
KEEP = 16  # checks remembered at once
CPU_BLOCK_FLOPS = 2e9  # per block on a CPU (the deadline is looked at between blocks)
GPU_BLOCK_ROWS = 8192


class TorchBackend:
    def __init__(self, device: str) -> None:
        import torch

        self.torch, self.device = torch, device

    def arange(self, start: int, stop: int):
        return self.torch.arange(start, stop, dtype=self.torch.int64, device=self.device)

    def f32(self, x):
        return x.to(self.torch.float32)

    def i64(self, x):
        return x.to(self.torch.int64)

    def rowsum(self, x):
        return x.sum(dim=1)


@dataclass
class _Check:
    device: str
    sizing: hwcheck.Sizing
    digests: np.ndarray | None = None
    levels: list[list[bytes]] | None = None


class CheckRunner:
    def __init__(self, hardware: HardwareInfo) -> None:
        self.hardware = hardware
        self._checks: dict[str, _Check] = {}
        self._lock = threading.Lock()

    def handle(self, msg: provider_pb2.HardwareCheck) -> provider_pb2.HardwareCheckReply:
        """Answer one message (blocking: run it in a thread; devices' checks run side by side)."""
        reply = provider_pb2.HardwareCheckReply(check_id=msg.check_id, phase=msg.phase)
        try:
            if msg.phase == PREPARE:
                self._prepare(msg)
            elif msg.phase == START:
                reply.root = self._start(msg)
            elif msg.phase == OPEN:
                reply.leaves.extend(self._open(msg))
            else:
                raise ValueError(f"unknown check phase {msg.phase}")
        except Exception as exc:  # the device cannot run it: said, and the coordinator decides
            log.warning("hardware check %s (device %d): %s", msg.check_id[:8], msg.device, exc)
            reply.error = str(exc) or type(exc).__name__
        return reply

    def _device(self, index: int) -> str:
        if index < 0:
            return "cpu"
        if index >= len(self.hardware.gpus):
            raise ValueError(f"no GPU {index} was registered")
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available on this host")
        uuid = self.hardware.gpus[index].uuid.removeprefix("GPU-")
        for k in range(torch.cuda.device_count()):  # NVML order and CUDA order may differ: match the UUID
            if uuid and str(getattr(torch.cuda.get_device_properties(k), "uuid", "")) == uuid:
                return f"cuda:{k}"
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"CUDA sees {torch.cuda.device_count()} devices, not GPU {index}")
        return f"cuda:{index}"

    def _prepare(self, msg: provider_pb2.HardwareCheck) -> None:
        if not (0 < msg.n <= MAX_N and 0 < msg.rows <= MAX_ROWS and 0 < msg.rounds <= MAX_ROUNDS
                and 0 < msg.leaf_rows <= MAX_ROWS):
            raise ValueError("check shape out of range")
        device = self._device(msg.device)
        import torch

        x = torch.ones((64, 64), device=device)
        (x @ x).sum().item()  # the device (and a CUDA context) is up before the clock starts
        with self._lock:
            while len(self._checks) >= KEEP:
                self._checks.pop(next(iter(self._checks)))
            self._checks[msg.check_id] = _Check(device, hwcheck.Sizing(msg.n, msg.rows, msg.rounds, msg.leaf_rows))

    def _start(self, msg: provider_pb2.HardwareCheck) -> bytes:
        check = self._checks.get(msg.check_id)
        if check is None:
            raise ValueError("unknown check")
        stop = time.monotonic() + msg.deadline_s + 1.0
        check.digests = solve(check.device, check.sizing, msg.seed_a, msg.seed_b, stop_at=stop)
        root, check.levels = hwcheck.commit(check.digests, check.sizing.leaf_rows)
        return root

    def _open(self, msg: provider_pb2.HardwareCheck) -> list[provider_pb2.CheckLeaf]:
        check = self._checks.pop(msg.check_id, None)
        if check is None or check.digests is None:
            raise ValueError("unknown check")
        sz = check.sizing
        leaves = sorted({int(r) // sz.leaf_rows for r in msg.open_rows if int(r) < sz.rows})
        return [provider_pb2.CheckLeaf(index=k, digests=hwcheck.leaf_bytes(check.digests, k, sz.leaf_rows),
                                       path=hwcheck.merkle_path(check.levels, k)) for k in leaves]


def solve(device: str, sizing: hwcheck.Sizing, seed_a: int, seed_b: int, *, stop_at: float = float("inf")) -> np.ndarray:
    """Every row's digest, computed on ``device`` (raises TimeoutError once past ``stop_at``)."""
    import torch

    bk = TorchBackend(device)
    cuda = device.startswith("cuda")
    per_row = 2.0 * sizing.n * sizing.n * sizing.rounds
    block = GPU_BLOCK_ROWS if cuda else max(1, int(CPU_BLOCK_FLOPS / per_row))
    out = []
    with _tf32(torch, cuda), torch.inference_mode():
        b0, b, cols = hwcheck.matrices(bk, seed_b, sizing.n)
        for start in range(0, sizing.rows, block):
            if time.monotonic() > stop_at:
                raise TimeoutError("deadline passed")
            rows = bk.arange(start, min(sizing.rows, start + block))
            out.append(hwcheck.digests(bk, seed_a, sizing.rounds, b0, b, cols, rows))
        digests = torch.cat(out).cpu().numpy()
    return digests


@contextlib.contextmanager
def _tf32(torch, on: bool):
    """TF32 tensor cores for float32 matmuls (exact here: the inputs are small integers)."""
    if not on:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
