"""``gpumesh provider init``: wallet, runtime checks, hardware preview, price from the market, and the
config file ``provider run`` reads (below env and flags)."""

from __future__ import annotations

import json
import os
import stat
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpumesh.cli.main import main
from gpumesh.errors import InvalidArgument
from gpumesh.localnet import free_port
from gpumesh.v1 import jobs_pb2
from provider_node import hwpreview
from provider_node import onboarding as ob
from provider_node.config import ProviderSettings
from provider_node.hardware import GpuInfo, HardwareInfo, discover
from provider_node.runtime import BwrapRuntime
from tests.conftest import DaemonThread

BWRAP_WORKS = BwrapRuntime.available()[0]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _init(home: Path, *args: str, env: dict[str, str] | None = None):
    flags = () if BWRAP_WORKS else ("--allow-missing-runtime",)  # a CI host may lack a working sandbox
    return CliRunner().invoke(main, ["provider", "init", *flags, *args],
                              env={"HOME": str(home), "GPUMESH_COORDINATOR": None, "GPUMESH_PROVIDER_CONFIG": None,
                                   "GPUMESH_PROVIDER_DATA_DIR": None, **(env or {})})


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in [v for v in os.environ if v.startswith("GPUMESH_PROVIDER_")]:
        monkeypatch.delenv(var)
    return home


def test_init_on_a_cpu_host_without_a_coordinator(home):
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = _init(home, "-c", dead, "--name", "box-1", "--slots", "2")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 10
    out = result.output
    data = home / ".gpumesh" / "provider"
    key, config = data / "keys" / "wallet.key", data / "provider.toml"
    assert _mode(key) == 0o600 and _mode(config) == 0o600
    if not discover().gpus:
        assert "no NVIDIA GPU found: this node will serve CPU work only" in out
    for check in ("NVIDIA driver:", "Docker daemon:", "NVIDIA container toolkit:", "bubblewrap:"):
        assert check in out, out
    assert "hardware check:" in out and "claimed cpu" in out and "would verify as cpu" in out, out
    assert f"{dead}: not reachable" in out and "price 0" in out, out
    assert "$ gpumesh provider run" in out, out
    assert "\x1b[" not in out  # no colours in a pipe

    text = config.read_text()
    assert text.startswith("# gpumesh provider config, written by `gpumesh provider init`")
    settings = ProviderSettings()  # as `provider run` builds it: the file found in the default data dir
    assert (settings.coordinator, settings.name, settings.slots, settings.price_per_hour) == (dead, "box-1", 2, 0)
    assert settings.data_dir == data and settings.config == config
    assert settings.runtime == ("bwrap" if BWRAP_WORKS else "auto")

    address = next(line for line in out.splitlines() if line.startswith("wallet:")).split()[1]
    again = _init(home, "-c", dead, "--price", "9")
    assert again.exit_code != 0 and "--force" in again.output and str(config) in again.output
    assert config.read_text() == text

    forced = _init(home, "-c", dead, "--price", "9", "--force", "--json")
    assert forced.exit_code == 0, forced.output
    report = json.loads(forced.output)
    assert report["wallet"] == {"address": address, "key_file": str(key), "created": False}  # never overwritten
    assert report["price"]["price_per_hour"] == 9 and report["price"]["source"] == "flag"
    assert report["config"]["written"] and ProviderSettings().price_per_hour == 9
    assert {c["name"] for c in report["checks"]} >= {"NVIDIA driver", "bubblewrap"}
    assert report["hardware_check"][0]["device"] == -1 and report["hardware_check"][0]["verified"] == "cpu"


def _captured_run(monkeypatch, args, env=None) -> ProviderSettings:
    """What `provider run` builds from the file, env and flags (the daemon itself is not started)."""
    import provider_node.node

    seen = []

    class Idle:
        async def run(self):
            return None

    monkeypatch.setattr(provider_node.node, "build_daemon", lambda settings: seen.append(settings) or Idle())
    result = CliRunner().invoke(main, ["provider", "run", *args], env=env)
    assert result.exit_code == 0, result.output
    return seen[0]


def _write(path: Path, **values) -> None:
    ob.write_config(path, ob.render_config(values))


