"""Device classes and the sizing of the timed hardware check: the class table, how big a check
is for a claimed class, and what a measured time verifies. Pure (no I/O): the coordinator checks
providers against it (``coordinator.hwchecks``, ``coordinator.verification.hardware``) and a
provider previews its own verdict with it (``provider_node.hwpreview``).

A claimed GPU is checked with work sized to take ``target_s`` at its class's nominal throughput
(dense TF32 tensor TFLOPS, FP32 where a GPU has no TF32: the check runs float32 matmuls). It must
commit within ``target_s / pass_fraction`` plus a network ``slack_s``. One that misses gets work
``shrink`` times smaller, down to the slowest GPU class; the measured TFLOPS of a check that
commits in time names the class it verifies: the fastest one, no faster than the claim, whose
``pass_fraction`` of nominal it reached. CPUs are checked too (the ``cpu`` class, one small check,
a generous deadline: it measures, and a wrong answer makes the provider ineligible).

Classes close in throughput (A100 and L40S) are not told apart: what a verified class guarantees is
throughput, and a provider gains nothing by claiming a class it can match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpumesh.hwcheck import Sizing


@dataclass(frozen=True)
class DeviceClass:
    key: str
    label: str
    tflops: float  # nominal dense TF32 (FP32 without TF32) throughput
    memory_mb: int = 0  # the largest memory of the class (0 = no ceiling)

    @property
    def gpu(self) -> bool:
        return self.key != CPU.key


# Fastest first; matched case-insensitively as substrings of the claimed name, in this order
# ("A100" before "A10", "L40S" before "L4").
GPU_CLASSES: tuple[DeviceClass, ...] = (
    DeviceClass("h200", "NVIDIA H200", 494.7, 144_000),
    DeviceClass("h100", "NVIDIA H100", 494.7, 96_000),
    DeviceClass("l40s", "NVIDIA L40S", 183.2, 49_000),
    DeviceClass("a100", "NVIDIA A100", 156.0, 82_000),
    DeviceClass("4090", "NVIDIA GeForce RTX 4090", 82.6, 25_000),
    DeviceClass("a10", "NVIDIA A10", 62.5, 25_000),
    DeviceClass("l4", "NVIDIA L4", 60.0, 25_000),
    DeviceClass("3090", "NVIDIA GeForce RTX 3090", 35.6, 25_000),
    DeviceClass("v100", "Tesla V100", 15.7, 33_000),
    DeviceClass("p100", "Tesla P100", 9.3, 17_000),
    DeviceClass("t4", "Tesla T4", 8.1, 16_500),
)
_MATCH_ORDER = ("h200", "h100", "a100", "l40s", "4090", "a10", "l4", "3090", "v100", "p100", "t4")
UNKNOWN_GPU = DeviceClass("gpu", "GPU", 8.1)  # a name not in the table: checked as the slowest class
CPU = DeviceClass("cpu", "CPU", 0.05)
SLOWEST_GPU_TFLOPS = min(c.tflops for c in GPU_CLASSES)
_BY_KEY = {c.key: c for c in (*GPU_CLASSES, UNKNOWN_GPU, CPU)}


def claimed_class(name: str) -> DeviceClass:
    low = name.lower()
    key = next((k for k in _MATCH_ORDER if k in low), None)
    return _BY_KEY[key] if key else UNKNOWN_GPU


def by_key(key: str) -> DeviceClass | None:
    return _BY_KEY.get(key)


@dataclass(frozen=True)
class CheckPolicy:
    target_s: float = 0.5  # a GPU check's duration at its class's nominal throughput
    pass_fraction: float = 0.3  # of nominal, measured over the whole check (generation, digests, RTT)
    efficiency: float = 0.6  # the usual fraction of nominal a device reaches on the check (names a lower class)
    slack_s: float = 1.0  # network and scheduling allowance on each deadline
    shrink: float = 16.0  # a missed GPU check is retried with this much less work
    cpu_target_s: float = 0.1
    cpu_deadline_s: float = 30.0
    opened_rows: int = 32  # rows the coordinator recomputes: half the work passes with 2^-32
    gpu_n: int = 4096
    gpu_rounds: int = 8
    cpu_n: int = 512
    cpu_rounds: int = 16


def sizing(tflops: float, seconds: float, *, gpu: bool, policy: CheckPolicy) -> Sizing:
    """Work taking ``seconds`` at ``tflops``."""
    n, rounds = (policy.gpu_n, policy.gpu_rounds) if gpu else (policy.cpu_n, policy.cpu_rounds)
    per_row = 2.0 * n * (64 + n * rounds)
    return Sizing(n=n, rows=max(1, math.ceil(seconds * tflops * 1e12 / per_row)), rounds=rounds)


@dataclass(frozen=True)
class Attempt:
    """One timed check of a device: its work and how long it may take."""

    sizing: Sizing
    deadline_s: float
    rate_tflops: float  # the throughput it was sized for


def first_attempt(cls: DeviceClass, policy: CheckPolicy) -> Attempt:
    if not cls.gpu:
        return Attempt(sizing(cls.tflops, policy.cpu_target_s, gpu=False, policy=policy), policy.cpu_deadline_s,
                       cls.tflops)
    return _gpu_attempt(cls.tflops, policy)


def _gpu_attempt(rate: float, policy: CheckPolicy) -> Attempt:
    return Attempt(sizing(rate, policy.target_s, gpu=True, policy=policy),
                   policy.target_s / policy.pass_fraction + policy.slack_s, rate)


def next_attempt(last: Attempt, policy: CheckPolicy) -> Attempt | None:
    """After a missed GPU deadline: ``shrink`` times less work, down to the rate a device needs to
    verify the slowest GPU class; None after that one."""
    floor = SLOWEST_GPU_TFLOPS * policy.pass_fraction
    if last.rate_tflops <= floor:
        return None
    return _gpu_attempt(max(floor, last.rate_tflops / policy.shrink), policy)


def measured_tflops(sz: Sizing, elapsed_s: float) -> float:
    return sz.flops / max(elapsed_s, 1e-9) / 1e12


def verified_class(claimed: DeviceClass, tflops: float, policy: CheckPolicy) -> DeviceClass | None:
    """The claimed class when ``tflops`` reaches its ``pass_fraction`` of nominal; else, of the
    slower classes whose threshold it reaches, the one it most resembles; None when it reaches no
    GPU class. A CPU claim: the CPU class."""
    if not claimed.gpu:
        return CPU
    if tflops >= policy.pass_fraction * claimed.tflops:
        return claimed
    reached = [c for c in GPU_CLASSES if c.tflops <= claimed.tflops and tflops >= policy.pass_fraction * c.tflops]
    # named by the nominal nearest to what it would be at the usual efficiency (a guess between
    # classes of near throughput: what is verified is the threshold it reached)
    return min(reached, key=lambda c: abs(math.log(c.tflops * policy.efficiency / tflops)), default=None)
