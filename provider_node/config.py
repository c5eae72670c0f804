"""Typed provider settings: defaults here, then the config file (TOML, ``gpumesh provider init``
writes it), then env (GPUMESH_PROVIDER_*), then CLI flags: each overrides the one before.

The file is ``config`` (``--config``, ``GPUMESH_PROVIDER_CONFIG``), else ``DATA_DIR/provider.toml``
where it exists (DATA_DIR as given by flag or env, else the default). A key the settings do not
know, or a value they refuse, is an error naming the key and the file.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gpumesh.errors import FailedPrecondition, InvalidArgument

CONFIG_NAME = "provider.toml"


def default_data_dir() -> Path:
    return Path.home() / ".gpumesh" / "provider"


class ProviderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUMESH_PROVIDER_", extra="forbid")

    # The TOML file the other settings were read from (None: there was none).
    config: Path | None = None

    coordinator: str = "127.0.0.1:50051"
    data_dir: Path = Field(default_factory=default_data_dir)
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

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, file_secret_settings,
                ConfigFileSource(settings_cls, init_settings, env_settings))

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


class ConfigFileSource(PydanticBaseSettingsSource):
    """The TOML config file, below init kwargs (flags) and env: where it is comes from those two."""

    def __init__(self, settings_cls: type[BaseSettings], init_settings, env_settings) -> None:
        super().__init__(settings_cls)
        self.init_settings, self.env_settings = init_settings, env_settings

    def get_field_value(self, field, field_name):  # unused: __call__ reads the whole file
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        given, env = self.init_settings.init_kwargs, self.env_settings()
        named = given.get("config") or env.get("config")
        path = config_file_path(config=named, data_dir=given.get("data_dir") or env.get("data_dir"))
        if named is None and not path.is_file():
            return {}
        return {**read_config_file(path, self.settings_cls), "config": path}


def config_file_path(*, config: Path | str | None = None, data_dir: Path | str | None = None) -> Path:
    """The config file: ``config`` when named, else DATA_DIR/provider.toml (DATA_DIR: ``data_dir``,
    else the default)."""
    if config:
        return Path(config).expanduser()
    return Path(data_dir or default_data_dir()).expanduser() / CONFIG_NAME


_PATHS = ("data_dir", "tls_ca_file", "tls_cert_file", "tls_key_file")


def read_config_file(path: Path, settings_cls: type[BaseSettings] = ProviderSettings) -> dict[str, Any]:
    """The settings in the TOML file at ``path``, each checked (InvalidArgument naming the file and
    the key when one is unknown or refused)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise FailedPrecondition(f"config file {path} does not exist") from None
    except OSError as exc:
        raise FailedPrecondition(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"config file {path} is not valid TOML: {exc}") from None
    fields = settings_cls.model_fields
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields or key == "config":
            near = difflib.get_close_matches(key, [k for k in fields if k != "config"], n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise InvalidArgument(f"config file {path}: unknown key {key!r}{hint}")
        if key in _PATHS and isinstance(value, str):
            value = os.path.expanduser(value)
        field = fields[key]
        try:
            kind = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
            out[key] = TypeAdapter(kind).validate_python(value)
        except ValidationError as exc:
            why = "; ".join(e["msg"] for e in exc.errors())
            raise InvalidArgument(f"config file {path}: {key} = {value!r}: {why}") from None
    return out
