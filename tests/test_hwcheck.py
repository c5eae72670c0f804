"""Hardware truth: the check's arithmetic is the same on the provider's device and the coordinator,
its commitment binds, a verdict follows the measured time, and only verified GPUs are scheduled."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import numpy as np
import pytest

from coordinator.config import CoordinatorSettings
from coordinator.hwchecks import HardwareChecks
from coordinator.models import GpuSpec, ProviderRecord, ProviderTier
from coordinator.standing import standing
from coordinator.sessions import ProviderSession, candidate
from coordinator.verification import hardware as hw
from coordinator.verification.hardware import DeviceCheck
from gpumesh import hwcheck
from gpumesh import hwclasses as classes
from gpumesh.hwclasses import CheckPolicy, claimed_class
from provider_node.hardware import GpuInfo, HardwareInfo
from provider_node.hwcheck import CheckRunner, solve

SMALL = hwcheck.Sizing(n=64, rows=300, rounds=3, leaf_rows=16)


# ---- arithmetic and commitment ----------------------------------------------------------------------


def test_the_device_and_the_coordinator_compute_the_same_digests():
    on_device = solve("cpu", SMALL, seed_a=11, seed_b=22)  # torch, as the provider runs it
    assert on_device.shape == (SMALL.rows,) and on_device.max() < 2**32
    assert hwcheck.reference(11, 22, SMALL, [0, 7, 299]) == [int(on_device[k]) for k in (0, 7, 299)]
    assert len(set(on_device.tolist())) > SMALL.rows * 0.99  # rows differ: none can be copied
    other = solve("cpu", SMALL, seed_a=12, seed_b=22)
    assert (other != on_device).mean() > 0.99  # a new seed is new work


def test_every_product_is_exact_in_float32():
    b0, b, cols = hwcheck.matrices(hwcheck.NUMPY, 5, 4096)
    x = np.full((1, 4096), 2.0, dtype=np.float32)  # the largest magnitudes a row can have
    assert np.abs(x @ np.abs(b)).max() < 2**24


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 9])
def test_merkle_paths_verify_and_nothing_else_does(count):
    leaves = [hwcheck.leaf_hash(bytes([k])) for k in range(count)]
    levels = hwcheck.merkle_levels(leaves)
    root = levels[-1][0]
    for k in range(count):
        path = hwcheck.merkle_path(levels, k)
        assert hwcheck.merkle_verify(root, leaves[k], k, count, path)
        assert not hwcheck.merkle_verify(root, hwcheck.leaf_hash(b"forged"), k, count, path)
        if count > 1:
            assert not hwcheck.merkle_verify(root, leaves[k], (k + 1) % count, count, path)
    assert not hwcheck.merkle_verify(root, leaves[0], count, count, [])


def _opening(digests, rows, leaf_rows):
    root, levels = hwcheck.commit(digests, leaf_rows)
    leaves = sorted({r // leaf_rows for r in rows})
    return root, [(k, hwcheck.leaf_bytes(digests, k, leaf_rows), hwcheck.merkle_path(levels, k)) for k in leaves]


def test_an_honest_opening_passes_and_half_the_work_does_not():
    digests = solve("cpu", SMALL, seed_a=1, seed_b=2)
    rows = sorted(random.Random(0).sample(range(SMALL.rows), 32))
    root, leaves = _opening(digests, rows, SMALL.leaf_rows)
    assert hwcheck.verify_opening(1, 2, SMALL, root, rows, leaves) == ""
    lazy = digests.copy()
    lazy[SMALL.rows // 2:] = 0  # computed half the rows
    root, leaves = _opening(lazy, rows, SMALL.leaf_rows)
    assert "wrong result" in hwcheck.verify_opening(1, 2, SMALL, root, rows, leaves)
    # leaves that do not belong to the commitment, or are missing
    root, leaves = _opening(digests, rows, SMALL.leaf_rows)
    forged = [(k, bytes(len(d)), p) for k, d, p in leaves]
    assert "not in the committed tree" in hwcheck.verify_opening(1, 2, SMALL, root, rows, forged)
    assert "not opened" in hwcheck.verify_opening(1, 2, SMALL, root, rows, leaves[1:])


# ---- what a time verifies ---------------------------------------------------------------------------


def test_claimed_names_map_to_classes():
    assert claimed_class("NVIDIA H100 80GB HBM3").key == "h100"
    assert claimed_class("NVIDIA A100-SXM4-80GB").key == "a100"
    assert claimed_class("NVIDIA A10").key == "a10"
    assert claimed_class("NVIDIA L40S").key == "l40s"
    assert claimed_class("NVIDIA L4").key == "l4"
    assert claimed_class("Radeon something").key == "gpu"


def test_a_verdict_follows_the_measured_throughput_never_above_the_claim():
    p = CheckPolicy()
    h100 = claimed_class("H100")
    assert classes.verified_class(h100, 0.3 * 494.7, p).key == "h100"
    assert classes.verified_class(h100, 100.0, p).key == "a100"  # an A100-class device claiming an H100
    assert classes.verified_class(claimed_class("T4"), 500.0, p).key == "t4"  # never above the claim
    assert classes.verified_class(h100, 0.1, p) is None  # a CPU: no GPU class
    assert classes.verified_class(classes.CPU, 0.001, p) is classes.CPU


def test_a_missed_deadline_retries_smaller_work_down_to_the_slowest_class():
    p = CheckPolicy()
    a = classes.first_attempt(claimed_class("H100"), p)
    assert abs(classes.measured_tflops(a.sizing, p.target_s) - 494.7) / 494.7 < 0.01  # sized to the claim
    assert a.deadline_s == pytest.approx(p.target_s / p.pass_fraction + p.slack_s)
    rates = [a.rate_tflops]
    while (a := classes.next_attempt(a, p)) is not None:
        rates.append(a.rate_tflops)
    assert rates[0] > rates[1] > rates[-1] == pytest.approx(classes.SLOWEST_GPU_TFLOPS * p.pass_fraction)
    assert len(rates) == 3


def _record(gpus=("NVIDIA H100 80GB HBM3",), checks=None, tier=ProviderTier.OPEN) -> ProviderRecord:
    return ProviderRecord("p", "0x" + "1" * 40, "p", "{}", tuple(GpuSpec(g, 81_559) for g in gpus), 8, 64_000, 10,
                          tier, 1, "process", True, hardware_checks=checks)


def test_only_verified_gpus_are_scheduled_and_nothing_before_the_cpu_check():
    cand = lambda r: candidate(r, free_slots=1, cached_models=frozenset(), reliability=1.0, trust=1.0,  # noqa: E731
                               eligible=standing(r, now=0, half_life_s=1e9, max_invalid_rate=0.1).eligible)
    unchecked = _record()
    assert cand(unchecked).gpus == () and not cand(unchecked).eligible
    cpu = DeviceCheck(-1, "", "cpu", 0.2)
    fake = _record(checks=(cpu, DeviceCheck(0, "NVIDIA H100 80GB HBM3", "", note="too slow")))
    assert cand(fake).gpus == () and cand(fake).eligible  # a CPU provider, as it is
    slower = _record(checks=(cpu, DeviceCheck(0, "NVIDIA H100 80GB HBM3", "a100", 120.0)))
    (gpu,) = cand(slower).gpus
    assert "A100" in gpu.name and "H100" not in gpu.name and gpu.memory_total_mb == 81_559
    honest = _record(checks=(cpu, DeviceCheck(0, "NVIDIA H100 80GB HBM3", "h100", 400.0)))
    assert cand(honest).gpus == (GpuSpec("NVIDIA H100 80GB HBM3", 81_559),)
    assert cand(honest).speed > cand(slower).speed > cand(fake).speed
    # a check of another claim does not carry over to a new one
    swapped = replace(honest, gpus=(GpuSpec("NVIDIA H200", 141_000),))
    assert cand(swapped).gpus == ()
    wrong_cpu = _record(checks=(DeviceCheck(-1, "", "", note="row 3: wrong result"),))
    assert not cand(wrong_cpu).eligible
    central = _record(tier=ProviderTier.CENTRALIZED, checks=hw.trusted(["NVIDIA H100 80GB HBM3"], 0))
    assert cand(central).gpus and cand(central).eligible


# ---- the coordinator's driver against a provider's runner ----------------------------------------------


class _Store:
    def __init__(self):
        self.checks = {}

    def set_provider_checks(self, pid, checks):
        self.checks[pid] = checks


async def _run_check(record: ProviderRecord, runner: CheckRunner, settings: CoordinatorSettings | None = None,
                     tamper=None):
    settings = settings or CoordinatorSettings(hardware_target_s=0.05, hardware_slack_s=0.3)
    checks = HardwareChecks(settings, _Store(), clock=lambda: 1.0, on_checked=lambda pid: None,
                            rng=random.Random(3))
    session = ProviderSession(1, record)
    sent = []
    loop = asyncio.get_running_loop()

    async def pump():
        while True:
            msg = await session.outbox.get()
            sent.append(msg.check)

            async def answer(c=msg.check):
                reply = await asyncio.to_thread(runner.handle, c)
                if tamper is not None:
                    tamper(reply)
                loop.call_soon(checks.on_reply, session, reply)

            asyncio.ensure_future(answer())

    pumping = asyncio.ensure_future(pump())
    try:
        return await checks.check(session), sent
    finally:
        pumping.cancel()


def _hardware(gpus: int) -> HardwareInfo:
    return HardwareInfo(gpus=tuple(GpuInfo(k, f"GPU-{k}", "NVIDIA H100 80GB HBM3", 81_559, "9.0", "", "")
                                   for k in range(gpus)), cpu_count=2, memory_total_mb=8000, cpu_model="", platform="")


def test_a_cpu_host_claiming_an_h100_is_verified_as_its_cpu():
    result, sent = asyncio.run(_run_check(_record(), CheckRunner(_hardware(1))))
    cpu, gpu = result
    assert cpu.verified == "cpu" and cpu.tflops > 0
    assert gpu.verified == "" and "CUDA" in gpu.note  # it cannot even start the GPU's check


class _OnCpu(CheckRunner):
    """A cheater that computes its claimed GPUs' checks honestly on its CPU."""

    def _device(self, index):
        return "cpu"


