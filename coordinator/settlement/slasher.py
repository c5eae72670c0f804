"""Slashing invalid results through the ProviderRegistry: queued by the verifier, sent here.

The registry slashes only on evidence: the result commitment the provider signed
(``gpumesh.identity.result_text`` of the task and its output CID, with its signature) and the
digest of the check that found it invalid (``check_record``); one slash per commitment, at most
the registry's per-incident cap, never to the coordinator itself. Each slash goes PENDING -> SENT
-> DONE; after a crash between sending and recording, a SENT slash is looked up among the
registry's ``Slashed`` events (by its incident, keccak of the commitment) instead of being sent twice.
A provider with nothing staked, or a slash without a signed commitment, is recorded as slashed for 0.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Protocol

from coordinator.store.base import Slash, SlashState, Store
from gpumesh.chain.errors import ChainRevert
from gpumesh.errors import GpumeshError
from gpumesh.identity import result_text

log = logging.getLogger(__name__)


class StakeRegistry(Protocol):
    def stake_of(self, address: str) -> int: ...  # active stake
    def max_slash(self, address: str) -> int: ...  # what one incident may take now (the registry's cap)
    def slash(self, address: str, commitment: str, signature: bytes, check_record: bytes, amount: int,
              beneficiary: str) -> str: ...  # tx hash
    def was_slashed(self, address: str, commitment: str) -> tuple[bool, int, str]: ...  # (found, amount, tx)


def commitment_of(slash: Slash) -> str:
    """The text the provider signed when it returned the result found invalid."""
    return result_text(slash.task_id, slash.output_cid)


def check_record(slash: Slash) -> bytes:
    """The bytes32 the registry records for the check that found the result invalid: keccak256 of
    the task, the result and the verdict (the coordinator's log and store hold the check itself)."""
    from eth_utils import keccak

    return keccak(text=f"gpumesh check\ntask: {slash.task_id}\noutput: {slash.output_cid}\nverdict: {slash.reason}")


class Slasher:
    def __init__(self, store: Store, registry: StakeRegistry, *, default_beneficiary: str,
                 clock: Callable[[], float], on_stake: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.registry = registry
        self.default_beneficiary = default_beneficiary  # when the job has no submitter to compensate
        self.clock = clock
        self.on_stake = on_stake  # called (in the event loop) with each provider whose stake was re-read
        self._restaked: set[str] = set()

    def _reread(self, s: Slash) -> None:
        """Store what the provider has left to collect, after a slash (or a slash of nothing)."""
        try:
            self.store.set_provider_stake(s.address, self.registry.stake_of(s.address))
        except GpumeshError as exc:
            log.warning("stake of %s not re-read after a slash: %s", s.provider_id, exc)
            return
        self._restaked.add(s.provider_id)

    def recover(self) -> None:
        for s in self.store.slashes_in_state(SlashState.SENT):
            found, amount, tx = self.registry.was_slashed(s.address, commitment_of(s))
            dst = SlashState.DONE if found else SlashState.PENDING
            self.store.set_slash(s.provider_id, s.task_id, SlashState.SENT, dst, now=self.clock(), tx=tx,
                                 slashed_amount=amount if found else None)

    def _skip(self, s: Slash, why: str) -> None:
        self.store.set_slash(s.provider_id, s.task_id, SlashState.PENDING, SlashState.DONE, now=self.clock(),
                             slashed_amount=0)
        self._reread(s)
        log.warning("provider %s not slashed for %s: %s", s.provider_id, s.task_id, why)

    def slash_once(self) -> int:
        """Send every pending slash; returns how many were done."""
        self.recover()
        done = 0
        for s in self.store.slashes_in_state(SlashState.PENDING):
            amount = min(s.amount, self.registry.max_slash(s.address))
            beneficiary = s.beneficiary or self.default_beneficiary
            why_not = ("no signed result commitment to show the registry" if not s.signature else
                       "no beneficiary (the job has no submitter and no slash_beneficiary is set)" if not beneficiary
                       else "nothing staked" if amount == 0 else "")
            if why_not:
                self._skip(s, why_not)
                done += 1
                continue
            self.store.set_slash(s.provider_id, s.task_id, SlashState.PENDING, SlashState.SENT, now=self.clock())
            done += self._send(s, amount, beneficiary)
        return done

    def _send(self, s: Slash, amount: int, beneficiary: str) -> bool:
        """Send one SENT slash; True when it is done (slashed, or refused for good)."""
        try:
            tx = self.registry.slash(s.address, commitment_of(s), s.signature, check_record(s), amount, beneficiary)
        except ChainRevert as exc:  # the registry refuses this evidence: sending it again cannot help
            self.store.set_slash(s.provider_id, s.task_id, SlashState.SENT, SlashState.DONE, now=self.clock(),
                                 slashed_amount=0)
            log.error("the registry refused the slash of %s for %s: %s", s.provider_id, s.task_id, exc)
            return True
        except GpumeshError as exc:  # left SENT: the next round asks the chain
            log.warning("slash of %s for %s failed (%s); will retry", s.provider_id, s.task_id, exc)
            return False
        self.store.set_slash(s.provider_id, s.task_id, SlashState.SENT, SlashState.DONE, now=self.clock(),
                             tx=tx, slashed_amount=amount)
        self._reread(s)
        log.warning("slashed %s: %d from %s for %s (%s)", s.provider_id, amount, s.address, s.task_id, s.reason)
        return True

    async def run(self, *, tick_s: float = 1.0) -> None:
        while True:
            try:
                await asyncio.to_thread(self.slash_once)
            except Exception:
                log.exception("slashing round failed")
            changed, self._restaked = self._restaked, set()
            for provider_id in changed if self.on_stake is not None else ():
                self.on_stake(provider_id)
            await asyncio.sleep(tick_s)
