"""Which check, if any, a submitted result gets. Pure; no I/O (randomness is passed in).

Two kinds of check, both run by a provider independent of the one that produced the result:

* **replica**: the whole task is executed again (its prompts shuffled and renamed, so a copied
  result cannot pass) and the outputs are compared exactly. Chosen with the adaptive probability
  of :class:`ReplicationPolicy` (every result of a newcomer, few of a proven provider).
* **audit**: every claimed record (or ``records`` of them, drawn after the result is committed,
  when set) is re-scored teacher-forced in one batched prefill pass (a fraction of generating
  them: ``bench/rescore_cost.py``) together with ``decoys`` planted wrong records (a real prompt
  paired with another record's completion). The claim passes if every record is consistent with
  the model; the auditor is honest only if it also rejects every decoy, so an auditor that
  reports "all fine" without computing is caught. Chosen with probability ``AuditPolicy.rate``
  on results that are not replicated.

Full coverage is the default: a sample of k of n records misses a result with b wrong records
with the chance C(n-b, k)/C(n, k), which for one wrong record in 16 and k = 2 is 7/8. A decoy
needs two records (a prompt and a completion from different records), so a one-record task gets
none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from coordinator.verification.policy import ProviderTrack, ReplicationPolicy

CheckKind = Literal["replica", "audit"]


@dataclass(frozen=True)
class AuditPolicy:
    """Re-scoring of results that are not replicated. ``rate`` 0 turns audits off; ``records`` 0
    (the default) re-scores every record, k > 0 a sample of k."""

    rate: float = 1.0
    records: int = 0
    decoys: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0 or self.records < 0 or self.decoys < 0:
            raise ValueError("need 0 <= rate <= 1, records >= 0 and decoys >= 0")

    def drawn(self, n_records: int) -> int:
        """How many of a result's ``n_records`` an audit re-scores."""
        return n_records if self.records == 0 else min(self.records, n_records)

    def cost(self, n_records: int, rescore_cost: float) -> float:
        """Compute of one audit relative to executing the task (``rescore_cost``: re-scoring the
        task's records relative to generating them, ``bench/rescore_cost.py``)."""
        decoys = self.decoys if n_records >= 2 else 0
        return (self.drawn(n_records) + decoys) / max(1, n_records) * rescore_cost


@dataclass(frozen=True)
class Check:
    kind: CheckKind
    records: tuple[int, ...] = ()  # audit: claimed record positions to re-score, in order
    decoys: tuple[tuple[int, int], ...] = ()  # audit: (prompt position, completion position)
    seed: int = 0  # replica: the permutation and names of its disguised input


@dataclass(frozen=True)
class VerificationPlan:
    replication: ReplicationPolicy = ReplicationPolicy()
    audit: AuditPolicy = AuditPolicy()

    def decide(self, track: ProviderTrack, n_records: int, rng: random.Random) -> Check | None:
        """The check for one result of a provider with ``track``, or None to accept it unchecked."""
        if self.replication.decide(track, rng.random()):
            return Check("replica", seed=rng.getrandbits(63))
        if n_records < 1 or rng.random() >= self.audit.rate:
            return None
        records = tuple(sorted(rng.sample(range(n_records), self.audit.drawn(n_records))))
        decoys = []
        if n_records >= 2:
            for _ in range(self.audit.decoys):
                prompt, completion = rng.sample(range(n_records), 2)
                decoys.append((prompt, completion))
        return Check("audit", records, tuple(decoys))
