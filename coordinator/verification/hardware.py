"""What is known of a provider's devices: the record of each device's hardware check (or trust),
and what it means for scheduling. The class table and the check's sizing are
:mod:`gpumesh.hwclasses`; ``coordinator.hwchecks`` runs the checks over provider sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpumesh.hwclasses import CPU, DeviceClass, by_key, claimed_class


@dataclass(frozen=True)
class DeviceCheck:
    """What is known of one device: claimed, and verified by a timed check (or trusted)."""

    device: int  # -1: the CPU; else the position of the GPU in the provider's claim
    claimed: str  # the claimed name ("" for the CPU)
    verified: str = ""  # class key ("" = not verified: too slow, failed or unanswered)
    tflops: float = 0.0  # measured
    checked_at: float = 0.0
    source: str = "check"  # "check" (timed) or "trusted" (centralized capacity, or checks off)
    note: str = ""  # why it is not verified

    @property
    def verified_class(self) -> DeviceClass | None:
        return by_key(self.verified) if self.verified else None

    def as_dict(self) -> dict:
        return {"device": self.device, "claimed": self.claimed, "verified": self.verified,
                "tflops": round(self.tflops, 3), "checked_at": self.checked_at, "source": self.source,
                "note": self.note}

    @classmethod
    def from_dict(cls, d: dict) -> DeviceCheck:
        return cls(int(d["device"]), str(d.get("claimed", "")), str(d.get("verified", "")),
                   float(d.get("tflops", 0.0)), float(d.get("checked_at", 0.0)), str(d.get("source", "check")),
                   str(d.get("note", "")))


def trusted(gpu_names: Sequence[str], now: float) -> tuple[DeviceCheck, ...]:
    """Claims taken as they are (the operator's own capacity, or checks turned off)."""
    return (DeviceCheck(-1, "", CPU.key, 0.0, now, "trusted"),
            *(DeviceCheck(k, name, claimed_class(name).key, 0.0, now, "trusted") for k, name in enumerate(gpu_names)))


def cpu_ok(checks: Sequence[DeviceCheck] | None) -> bool:
    """Whether the provider answered its CPU check correctly (no work before it does)."""
    return checks is not None and any(c.device < 0 and c.verified == CPU.key for c in checks)


def verified_name(claimed_name: str, check: DeviceCheck | None) -> str | None:
    """The GPU's name for scheduling: its claim when verified as claimed, the verified class's label
    when verified lower, None when not verified."""
    cls = check.verified_class if check is not None and check.claimed == claimed_name else None
    if cls is None or not cls.gpu:
        return None
    if cls.key == claimed_class(claimed_name).key:
        return claimed_name
    return f"{cls.label} (verified below its claim)"  # never the claimed name: gpu_models match substrings
