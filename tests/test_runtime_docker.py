"""The Docker runtime against a real dockerd: isolation actually enforced inside the container,
timeout and cancellation kill it, memory limits OOM-kill, image pins checked, and a real
inference task run in an image imported from a local rootfs."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import pytest

from gpumesh.errors import FailedPrecondition, InvalidArgument
from provider_node.runtime import RunSpec
from provider_node.runtime.docker import OWNER_LABEL, DockerOptions, DockerRuntime, resolve_image
from tests.dockerd import start_dockerd
from tests.test_e2e import _check_outputs, _submit, expected  # noqa: F401 - a fixture

log = logging.getLogger(__name__)
ID = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory):
    daemon, why = start_dockerd(tmp_path_factory.mktemp("dockerd"))
    if daemon is None:
        print(f"docker tests skipped: {why}", file=sys.stderr)
        pytest.skip(f"dockerd cannot start here: {why}")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def client(dockerd):
    return dockerd.client()


@pytest.fixture(scope="module")
def base_image(client) -> str:
    """The host-env base (system libraries only) imported from a rootfs built on this host."""
    from provider_node.runtime.rootfs import build_rootfs, import_rootfs, mapped_libraries

    return import_rootfs(client, build_rootfs(mapped_libraries(), label="gpumesh test base"))


def runtime(client, image: str, **kw) -> DockerRuntime:
    return DockerRuntime(DockerOptions(image=image, host_env=True, **kw), client=client)


def py(code: str, workdir: Path, **kw) -> RunSpec:
    return RunSpec(argv=(sys.executable, "-c", code), workdir=workdir, **kw)


def run(rt: DockerRuntime, spec: RunSpec):
    return asyncio.run(rt.run(spec))


def task_dir(tmp_path: Path) -> Path:
    workdir = tmp_path / "work" / "lease-1"
    workdir.mkdir(parents=True)
    return workdir


def left_behind(client, workdir: Path) -> list:
    return client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={workdir.parent.resolve()}"})


# -- configuration (no daemon) ----------------------------------------------------------------


@pytest.mark.parametrize("image", ["gpumesh-worker-torch:cpu", "python:3.11@sha256:abc", "latest", "sha256:" + "A" * 64])
def test_unpinned_images_are_refused(image):
    with pytest.raises(InvalidArgument, match="not pinned") as err:
        DockerOptions(image=image)
    assert err.value.field == "docker_image"


@pytest.mark.parametrize("user", ["0", "0:0", "root", "1000:0", ""])
def test_root_or_named_users_are_refused(user):
    with pytest.raises(InvalidArgument) as err:
        DockerOptions(image=ID, user=user)
    assert err.value.field == "docker_user"


def test_container_config_carries_every_restriction(tmp_path, monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/nvidia/lib64")  # the host's, not the image's
    workdir, model = task_dir(tmp_path), tmp_path / "models" / "m"
    model.mkdir(parents=True)
    rt = DockerRuntime(DockerOptions(image=f"ghcr.io/x/worker@{ID}", memory_mb=3000, pids_limit=99, scratch_mb=10))
    spec = RunSpec(argv=("python", "-m", "w"), workdir=workdir, ro_paths=(model,), gpus=(2, 3), env={"A": "1"})
    config = rt.container_config(spec, ID)
    assert config["image"] == ID and config["command"] == ["python", "-m", "w"]
    assert config["network_mode"] == "none" and config["read_only"] is True
    assert config["cap_drop"] == ["ALL"] and config["security_opt"] == ["no-new-privileges"]
    assert config["user"] == "65534:65534"
    assert config["mem_limit"] == config["memswap_limit"] == "3000m" and config["pids_limit"] == 99
    assert "size=10m" in config["tmpfs"]["/tmp"]
    [gpu] = config["device_requests"]
    assert gpu["Driver"] == "nvidia" and gpu["DeviceIDs"] == ["2", "3"] and gpu["Capabilities"] == [["gpu"]]
    env = config["environment"]
    assert "CUDA_VISIBLE_DEVICES" not in env and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["HOME"] == env["TMPDIR"] == "/tmp" and env["A"] == "1"
    assert "PATH" not in env and "LD_LIBRARY_PATH" not in env  # the image's own
    mounts = {m["Target"]: m["ReadOnly"] for m in config["mounts"]}
    assert mounts == {str(model.resolve()): True, str(workdir.resolve()): False}
    assert rt.python == "python"
    # A task's own memory limit wins over the runtime default.
    assert rt.container_config(RunSpec(argv=("x",), workdir=workdir, memory_limit_mb=64), ID)["mem_limit"] == "64m"


def test_host_env_mounts_the_interpreter_read_only(tmp_path):
    rt = DockerRuntime(DockerOptions(image=ID, host_env=True))
    config = rt.container_config(RunSpec(argv=("x",), workdir=task_dir(tmp_path)), ID)
    readonly = [Path(m["Target"]) for m in config["mounts"] if m["ReadOnly"]]
    assert any(Path(sys.prefix).resolve() == p or p in Path(sys.prefix).resolve().parents for p in readonly)
    assert rt.python == sys.executable and "PATH" in config["environment"]


# -- against dockerd --------------------------------------------------------------------------

PROBE = r"""
import json, os, socket
def read(*paths):
    for p in paths:
        try:
            return open(p).read().strip()
        except OSError:
            pass
