"""Slashing invalid results through the ProviderRegistry: queued by the verifier, sent here.

Each slash (one per provider and invalid result) goes PENDING -> SENT -> DONE. Its on-chain
``reason`` is a digest of the provider and task, so after a crash between sending and recording,
a SENT slash is looked up among the registry's ``Slashed`` events instead of being sent twice.
The amount is capped at what the provider still has staked (active plus unbonding); a provider
with nothing staked is recorded as slashed for 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Callable, Protocol

from coordinator.store.base import Slash, SlashState, Store
from gpumesh.errors import GpumeshError

log = logging.getLogger(__name__)


class StakeRegistry(Protocol):
    def stake_of(self, address: str) -> int: ...  # active stake
    def slashable(self, address: str) -> int: ...  # active + unbonding
    def slash(self, address: str, amount: int, beneficiary: str, reason: bytes) -> str: ...  # tx hash
    def was_slashed(self, address: str, reason: bytes) -> tuple[bool, int, str]: ...  # (found, amount, tx)


def slash_reason(slash: Slash) -> bytes:
    """The bytes32 the registry stores: sha256 of the provider and the task, so it is unique."""
    return hashlib.sha256(f"gpumesh-slash:{slash.provider_id}:{slash.task_id}".encode()).digest()


class Slasher:
    def __init__(self, store: Store, registry: StakeRegistry, *, default_beneficiary: str,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.registry = registry
        self.default_beneficiary = default_beneficiary
        self.clock = clock

    def recover(self) -> None:
        for s in self.store.slashes_in_state(SlashState.SENT):
            found, amount, tx = self.registry.was_slashed(s.address, slash_reason(s))
            dst = SlashState.DONE if found else SlashState.PENDING
            self.store.set_slash(s.provider_id, s.task_id, SlashState.SENT, dst, now=self.clock(), tx=tx,
                                 slashed_amount=amount if found else None)

    def slash_once(self) -> int:
        """Send every pending slash; returns how many were done."""
        self.recover()
        done = 0
        for s in self.store.slashes_in_state(SlashState.PENDING):
            amount = min(s.amount, self.registry.slashable(s.address))
            if amount == 0:
                self.store.set_slash(s.provider_id, s.task_id, SlashState.PENDING, SlashState.DONE,
                                     now=self.clock(), slashed_amount=0)
                log.warning("provider %s has no stake to slash for %s", s.provider_id, s.task_id)
                done += 1
                continue
            self.store.set_slash(s.provider_id, s.task_id, SlashState.PENDING, SlashState.SENT, now=self.clock())
            try:
                tx = self.registry.slash(s.address, amount, s.beneficiary or self.default_beneficiary, slash_reason(s))
            except GpumeshError as exc:  # left SENT: the next round asks the chain
                log.warning("slash of %s for %s failed (%s); will retry", s.provider_id, s.task_id, exc)
                continue
            self.store.set_slash(s.provider_id, s.task_id, SlashState.SENT, SlashState.DONE, now=self.clock(),
                                 tx=tx, slashed_amount=amount)
            log.warning("slashed %s: %d from %s for %s (%s)", s.provider_id, amount, s.address, s.task_id, s.reason)
            done += 1
        return done

    async def run(self, *, tick_s: float = 1.0) -> None:
        while True:
            try:
                await asyncio.to_thread(self.slash_once)
            except Exception:
                log.exception("slashing round failed")
            await asyncio.sleep(tick_s)
