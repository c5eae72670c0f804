"""Workload runtimes behind one port: a bubblewrap sandbox, or a plain (unisolated) process."""

from __future__ import annotations

import logging
from typing import Literal

from gpumesh.errors import FailedPrecondition, InvalidArgument
from provider_node.runtime.base import RunResult, RunSpec, Runtime
from provider_node.runtime.bwrap import BwrapRuntime
from provider_node.runtime.process import ProcessRuntime

log = logging.getLogger(__name__)

__all__ = ["BwrapRuntime", "ProcessRuntime", "RunResult", "RunSpec", "Runtime", "select_runtime"]


def select_runtime(preference: Literal["auto", "bwrap", "process"] = "auto") -> Runtime:
    """``auto``: the bwrap sandbox when it works here, else plain processes (with a warning);
    ``bwrap``: the sandbox or FailedPrecondition; ``process``: plain processes."""
    if preference not in ("auto", "bwrap", "process"):
        raise InvalidArgument(f"unknown runtime {preference!r}", field="runtime")
    if preference == "process":
        log.warning("runtime 'process' configured: workloads run UNISOLATED (network and host files reachable)")
        return ProcessRuntime()
    ok, why = BwrapRuntime.available()
    if ok:
        return BwrapRuntime()
    if preference == "bwrap":
        raise FailedPrecondition(f"bwrap runtime requested but unavailable: {why}", field="runtime")
    log.warning("no sandbox available (%s): workloads run UNISOLATED as plain processes", why)
    return ProcessRuntime()
