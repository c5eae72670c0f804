"""Bookkeeping for on-demand centralized capacity: what to launch, what is in flight, what failed.

Pure but for ``run_launch``/``run_terminate`` (which call the blocking provisioner in a thread):
an injected clock, no sockets. The scheduler says which tasks need centralized capacity;
``request`` turns that into CapacityRequests (grouped by requirements, deduplicated against
clusters launching or up, held back after a failure for ``cooldown_s``, at most
``max_clusters`` live), ``launched``/``failed``/``terminated`` record outcomes, and
``status_line`` tells GetJob why a job waits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from coordinator.fallback.base import (
    CapacityRequest,
    FallbackUnavailable,
    Launch,
    LaunchState,
    Provisioner,
    describe,
)
from gpumesh.errors import GpumeshError
from gpumesh.jobspec import Requirements

log = logging.getLogger(__name__)

Need = tuple[str, Requirements, str]  # (task_id, requirements, reason)


@dataclass(frozen=True)
class Failure:
    at: float
    error: str
    retryable: bool


class FallbackManager:
    """Decides which clusters to launch and remembers how each launch went."""

    def __init__(self, provisioner: Provisioner, *, clock: Callable[[], float] = time.time, max_clusters: int = 4,
                 cooldown_s: float = 300.0, tasks_per_cluster: int = 8, release_after_s: float = 600.0) -> None:
        if max_clusters < 0 or tasks_per_cluster < 1 or cooldown_s < 0 or release_after_s < 0:
            raise ValueError("max_clusters >= 0, tasks_per_cluster >= 1, cooldown_s and release_after_s >= 0")
        self.provisioner = provisioner
        self.clock = clock
        self.max_clusters = max_clusters
        self.cooldown_s = cooldown_s
        self.tasks_per_cluster = tasks_per_cluster
        self.release_after_s = release_after_s
        self.launches: dict[str, Launch] = {}  # by request id: launching, up, and the ended ones
        self._failures: dict[Requirements, Failure] = {}  # the last failure per requirements
        self._last_need: dict[Requirements, float] = {}
        self._capped: set[Requirements] = set()  # left out last round by max_clusters

    # ---- queries ---------------------------------------------------------------------------

    def live(self, requirements: Requirements | None = None) -> list[Launch]:
        """Launches launching or up (for ``requirements``, or all)."""
        return [lc for lc in self.launches.values() if not lc.state.is_terminal()
                and (requirements is None or lc.requirements == requirements)]

    def trusted_addresses(self) -> frozenset[str]:
        """Wallets of live launched nodes: the coordinator may accept them as ``tier=centralized``."""
        return frozenset(lc.address.lower() for lc in self.live() if lc.address)

    def cooling(self, requirements: Requirements) -> Failure | None:
        """The last failure for ``requirements`` while it still holds new launches back."""
        failure = self._failures.get(requirements)
        if failure is None or self.clock() - failure.at >= self.cooldown_s:
            return None
        return failure

    # ---- deciding --------------------------------------------------------------------------

    def request(self, needs: Sequence[Need]) -> list[CapacityRequest]:
        """CapacityRequests to launch now for ``needs``; each is recorded as LAUNCHING.

        Per distinct requirements: ceil(tasks / tasks_per_cluster) clusters are wanted, minus
        those already launching or up; none while a recent failure cools down; at most
        ``max_clusters`` live in all (the groups with most waiting tasks first).
        """
        now = self.clock()
        groups: dict[Requirements, list[tuple[str, str]]] = {}
        for task_id, req, reason in needs:
            if all(task_id != t for t, _ in groups.get(req, ())):
                groups.setdefault(req, []).append((task_id, reason))
        for req in groups:
            self._last_need[req] = now
        room = self.max_clusters - len(self.live())
        out: list[CapacityRequest] = []
        self._capped = set()
        for req, tasks in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            if self.cooling(req) is not None:
                continue
            wanted = math.ceil(len(tasks) / self.tasks_per_cluster) - len(self.live(req))
            for i in range(max(0, wanted)):
                if room <= 0:
                    self._capped.add(req)
                    break
                share = tasks[i * self.tasks_per_cluster:(i + 1) * self.tasks_per_cluster]
                request = CapacityRequest(requirements=req, count=len(share), reason=share[0][1],
                                          task_ids=tuple(t for t, _ in share))
                self.launches[request.request_id] = Launch(
                    id=request.request_id, cluster_name=self._cluster_name(request), requirements=req,
                    state=LaunchState.LAUNCHING, accelerators=self._accelerators(req),
                    created_at=now, updated_at=now, provisioner=self.provisioner.name)
                out.append(request)
                room -= 1
        return out

    def idle(self) -> list[Launch]:
        """Up launches whose requirements no task has needed for ``release_after_s``: tear them down."""
        now = self.clock()
        return [lc for lc in self.live() if lc.state is LaunchState.UP
                and now - self._last_need.get(lc.requirements, lc.created_at) >= self.release_after_s]

    # ---- outcomes --------------------------------------------------------------------------

    def launched(self, launch: Launch) -> Launch:
        """Record a provisioner's successful Launch (its id is the request id)."""
        old = self.launches.get(launch.id)
        if old is not None:
            old.moved(launch.state, at=self.clock())  # the transition must be legal
        self.launches[launch.id] = launch
        self._failures.pop(launch.requirements, None)
        return launch

    def failed(self, request: CapacityRequest, error: BaseException | str) -> Launch:
        """Record that launching ``request`` failed; its requirements cool down."""
        now = self.clock()
        message = str(error)
        retryable = getattr(error, "retryable", True) if isinstance(error, BaseException) else True
        old = self.launches.get(request.request_id) or Launch(
            id=request.request_id, cluster_name=self._cluster_name(request), requirements=request.requirements,
            state=LaunchState.LAUNCHING, created_at=now, provisioner=self.provisioner.name)
        self._failures[request.requirements] = Failure(now, message, retryable)
        if old.state.is_terminal():  # terminated while it was launching: keep that
            return old
        self.launches[request.request_id] = launch = old.moved(LaunchState.FAILED, at=now, error=message,
                                                               retryable=retryable)
        return launch

    def terminated(self, launch_id: str) -> Launch | None:
        launch = self.launches.get(launch_id)
        if launch is None or launch.state.is_terminal():
            return launch
        self.launches[launch_id] = launch = launch.moved(LaunchState.TERMINATED, at=self.clock())
        return launch

    def forget(self, older_than_s: float) -> None:
        """Drop ended launches last updated more than ``older_than_s`` ago (bounded memory)."""
        cutoff = self.clock() - older_than_s
        for key in [k for k, lc in self.launches.items() if lc.state.is_terminal() and lc.updated_at < cutoff]:
            del self.launches[key]

    # ---- status ----------------------------------------------------------------------------

    def status_line(self, requirements: Requirements) -> str:
        """Why a task with ``requirements`` waits, for GetJob."""
        head = "routed to centralized capacity"
        via = f"via {self.provisioner.name}"
        live = self.live(requirements)
        up = [lc for lc in live if lc.state is LaunchState.UP]
        if up:
            names = ", ".join(f"{lc.cluster_name} ({lc.accelerators})" for lc in up)
            return f"{head}: cluster {names} up {via}, waiting for its provider to take the task"
        if live:
            first = live[0]
            return f"{head}: launching cluster {first.cluster_name} ({first.accelerators or describe(requirements)}) {via}"
        failure = self.cooling(requirements)
        if failure is not None:
            if not failure.retryable:
                return f"{head}; launcher unavailable: {failure.error}"
            wait = max(0, math.ceil(failure.at + self.cooldown_s - self.clock()))
            return f"{head}; last launch failed: {failure.error} (retrying in {wait} s)"
        if requirements in self._capped:
            return f"{head}; waiting: {self.max_clusters} centralized cluster(s) already running (max_clusters)"
        return f"{head}; waiting for a centralized provider"

    def _accelerators(self, requirements: Requirements) -> str:
        summary = getattr(self.provisioner, "accelerators_for", None)  # "H100:1", "any of L4:1, ..."
        try:
            return summary(requirements) if callable(summary) else ""
        except GpumeshError:
            return ""

    def _cluster_name(self, request: CapacityRequest) -> str:
        namer = getattr(self.provisioner, "cluster_name", None)  # SkyPilotProvisioner names clusters
        return namer(request) if callable(namer) else request.request_id

    # ---- the I/O step ----------------------------------------------------------------------

    async def run_launch(self, request: CapacityRequest) -> Launch:
        """Launch ``request`` in a thread (the event loop never blocks) and record the outcome."""
        try:
            launch = await asyncio.to_thread(self.provisioner.launch, request)
        except GpumeshError as exc:
            log.warning("centralized launch %s failed: %s", request.request_id, exc)
            return self.failed(request, exc)
        except Exception as exc:  # a provisioner bug must not kill the scheduler loop
            log.exception("centralized launch %s crashed", request.request_id)
            return self.failed(request, FallbackUnavailable(f"{type(exc).__name__}: {exc}"))
        old = self.launches.get(launch.id)
        if old is not None and old.state.is_terminal():  # ended (terminated) while it was launching
            await self.run_terminate([launch])
            return old
        return self.launched(launch)

    async def run_terminate(self, launches: Iterable[Launch]) -> list[Launch]:
        """Tear ``launches`` down in threads; the ones that went are recorded TERMINATED."""
        done: list[Launch] = []
        for launch in launches:
            try:
                await asyncio.to_thread(self.provisioner.terminate, launch)
            except GpumeshError as exc:
                log.warning("teardown of %s failed: %s", launch.cluster_name, exc)
                continue
            ended = self.terminated(launch.id)
            if ended is not None:
                done.append(ended)
        return done
