"""SkyPilot launcher: one cluster per CapacityRequest, running a centralized provider daemon.

The task YAML (``task_yaml``/``render``) follows SkyPilot's task schema (checked by
``coordinator.fallback.schema.validate_task_yaml``). Each launch gets a fresh secp256k1 wallet,
written 0600 under ``data_dir/keys`` and copied to the node by ``file_mounts``; its address is
recorded in the Launch so the coordinator can trust that node as centralized capacity.

``sky`` is imported lazily (it is heavy and optional). SkyPilot >= 0.8 returns a request id
from ``sky.launch``/``status``/``down``, resolved with ``sky.stream_and_get``/``sky.get``;
older versions return the result directly; both are handled. Every method blocks.
"""

from __future__ import annotations

import importlib
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from coordinator.fallback.accelerators import choose_resources
from coordinator.fallback.base import (
    CapacityRequest,
    FallbackUnavailable,
    Launch,
    LaunchState,
)
from coordinator.fallback.schema import validate_task_yaml
from gpumesh.errors import GpumeshError
from gpumesh.identity import Wallet
from gpumesh.jobspec import Requirements

log = logging.getLogger(__name__)

REMOTE_DATA_DIR = ".gpumesh/provider"  # under the node's $HOME: the provider's default data dir
REMOTE_KEYS = f"~/{REMOTE_DATA_DIR}/keys"  # 0700: the daemon refuses a key others can read
REMOTE_KEY = f"{REMOTE_KEYS}/wallet.key"  # ProviderSettings.key_file (gpumesh.identity.provider_key_path)
REMOTE_WHEELS = "~/.gpumesh/wheels"
INSTALL_HINT = ("SkyPilot is not installed: pip install 'skypilot[aws]' (or your cloud: gcp, azure, kubernetes, "
                "lambda, runpod, ...) on the coordinator host, then run `sky check`")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (setup, run) as literal blocks, as people write them."""


_Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None))


def _default_data_dir() -> Path:
    return Path.home() / ".gpumesh" / "coordinator" / "fallback"


class SkyPilotConfig(BaseModel):
    """How centralized nodes are launched (the coordinator builds it from its settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coordinator_target: str  # public host:port the launched nodes dial (not loopback)
    data_dir: Path = Field(default_factory=_default_data_dir)  # launch keys go to data_dir/keys
    cloud: str | None = None  # None = any enabled cloud (SkyPilot picks the cheapest)
    region: str | None = None
    use_spot: bool = False
    idle_minutes_to_autostop: int = Field(10, ge=0)  # autodown this long after the daemon exits
    max_runtime_minutes: int = Field(720, ge=0)  # the daemon is stopped after this (0 = never)
    max_clusters: int = Field(4, ge=1)  # for FallbackManager(max_clusters=...)
    install: str = "gpumesh"  # pip requirement installed in setup ("" = the image has it)
    wheel: Path | None = None  # a local gpumesh wheel, mounted and installed instead of `install`
    setup_commands: tuple[str, ...] = ()  # run before the install (e.g. apt-get, conda activate)
    image_id: str | None = None
    disk_size_gb: int = Field(100, ge=1)
    cpus: str = "4+"  # for CPU-only requirements
    price_per_hour: int = Field(0, ge=0)  # the node's advertised price, token base units
    slots: int = Field(1, ge=1, le=256)
    operator: str = "gpumesh-centralized"
    name_prefix: str = "gm"
    workdir: Path | None = None
    envs: dict[str, str] = Field(default_factory=dict)  # e.g. GPUMESH_PROVIDER_RUNTIME=docker
    retry_until_up: bool = False

    @field_validator("coordinator_target")
    @classmethod
    def _target(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"coordinator_target must be host:port, got {value!r}")
        if host.strip("[]") in _LOOPBACK:
            raise ValueError(f"coordinator_target {value!r} is not reachable from a cloud node; give its public address")
        return value

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or not value[0].isalpha() or not all(c.islower() or c.isdigit() or c == "-" for c in value) \
                or len(value) > 20:
            raise ValueError("name_prefix: lower-case letters, digits and '-', starting with a letter, <= 20 chars")
        return value


def _import_sky():
    try:
        return importlib.import_module("sky")
    except ImportError as exc:
        raise FallbackUnavailable(INSTALL_HINT, retryable=False) from exc


def _sky_exceptions(sky) -> Any:
    found = getattr(sky, "exceptions", None)
    if found is None:
        try:
            found = importlib.import_module("sky.exceptions")
        except ImportError:
            return None
    return found


def _is(exc: BaseException, exceptions: Any, name: str) -> bool:
    cls = getattr(exceptions, name, None) if exceptions is not None else None
    return isinstance(cls, type) and isinstance(exc, cls)


def translate(sky, exc: BaseException, what: str) -> FallbackUnavailable:
    """A clear FallbackUnavailable for an exception SkyPilot raised during ``what``."""
    ex = _sky_exceptions(sky)
    detail = f"{type(exc).__name__}: {exc}"
    if _is(exc, ex, "NoCloudAccessError"):
        return FallbackUnavailable(f"no cloud credentials configured: run `sky check` on the coordinator host "
                                   f"({detail})", retryable=False)
    if _is(exc, ex, "ResourcesUnavailableError"):
        return FallbackUnavailable(f"no cloud capacity for {what}; will retry ({detail})", retryable=True)
    if _is(exc, ex, "ApiServerConnectionError"):
        return FallbackUnavailable(f"SkyPilot API server unreachable: run `sky api start` ({detail})", retryable=True)
    if any(_is(exc, ex, n) for n in ("NotSupportedError", "InvalidClusterNameError", "ResourcesMismatchError")) \
            or isinstance(exc, (ValueError, TypeError)):
        return FallbackUnavailable(f"SkyPilot rejected {what}: {detail}", retryable=False)
    return FallbackUnavailable(f"SkyPilot {what} failed: {detail}", retryable=True)


def _resolve(sky, result: Any, *, stream: bool = False) -> Any:
    """Wait for a SkyPilot request id (>= 0.8); older versions already returned the result."""
    if not isinstance(result, str):
        return result
    getter = getattr(sky, "stream_and_get", None) if stream else None
    return (getter or sky.get)(result)


class SkyPilotProvisioner:
    """Launches ``gpumesh provider run --tier centralized`` on SkyPilot clusters."""

    name = "skypilot"

    def __init__(self, config: SkyPilotConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock

    # ---- naming and keys -------------------------------------------------------------------

    def cluster_name(self, request: CapacityRequest) -> str:
        return f"{self.config.name_prefix}-{request.request_id}".lower()

    def key_file(self, request: CapacityRequest) -> Path:
        return self.config.data_dir / "keys" / f"{self.cluster_name(request)}.key"

    def wallet(self, request: CapacityRequest) -> Wallet:
        """The launch's wallet: made (0600) on first use, the same one after."""
        keys = self.key_file(request).parent
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys.chmod(0o700)
        return Wallet.load_or_create(self.key_file(request))

    def _forget_key(self, request: CapacityRequest) -> None:
        self.key_file(request).unlink(missing_ok=True)

    def accelerators_for(self, requirements: Requirements) -> str:
        """What a launch for ``requirements`` asks of the cloud: "H100:1", "any of L4:1, A10G:1"."""
        return choose_resources(requirements, cpus=self.config.cpus).summary

    # ---- the task YAML ---------------------------------------------------------------------

    def _setup(self) -> str:
        cfg = self.config
        lines = ["set -e", f"chmod 700 ~/{REMOTE_DATA_DIR} {REMOTE_KEYS}", f"chmod 600 {REMOTE_KEY}",
                 *cfg.setup_commands]
        if cfg.wheel is not None:  # a wheel replaces the index install
            lines.append(f"pip install {REMOTE_WHEELS}/{shlex.quote(cfg.wheel.name)}")
        elif cfg.install:
            lines.append(f"pip install {shlex.quote(cfg.install)}")
        lines.append("gpumesh --help > /dev/null  # fail setup now if the CLI is missing")
        return "\n".join(lines) + "\n"

    def _run(self, cluster: str) -> str:
        cfg = self.config
        argv = ["gpumesh", "provider", "run", "--coordinator", cfg.coordinator_target, "--tier", "centralized",
                "--name", cluster, "--slots", str(cfg.slots), "--operator", cfg.operator,
                "--price", str(cfg.price_per_hour)]
        cmd = shlex.join(argv) + f' --data-dir "$HOME/{REMOTE_DATA_DIR}"'
        if not cfg.max_runtime_minutes:
            return f"chmod 700 {REMOTE_KEYS}\nchmod 600 {REMOTE_KEY}\nexec {cmd}\n"
        return (f"chmod 700 {REMOTE_KEYS}\nchmod 600 {REMOTE_KEY}\n"
                f"# stopped after {cfg.max_runtime_minutes} min; the idle cluster then autodowns\n"
                f"rc=0\ntimeout --signal=INT --kill-after=60 {cfg.max_runtime_minutes}m {cmd} || rc=$?\n"
                'if [ "$rc" -eq 124 ]; then exit 0; fi\nexit "$rc"\n')

    def task_yaml(self, request: CapacityRequest) -> dict[str, Any]:
        """The SkyPilot task for ``request`` (creates the launch's key file on first call)."""
        cfg = self.config
        cluster = self.cluster_name(request)
        choice = choose_resources(request.requirements, cpus=cfg.cpus)
        self.wallet(request)
        resources: dict[str, Any] = {**choice.fields, "disk_size": cfg.disk_size_gb}
        if cfg.cloud:
            resources["cloud"] = cfg.cloud
        if cfg.region:
            resources["region"] = cfg.region
        if cfg.use_spot:
            resources["use_spot"] = True
        if cfg.image_id:
            resources["image_id"] = cfg.image_id
        file_mounts = {REMOTE_KEY: str(self.key_file(request))}
        if cfg.wheel is not None:
            file_mounts[f"{REMOTE_WHEELS}/{cfg.wheel.name}"] = str(cfg.wheel)
        envs = {**cfg.envs, "GPUMESH_COORDINATOR": cfg.coordinator_target, "GPUMESH_FALLBACK_CLUSTER": cluster,
                "GPUMESH_FALLBACK_REASON": request.reason[:200]}
        task: dict[str, Any] = {
            "name": cluster, "num_nodes": 1, "resources": resources, "envs": envs,
            "file_mounts": file_mounts, "setup": self._setup(), "run": self._run(cluster),
        }
        if cfg.workdir is not None:
            task["workdir"] = str(cfg.workdir)
        validate_task_yaml(task)
        return task

    def render(self, request: CapacityRequest) -> str:
        return yaml.dump(self.task_yaml(request), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)

    # ---- the Provisioner port --------------------------------------------------------------

    def launch(self, request: CapacityRequest) -> Launch:
        """Provision the cluster and start its provider daemon (blocks for minutes)."""
        sky = _import_sky()
        cluster = self.cluster_name(request)
        choice = choose_resources(request.requirements, cpus=self.config.cpus)
        log.info("launching %s (%s) via skypilot for %d task(s): %s", cluster, choice.summary, request.count,
                 request.reason)
        try:
            config = self.task_yaml(request)
            address = self.wallet(request).address
            task = sky.Task.from_yaml_config(config)
            _resolve(sky, sky.launch(task, cluster_name=cluster, retry_until_up=self.config.retry_until_up,
                                     idle_minutes_to_autostop=self.config.idle_minutes_to_autostop or None,
                                     down=True), stream=True)
        except GpumeshError:
            self._forget_key(request)
            raise
        except Exception as exc:  # sky raises many types; translate each to a clear reason
            self._forget_key(request)
            raise translate(sky, exc, f"cluster {cluster} ({choice.summary})") from exc
        now = self.clock()
        return Launch(id=request.request_id, cluster_name=cluster, requirements=request.requirements,
                      state=LaunchState.UP, created_at=now, updated_at=now, provisioner=self.name,
                      address=address, accelerators=choice.summary, key_file=str(self.key_file(request)))

    def status(self, launch: Launch) -> str:
        sky = _import_sky()
        try:
            records = _resolve(sky, sky.status([launch.cluster_name]))
        except Exception as exc:
            raise translate(sky, exc, f"status of {launch.cluster_name}") from exc
        if not records:
            return LaunchState.TERMINATED.value
        first = records[0]
        state = first.get("status") if isinstance(first, dict) else getattr(first, "status", None)
        return str(getattr(state, "value", state) or "UNKNOWN")

    def terminate(self, launch: Launch) -> None:
        sky = _import_sky()
        try:
            _resolve(sky, sky.down(launch.cluster_name))
        except Exception as exc:
            if not _is(exc, _sky_exceptions(sky), "ClusterDoesNotExist"):
                raise translate(sky, exc, f"teardown of {launch.cluster_name}") from exc
        if launch.key_file:
            Path(launch.key_file).unlink(missing_ok=True)
