"""SkyPilot provisioner: task YAML against SkyPilot's schema, launch keys, and a stand-in ``sky``."""

from __future__ import annotations

import enum
import shlex
import stat
import sys
import types
from pathlib import Path

import pytest
import yaml

from coordinator.fallback import (
    GPU_CATALOG,
    CapacityRequest,
    FallbackUnavailable,
    LaunchState,
    NoMatchingAccelerator,
    NullProvisioner,
    SkyPilotConfig,
    SkyPilotProvisioner,
    task_yaml_problems,
    validate_task_yaml,
)
from gpumesh.errors import GpumeshError, InvalidArgument, Unavailable
from gpumesh.identity import Wallet
from gpumesh.jobspec import Requirements

TARGET = "coord.example.com:50051"

# The subset of SkyPilot's task and resources JSON schemas (sky/utils/schemas.py,
# get_task_schema / get_resources_schema) for the fields gpumesh emits; unknown keys rejected.
_SINGLE_ACCEL = {"anyOf": [{"type": "string"},
                           {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "number"}}]}
_RESOURCE_PROPS = {
    "cloud": {"type": "string"}, "region": {"type": "string"}, "zone": {"type": "string"},
    "infra": {"type": "string"}, "cpus": {"anyOf": [{"type": "string"}, {"type": "number"}]},
    "memory": {"anyOf": [{"type": "string"}, {"type": "number"}]}, "instance_type": {"type": "string"},
    "use_spot": {"type": "boolean"}, "disk_size": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    "image_id": {"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}]},
    "ports": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "array"}, {"type": "null"}]},
}
SKY_RESOURCES_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        **_RESOURCE_PROPS,
        "accelerators": {"anyOf": [
            {"type": "string"},
            {"type": "object", "additionalProperties": {"anyOf": [{"type": "null"}, {"type": "number"}]}},
            {"type": "array", "items": {"type": "string"}}]},
        "any_of": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                              "properties": {**_RESOURCE_PROPS, "accelerators": _SINGLE_ACCEL}}},
    },
}
SKY_TASK_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "name": {"type": "string"}, "workdir": {"type": "string"}, "num_nodes": {"type": "integer"},
        "resources": SKY_RESOURCES_SCHEMA, "file_mounts": {"type": "object"}, "setup": {"type": "string"},
        "run": {"type": "string"},
        "envs": {"type": "object", "patternProperties": {"^[a-zA-Z_][a-zA-Z0-9_]*$": {"type": ["string", "null"]}},
                 "additionalProperties": False},
    },
}


def check_schema(task: dict) -> None:
    """Both validators: ours (in the module) and jsonschema over SkyPilot's own schema subset."""
    validate_task_yaml(task)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(task, SKY_TASK_SCHEMA)


@pytest.fixture
def prov(tmp_path) -> SkyPilotProvisioner:
    return SkyPilotProvisioner(SkyPilotConfig(coordinator_target=TARGET, data_dir=tmp_path / "fb", slots=2,
                                              operator="acme-ops", price_per_hour=150, cloud="aws",
                                              region="us-east-1", use_spot=True), clock=lambda: 1000.0)


def req(**kw) -> CapacityRequest:
    return CapacityRequest(requirements=Requirements(**kw), count=3, reason="deadline at risk", task_ids=("t1",))


def test_named_gpu_model_gives_one_accelerator(prov):
    task = prov.task_yaml(req(gpu_count=1, gpu_models=("H100",)))
    check_schema(task)
    res = task["resources"]
    assert res["accelerators"] == "H100:1"
    assert (res["cloud"], res["region"], res["use_spot"]) == ("aws", "us-east-1", True)
    assert task["num_nodes"] == 1 and task["name"].startswith("gm-")
    assert "cpus" not in res


def test_vram_only_gives_a_set_of_big_enough_gpus(prov):
    task = prov.task_yaml(req(gpu_count=2, min_vram_mb=40000))
    check_schema(task)
    accels = task["resources"]["accelerators"]
    vram = dict(GPU_CATALOG)
    assert isinstance(accels, dict) and set(accels.values()) == {2}
    assert {"A100", "A100-80GB", "H100", "H200", "L40S"} == set(accels)
    assert all(vram[name] >= 40000 for name in accels)  # T4, L4, A10G left out


