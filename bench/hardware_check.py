"""What a timed hardware check costs, and how far it is from the device's plain matmul speed.

Runs the real protocol in one process: the coordinator's driver (``coordinator.hwchecks``) against
the provider's runner (``provider_node.hwcheck``), for the CPU class at the default sizing and, on
a host with CUDA, for each GPU (claimed as what NVML calls it). For each device it prints:

* the check's wall time, prepare to verdict, as the provider spends it (no work meanwhile);
* the TFLOPS the check measured, and the TFLOPS of a plain float32 matmul of the same shape on the
  same device (their ratio is the check's efficiency: what generation, digests, hashing and the
  round trips cost);
* the coordinator's cost of verifying one GPU-class opening (32 rows at n=4096), measured here;
* the share of an honest provider's time the checks take at the default recheck interval (one
  check per ``hardware_recheck_s`` on average) and the shortest interval that stays within 2%.

    python bench/hardware_check.py
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coordinator.config import CoordinatorSettings  # noqa: E402
from coordinator.hwchecks import HardwareChecks  # noqa: E402
from coordinator.models import GpuSpec, ProviderRecord, ProviderTier  # noqa: E402
from coordinator.sessions import ProviderSession  # noqa: E402
from gpumesh import hwcheck  # noqa: E402
from gpumesh.hwclasses import CheckPolicy, claimed_class, first_attempt  # noqa: E402
from provider_node.hardware import discover  # noqa: E402
from provider_node.hwcheck import CheckRunner  # noqa: E402


class _Store:
    def set_provider_checks(self, pid, checks):
        pass


async def run_check(hardware, settings: CoordinatorSettings):
    record = ProviderRecord("bench", "0x" + "1" * 40, "bench", "{}",
                            tuple(GpuSpec(g.name, g.memory_total_mb) for g in hardware.gpus), hardware.cpu_count,
                            hardware.memory_total_mb, 0, ProviderTier.OPEN, 1, "process", True)
    checks = HardwareChecks(settings, _Store(), clock=time.time, on_checked=lambda pid: None, rng=random.Random(1))
    runner = CheckRunner(hardware)
    session = ProviderSession(1, record)
    loop = asyncio.get_running_loop()

    async def pump():
        while True:
            msg = (await session.outbox.get()).check

            async def answer(m=msg):
                reply = await asyncio.to_thread(runner.handle, m)
                loop.call_soon(checks.on_reply, session, reply)

            asyncio.ensure_future(answer())

    pumping = asyncio.ensure_future(pump())
    started = time.perf_counter()
    try:
        result = await checks.check(session)
    finally:
        pumping.cancel()
    return result, time.perf_counter() - started


def plain_matmul_tflops(device: str, n: int, rows: int, repeats: int = 3) -> float:
    import torch

    a = torch.randint(-2, 3, (rows, n), device=device).float()
    b = torch.randint(-2, 3, (n, n), device=device).float()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    (a @ b).sum().item()
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        (a @ b).sum().item()
        sync()
        best = min(best, time.perf_counter() - t)
    return 2.0 * rows * n * n / best / 1e12


def main() -> None:
    settings = CoordinatorSettings()
    policy = CheckPolicy(target_s=settings.hardware_target_s, pass_fraction=settings.hardware_pass_fraction,
                         slack_s=settings.hardware_slack_s)
    hardware = discover()
    print(f"host: {hardware.cpu_model or 'unknown CPU'}, {hardware.cpu_count} CPUs; "
          f"GPUs: {', '.join(g.name for g in hardware.gpus) or 'none'}")
    result, wall = asyncio.run(run_check(hardware, settings))
    for check in result:
        cls = claimed_class(check.claimed) if check.device >= 0 else None
        attempt = first_attempt(cls, policy) if cls else None
        what = check.claimed or "CPU"
        print(f"{what}: verified {check.verified or 'no'} at {check.tflops:.4g} TFLOPS {check.note}")
        if check.device < 0:
            sz = hwcheck.Sizing(policy.cpu_n, 1024, policy.cpu_rounds)
            plain = plain_matmul_tflops("cpu", sz.n, sz.rows)
            print(f"  plain float32 matmul ({sz.rows}x{sz.n} @ {sz.n}x{sz.n}) on this CPU: {plain:.4g} TFLOPS; "
                  f"check efficiency {check.tflops / plain:.2f}")
        elif attempt is not None:
            plain = plain_matmul_tflops(f"cuda:{check.device}", policy.gpu_n, 8192)
            print(f"  sized {attempt.sizing.flops / 1e12:.3g} TFLOP, deadline {attempt.deadline_s:.2f} s; plain "
                  f"float32 (TF32) matmul {plain:.4g} TFLOPS; check efficiency {check.tflops / plain:.2f}")
    t = time.perf_counter()
    hwcheck.reference(1, 2, hwcheck.Sizing(policy.gpu_n, 1 << 20, policy.gpu_rounds), range(0, 1 << 20, 1 << 15))
    verify = time.perf_counter() - t
    print(f"coordinator: verifying one GPU-class opening ({policy.opened_rows} rows, n={policy.gpu_n}, "
          f"{policy.gpu_rounds} rounds) takes {verify:.2f} s here")
    share = wall / settings.hardware_recheck_s
    print(f"one check of every device of this host: {wall:.2f} s wall (prepare to verdict)")
    print(f"honest provider's time in checks at one per {settings.hardware_recheck_s:.0f} s on average: "
          f"{100 * share:.4f}% (target <= 2%: {'met' if share <= 0.02 else 'NOT met'}); "
          f"2% holds down to one check per {wall / 0.02:.0f} s")
    if not hardware.gpus:
        gpu_wall = policy.target_s / 0.6 + 2 * policy.slack_s  # at the usual efficiency, and its round trips
        print(f"no GPU here: a GPU check is sized for {policy.target_s} s at nominal; at 60% efficiency and two "
              f"round trips it takes about {gpu_wall:.1f} s, {100 * gpu_wall / settings.hardware_recheck_s:.3f}% "
              "of its time (estimate, not measured)")


if __name__ == "__main__":
    main()