def test_checks_of_emulated_gpus_miss_their_deadlines_and_start_together():
    record = _record(gpus=("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"))
    result, sent = asyncio.run(_run_check(record, _OnCpu(_hardware(2))))
    assert [c.verified for c in result] == ["cpu", "", ""]
    assert all("no commitment within" in c.note or "below every GPU class" in c.note for c in result[1:])
    # each round: every device prepared, then every device started, before anything is opened
    phases = [(m.phase, m.device) for m in sent]
    first_start = phases.index(next(p for p in phases if p[0] == 2))
    assert {d for ph, d in phases[:first_start] if ph == 1} == {-1, 0, 1}
    assert [p for p in phases[first_start:first_start + 3]] == [(2, -1), (2, 0), (2, 1)]
    sizes = sorted({m.rows for m in sent if m.phase == 1 and m.device == 0}, reverse=True)
    assert len(sizes) == 3  # the claim's size, then smaller twice


def test_a_commitment_to_wrong_results_fails_the_check():
    def garble(reply):
        for leaf in reply.leaves:
            leaf.digests = bytes(len(leaf.digests))

    result, _ = asyncio.run(_run_check(_record(gpus=()), CheckRunner(_hardware(0)), tamper=garble))
    (cpu,) = result
    assert cpu.verified == "" and ("wrong result" in cpu.note or "committed tree" in cpu.note)
