"""Onboarding a provider (``gpumesh provider init``): what this host has, what is missing and how
to fix it, which runtime ``provider run`` will use, how the hardware would verify, what price the
market suggests, and the config file that ``provider run`` reads.

Each step is a function returning a dataclass (the hardware check's local run is
``provider_node.hwpreview``); the probes of the host are arguments with real
defaults, so each step is tested on its own. The CLI (``gpumesh.cli.provider_init``) prints them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from gpumesh.errors import AlreadyExists, GpumeshError
from provider_node.hardware import HardwareInfo

OK, MISSING, NONE, NOT_NEEDED = "ok", "missing", "none", "n/a"
PCI = Path("/sys/bus/pci/devices")
NVIDIA_VENDOR = "0x10de"
FIX_DRIVER = "sudo ubuntu-drivers install (or: sudo apt-get install nvidia-driver), then reboot"
FIX_NVML = "pip install nvidia-ml-py"
FIX_DOCKER = "sudo apt-get install docker.io && sudo systemctl enable --now docker"
FIX_DOCKER_START = "sudo systemctl start docker"
FIX_DOCKER_GROUP = "sudo usermod -aG docker $USER (then log in again)"
FIX_TOOLKIT = ("sudo apt-get install nvidia-container-toolkit && sudo nvidia-ctk runtime configure --runtime=docker "
               "&& sudo systemctl restart docker")
FIX_BWRAP = "sudo apt-get install bubblewrap"
FIX_USERNS = "sudo sysctl -w kernel.unprivileged_userns_clone=1 kernel.apparmor_restrict_unprivileged_userns=0"
CPU_ONLY = "no NVIDIA GPU found: this node will serve CPU work only"


@dataclass(frozen=True)
class Check:
    """One thing the provider needs: ``ok``, ``missing`` (with the command that fixes it), ``none``
    (no GPU: a CPU provider) or ``n/a`` (not needed here)."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


# ---- the host ------------------------------------------------------------------------------------


def nvidia_pci_devices(root: Path = PCI) -> int:
    """NVIDIA display or 3D controllers on the PCI bus (seen without any driver)."""
    count = 0
    for dev in root.glob("*") if root.is_dir() else ():
        try:
            vendor, cls = (dev / "vendor").read_text().strip(), (dev / "class").read_text().strip()
        except OSError:
            continue
        count += vendor == NVIDIA_VENDOR and cls.startswith("0x03")
    return count


def gpu_check(hardware: HardwareInfo, *, pci_gpus: int | None = None,
              which: Callable[[str], str | None] = shutil.which) -> Check:
    """The NVIDIA driver, as NVML (what the daemon reads) sees it."""
    if hardware.gpus:
        g = hardware.gpus[0]
        names = ", ".join(x.name for x in hardware.gpus)
        return Check("NVIDIA driver", OK, f"driver {g.driver_version}, CUDA {g.cuda_version or '?'}: "
                     f"{hardware.gpu_count} GPU(s): {names}")
    pci_gpus = nvidia_pci_devices() if pci_gpus is None else pci_gpus
    if not pci_gpus:
        return Check("NVIDIA driver", NONE, CPU_ONLY)
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return Check("NVIDIA driver", MISSING, f"{pci_gpus} NVIDIA GPU(s) on the PCI bus but nvidia-ml-py is "
                     "not installed", FIX_NVML)
    smi = "nvidia-smi is installed" if which("nvidia-smi") else "no nvidia-smi"
    return Check("NVIDIA driver", MISSING, f"{pci_gpus} NVIDIA GPU(s) on the PCI bus but NVML cannot reach a "
                 f"driver ({smi})", FIX_DRIVER)


def docker_info(base_url: str = "", timeout: float = 3.0) -> tuple[dict[str, Any] | None, str]:
    """``docker info`` of the daemon (None and why when it does not answer)."""
    try:
        import docker
    except ImportError:
        return None, "the docker Python package is not installed"
    try:
        client = docker.DockerClient(base_url=base_url, timeout=timeout) if base_url else docker.from_env(timeout=timeout)
        try:
            return client.info(), ""
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - docker and requests raise many kinds
        return None, str(exc) or type(exc).__name__


