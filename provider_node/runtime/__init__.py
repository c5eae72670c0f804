"""Workload runtimes behind one port: a bubblewrap sandbox, or a plain (unisolated) process."""

from __future__ import annotations

import logging
from typing import Literal

from gpumesh.errors import FailedPrecondition
from provider_node.runtime.base import RunResult, RunSpec, Runtime
from provider_node.runtime.bwrap import BwrapRuntime
from provider_node.runtime.process import ProcessRuntime

log = logging.getLogger(__name__)

__all__ = ["BwrapRuntime", "ProcessRuntime", "RunResult", "RunSpec", "Runtime", "select_runtime"]


def select_runtime(preference: Literal["auto", "bwrap", "process"] = "auto") -> Runtime:
    if preference == "process":
        log.warning("runtime 'process' chosen: workloads run UNISOLATED (network and host files reachable)")
        return ProcessRuntime()
    ok, why = BwrapRuntime.available()
    if ok:
        return BwrapRuntime()
    if preference == "bwrap":
        raise FailedPrecondition(f"bwrap runtime requested but unavailable: {why}", field="runtime")
    log.warning("no sandbox available (%s): workloads run UNISOLATED as plain processes", why)
    return ProcessRuntime()
