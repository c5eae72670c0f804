"""The provider's payment claims: a durable running total of what it is owed per paid job.

The escrow pays a provider for a job at most the largest claim it signed for that job
(``gpumesh.chain.claims``), so each result of a paid job carries the provider's new running total,
signed. The total is what this provider measured itself: its price times each task's wall time
from lease to result (``gpumesh.amounts.cost``, as the coordinator reckons it). Totals are kept in
one JSON file, replaced atomically, so a restart never signs a smaller total (which would cap the
payment below work already done); entries untouched for ``keep_s`` are dropped.

The same totals bound what this provider signs when a settlement batch asks for one invoice of all
its payments there (``sign_invoice``): each line's job must be one it claimed, under the same
escrow, for no more than its total; anything else is refused, and the batch then pays it under its
per-job claims.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

from collections.abc import Sequence

from gpumesh.chain.claims import ClaimDomain, Line


class InvoiceRefused(ValueError):
    """An invoice asks for more than this provider's claims cover (the message names the line)."""


class ClaimLedger:
    def __init__(self, path: Path, private_key: bytes, *, keep_s: float = 90 * 24 * 3600.0) -> None:
        self.path = Path(path)
        self.private_key = private_key
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = self._load()

    def _load(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"claims ledger {self.path} is unreadable ({exc}); move it aside to start afresh "
                               "(totals then restart from 0 for jobs already claimed)") from exc
        return {k: v for k, v in data.items() if isinstance(v, dict) and str(v.get("total", "")).isdigit()}

    def total(self, domain: ClaimDomain, job: bytes) -> int:
        entry = self._entries.get(_entry_key(domain, job))
        return int(entry["total"]) if entry else 0

    def claim(self, domain: ClaimDomain, job: bytes, earned: int) -> tuple[int, bytes]:
        """Add ``earned`` to the job's total, persist it, and sign the new total: (total, signature)."""
        if earned < 0:
            raise ValueError("earned must be >= 0")
        if len(job) != 32:
            raise ValueError("a job key is 32 bytes")
        with self._lock:
            key = _entry_key(domain, job)
            total = self.total(domain, job) + earned
            now = time.time()
            self._entries[key] = {"total": str(total), "updated_at": now}
            self._entries = {k: v for k, v in self._entries.items() if now - float(v.get("updated_at", now)) <= self.keep_s}
            self._save()
        return total, domain.sign(self.private_key, job, total)

    def sign_invoice(self, domain: ClaimDomain, lines: Sequence[Line]) -> bytes:
        """The signature of the invoice of ``lines`` (job key, amount), each within this provider's
        own claim for that job under ``domain``; raises InvoiceRefused naming the first line that is
        not (an unknown job, a job twice, an amount above the claim)."""
        if not lines:
            raise InvoiceRefused("an invoice needs at least one line")
        seen: set[bytes] = set()
        with self._lock:
            for n, (job, amount) in enumerate(lines, start=1):
                job = bytes(job)
                if len(job) != 32:
                    raise InvoiceRefused(f"line {n}: a job key is 32 bytes")
                if job in seen:
                    raise InvoiceRefused(f"line {n}: job 0x{job.hex()} twice")
                seen.add(job)
                total = self.total(domain, job)
                if not 0 < amount <= total:
                    raise InvoiceRefused(f"line {n}: {amount} for job 0x{job.hex()}, whose claim is {total}")
        return domain.sign_invoice(self.private_key, [(bytes(j), int(a)) for j, a in lines])

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".claims-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self._entries, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _entry_key(domain: ClaimDomain, job: bytes) -> str:
    return f"{domain.chain_id}:{domain.escrow.lower()}:{bytes(job).hex()}"
