"""The daemon's view of its wallet's earnings, refreshed in the background for its metrics: paid,
pending and slashed as the coordinator reports them (SDK ``Client.earnings``), and its stake, the
escrow's withdrawable balance and its token balance read from the chain when the coordinator
settles. A failed refresh is logged at debug and keeps the last figures; it never touches tasks."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

EARNINGS_INTERVAL_S = 60.0
RETRY_S = 5.0  # after a failed refresh (e.g. the coordinator is not up yet), at most the interval


@dataclass(frozen=True)
class EarningsSnapshot:
    paid: int
    pending: int
    slashed: int
    updated_at: float  # Unix time of the refresh
    stake: int | None = None  # active stake in the ProviderRegistry (None: the coordinator does not settle)
    unbonding: int | None = None
    escrow_balance: int | None = None  # withdrawable from the escrow
    wallet_balance: int | None = None  # payment tokens in the wallet


class EarningsWatcher:
    """``client()`` gives the SDK client to ask (made once, on the daemon's coordinator channel);
    the wallet is named by ``address``, so the call is a public read that needs no signature."""

    def __init__(self, address: str, client: Callable[[], object], *, interval_s: float = EARNINGS_INTERVAL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.address = address
        self._make_client = client
        self._client = None
        self._chain = None
        self.interval_s = interval_s
        self.clock = clock
        self.latest: EarningsSnapshot | None = None

    def refresh(self) -> EarningsSnapshot:
        """One blocking read of the coordinator (and the chain, where it settles)."""
        if self._client is None:
            self._client = self._make_client()
        e = self._client.earnings(self.address)
        snap = EarningsSnapshot(int(e.paid or 0), int(e.pending or 0), int(e.slashed or 0), self.clock())
        if self._chain is None:
            self._chain = self._client.chain() or False  # False: it does not settle (asked once)
        if self._chain:
            try:
                stake = self._chain.stake_of(self.address)
                snap = EarningsSnapshot(snap.paid, snap.pending, snap.slashed, snap.updated_at, stake.active,
                                        stake.unbonding, self._chain.escrow_balance(self.address),
                                        self._chain.token_balance(self.address))
            except Exception:
                self._chain = None  # connect again next time
                raise
        self.latest = snap
        return snap

    async def run(self) -> None:
        while True:
            wait = self.interval_s
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:  # never let a figure for display affect the node
                log.debug("earnings refresh failed: %s", exc)
                wait = min(RETRY_S, self.interval_s)
            await asyncio.sleep(wait)