def test_several_models_are_an_ordered_list_filtered_by_vram(prov):
    task = prov.task_yaml(req(gpu_count=1, gpu_models=("A100", "H100"), min_vram_mb=80000))
    check_schema(task)
    assert task["resources"]["accelerators"] == ["A100-80GB:1", "H100:1"]
    # a model the catalog does not know is passed through as the submitter wrote it
    assert prov.task_yaml(req(gpu_count=1, gpu_models=("MI300X",)))["resources"]["accelerators"] == "MI300X:1"


def test_cpu_only_gives_cpus_and_memory(prov):
    task = prov.task_yaml(req(gpu_count=0, allow_cpu=True, min_memory_mb=16000))
    check_schema(task)
    res = task["resources"]
    assert "accelerators" not in res
    assert res["cpus"] == "4+" and res["memory"] == "16+"


def test_allow_cpu_false_means_one_gpu(prov):
    task = prov.task_yaml(req(gpu_count=0, allow_cpu=False, min_vram_mb=100000))
    assert task["resources"]["accelerators"] == "H200:1"


def test_unsatisfiable_requirements_are_a_clear_non_retryable_error(prov):
    with pytest.raises(NoMatchingAccelerator, match="no known accelerator satisfies") as err:
        prov.task_yaml(req(gpu_count=1, gpu_models=("T4",), min_vram_mb=40000))
    assert err.value.retryable is False and isinstance(err.value, Unavailable)


def test_rendered_yaml_parses_back_to_the_same_task(prov):
    request = req(gpu_count=1, gpu_models=("H100",))
    text = prov.render(request)
    assert "setup: |" in text and "run: |" in text  # literal blocks, readable
    assert yaml.safe_load(text) == prov.task_yaml(request)  # the same key and names each time
    check_schema(yaml.safe_load(text))


def test_run_starts_a_centralized_provider_with_the_real_cli_flags(prov):
    from gpumesh.cli.main import main

    request = req(gpu_count=1, gpu_models=("H100",))
    task = prov.task_yaml(request)
    line = next(ln for ln in task["run"].splitlines() if "gpumesh provider run" in ln)
    words = shlex.split(line.split("||")[0])
    argv = words[words.index("gpumesh") + 3:]
    ctx = main.commands["provider"].commands["run"].make_context("run", argv)  # raises on an unknown flag
    p = ctx.params
    assert p["tier"] == "centralized" and p["target"] == TARGET
    assert p["name"] == prov.cluster_name(request) and p["slots"] == 2
    assert p["operator"] == "acme-ops" and p["price_per_hour"] == 150
    assert str(p["data_dir"]) == "$HOME/.gpumesh/provider"
    assert line.lstrip().startswith("timeout --signal=INT")  # max_runtime_minutes bounds the daemon
    assert task["envs"]["GPUMESH_COORDINATOR"] == TARGET


def test_setup_installs_the_wheel_when_given(tmp_path):
    wheel = tmp_path / "gpumesh-0.1-py3-none-any.whl"
    prov = SkyPilotProvisioner(SkyPilotConfig(coordinator_target=TARGET, data_dir=tmp_path / "fb", wheel=wheel,
                                              setup_commands=("sudo apt-get install -y bubblewrap",),
                                              max_runtime_minutes=0, workdir=tmp_path))
    task = prov.task_yaml(req(gpu_count=1, gpu_models=("L4",)))
    check_schema(task)
    assert task["file_mounts"]["~/.gpumesh/wheels/" + wheel.name] == str(wheel)
    setup = task["setup"].splitlines()
    assert "pip install gpumesh" not in setup and f"pip install ~/.gpumesh/wheels/{wheel.name}" in setup
    assert setup.index("sudo apt-get install -y bubblewrap") < setup.index(f"pip install ~/.gpumesh/wheels/{wheel.name}")
    assert "timeout" not in task["run"] and "exec gpumesh provider run" in task["run"]
    assert task["workdir"] == str(tmp_path)