def docker_check(info: Mapping[str, Any] | None, why: str, *,
                 which: Callable[[str], str | None] = shutil.which) -> Check:
    if info is not None:
        runtimes = ", ".join(sorted(info.get("Runtimes") or {})) or "none listed"
        return Check("Docker daemon", OK, f"Docker {info.get('ServerVersion', '?')} answers (runtimes: {runtimes})")
    if not (which("docker") or which("dockerd")):
        return Check("Docker daemon", MISSING, "Docker is not installed (optional: bubblewrap serves without it)",
                     FIX_DOCKER)
    if "FileNotFoundError" in why or "No such file" in why:
        return Check("Docker daemon", MISSING, "Docker is installed but its daemon is not running (no socket)",
                     FIX_DOCKER_START)
    if "ermission denied" in why:
        return Check("Docker daemon", MISSING, f"this user may not use the Docker socket: {_short(why)}",
                     FIX_DOCKER_GROUP)
    return Check("Docker daemon", MISSING, f"Docker is installed but its daemon does not answer: {_short(why)}",
                 FIX_DOCKER_START)


def toolkit_check(hardware: HardwareInfo, info: Mapping[str, Any] | None, *,
                  which: Callable[[str], str | None] = shutil.which) -> Check:
    """The NVIDIA container toolkit: what gives Docker containers the GPUs."""
    name = "NVIDIA container toolkit"
    if not hardware.gpus:
        return Check(name, NOT_NEEDED, "no GPU: containers need no GPU access")
    if info is None:
        return Check(name, NOT_NEEDED, "no Docker daemon (bubblewrap hands the GPUs to workloads itself)")
    if "nvidia" in (info.get("Runtimes") or {}) or which("nvidia-ctk") or which("nvidia-container-runtime-hook"):
        return Check(name, OK, "Docker can hand the GPUs to containers")
    return Check(name, MISSING, "Docker cannot hand the GPUs to containers", FIX_TOOLKIT)


def bwrap_check(available: Callable[[], tuple[bool, str]] | None = None) -> Check:
    """bubblewrap, probed by building the real sandbox (``BwrapRuntime.available``)."""
    if available is None:
        from provider_node.runtime import BwrapRuntime

        available = BwrapRuntime.available
    ok, why = available()
    if ok:
        return Check("bubblewrap", OK, "the sandbox works here")
    if "not installed" in why:
        return Check("bubblewrap", MISSING, why, FIX_BWRAP)
    return Check("bubblewrap", MISSING, _short(why), FIX_USERNS)


def host_checks(hardware: HardwareInfo, *, docker_url: str = "") -> list[Check]:
    """Every check, in order: driver, Docker, the toolkit, bubblewrap."""
    info, why = docker_info(docker_url)
    return [gpu_check(hardware), docker_check(info, why), toolkit_check(hardware, info), bwrap_check()]


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---- the runtime ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeChoice:
    """What ``provider run`` will run workloads in: ``name`` ("" when no sandbox works here) and the
    ``runtime`` setting to write."""

    name: str
    setting: str
    detail: str
    docker_image: str = ""
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "setting": self.setting, "detail": self.detail,
                "docker_image": self.docker_image, "notes": list(self.notes)}


