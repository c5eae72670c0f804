"""The sandbox boundary, tried as an attacker with code execution inside it would.

A real workload (``tests/adversaries/escape.py``) runs through the provider's executor in each real
runtime (bwrap, Docker where dockerd runs, and the plain process runtime: the host-side reader
must hold even with no sandbox at all) and plants what a future loader bug could: a link to the
provider's wallet key as its output, a hard link, a FIFO, a socket, an output over the limit, a
linked result file, and fine-tune results naming absolute or climbing paths or linked
directories. Each must fail the task (retryably: the provider's fault), upload nothing, and never
let the key leave its file.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from gpumesh.artifacts.blockstore import EmbeddedBlockstore
from gpumesh.identity import provider_key_path
from gpumesh.tarball import pack_dir
from gpumesh.v1 import provider_pb2
from provider_node.executor import TaskExecutor
from provider_node.hardware import HardwareInfo
from provider_node.model_cache import ModelCache
from provider_node.runtime import BwrapRuntime, ProcessRuntime
from provider_node.sandbox_io import Limits, SandboxOutput, SandboxViolation
from provider_node.secret_files import load_wallet

ESCAPE = Path(__file__).parent / "adversaries" / "escape.py"
LIMITS = Limits(max_file_bytes=256 * 1024, max_tree_bytes=1 << 20, max_files=64)
HARDWARE = HardwareInfo(gpus=(), cpu_count=2, memory_total_mb=4096, cpu_model="test", platform="linux")

# plant -> (task kind, what the refusal says)
PLANTS = {
    "symlink": ("inference", "is a symbolic link"),
    "hardlink": ("inference", "hard links"),
    "fifo": ("inference", "is a FIFO"),
    "socket": ("inference", "is a socket"),
    "oversize": ("inference", "over the 262144-byte limit"),
    "symlink_result": ("inference", "result.json is a symbolic link"),
    "abs_path": ("finetune", "is not a relative name inside the output directory"),
    "dotdot_path": ("finetune", "is not a relative name inside the output directory"),
    "symlink_checkpoint": ("finetune", "out/checkpoints/step-000001 is a symbolic link"),
    "symlink_final": ("finetune", "out/final is a symbolic link"),
}


@pytest.fixture(scope="module")
def plugin_dir():
    """The attacker as an importable module, where every runtime mounts it (a directory on
    ``sys.path``, world-readable so Docker's unprivileged user can read it too)."""
    root = Path(tempfile.mkdtemp(prefix="gpumesh-plugin-", dir="/tmp"))
    root.chmod(0o755)
    shutil.copy(ESCAPE, root / "gm_escape.py")
    (root / "gm_escape.py").chmod(0o644)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_runtime(tmp_path_factory):
    from provider_node.runtime.docker import DockerOptions, DockerRuntime
    from provider_node.runtime.rootfs import build_rootfs, import_rootfs, mapped_libraries
    from tests.dockerd import start_dockerd

    daemon, why = start_dockerd(tmp_path_factory.mktemp("dockerd"))
    if daemon is None:
        pytest.skip(f"dockerd cannot start here: {why}")
    try:
        client = daemon.client()
        image = import_rootfs(client, build_rootfs(mapped_libraries(), label="gpumesh boundary test base"))
        yield DockerRuntime(DockerOptions(image=image, host_env=True, memory_mb=1024), client=client)
    finally:
        daemon.stop()


@pytest.fixture(params=["bwrap", "docker", "process"])
def runtime(request):
    if request.param == "bwrap":
        ok, why = BwrapRuntime.available()
        if not ok:
            pytest.skip(why)
        return BwrapRuntime()
    if request.param == "docker":
        return request.getfixturevalue("docker_runtime")
    return ProcessRuntime()


class Provider:
    """A provider's real layout: its key in data/keys (0600 in 0700), work and models beside it."""

    def __init__(self, root: Path, runtime, plugin_dir: Path, tiny_model: Path) -> None:
        self.data = root / "provider"
        self.key_file = provider_key_path(self.data)
        self.wallet = load_wallet(self.key_file)
        self.key_hex = self.key_file.read_text().strip()
        self.store = EmbeddedBlockstore(root / "blocks")
        self.model = self.store.put_file(tiny_model)
        self.input = self.store.put_bytes(b'{"id": "0", "prompt": "hello"}\n')
        self.runtime, self.plugin_dir = runtime, plugin_dir

    def run(self, plant: str, kind: str, **config) -> provider_pb2.ProviderMessage:
        env = {"PYTHONPATH": str(self.plugin_dir),
               "GPUMESH_ADVERSARY": json.dumps({"plant": plant, "target": str(self.key_file), **config})}
        executor = TaskExecutor(
            artifacts=self.store, models=ModelCache(self.data / "models", self.store, max_bytes=1 << 30),
            runtime=self.runtime, wallet=self.wallet, hardware=HARDWARE, work_dir=self.data / "work", threads=1,
            workloads={"inference": "gm_escape", "finetune": "gm_escape"}, workload_env=env, limits=LIMITS)
        lease = provider_pb2.TaskLease(lease_id=f"lease-{plant}", task_id=f"task-{plant}", job_id="job-1", kind=kind,
                                       model_cid=self.model, input_cid=self.input, params_json="{}", timeout_s=120)
        return asyncio.run(executor.execute(lease))

    def blocks(self) -> set[Path]:
        return {p for p in self.store.root.rglob("*") if p.is_file()}

    def leaked(self) -> list[Path]:
        """Blocks holding the key (as hex, or its raw bytes)."""
        raw = bytes.fromhex(self.key_hex.removeprefix("0x"))
        return [p for p in self.blocks() if self.key_hex.encode() in (b := p.read_bytes()) or raw in b]


@pytest.mark.parametrize("plant", PLANTS)
def test_a_planted_output_fails_the_task_uploads_nothing_and_the_key_stays_put(runtime, plant, plugin_dir,
                                                                               tiny_model, tmp_path):
    provider = Provider(tmp_path, runtime, plugin_dir, tiny_model)
    kind, says = PLANTS[plant]
    before = provider.blocks()
    reply = provider.run(plant, kind, bytes=LIMITS.max_file_bytes + 1)
    assert reply.WhichOneof("body") == "failure", f"{plant} on {runtime.name}: uploaded {reply.result.output_cid}"
    error = reply.failure.error
    if plant == "hardlink" and runtime.name == "docker":
        # nobody (the container's user) may not link the daemon's files (protected_hardlinks): nothing planted
        assert "hard links" in error or "is missing" in error, error
    else:
        assert says in error, error
    assert "workload output refused" in error and reply.failure.retryable  # the provider's fault: another may retry
    assert provider.blocks() - before == set(), "something was uploaded"
    assert provider.leaked() == []
    assert provider.key_hex not in error
    # The key is where it was, as it was: private, one link, never read into the work directory.
    st = os.lstat(provider.key_file)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_nlink == 1
    assert not any((provider.data / "work").iterdir()), "the task directory is removed"


def test_an_honest_run_of_the_same_workload_still_uploads(runtime, plugin_dir, tiny_model, tmp_path):
    """The checks refuse what is wrong, not everything: a plain file output goes through."""
    provider = Provider(tmp_path, runtime, plugin_dir, tiny_model)
    reply = provider.run("oversize", "inference", bytes=1000)  # a regular file, within the limit
    assert reply.WhichOneof("body") == "result", reply.failure.error
    assert provider.store.get_bytes(reply.result.output_cid) == bytes(1000)


# ---- the reader itself ----------------------------------------------------------------------------


@pytest.fixture
def work(tmp_path) -> Path:
    root = tmp_path / "work"
    (root / "out" / "sub").mkdir(parents=True)
    (root / "out" / "a.txt").write_text("a")
    (root / "out" / "sub" / "b.bin").write_bytes(b"\x00" * 100)
    (root / "report.json").write_text('{"ok": true}')
    return root


def test_a_clean_tree_packs_exactly_as_pack_dir(work):
    out = SandboxOutput(work, LIMITS)
    assert out.tree("out") == [("a.txt", 1), ("sub/b.bin", 100)]
    assert b"".join(out.pack("out")) == pack_dir(work / "out")
    assert out.read_json("report.json") == {"ok": True}
    assert out.read_json("missing.json") == {}  # no report: the exit code tells


@pytest.mark.parametrize("make,says", [
    (lambda w, s: os.symlink(s, w / "out" / "sub" / "key"), "is a symbolic link"),
    (lambda w, s: os.link(s, w / "out" / "sub" / "key"), "hard links"),
    (lambda w, s: os.mkfifo(w / "out" / "pipe"), "is a FIFO"),
    (lambda w, s: socket.socket(socket.AF_UNIX).bind(str(w / "out" / "sock")), "is a socket"),
    (lambda w, s: os.symlink(s.parent, w / "out" / "linked"), "is a symbolic link"),
    (lambda w, s: (w / "out" / "big").write_bytes(bytes(LIMITS.max_file_bytes + 1)), "over the"),
    (lambda w, s: [(w / "out" / f"f{i}").write_text("x") for i in range(LIMITS.max_files)], "more than 64 files"),
])
def test_anything_but_plain_files_and_directories_is_refused_before_a_byte_is_read(work, tmp_path, make, says):
    secret = tmp_path / "secret" / "wallet.key"
    secret.parent.mkdir()
    secret.write_text("0xsecret")
    make(work, secret)
    out = SandboxOutput(work, LIMITS)
    for read in (out.tree, out.pack, lambda n: out.adopt(n, tmp_path / "adopted")):
        with pytest.raises(SandboxViolation, match=says):
            read("out")
    assert not (tmp_path / "adopted").exists()


def test_a_linked_directory_on_the_way_to_a_file_is_refused(work, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "wallet.key").write_text("0xsecret")
    os.symlink(secret, work / "keys")
    out = SandboxOutput(work, LIMITS)
    with pytest.raises(SandboxViolation, match="keys is a symbolic link, not a directory"):
        list(out.chunks("keys/wallet.key"))
    for name in ("/etc/passwd", "../secret/wallet.key", "out/../../secret/wallet.key", ""):
        with pytest.raises(SandboxViolation, match="relative"):
            list(out.chunks(name))


def test_a_file_that_grows_after_its_check_is_cut_off(work):
    out = SandboxOutput(work, Limits(max_file_bytes=10))
    chunks = out.chunks("out/a.txt", size=4)
    with open(work / "out" / "a.txt", "ab") as f:  # a leftover writer appends after the check
        f.write(b"y" * 20)
    with pytest.raises(SandboxViolation, match="grew over its size limit"):
        b"".join(chunks)


def test_gguf_conversion_output_is_adopted_only_when_clean(work, tmp_path):
    out = SandboxOutput(work, LIMITS)
    out.adopt("out", tmp_path / "hf")
    assert sorted(p.name for p in (tmp_path / "hf").rglob("*")) == ["a.txt", "b.bin", "sub"]