def test_env_and_flags_override_the_file(home, tmp_path, monkeypatch):
    data = tmp_path / "node"
    _write(data / "provider.toml", coordinator="coord:1", name="from-file", price_per_hour=5, slots=2,
           runtime="bwrap", data_dir=str(data))
    s = _captured_run(monkeypatch, ["--data-dir", str(data)])
    assert (s.coordinator, s.name, s.price_per_hour, s.slots, s.runtime) == ("coord:1", "from-file", 5, 2, "bwrap")
    s = _captured_run(monkeypatch, ["--data-dir", str(data), "--slots", "4", "-c", "flag:2"],
                      env={"GPUMESH_PROVIDER_NAME": "from-env", "GPUMESH_PROVIDER_SLOTS": "3",
                           "GPUMESH_PROVIDER_PRICE_PER_HOUR": "6"})
    assert (s.coordinator, s.name, s.price_per_hour, s.slots) == ("flag:2", "from-env", 6, 4)

    elsewhere = tmp_path / "elsewhere.toml"  # named by --config, or by GPUMESH_PROVIDER_CONFIG
    _write(elsewhere, name="named", data_dir=str(data))
    assert _captured_run(monkeypatch, ["--config", str(elsewhere)]).name == "named"
    assert _captured_run(monkeypatch, [], env={"GPUMESH_PROVIDER_CONFIG": str(elsewhere)}).config == elsewhere
    assert ProviderSettings().config is None  # nothing in the default data dir: defaults only


def test_an_unknown_key_or_a_bad_value_in_the_file_is_an_error_naming_it(home, tmp_path):
    path = home / ".gpumesh" / "provider" / "provider.toml"
    path.parent.mkdir(parents=True)
    path.write_text('name = "x"\nslotz = 2\n')
    with pytest.raises(InvalidArgument, match=r"provider\.toml: unknown key 'slotz' \(did you mean 'slots'\?\)"):
        ProviderSettings()
    result = CliRunner().invoke(main, ["provider", "run"])
    assert result.exit_code == 1 and "slotz" in result.output and str(path) in result.output, result.output
    path.write_text("slots = 0\n")
    with pytest.raises(InvalidArgument, match=r"provider\.toml: slots = 0: Input should be greater than or equal"):
        ProviderSettings()
    with pytest.raises(InvalidArgument, match="not valid TOML"):
        path.write_text("slots = \n")
        ProviderSettings()


def test_without_a_sandbox_init_says_so_and_writes_nothing_unless_told(home, monkeypatch):
    monkeypatch.setattr(BwrapRuntime, "available", classmethod(lambda cls: (False, "bubblewrap (bwrap) is not installed")))
    dead = f"127.0.0.1:{free_port()}"
    env = {"HOME": str(home)}
    result = CliRunner().invoke(main, ["provider", "init", "-c", dead], env=env)
    config = home / ".gpumesh" / "provider" / "provider.toml"
    assert result.exit_code == 1 and not config.exists(), result.output
    assert "fix: sudo apt-get install bubblewrap" in result.output and "no sandbox works here" in result.output
    result = CliRunner().invoke(main, ["provider", "init", "-c", dead, "--allow-missing-runtime"], env=env)
    assert result.exit_code == 0, result.output
    assert tomllib.loads(config.read_text())["runtime"] == "auto"


def test_a_gpu_this_host_cannot_run_would_not_verify():
    hw = HardwareInfo(gpus=(GpuInfo(0, "GPU-x", "Tesla T4", 15_360, "7.5", "550.54", "12.4"),), cpu_count=2,
                      memory_total_mb=8000, cpu_model="x86", platform="linux")
    cpu, gpu = hwpreview.preview_hardware(hw)
    assert cpu.verified == "cpu" and cpu.tflops > 0
    assert (gpu.claimed, gpu.verified) == ("t4", "") and "CUDA" in gpu.note, gpu
    assert hwpreview.node_class((cpu, gpu)) == "cpu"
    assert hwpreview.node_class((cpu, hwpreview.DevicePreview(0, "A100", "a100", 100.0, 0.5, "a100"),
                          hwpreview.DevicePreview(1, "T4", "t4", 5.0, 0.5, "t4"))) == "t4"  # the slowest verified GPU