def choose_runtime(preference: str, hardware: HardwareInfo, checks: list[Check], *, docker_image: str = "",
                   slots: int = 1) -> RuntimeChoice:
    """The runtime as ``provider run`` resolves it (``select_runtime``: Docker when an image is pinned
    and the daemon answers, else bubblewrap), except that a GPU host without the NVIDIA container
    toolkit is not given Docker under ``auto`` (its containers would not reach the GPUs)."""
    from provider_node.config import ProviderSettings
    from provider_node.node import docker_options
    from provider_node.runtime import select_runtime

    by_name = {c.name: c for c in checks}
    toolkit = by_name.get("NVIDIA container toolkit")
    docker_ok = by_name.get("Docker daemon") is not None and by_name["Docker daemon"].status == OK
    notes = []
    image = docker_image
    if preference == "auto" and image and hardware.gpus and toolkit is not None and toolkit.status == MISSING:
        notes.append("Docker has no NVIDIA container toolkit, so its containers would not reach the GPUs: "
                     "bubblewrap is used instead")
        image = ""
    if preference == "auto" and not image and docker_ok and (
            not hardware.gpus or (toolkit is not None and toolkit.status == OK)):
        notes.append("Docker works too: to run workloads in containers, pin a workload image: "
                     "gpumesh provider init --force --docker-image NAME@sha256:<digest>")
    settings = ProviderSettings.model_construct(runtime=preference, docker_image=image, slots=slots)
    try:
        runtime = select_runtime(preference, docker=docker_options(settings, hardware))  # type: ignore[arg-type]
    except GpumeshError as exc:
        return RuntimeChoice("", preference, f"no sandbox works here: {exc.message}", image, tuple(notes))
    gpus = ", the GPUs passed through" if hardware.gpus else ""
    detail = {"bwrap": f"the bubblewrap sandbox (no network, the host read-only{gpus})",
              "docker": f"Docker containers of {image} (no network, read-only root, no capabilities{gpus})"}
    return RuntimeChoice(runtime.name, runtime.name, detail.get(runtime.name, runtime.name),
                         image if runtime.name == "docker" else "", tuple(notes))


# ---- the coordinator: market and settlement ------------------------------------------------------


@dataclass(frozen=True)
class CoordinatorInfo:
    target: str
    reachable: bool
    error: str = ""
    market: Any = None  # jobs_pb2.MarketView, None when GetMarket failed
    market_error: str = ""
    settles: bool | None = None  # None: unknown
    min_stake: int = 0


def ask_coordinator(target: str, *, tls=None, wait_s: float = 3.0, timeout_s: float = 10.0) -> CoordinatorInfo:
    """The coordinator's market view and whether it settles on-chain (each failing on its own)."""
    from gpumesh.client import Client

    refused = _refused(target, wait_s)
    if refused:
        return CoordinatorInfo(target, False, refused)
    try:
        client = Client.connect(target, tls=tls, wait_ready=wait_s, timeout=timeout_s)
    except GpumeshError as exc:
        return CoordinatorInfo(target, False, str(exc))
    with client:
        market, market_error, settles, min_stake = None, "", None, 0
        try:
            market = client.market()
        except GpumeshError as exc:
            market_error = str(exc)
        try:
            info = client.settlement_info()
            settles, min_stake = bool(info.enabled), _amount(info.min_stake) or 0
        except GpumeshError:
            pass
    return CoordinatorInfo(target, True, "", market, market_error, settles, min_stake)


def _refused(target: str, wait_s: float) -> str:
    """Why a TCP connection to ``host:port`` fails at once ("" when it connects or the target is no
    ``host:port``): gRPC would retry until ``wait_s`` passed."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return ""
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=wait_s).close()
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    return ""


@dataclass(frozen=True)
class PriceSuggestion:
    price_per_hour: int
    source: str  # "flag" (--price), "market" (the class's median ask) or "default" (0)
    class_key: str
    market_p50: int | None = None
    market_p10: int | None = None
    providers: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"price_per_hour": self.price_per_hour, "source": self.source, "class": self.class_key,
                "market_p50": self.market_p50, "market_p10": self.market_p10, "providers": self.providers,
                "note": self.note}


def _amount(text: str) -> int | None:
    """A decimal string of token base units (None when empty or not a number)."""
    try:
        return int(Decimal(text).to_integral_value()) if text else None
    except InvalidOperation:
        return None


def suggest_price(class_key: str, coordinator: CoordinatorInfo, *, flag: int | None = None) -> PriceSuggestion:
    """The class's median ask on the market; ``flag`` (``--price``) always wins; 0 when neither."""
    row = None
    if coordinator.market is not None:
        row = next((c for c in coordinator.market.classes if c.key == class_key), None)
    p50, p10 = (_amount(row.price_p50), _amount(row.price_p10)) if row is not None else (None, None)
    providers = int(row.providers) if row is not None else 0
    if not coordinator.reachable:
        why = "the coordinator is not reachable"
    elif coordinator.market is None:
        why = f"the coordinator gave no market view ({coordinator.market_error})"
    elif p50 is None:
        why = f"no connected provider offers class {class_key} yet"
    else:
        why = ""
    if flag is not None:
        seen = f"; the market's median ask for {class_key} is {p50}" if p50 is not None else f"; {why}" if why else ""
        return PriceSuggestion(flag, "flag", class_key, p50, p10, providers, f"--price {flag} kept{seen}")
    if p50 is not None:
        return PriceSuggestion(p50, "market", class_key, p50, p10, providers,
                               f"the median ask of the {providers} {class_key} provider(s) connected")
    return PriceSuggestion(0, "default", class_key, None, None, providers,
                           f"{why}: price 0 (free) written; set one with --price N (token base units per hour)")


