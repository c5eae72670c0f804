"""Composition root of the provider process: wires identity, hardware, runtime, artifacts."""

from __future__ import annotations

import logging
import os

from gpumesh.artifacts.remote import RemoteArtifactStore
from gpumesh.identity import Wallet, sane_recursion_limit
from gpumesh.rpc import channel as rpc_channel
from provider_node.config import ProviderSettings
from provider_node.daemon import ProviderDaemon
from provider_node.executor import TaskExecutor
from provider_node.hardware import HardwareInfo, discover
from provider_node.model_cache import ModelCache
from provider_node.runtime import DockerOptions, DockerRuntime, select_runtime

log = logging.getLogger(__name__)


def docker_options(settings: ProviderSettings, hardware: HardwareInfo) -> DockerOptions | None:
    """The Docker runtime's options from the settings (None unless runtime is docker)."""
    if settings.runtime != "docker":
        return None
    return DockerOptions(
        image=settings.docker_image,
        host_env=settings.docker_host_env,
        python=settings.docker_python,
        user=settings.docker_user,
        memory_mb=settings.docker_memory_mb or max(512, hardware.memory_total_mb // settings.slots),
        pids_limit=settings.docker_pids_limit,
        scratch_mb=settings.docker_scratch_mb,
        base_url=settings.docker_url,
    )


def build_daemon(settings: ProviderSettings, *, hardware: HardwareInfo | None = None) -> ProviderDaemon:
    sane_recursion_limit()
    hardware = hardware or discover()
    wallet = Wallet.load_or_create(settings.key_file)
    runtime = select_runtime(settings.runtime, docker=docker_options(settings, hardware))
    if isinstance(runtime, DockerRuntime):
        runtime.remove_stale(settings.work_dir)
    channel = rpc_channel(settings.coordinator, settings.tls_config())
    artifacts = RemoteArtifactStore(channel)
    models = ModelCache(settings.cache_dir, artifacts, max_bytes=settings.model_cache_mb * 1024 * 1024)
    threads = settings.threads_per_task or max(1, (os.cpu_count() or 1) // settings.slots)
    executor = TaskExecutor(
        artifacts=artifacts,
        models=models,
        runtime=runtime,
        wallet=wallet,
        hardware=hardware,
        work_dir=settings.work_dir,
        threads=threads,
        workloads=settings.workloads,
        workload_env=settings.workload_env,
    )
    gpus = ", ".join(f"{g.name} ({g.memory_total_mb} MiB)" for g in hardware.gpus) or "none (CPU only)"
    log.info(
        "provider %s: GPUs %s; %d CPUs; runtime %s (%s)",
        wallet.address, gpus, hardware.cpu_count, runtime.name,
        "isolated" if runtime.isolated else "NOT isolated",
    )
    return ProviderDaemon(settings, wallet=wallet, hardware=hardware, executor=executor)
