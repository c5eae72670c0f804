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


INSTALL_BWRAP = "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`)"


def select_runtime(
    preference: Literal["auto", "bwrap", "process", "docker"] = "auto", *, docker: DockerOptions | None = None,
    unisolated: bool = False,
) -> Runtime:
    """The sandbox workloads run in; never a silent fallback to no sandbox at all.

    ``auto``: the bwrap sandbox when it works here, else Docker when an image is pinned and the
    daemon answers, else FailedPrecondition saying what to install; ``bwrap`` and ``docker``: that
    one or FailedPrecondition; ``process``: plain processes, only with ``unisolated`` (an explicit
    choice: workloads can then read the host's files and reach the network, and the offer says
    the node is not isolated, so it is leased no sealed job)."""
    if preference not in ("auto", "bwrap", "process", "docker"):
        raise InvalidArgument(f"unknown runtime {preference!r}", field="runtime")
    if preference == "process":
        if not unisolated:
            raise FailedPrecondition(
                "runtime process runs workloads without a sandbox (they can read this host's files, the wallet "
                "key among them, and reach the network); pass --unisolated to choose that explicitly, or use "
                "--runtime auto", field="runtime")
        log.warning("runtime 'process' (--unisolated): workloads run UNISOLATED (network and host files reachable)")
        return ProcessRuntime()
    if preference == "docker" or (preference == "auto" and docker is not None):
        if docker is None:
            raise InvalidArgument("runtime docker needs a pinned image (docker_image)", field="docker_image")
        runtime = DockerRuntime(docker)
        ok, why = runtime.available()
        if ok:
            return runtime
        if preference == "docker":
            raise FailedPrecondition(f"docker runtime unavailable: {why}", field="runtime")
        docker_why = why
    else:
        docker_why = "no --docker-image pinned"
    ok, why = BwrapRuntime.available()
    if ok:
        return BwrapRuntime()
    if preference == "bwrap":
        raise FailedPrecondition(f"bwrap runtime requested but unavailable: {why}; {INSTALL_BWRAP}", field="runtime")
    raise FailedPrecondition(
        f"no sandbox works here: {why}; docker: {docker_why}. Either {INSTALL_BWRAP}, or run Docker with "
        "`--runtime docker --docker-image NAME@sha256:...`; only to run workloads without isolation, pass "
        "`--runtime process --unisolated`", field="runtime")