# ---- the config file -----------------------------------------------------------------------------

WRITTEN_KEYS = ("coordinator", "name", "price_per_hour", "slots", "runtime", "docker_image", "data_dir")


def default_name() -> str:
    return socket.gethostname() or "provider"


def config_values(*, coordinator: str, name: str, price_per_hour: int, slots: int, runtime: RuntimeChoice,
                  data_dir: Path) -> dict[str, Any]:
    values: dict[str, Any] = {"coordinator": coordinator, "name": name, "price_per_hour": price_per_hour,
                              "slots": slots, "runtime": runtime.setting,
                              "data_dir": str(Path(data_dir).expanduser().absolute())}
    if runtime.docker_image:
        values["docker_image"] = runtime.docker_image
    return {k: values[k] for k in WRITTEN_KEYS if k in values}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # a JSON string is a TOML basic string, DEL aside (TOML wants it escaped)
    return json.dumps(str(value)).replace("\x7f", "\\u007f")


def render_config(values: Mapping[str, Any], *, now: float | None = None, by: str = "gpumesh provider init") -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(time.time() if now is None else now))
    lines = [f"# gpumesh provider config, written by `{by}` on {stamp}.",
             "# `gpumesh provider run` reads it; GPUMESH_PROVIDER_* env vars and command-line flags override it.",
             "# Any key of provider_node/config.py ProviderSettings may be set here.", ""]
    lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def write_config(path: Path, text: str, *, force: bool = False) -> None:
    """Write ``text`` at ``path`` atomically, mode 0600 (its directory made 0700 when missing);
    AlreadyExists when a file is there and not ``force``."""
    if path.exists() and not force:
        raise AlreadyExists(f"{path} exists; pass --force to overwrite it (it is kept as it is)")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- what to run next ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    commands: tuple[str, ...]
    notes: tuple[str, ...] = ()


def next_steps(coordinator: CoordinatorInfo, *, data_dir: Path | None = None, config: Path | None = None) -> Plan:
    """``provider run``, after ``stake`` (or ``register``) when the coordinator settles on-chain.
    ``data_dir`` and ``config``: where they are not the defaults ``run`` looks at."""
    where = f" --data-dir {data_dir}" if data_dir is not None else ""
    run = f" --config {config}" if config is not None else where
    target = f" -c {coordinator.target}"
    commands, notes = [], []
    if coordinator.settles:
        if coordinator.min_stake:
            commands.append(f"gpumesh provider stake{target}{where}")
            notes.append(f"the coordinator settles on-chain: open-market work needs a stake of "
                         f"{coordinator.min_stake} (stake registers the wallet too; it needs a little gas)")
        else:
            commands.append(f"gpumesh provider register{target}{where}")
            notes.append("the coordinator settles on-chain: it pays registered wallets only (a transaction: "
                         "the wallet needs a little gas)")
    elif coordinator.settles is None:
        notes.append(f"could not ask {coordinator.target} whether it settles on-chain; if it does, first run "
                     f"`gpumesh provider register{target}{where}` (or `stake`)")
    commands.append(f"gpumesh provider run{run}")
    return Plan(tuple(commands), tuple(notes))
