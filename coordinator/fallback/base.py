"""The provisioning port: typed requests, launch records, errors and the null launcher.

A ``Provisioner`` brings up centralized capacity (``gpumesh provider run --tier centralized``)
for tasks the open market cannot serve. Its calls block (cloud APIs take minutes): callers run
them in a thread (``FallbackManager.run_launch`` does).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from gpumesh.errors import FailedPrecondition, Unavailable
from gpumesh.jobspec import Requirements


class FallbackUnavailable(Unavailable):
    """Centralized capacity cannot be launched now; ``retryable`` says whether a later try may help."""

    def __init__(self, message: str, *, retryable: bool = True, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retryable = retryable


class NoMatchingAccelerator(FallbackUnavailable):
    """No known accelerator satisfies the requirements (never retryable)."""

    def __init__(self, message: str, *, field: str | None = "requirements") -> None:
        super().__init__(message, retryable=False, field=field)


class IllegalLaunchTransition(FailedPrecondition):
    """A launch record was moved to a state its lifecycle does not allow."""


class LaunchState(str, enum.Enum):
    LAUNCHING = "LAUNCHING"  # provisioner.launch is running
    UP = "UP"  # the cluster is up and its provider daemon was started
    FAILED = "FAILED"  # the launch raised
    TERMINATED = "TERMINATED"  # torn down (by us, autodown or the cloud)

    def is_terminal(self) -> bool:
        return self in (LaunchState.FAILED, LaunchState.TERMINATED)


_TRANSITIONS: dict[LaunchState, frozenset[LaunchState]] = {
    LaunchState.LAUNCHING: frozenset({LaunchState.UP, LaunchState.FAILED, LaunchState.TERMINATED}),
    LaunchState.UP: frozenset({LaunchState.TERMINATED, LaunchState.FAILED}),
    LaunchState.FAILED: frozenset(),
    LaunchState.TERMINATED: frozenset(),
}


def check_transition(old: LaunchState, new: LaunchState) -> None:
    if new not in _TRANSITIONS[old]:
        raise IllegalLaunchTransition(f"a launch cannot go from {old.value} to {new.value}", field="state")


def describe(req: Requirements) -> str:
    """A short human form of requirements: "1x H100", "1 GPU >= 40000 MiB", "CPU"."""
    n = req.min_gpus
    if n == 0:
        return "CPU" + (f" >= {req.min_memory_mb} MiB RAM" if req.min_memory_mb else "")
    what = f"{n}x {'/'.join(req.gpu_models)}" if req.gpu_models else f"{n} GPU"
    if req.min_vram_mb:
        what += f" >= {req.min_vram_mb} MiB"
    return what


def _short_id() -> str:
    return uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class CapacityRequest:
    """One cluster of centralized capacity to launch for ``requirements``.

    ``count`` is how many waiting tasks it is meant to serve, ``task_ids`` which (informational),
    ``reason`` the scheduler's one-line why. ``request_id`` names the cluster and its key.
    """

    requirements: Requirements
    count: int = 1
    reason: str = ""
    task_ids: tuple[str, ...] = ()
    request_id: str = field(default_factory=_short_id)


@dataclass(frozen=True)
class Launch:
    """What a provisioner brought up (or tried to).

    ``address`` is the wallet of the node's provider daemon: the coordinator trusts it as
    centralized capacity while the launch is live. ``accelerators`` is the human form of what
    was asked of the cloud ("H100:1", "any of L4:1, A10G:1", "cpus 4+").
    """

    id: str
    cluster_name: str
    requirements: Requirements
    state: LaunchState
    created_at: float
    provisioner: str = ""
    address: str = ""
    accelerators: str = ""
    key_file: str = ""
    error: str = ""
    retryable: bool = True
    updated_at: float = 0.0

    def moved(self, state: LaunchState, *, at: float, error: str = "", retryable: bool = True) -> Launch:
        """A copy in ``state`` (transition checked)."""
        check_transition(self.state, state)
        return replace(self, state=state, updated_at=at, error=error or self.error, retryable=retryable)


@runtime_checkable
class Provisioner(Protocol):
    """Launches, inspects and tears down centralized capacity. Every method blocks."""

    name: str

    def launch(self, request: CapacityRequest) -> Launch:
        """Bring up one cluster running a centralized provider daemon; raise FallbackUnavailable."""
        ...

    def status(self, launch: Launch) -> str:
        """The cluster's state as the launcher reports it ("UP", "INIT", "STOPPED", "TERMINATED")."""
        ...

    def terminate(self, launch: Launch) -> None:
        """Tear the cluster down (idempotent: a cluster already gone is not an error)."""
        ...


class NullProvisioner:
    """No launcher configured: every launch fails with a clear, non-retryable error."""

    name = "none"

    def __init__(self, hint: str = "set the coordinator's fallback launcher (e.g. skypilot) to launch "
                 "centralized capacity on demand, or run `gpumesh provider run --tier centralized` yourself") -> None:
        self.hint = hint

    def launch(self, request: CapacityRequest) -> Launch:
        raise FallbackUnavailable(f"no launcher configured: {self.hint}", retryable=False)

    def status(self, launch: Launch) -> str:
        return "UNKNOWN"

    def terminate(self, launch: Launch) -> None:
        return None


__all__ = [
    "CapacityRequest", "FallbackUnavailable", "IllegalLaunchTransition", "Launch", "LaunchState",
    "NoMatchingAccelerator", "NullProvisioner", "Provisioner", "check_transition", "describe",
]
