"""Workload runtimes behind one port: a bubblewrap sandbox, a Docker container, or a plain
(unisolated) process."""

from __future__ import annotations

import logging
from typing import Literal

from gpumesh.errors import FailedPrecondition, InvalidArgument
from provider_node.runtime.base import RunResult, RunSpec, Runtime
from provider_node.runtime.bwrap import BwrapRuntime
from provider_node.runtime.docker import DockerOptions, DockerRuntime
from provider_node.runtime.process import ProcessRuntime

log = logging.getLogger(__name__)

__all__ = ["BwrapRuntime", "DockerOptions", "DockerRuntime", "ProcessRuntime", "RunResult", "RunSpec", "Runtime", "select_runtime"]


def select_runtime(
    preference: Literal["auto", "bwrap", "process", "docker"] = "auto", *, docker: DockerOptions | None = None
) -> Runtime:
    """``auto``: the bwrap sandbox when it works here, else plain processes (with a warning);
    ``bwrap``: the sandbox or FailedPrecondition; ``process``: plain processes; ``docker``:
    containers of ``docker``'s pinned image, or FailedPrecondition when the daemon or image is
    not there."""
    if preference not in ("auto", "bwrap", "process", "docker"):
        raise InvalidArgument(f"unknown runtime {preference!r}", field="runtime")
    if preference == "docker":
        if docker is None:
            raise InvalidArgument("runtime docker needs a pinned image (docker_image)", field="docker_image")
        runtime = DockerRuntime(docker)
        ok, why = runtime.available()
        if not ok:
            raise FailedPrecondition(f"docker runtime unavailable: {why}", field="runtime")
        return runtime
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