status = dict(l.split(':', 1) for l in open('/proc/self/status'))
out = {'uid': os.getuid(), 'gid': os.getgid(), 'cap_eff': status['CapEff'].strip(),
       'no_new_privs': status['NoNewPrivs'].strip(), 'nets': sorted(os.listdir('/sys/class/net')),
       'marker': read('/etc/gpumesh-base'), 'home': os.environ['HOME'],
       'memory': read('/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory.max'),
       'pids': read('/sys/fs/cgroup/pids/pids.max', '/sys/fs/cgroup/pids.max'),
       'secret_visible': os.path.exists(SECRET), 'usr_bin': os.path.exists('/usr/bin/python3')}
for name, path in (('root', '/escape'), ('usr', '/usr/escape'), ('scratch', '/tmp/ok'), ('work', 'ok')):
    try:
        open(path, 'w').write('x'); out[name + '_writable'] = True
    except OSError:
        out[name + '_writable'] = False
try:
    socket.create_connection(('1.1.1.1', 53), timeout=2); out['net'] = True
except OSError:
    out['net'] = False
print(json.dumps(out))
"""


def test_isolation_is_enforced_inside_the_container(client, base_image, tmp_path):
    workdir = task_dir(tmp_path)
    secret = workdir.parent / "wallet.key"  # beside the task directory, like the provider's key
    secret.write_text("0xdeadbeef")
    rt = runtime(client, base_image, memory_mb=256, pids_limit=64)
    result = run(rt, py(f"SECRET = {str(secret)!r}\n" + PROBE, workdir))
    assert result.exit_code == 0, result.stderr_tail
    got = json.loads(result.stdout_tail.strip().splitlines()[-1])
    assert (got["uid"], got["gid"]) == (65534, 65534)
    assert int(got["cap_eff"], 16) == 0 and got["no_new_privs"] == "1"
    assert got["nets"] == ["lo"] and got["net"] is False
    assert got["marker"] == "gpumesh test base"  # the image's root, not the host's
    assert got["usr_bin"] is False and got["secret_visible"] is False
    assert got["root_writable"] is False and got["usr_writable"] is False
    assert got["scratch_writable"] is True and got["work_writable"] is True and got["home"] == "/tmp"
    assert got["memory"] == str(256 * 1024 * 1024) and got["pids"] == "64"
    assert (workdir / "ok").read_text() == "x"
    assert left_behind(client, workdir) == []


def test_exit_code_and_output_come_back(client, base_image, tmp_path):
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    result = run(runtime(client, base_image), py(code, task_dir(tmp_path)))
    assert (result.exit_code, result.timed_out) == (3, False)
    assert result.stdout_tail.strip() == "out" and result.stderr_tail.strip() == "err"


def test_timeout_kills_the_container(client, base_image, tmp_path):
    workdir = task_dir(tmp_path)
    started = time.monotonic()
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(120)"
    result = run(runtime(client, base_image), py(code, workdir, timeout_s=3))
    assert result.timed_out and result.exit_code == -9
    assert "up" in result.stdout_tail
    assert time.monotonic() - started < 30
    assert left_behind(client, workdir) == []


def test_cancellation_kills_and_removes_the_container(client, base_image, tmp_path):
    workdir = task_dir(tmp_path)
    rt = runtime(client, base_image)

    async def scenario():
        task = asyncio.create_task(rt.run(py("import time; open('started', 'w'); time.sleep(120)", workdir)))
        while not (workdir / "started").exists():
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 90))
    assert left_behind(client, workdir) == []


def test_memory_limit_oom_kills(client, base_image, tmp_path):
    code = "x = bytearray(512 * 1024 * 1024); x[::4096] = b'x' * len(x[::4096]); print('survived')"
    result = run(runtime(client, base_image, memory_mb=96), py(code, task_dir(tmp_path)))
    assert result.exit_code == -9 and not result.timed_out
    assert "survived" not in result.stdout_tail and "out of memory" in result.stderr_tail


def test_pins_are_checked_against_what_docker_holds(client, base_image):
    assert resolve_image(client, base_image) == base_image
    with pytest.raises(FailedPrecondition, match="not present") as err:
        resolve_image(client, ID)
    assert err.value.field == "docker_image"
    ok, why = runtime(client, ID).available()
    assert not ok and "not present" in why
    assert runtime(client, base_image).available() == (True, "")


def test_stale_containers_of_a_crashed_daemon_are_removed(client, base_image, tmp_path):
    workdir = task_dir(tmp_path)
    rt = runtime(client, base_image)
    client.containers.create(**rt.container_config(py("pass", workdir), base_image))
    assert len(left_behind(client, workdir)) == 1
    assert rt.remove_stale(workdir.parent) == 1
    assert left_behind(client, workdir) == []


def test_a_real_inference_task_runs_in_the_container(client, base_image, tiny_model, tmp_path):
    """The provider's executor runs a leased task in the container; the output equals the same
    task run as a plain process (greedy decoding is deterministic)."""
    from gpumesh.artifacts.blockstore import EmbeddedBlockstore
    from gpumesh.identity import Wallet
    from gpumesh.v1 import provider_pb2
    from provider_node.executor import TaskExecutor
    from provider_node.hardware import HardwareInfo
    from provider_node.model_cache import ModelCache
    from provider_node.runtime import ProcessRuntime

    store = EmbeddedBlockstore(tmp_path / "blocks")
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": str(i), "prompt": p}) + "\n" for i, p in enumerate(["Hi", "GPU", "a b c"])))
    lease = provider_pb2.TaskLease(
        lease_id="lease-docker", task_id="t1", job_id="j1", kind="inference",
        model_cid=store.put_file(tiny_model), input_cid=store.put_file(prompts),
        params_json=json.dumps({"max_new_tokens": 8}), timeout_s=300,
    )
    hardware = HardwareInfo(gpus=(), cpu_count=2, memory_total_mb=4096, cpu_model="test", platform="linux")

    def execute(rt, name):
        executor = TaskExecutor(
            artifacts=store, models=ModelCache(tmp_path / name / "models", store, max_bytes=1 << 30),
            runtime=rt, wallet=Wallet.generate(), hardware=hardware, work_dir=tmp_path / name / "work", threads=1,
        )
        return asyncio.run(executor.execute(lease))

    in_docker = execute(runtime(client, base_image, memory_mb=2048), "docker")
    assert in_docker.WhichOneof("body") == "result", in_docker.failure.error
    metrics = json.loads(in_docker.result.metrics_json)
    assert metrics["runtime"] == "docker" and metrics["isolated"] is True and metrics["tokens_per_s"] > 0
    plain = execute(ProcessRuntime(), "process")
    assert plain.result.output_cid == in_docker.result.output_cid
    assert not any((tmp_path / "docker" / "work").iterdir())  # the task directory is cleaned up


def test_a_job_runs_end_to_end_on_a_docker_provider(client, dockerd, base_image, tiny_model, expected, tmp_path):
    """`gpumesh provider run --runtime docker`: the whole marketplace path, tasks in containers."""
    from gpumesh.client import Client
    from gpumesh.localnet import LocalNetwork

    env = {"GPUMESH_PROVIDER_DOCKER_IMAGE": base_image, "GPUMESH_PROVIDER_DOCKER_HOST_ENV": "true",
           "GPUMESH_PROVIDER_DOCKER_URL": dockerd.url, "GPUMESH_PROVIDER_DOCKER_MEMORY_MB": "2048"}
    with LocalNetwork(tmp_path / "net", lease_ttl_s=3, heartbeat_interval_s=0.5) as net:
        net.start_coordinator({"GPUMESH_COORDINATOR_VERIFY": "false"})
        net.start_provider("docked", runtime="docker", threads=1, extra_env=env)
        net.wait_providers(1)
        with Client.connect(net.target) as sdk:
            job_id = _submit(sdk, tiny_model)
            states = [s.state for s in sdk.watch(job_id, timeout=240)]
            assert states[-1] == "COMPLETED", sdk.get_job(job_id).error
            _check_outputs(sdk, job_id, expected)
            job = sdk.get_job(job_id).raw
            assert {json.loads(t.metrics_json)["runtime"] for t in job.tasks} == {"docker"}
            [info] = sdk.list_providers()
            assert info.runtime == "docker" and info.isolated
