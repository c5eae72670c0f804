"""Typed provider settings: defaults here, env (GPUMESH_PROVIDER_*) and CLI flags override."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProviderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUMESH_PROVIDER_", extra="forbid")

    coordinator: str = "127.0.0.1:50051"
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".gpumesh" / "provider")
    name: str = ""
    price_per_hour: int = Field(0, ge=0)  # payment-token base units per hour
    slots: int = Field(1, ge=1, le=256)
    tier: Literal["open", "centralized"] = "open"
    # auto: Docker when an image is pinned and the daemon answers, else bwrap; neither working, the
    # daemon refuses to start. process (no sandbox) needs unisolated, said explicitly.
    runtime: Literal["auto", "bwrap", "process", "docker"] = "auto"
    unisolated: bool = False
    # runtime "docker": the workload image, pinned (name@sha256:<digest> or sha256:<image id>).
    docker_image: str = ""
    docker_host_env: bool = False  # mount the host's Python environment; the image is only the OS base
    docker_python: str = "python"  # the image's interpreter
    docker_user: str = "65534:65534"
    docker_memory_mb: int = Field(0, ge=0)  # per task; 0 = host memory / slots
    docker_pids_limit: int = Field(4096, gt=0)
    docker_scratch_mb: int = Field(2048, gt=0)  # the /tmp tmpfs (and /dev/shm) per task
    docker_url: str = ""  # "" = DOCKER_HOST or the default socket
    model_cache_mb: int = Field(20_000, gt=0)
    # What a workload may hand back: one output file, and one output directory (a checkpoint, weights).
    max_output_mb: int = Field(4096, gt=0)
    max_output_dir_mb: int = Field(65536, gt=0)
    reconnect_max_s: float = Field(10.0, gt=0)
    metrics_listen: str = ""  # host:port serving Prometheus /metrics ("" = off)
    # TLS to the coordinator: the CA of its certificate ("" with tls: the system's roots), and a
    # client certificate and key where it requires mutual TLS.
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    threads_per_task: int = Field(0, ge=0)  # 0 = cores / slots
    operator: str = ""  # who runs this node; "" = its own wallet address
    # Operator plug-ins: a Python module to run a task kind instead of the built-in one (same
    # CLI as provider_node.workloads.inference), and extra environment for workloads.
    workloads: dict[str, str] = Field(default_factory=dict)
    workload_env: dict[str, str] = Field(default_factory=dict)

    def tls_config(self):
        """The client TLS settings, or None for plaintext."""
        from gpumesh.rpc import TlsConfig

        if not (self.tls or self.tls_ca_file or self.tls_cert_file):
            return None
        return TlsConfig(self.tls_ca_file, self.tls_cert_file, self.tls_key_file)

    @property
    def key_file(self) -> Path:
        from gpumesh.identity import provider_key_path

        return provider_key_path(self.data_dir)

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"