def test_each_launch_gets_its_own_0600_key_mounted_to_the_provider_key_path(prov):
    a, b = req(gpu_count=1, gpu_models=("H100",)), req(gpu_count=1, gpu_models=("H100",))
    task = prov.task_yaml(a)
    path = prov.key_file(a)
    assert task["file_mounts"] == {"~/.gpumesh/provider/keys/wallet.key": str(path)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert Wallet.from_hex(path.read_text()).address == prov.wallet(a).address
    prov.task_yaml(b)
    assert prov.key_file(b) != path and prov.wallet(b).address != prov.wallet(a).address


def test_config_rejects_targets_a_cloud_node_cannot_reach(tmp_path):
    for bad in ("127.0.0.1:50051", "localhost:50051", "0.0.0.0:1", "coord", "coord:99999", "[::1]:5"):
        with pytest.raises(ValueError):
            SkyPilotConfig(coordinator_target=bad)
    with pytest.raises(ValueError):
        SkyPilotConfig(coordinator_target=TARGET, name_prefix="Bad_Prefix")
    with pytest.raises(ValueError):
        SkyPilotConfig(coordinator_target=TARGET, surprise=1)


def test_validator_catches_what_skypilot_rejects():
    good = {"name": "x", "num_nodes": 1, "resources": {"accelerators": "H100:1"}, "run": "echo"}
    assert task_yaml_problems(good) == []
    bad = {
        "name": "x", "nodes": 2, "num_nodes": 0,
        "resources": {"gpus": "H100", "use_spot": "yes", "cpus": "many",
                      "any_of": [{"accelerators": {"A100": 1, "H100": 1}}]},
        "envs": {"1BAD": "v", "PORT": 8080},
        "file_mounts": {"/k": 5},
    }
    problems = "\n".join(task_yaml_problems(bad))
    for expected in ("nodes: not a SkyPilot task field", "num_nodes: must be >= 1",
                     "resources.gpus: not a SkyPilot resources field", "resources.use_spot: str is not allowed",
                     "resources.cpus: 'many'", "one accelerator per any_of/ordered entry",
                     "envs.1BAD", "envs.PORT: values must be strings", "file_mounts./k"):
        assert expected in problems
    with pytest.raises(InvalidArgument, match="invalid SkyPilot task"):
        validate_task_yaml(bad)


# ---- launching through a stand-in `sky` ---------------------------------------------------------


class ClusterStatus(enum.Enum):
    UP = "UP"


def fake_sky(monkeypatch, *, raise_on_launch=None, request_ids: bool = True,
             status_records=None) -> types.SimpleNamespace:
    """A small `sky` module: Task.from_yaml_config, launch/status/down returning request ids.

    ``raise_on_launch(exceptions)`` builds the exception `sky.launch` raises."""
    calls = types.SimpleNamespace(tasks=[], launch=[], get=[], stream=[], down=[])
    exc_mod = types.ModuleType("sky.exceptions")
    for name in ("NoCloudAccessError", "ResourcesUnavailableError", "ClusterDoesNotExist"):
        setattr(exc_mod, name, type(name, (Exception,), {}))
    sky = types.ModuleType("sky")
    sky.exceptions = exc_mod

    class Task:
        def __init__(self, config):
            self.config = config

        @classmethod
        def from_yaml_config(cls, config):
            calls.tasks.append(config)
            return cls(config)

    results = {}

    def launch(task, **kw):
        calls.launch.append((task, kw))
        if raise_on_launch is not None:
            raise raise_on_launch(exc_mod)
        results["req-launch"] = (1, "handle")
        return "req-launch" if request_ids else (1, "handle")

    def status(names):
        results["req-status"] = status_records if status_records is not None else []
        return "req-status"

    def down(name):
        calls.down.append(name)
        return "req-down"

    def get(rid):
        calls.get.append(rid)
        return results.get(rid)

    def stream_and_get(rid):
        calls.stream.append(rid)
        return results.get(rid)

    sky.Task, sky.launch, sky.status, sky.down, sky.get, sky.stream_and_get = Task, launch, status, down, get, \
        stream_and_get
    monkeypatch.setitem(sys.modules, "sky", sky)
    monkeypatch.setitem(sys.modules, "sky.exceptions", exc_mod)
    calls.sky = sky
    return calls


def test_launch_without_skypilot_installed_says_how_to_install(prov, monkeypatch):
    monkeypatch.setitem(sys.modules, "sky", None)  # `import sky` raises ImportError
    with pytest.raises(FallbackUnavailable, match=r"SkyPilot is not installed: pip install 'skypilot\[aws\]'") as err:
        prov.launch(req(gpu_count=1, gpu_models=("H100",)))
    assert err.value.retryable is False and isinstance(err.value, GpumeshError)
    assert not (prov.config.data_dir / "keys").exists()  # no key made for a launch that cannot happen


def test_launch_builds_the_task_and_records_the_node_address(prov, monkeypatch):
    calls = fake_sky(monkeypatch)
    request = req(gpu_count=1, gpu_models=("H100",))
    launch = prov.launch(request)
    assert calls.tasks == [prov.task_yaml(request)]
    check_schema(calls.tasks[0])
    (task, kw), = calls.launch
    assert task.config is calls.tasks[0]  # the Task built from our YAML is what was launched
    assert kw["cluster_name"] == prov.cluster_name(request) == launch.cluster_name
    assert kw["down"] is True and kw["idle_minutes_to_autostop"] == 10
    assert calls.stream == ["req-launch"]  # the request id was waited on
    assert launch.state is LaunchState.UP and launch.id == request.request_id
    assert launch.address == Wallet.from_hex(prov.key_file(request).read_text()).address
    assert launch.accelerators == "H100:1" and launch.provisioner == "skypilot" and launch.created_at == 1000.0


def test_launch_with_the_old_api_returning_results_directly(prov, monkeypatch):
    calls = fake_sky(monkeypatch, request_ids=False)
    assert prov.launch(req(gpu_count=0)).state is LaunchState.UP
    assert calls.stream == [] and calls.get == []


def test_no_cloud_access_is_mapped_to_a_clear_reason(prov, monkeypatch):
    fake_sky(monkeypatch, raise_on_launch=lambda ex: ex.NoCloudAccessError("No cloud access available"))
    request = req(gpu_count=1, gpu_models=("H100",))
    with pytest.raises(FallbackUnavailable, match=r"no cloud credentials configured: run `sky check`") as err:
        prov.launch(request)
    assert err.value.retryable is False
    assert not prov.key_file(request).exists()  # the unused key is not left behind


def test_no_capacity_is_retryable(prov, monkeypatch):
    calls = fake_sky(monkeypatch, raise_on_launch=lambda ex: ex.ResourcesUnavailableError("no H100 left"))
    with pytest.raises(FallbackUnavailable, match=r"no cloud capacity for cluster gm-\w+ \(H100:1\)") as err:
        prov.launch(req(gpu_count=1, gpu_models=("H100",)))
    assert err.value.retryable is True
    assert len(calls.launch) == 1


def test_status_and_terminate(prov, monkeypatch):
    fake_sky(monkeypatch, status_records=[{"name": "gm-x", "status": ClusterStatus.UP}])
    launch = prov.launch(req(gpu_count=1, gpu_models=("H100",)))
    assert prov.status(launch) == "UP"
    calls = fake_sky(monkeypatch, status_records=[])
    assert prov.status(launch) == "TERMINATED"
    prov.terminate(launch)
    assert calls.down == [launch.cluster_name] and calls.get[-1] == "req-down"
    assert not Path(launch.key_file).exists()


def test_terminate_of_a_cluster_already_gone_is_not_an_error(prov, monkeypatch):
    calls = fake_sky(monkeypatch)
    launch = prov.launch(req(gpu_count=0))

    def down(name):
        raise calls.sky.exceptions.ClusterDoesNotExist(name)

    calls.sky.down = down
    prov.terminate(launch)  # no raise


def test_null_provisioner_says_no_launcher_is_configured():
    null = NullProvisioner()
    with pytest.raises(FallbackUnavailable, match="no launcher configured") as err:
        null.launch(req(gpu_count=1))
    assert err.value.retryable is False and null.name == "none"


@pytest.mark.parametrize("make, retryable, text", [
    (lambda ex: RuntimeError("ssh timed out"), True, "SkyPilot cluster gm-"),
    (lambda ex: ValueError("Invalid accelerator"), False, "SkyPilot rejected cluster gm-"),
])
def test_other_sky_errors_keep_their_message(prov, monkeypatch, make, retryable, text):
    fake_sky(monkeypatch, raise_on_launch=make)
    with pytest.raises(FallbackUnavailable, match=text) as err:
        prov.launch(req(gpu_count=0))
    assert err.value.retryable is retryable and type(make(None)).__name__ in str(err.value)
    assert list((prov.config.data_dir / "keys").iterdir()) == []