def test_host_checks_name_the_fix():
    none = HardwareInfo(gpus=(), cpu_count=2, memory_total_mb=8000, cpu_model="x86", platform="linux")
    one = HardwareInfo(gpus=(GpuInfo(0, "GPU-x", "NVIDIA H100", 81_559, "9.0", "550.54", "12.4"),), cpu_count=2,
                       memory_total_mb=8000, cpu_model="x86", platform="linux")
    assert ob.gpu_check(none, pci_gpus=0).detail == ob.CPU_ONLY
    assert ob.gpu_check(none, pci_gpus=1).status == "missing"
    assert ob.gpu_check(one).status == "ok" and "550.54" in ob.gpu_check(one).detail
    nothing = lambda name: None  # noqa: E731
    assert ob.docker_check(None, "", which=nothing).fix == ob.FIX_DOCKER
    assert ob.toolkit_check(one, {"Runtimes": {"runc": {}}}, which=nothing).fix.startswith(
        "sudo apt-get install nvidia-container-toolkit && sudo nvidia-ctk runtime configure --runtime=docker")
    assert ob.toolkit_check(one, {"Runtimes": {"nvidia": {}}}, which=nothing).status == "ok"
    assert ob.toolkit_check(none, None).status == "n/a"
    assert ob.bwrap_check(lambda: (False, "bubblewrap (bwrap) is not installed")).fix == ob.FIX_BWRAP


def test_price_suggestion_and_next_steps():
    view = jobs_pb2.MarketView(classes=[jobs_pb2.GpuClassMarket(key="cpu", providers=3, price_p50="120",
                                                                price_p10="100")])
    up = ob.CoordinatorInfo("c:1", True, market=view, settles=False)
    assert ob.suggest_price("cpu", up).price_per_hour == 120
    assert ob.suggest_price("cpu", up, flag=7).price_per_hour == 7  # --price wins
    absent = ob.suggest_price("h100", up)
    assert absent.price_per_hour == 0 and "no connected provider offers class h100" in absent.note
    down = ob.suggest_price("cpu", ob.CoordinatorInfo("c:1", False, "refused"))
    assert down.price_per_hour == 0 and "not reachable" in down.note
    assert ob.next_steps(up).commands == ("gpumesh provider run",)
    paid = ob.CoordinatorInfo("c:1", True, settles=True, min_stake=10)
    assert ob.next_steps(paid, data_dir=Path("/d")).commands == (
        "gpumesh provider stake -c c:1 --data-dir /d", "gpumesh provider run --data-dir /d")


def test_the_config_renders_any_name_as_valid_toml(tmp_path):
    values = {"coordinator": "c:1", "name": 'a "b" \\ ünï\x7f\n', "price_per_hour": 3, "slots": 1,
              "runtime": "bwrap", "data_dir": str(tmp_path)}
    text = ob.render_config(values, now=0)
    assert tomllib.loads(text) == values


# ---- against a real coordinator ------------------------------------------------------------------


class _Daemon(DaemonThread):
    """A CPU provider daemon in this process, connected to ``target``."""

    def __init__(self, target: str, data: Path, price: int) -> None:
        from provider_node.node import build_daemon

        settings = ProviderSettings(coordinator=target, data_dir=data, name="cpu-ask", price_per_hour=price,
                                    runtime="process", unisolated=True, threads_per_task=1, reconnect_max_s=1.0)
        super().__init__(build_daemon(settings))


def test_the_suggested_price_is_the_connected_cpu_providers_ask(server, home, tmp_path):
    """Needs the coordinator's GetMarket: the median ask of the one verified CPU provider."""
    from gpumesh.client import Client

    daemon = _Daemon(server.target, tmp_path / "provider", price=1234)
    try:
        with Client.connect(server.target) as client:
            deadline = time.monotonic() + 30
            while not any(c.key == "cpu" and c.price_p50 for c in client.market().classes):
                assert time.monotonic() < deadline, client.market()
                time.sleep(0.2)
        result = _init(home, "-c", server.target, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["coordinator"]["reachable"] and report["coordinator"]["settles"] is False
        assert report["price"] == {"price_per_hour": 1234, "source": "market", "class": "cpu", "market_p50": 1234,
                                   "market_p10": 1234, "providers": 1, "note": report["price"]["note"]}
        assert ProviderSettings().price_per_hour == 1234
    finally:
        daemon.stop()
