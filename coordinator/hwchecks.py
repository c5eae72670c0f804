"""Timed hardware checks over provider sessions: the protocol (``gpumesh.hwcheck``) run against each
open-market provider when its session opens and at random times after; what a time verifies is
decided by ``gpumesh.hwclasses``.

A check of a provider covers all its claimed devices at once (its CPU and every GPU), so one real
GPU cannot answer for several. While it runs, and while it waits for the provider's running leases
to end, the provider is given no new work (its timing is its own).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from coordinator.config import CoordinatorSettings
from coordinator.models import ProviderTier
from coordinator.sessions import ProviderSession
from coordinator.store.base import Store
from coordinator.verification.hardware import DeviceCheck
from gpumesh.hwcheck import verify_opening
from gpumesh.hwclasses import (
    CPU,
    Attempt,
    CheckPolicy,
    DeviceClass,
    claimed_class,
    first_attempt,
    measured_tflops,
    next_attempt,
    verified_class,
)
from gpumesh.v1 import provider_pb2

log = logging.getLogger(__name__)

PREPARE, START, OPEN = (provider_pb2.CHECK_PHASE_PREPARE, provider_pb2.CHECK_PHASE_START,
                        provider_pb2.CHECK_PHASE_OPEN)
PREPARE_S = 60.0  # to warm a device up (CUDA context, buffers): not timed
OPEN_S = 30.0  # to send the opened leaves: not timed


@dataclass(frozen=True)
class Device:
    index: int  # -1: the CPU
    claimed: str
    cls: DeviceClass


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ok" (committed in time, opened rows right), "late", "bad"
    elapsed_s: float = 0.0
    note: str = ""


class HardwareChecks:
    def __init__(self, settings: CoordinatorSettings, store: Store, *, clock: Callable[[], float],
                 on_checked: Callable[[str], None], rng: random.Random | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.on_checked = on_checked
        self.rng = rng or random.SystemRandom()
        self.policy = CheckPolicy(target_s=settings.hardware_target_s, pass_fraction=settings.hardware_pass_fraction,
                                  slack_s=settings.hardware_slack_s)
        self._waiting: dict[tuple[int, str, int], asyncio.Future] = {}  # (session, check id, phase) -> reply
        self._loops: dict[int, asyncio.Task] = {}  # session number -> its check loop
        self.done = 0  # checks finished (for tests and metrics)

    def applies(self, session: ProviderSession) -> bool:
        return self.settings.hardware_checks and session.record.tier is ProviderTier.OPEN

    def start(self, session: ProviderSession) -> None:
        if self.applies(session):
            self._loops[session.session_no] = asyncio.get_running_loop().create_task(
                self._loop(session), name=f"hwcheck-{session.record.provider_id}")

    def stop(self, session: ProviderSession) -> None:
        task = self._loops.pop(session.session_no, None)
        if task is not None:
            task.cancel()

    def on_reply(self, session: ProviderSession, reply: provider_pb2.HardwareCheckReply) -> None:
        """A provider's answer: only the session a check was sent to can answer it, once."""
        future = self._waiting.get((session.session_no, reply.check_id, reply.phase))
        if future is not None and not future.done():
            future.set_result((reply, time.monotonic()))

    # ---- the loop of one session ---------------------------------------------------------------

    async def _loop(self, session: ProviderSession) -> None:
        patient = False  # the first check runs at once; later ones wait for an idle moment first
        try:
            while True:
                if patient:
                    await asyncio.sleep(self.rng.expovariate(1.0 / self.settings.hardware_recheck_s))
                await self._idle(session, patient=patient)
                try:
                    checks = await self.check(session)
                finally:
                    session.checking = False
                self.store.set_provider_checks(session.record.provider_id, checks)
                self.done += 1
                self._log(session, checks)
                self.on_checked(session.record.provider_id)
                patient = True
        except asyncio.CancelledError:
            session.checking = False
            raise
        except Exception:
            session.checking = False
            log.exception("hardware check of %s failed", session.record.provider_id)

    async def _idle(self, session: ProviderSession, *, patient: bool) -> None:
        """Hold new work and wait for the running leases to end; ``patient``: first wait up to a
        recheck interval for the provider to fall idle by itself."""
        if patient:
            waited = 0.0
            while session.running and waited < self.settings.hardware_recheck_s:
                await asyncio.sleep(1.0)
                waited += 1.0
        session.checking = True
        while session.running:
            await asyncio.sleep(0.2)

    async def check(self, session: ProviderSession) -> tuple[DeviceCheck, ...]:
        """Check every device of a provider: attempts at its claimed classes, smaller work after a
        missed deadline (all devices at once each round)."""
        record = session.record
        devices = {-1: Device(-1, "", CPU)} | {
            k: Device(k, g.name, claimed_class(g.name)) for k, g in enumerate(record.gpus)}
        attempts = {k: first_attempt(d.cls, self.policy) for k, d in devices.items()}
        results: dict[int, DeviceCheck] = {}
        seed_b = secrets.randbits(32)
        while attempts:
            outcomes = await self._round(session, attempts, seed_b)
            retry: dict[int, Attempt] = {}
            for k, attempt in attempts.items():
                dev, out = devices[k], outcomes[k]
                now = self.clock()
                if out.kind == "ok":
                    tflops = measured_tflops(attempt.sizing, out.elapsed_s)
                    cls = verified_class(dev.cls, tflops, self.policy)
                    note = "" if cls else f"measured {tflops:.3g} TFLOPS: below every GPU class"
                    results[k] = DeviceCheck(k, dev.claimed, cls.key if cls else "", tflops, now, note=note)
                elif out.kind == "late" and dev.cls.gpu and (smaller := next_attempt(attempt, self.policy)):
                    retry[k] = smaller
                else:
                    note = out.note or f"no commitment within {attempt.deadline_s:.1f} s"
                    results[k] = DeviceCheck(k, dev.claimed, "", 0.0, now, note=note)
            attempts = retry
        return tuple(results[k] for k in sorted(results))

    async def _round(self, session: ProviderSession, attempts: dict[int, Attempt], seed_b: int) -> dict[int, Outcome]:
        ids = {k: uuid.uuid4().hex for k in attempts}
        out: dict[int, Outcome] = {}
        for k, a in attempts.items():
            session.send(_message(ids[k], PREPARE, k, n=a.sizing.n, rows=a.sizing.rows, rounds=a.sizing.rounds,
                                  leaf_rows=a.sizing.leaf_rows))
        ready = await self._replies(session, ids, PREPARE, dict.fromkeys(attempts, PREPARE_S))
        live = {}
        for k, r in ready.items():
            if r is None or r[0].error:
                out[k] = Outcome("bad", note=f"cannot run the check: {r[0].error}" if r else "did not prepare")
            else:
                live[k] = attempts[k]
        seeds_a = {k: secrets.randbits(32) for k in live}
        started = {}
        for k, a in live.items():  # every device's clock starts together
            started[k] = time.monotonic()
            session.send(_message(ids[k], START, k, seed_a=seeds_a[k], seed_b=seed_b, deadline_s=a.deadline_s))
        commits = await self._replies(session, {k: ids[k] for k in live}, START,
                                      {k: a.deadline_s for k, a in live.items()})
        opened = {}
        for k, r in commits.items():
            if r is None:
                out[k] = Outcome("late")
            elif r[0].error or len(r[0].root) != 32:
                out[k] = Outcome("bad", note=f"no commitment: {r[0].error or 'malformed root'}")
            else:
                sizing = live[k].sizing
                rows = sorted(self.rng.sample(range(sizing.rows), min(self.policy.opened_rows, sizing.rows)))
                opened[k] = (r[0].root, rows, r[1] - started[k])
                session.send(_message(ids[k], OPEN, k, open_rows=rows))
        openings = await self._replies(session, {k: ids[k] for k in opened}, OPEN, dict.fromkeys(opened, OPEN_S))
        for k, r in openings.items():
            root, rows, elapsed = opened[k]
            if r is None:
                out[k] = Outcome("bad", note="did not open its commitment")
                continue
            leaves = [(leaf.index, leaf.digests, list(leaf.path)) for leaf in r[0].leaves]
            wrong = await asyncio.to_thread(verify_opening, seeds_a[k], seed_b, live[k].sizing, root, rows, leaves)
            out[k] = Outcome("bad", note=wrong) if wrong else Outcome("ok", elapsed_s=elapsed)
        return out

    async def _replies(self, session: ProviderSession, ids: dict[int, str], phase: int,
                       timeouts: dict[int, float]) -> dict[int, tuple | None]:
        loop = asyncio.get_running_loop()
        keys = {k: (session.session_no, cid, phase) for k, cid in ids.items()}
        for key in keys.values():
            self._waiting[key] = loop.create_future()

        async def one(k: int):
            try:
                return await asyncio.wait_for(self._waiting[keys[k]], timeouts[k])
            except asyncio.TimeoutError:
                return None

        try:
            got = await asyncio.gather(*(one(k) for k in ids))
        finally:
            for key in keys.values():
                self._waiting.pop(key, None)
        return dict(zip(ids, got))

    def _log(self, session: ProviderSession, checks: tuple[DeviceCheck, ...]) -> None:
        pid = session.record.provider_id
        for c in checks:
            what = c.claimed or "CPU"
            if c.verified:
                log.info("provider %s: %s verified as %s (%.3g TFLOPS measured)", pid, what, c.verified, c.tflops,
                         extra={"provider_id": pid})
            else:
                log.warning("provider %s: %s not verified: %s", pid, what, c.note, extra={"provider_id": pid})


def _message(check_id: str, phase: int, device: int, **fields) -> provider_pb2.CoordinatorMessage:
    return provider_pb2.CoordinatorMessage(check=provider_pb2.HardwareCheck(
        check_id=check_id, phase=phase, device=device, **fields))
