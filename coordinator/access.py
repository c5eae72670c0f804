"""Who may read an artifact through the coordinator, and how much a caller may store.

A CID is readable by whoever uploaded those bytes (they had them), by the submitter of a job for
the job's input, model and outputs, and by a provider while it holds a lease whose task needs it
(its input, its model and adapters, the prompts or checkpoint a check reads). Everyone else, anonymous callers
included, is told the artifact is not found, whether it exists or not, so the answer is no
oracle of what others stored. Uploads count against the uploader's share of the store (each CID
once), except a provider's while it holds a lease (its outputs).
"""

from __future__ import annotations

from typing import Callable, Iterable

from coordinator.store.base import Store
from gpumesh.artifacts import cid_key
from gpumesh.errors import NotFound, ResourceExhausted


class ArtifactAccess:
    def __init__(self, store: Store, *, clock: Callable[[], float], anonymous: bool, models_of: Callable[[str], Iterable[str]],
                 max_stored_bytes: int) -> None:
        self.store = store
        self.clock = clock
        self.anonymous = anonymous  # unsigned calls are served: "" is a principal of its own
        self.models_of = models_of  # job id -> its model's CID and its adapters'
        self.max_stored_bytes = max_stored_bytes

    def _principals(self, caller: str) -> list[str]:
        if not caller:
            return [""] if self.anonymous else []
        return [caller, ""] if self.anonymous else [caller]  # unsigned mode: anonymous uploads are everyone's

    def may_read(self, caller: str, cid: str) -> bool:
        key = cid_key(cid)
        if self.store.artifact_granted(key, self._principals(caller)):
            return True
        provider = self.store.provider_by_address(caller) if caller else None
        if provider is None:
            return False
        for task in self.store.open_leases(provider.provider_id):
            needs = [task.input_cid, task.aux_cid, *self.models_of(task.job_id)]
            if key in {cid_key(c) for c in needs if c}:
                return True
        return False

    def check_read(self, caller: str, cid: str, *, field: str = "cid") -> None:
        """NotFound unless ``caller`` may read ``cid`` (the same answer for a CID nobody stored)."""
        if not self.may_read(caller, cid):
            who = caller or "an anonymous caller"
            raise NotFound(f"no artifact {cid} that {who} may read (upload it with this wallet first)", field=field)

    def grant(self, cids: Iterable[str], principal: str) -> None:
        self.store.grant_artifacts([cid_key(c) for c in cids if c], principal, now=self.clock())

    def upload_allowance(self, caller: str) -> int | None:
        """Bytes ``caller`` may still store (None: no quota, a provider uploading a lease's output)."""
        provider = self.store.provider_by_address(caller) if caller else None
        if provider is not None and self.store.open_leases(provider.provider_id):
            return None
        used = self.store.uploaded_bytes(caller)
        left = self.max_stored_bytes - used
        if left <= 0:
            raise ResourceExhausted(f"{caller or 'anonymous callers'} already store {used} bytes, this coordinator's "
                                    f"limit per submitter ({self.max_stored_bytes})", field="data")
        return left

    def uploaded(self, caller: str, cid: str, size: int) -> None:
        self.store.grant_artifacts([cid_key(cid)], caller, now=self.clock(), size=size, uploaded=True)
