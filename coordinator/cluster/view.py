"""Which providers every replica holds, through the store's presence table.

Each replica reports its sessions (``report``, on open and every heartbeat interval); the
leader's scheduler sees them all (``candidates``). Free slots of a provider held elsewhere come
from the store's count of its open leases, which the leader itself writes, so they are never
stale by more than the leases in flight; this replica's own sessions use their live state.
"""

from __future__ import annotations

from typing import Callable

from coordinator.models import ProviderRecord
from coordinator.standing import Standing
from coordinator.scheduling.rules import Candidate
from coordinator.sessions import ProviderSession, SessionRegistry, candidate, session_candidate
from coordinator.store.base import Presence, Store

RECORD_TTL_S = 30.0  # how long a remote provider's record (price, hardware, reputation) is reused


class ClusterView:
    def __init__(self, store: Store, sessions: SessionRegistry, replica_id: str, *,
                 standing: Callable[[ProviderRecord], Standing], clock: Callable[[], float], stale_s: float) -> None:
        self.store = store
        self.sessions = sessions
        self.replica_id = replica_id
        self.standing = standing
        self.clock = clock
        self.stale_s = stale_s
        self._records: dict[str, tuple[float, float, ProviderRecord, Standing]] = {}  # pid -> (opened, at, ...)

    def report(self, sessions: list[ProviderSession] | None = None) -> None:
        """Tell the others this replica holds these sessions (all of its own by default)."""
        held = self.sessions.sessions() if sessions is None else sessions
        self.store.put_presence(
            self.replica_id, [Presence(s.record.provider_id, s.opened_at, frozenset(s.models)) for s in held],
            now=self.clock())

    def closed(self, session: ProviderSession) -> None:
        if self.sessions.get(session.record.provider_id) is None:  # not replaced by a newer session here
            self.store.drop_presence(self.replica_id, [session.record.provider_id])

    def live(self, now: float) -> list[Presence]:
        """Every provider some replica reported within ``stale_s``."""
        return self.store.live_presence(since=now - self.stale_s)

    def remote(self) -> dict[str, Presence]:
        """The live providers other replicas hold, by id."""
        return {p.provider_id: p for p in self.live(self.clock()) if p.replica_id != self.replica_id}

    def candidates(self) -> list[Candidate]:
        """Every live provider, as the scheduler sees it."""
        now = self.clock()
        out = []
        live = self.live(now)
        for p in live:
            local = self.sessions.get(p.provider_id)
            if local is not None and p.replica_id == self.replica_id:
                out.append(session_candidate(local, now))
                continue
            record, st = self._record(p, now)
            out.append(candidate(record, free_slots=max(0, record.slots - p.leased), cached_models=p.cached_models,
                                 reliability=st.reliability, trust=st.trust, eligible=st.eligible))
        if len(self._records) > 2 * len(live) + 1024:
            keep = {p.provider_id for p in live}
            self._records = {k: v for k, v in self._records.items() if k in keep}
        return out

    def _record(self, p: Presence, now: float) -> tuple[ProviderRecord, Standing]:
        cached = self._records.get(p.provider_id)
        if cached is None or cached[0] != p.opened_at or now - cached[1] > RECORD_TTL_S:
            record = self.store.get_provider(p.provider_id)
            cached = (p.opened_at, now, record, self.standing(record))
            self._records[p.provider_id] = cached
        return cached[2], cached[3]

    def forget(self, provider_id: str) -> None:
        """Its record changed (a verdict, a slash): read it again next round."""
        self._records.pop(provider_id, None)
