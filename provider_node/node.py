"""Composition root of the provider process: wires identity, hardware, runtime, artifacts."""

from __future__ import annotations

import logging
import os

import grpc

from gpumesh.artifacts.remote import RemoteArtifactStore
from gpumesh.identity import sane_recursion_limit
from gpumesh.rpc import channel as rpc_channel
from gpumesh.signing import ARTIFACTS, SigningInterceptor
from provider_node.config import ProviderSettings
from provider_node.daemon import ProviderDaemon
from provider_node.executor import TaskExecutor
from provider_node.hardware import HardwareInfo, discover
from provider_node.model_cache import ModelCache
from provider_node.runtime import DockerOptions, DockerRuntime, Runtime, select_runtime
from provider_node.sandbox_io import Limits
from provider_node.secret_files import check_out_of_reach, check_private, load_wallet

log = logging.getLogger(__name__)


def docker_options(settings: ProviderSettings, hardware: HardwareInfo) -> DockerOptions | None:
    """The Docker runtime's options from the settings: for runtime docker, or auto with a pinned
    image (None otherwise)."""
    if settings.runtime != "docker" and not (settings.runtime == "auto" and settings.docker_image):
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
    runtime = select_runtime(settings.runtime, docker=docker_options(settings, hardware), unisolated=settings.unisolated)
    wallet = load_wallet(settings.key_file, legacy=settings.data_dir / "wallet.key")
    check_secrets(settings, runtime)
    if isinstance(runtime, DockerRuntime):
        runtime.remove_stale(settings.work_dir)
    channel = rpc_channel(settings.coordinator, settings.tls_config())
    # Signed as the provider's wallet: the coordinator serves it what its leases need.
    artifacts = RemoteArtifactStore(grpc.intercept_channel(channel, SigningInterceptor(wallet, ARTIFACTS)))
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
        limits=Limits(max_file_bytes=settings.max_output_mb << 20, max_tree_bytes=settings.max_output_dir_mb << 20),
    )
    gpus = ", ".join(f"{g.name} ({g.memory_total_mb} MiB)" for g in hardware.gpus) or "none (CPU only)"
    log.info(
        "provider %s: GPUs %s; %d CPUs; runtime %s (%s)",
        wallet.address, gpus, hardware.cpu_count, runtime.name,
        "isolated" if runtime.isolated else "NOT isolated",
    )
    return ProviderDaemon(settings, wallet=wallet, hardware=hardware, executor=executor, coordinator_channel=channel)


def check_secrets(settings: ProviderSettings, runtime: Runtime) -> None:
    """Refuse to start when a secret is readable by others or lies where a workload can read it
    (an unisolated runtime can read everything: that was chosen explicitly)."""
    secrets = [("the wallet key", settings.key_file)]
    if settings.tls_key_file is not None:
        secrets.append(("the TLS key", settings.tls_key_file))
        check_private(settings.tls_key_file, "the TLS key", field="tls_key_file")
    if runtime.isolated:
        check_out_of_reach(secrets, [settings.work_dir, settings.cache_dir,
                                     *runtime.visible_paths(settings.work_dir)])
