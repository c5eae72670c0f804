"""The hardware check a coordinator sends, run on this host as a preview (``gpumesh provider init``):
per device, the class it claims, the TFLOPS measured and the class it would verify as.

The protocol is the daemon's own (``provider_node.hwcheck.CheckRunner`` answers PREPARE, a timed START
and OPEN) and the verdict the coordinator's (``gpumesh.hwclasses``: sizing, deadlines,
``verified_class``), under the default check policy.
"""

from __future__ import annotations

import random
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gpumesh import hwclasses as classes
from provider_node.hardware import HardwareInfo


@dataclass(frozen=True)
class DevicePreview:
    """One device's local run of the coordinator's timed check."""

    device: int  # -1: the CPU
    name: str
    claimed: str  # the class key claimed ("cpu" for the CPU)
    tflops: float = 0.0
    seconds: float = 0.0
    verified: str = ""  # the class key it would verify as ("" = would not verify)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "name": self.name, "claimed": self.claimed, "tflops": round(self.tflops, 4),
                "seconds": round(self.seconds, 3), "verified": self.verified, "note": self.note}


def preview_hardware(hardware: HardwareInfo, *, runner=None, policy=None,
                     rng: random.Random | None = None) -> tuple[DevicePreview, ...]:
    """Run on this host the timed, seeded check a coordinator sends each device (sized for the
    class the device claims, smaller after a missed deadline), through the daemon's own
    ``CheckRunner``, and say what each would verify as under the default check policy."""
    from provider_node.hwcheck import CheckRunner

    runner = runner or CheckRunner(hardware)
    policy = policy or classes.CheckPolicy()
    rng = rng or random.SystemRandom()
    devices = [(-1, f"CPU ({hardware.cpu_model}, {hardware.cpu_count} cores)", classes.CPU)]
    devices += [(g.index, g.name, classes.claimed_class(g.name)) for g in hardware.gpus]
    out = []
    for index, name, cls in devices:
        attempt = classes.first_attempt(cls, policy)
        while True:
            kind, elapsed, note = _check_once(runner, index, attempt, policy, rng)
            if kind == "ok":
                tflops = classes.measured_tflops(attempt.sizing, elapsed)
                got = classes.verified_class(cls, tflops, policy)
                out.append(DevicePreview(index, name, cls.key, tflops, elapsed, got.key if got else "",
                                         "" if got else "below every GPU class"))
                break
            smaller = classes.next_attempt(attempt, policy) if kind == "late" and cls.gpu else None
            if smaller is None:
                out.append(DevicePreview(index, name, cls.key, 0.0, elapsed, "",
                                         note or f"no commitment within {attempt.deadline_s:.1f} s"))
                break
            attempt = smaller
    return tuple(out)


def _check_once(runner, device: int, attempt, policy, rng: random.Random) -> tuple[str, float, str]:
    """PREPARE, a timed START, OPEN, and the coordinator's verification of the opened rows:
    ("ok" | "late" | "bad", seconds to commit, what went wrong)."""
    from gpumesh.hwcheck import verify_opening
    from gpumesh.v1 import provider_pb2

    sz, check_id = attempt.sizing, uuid.uuid4().hex

    def send(phase: int, **kw) -> provider_pb2.HardwareCheckReply:
        return runner.handle(provider_pb2.HardwareCheck(check_id=check_id, phase=phase, device=device, **kw))

    ready = send(provider_pb2.CHECK_PHASE_PREPARE, n=sz.n, rows=sz.rows, rounds=sz.rounds, leaf_rows=sz.leaf_rows)
    if ready.error:
        return "bad", 0.0, f"cannot run the check: {ready.error}"
    seed_a, seed_b = secrets.randbits(32), secrets.randbits(32)
    started = time.monotonic()
    commit = send(provider_pb2.CHECK_PHASE_START, seed_a=seed_a, seed_b=seed_b, deadline_s=attempt.deadline_s)
    elapsed = time.monotonic() - started
    if elapsed > attempt.deadline_s:
        return "late", elapsed, ""
    if commit.error or len(commit.root) != 32:
        return "bad", elapsed, f"no commitment: {commit.error or 'malformed root'}"
    rows = sorted(rng.sample(range(sz.rows), min(policy.opened_rows, sz.rows)))
    opened = send(provider_pb2.CHECK_PHASE_OPEN, open_rows=rows)
    leaves = [(leaf.index, leaf.digests, list(leaf.path)) for leaf in opened.leaves]
    wrong = verify_opening(seed_a, seed_b, sz, commit.root, rows, leaves)
    return ("bad", elapsed, wrong) if wrong else ("ok", elapsed, "")


def node_class(previews: tuple[DevicePreview, ...]) -> str:
    """The market class of this node: its slowest verified GPU's (the market groups providers so),
    ``cpu`` with none verified."""
    gpus = [classes.by_key(p.verified) for p in previews if p.device >= 0 and p.verified]
    gpus = [c for c in gpus if c is not None and c.gpu]
    return min(gpus, key=lambda c: c.tflops).key if gpus else classes.CPU.key
