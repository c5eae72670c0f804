"""A provider refuses to start rather than run workloads beside its secrets: without a sandbox
(unless told --unisolated), with a key others can read, or with its data where workloads see it.
And the coordinator keeps sealed (and isolation-requiring) jobs off unisolated providers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gpumesh.errors import FailedPrecondition
from gpumesh.identity import Wallet, provider_key_path
from provider_node.config import ProviderSettings
from provider_node.hardware import HardwareInfo
from provider_node.node import build_daemon
from provider_node.runtime import BwrapRuntime

HARDWARE = HardwareInfo(gpus=(), cpu_count=2, memory_total_mb=4096, cpu_model="test", platform="linux")


def settings(data: Path, **kw) -> ProviderSettings:
    return ProviderSettings(data_dir=data, coordinator="127.0.0.1:1", **kw)


def test_the_wallet_key_lives_private_in_its_own_directory(tmp_path):
    daemon = build_daemon(settings(tmp_path / "p", runtime="process", unisolated=True), hardware=HARDWARE)
    key = provider_key_path(tmp_path / "p")
    assert daemon.wallet.address == Wallet.from_hex(key.read_text()).address
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert not (tmp_path / "p" / "work").exists() or key.parent not in (tmp_path / "p" / "work").parents


def test_a_key_left_beside_the_work_directory_by_an_older_release_is_moved_in(tmp_path):
    old = Wallet.generate()
    (tmp_path / "p").mkdir()
    legacy = tmp_path / "p" / "wallet.key"
    legacy.write_text(old.private_key.hex())
    legacy.chmod(0o600)
    daemon = build_daemon(settings(tmp_path / "p", runtime="process", unisolated=True), hardware=HARDWARE)
    assert daemon.wallet.address == old.address and not legacy.exists()


@pytest.mark.parametrize("what,mode,says", [("key", 0o644, "chmod 600"), ("key", 0o640, "chmod 600"),
                                            ("dir", 0o755, "chmod 700")])
def test_a_secret_others_can_read_stops_the_daemon(tmp_path, what, mode, says):
    key = provider_key_path(tmp_path / "p")
    Wallet.load_or_create(key)
    (key if what == "key" else key.parent).chmod(mode)
    with pytest.raises(FailedPrecondition, match=says):
        build_daemon(settings(tmp_path / "p", runtime="process", unisolated=True), hardware=HARDWARE)


def test_a_key_where_the_sandbox_mounts_the_host_stops_the_daemon(tmp_path, monkeypatch):
    """bwrap mounts the Python environment (and the CA certificates of /etc/ssl, not its private
    keys) into every task: a TLS key kept in a mounted directory would be every workload's to read."""
    ok, why = BwrapRuntime.available()
    if not ok:
        pytest.skip(why)
    assert Path("/etc/ssl/private") not in BwrapRuntime().visible_paths(tmp_path / "p" / "work")
    mounted = tmp_path / "site"  # a directory on sys.path: mounted into every task
    mounted.mkdir()
    monkeypatch.syspath_prepend(str(mounted))
    assert mounted in BwrapRuntime().visible_paths(tmp_path / "p" / "work")
    (mounted / "provider.key").write_text("-----BEGIN PRIVATE KEY-----")
    (mounted / "provider.key").chmod(0o600)
    (mounted / "provider.crt").write_text("cert")
    with pytest.raises(FailedPrecondition, match="which workloads can read") as err:
        build_daemon(settings(tmp_path / "p", runtime="bwrap", tls_cert_file=mounted / "provider.crt",
                              tls_key_file=mounted / "provider.key"), hardware=HARDWARE)
    assert "the TLS key" in str(err.value)
    # The data directory itself is never mounted: the sandbox leaves out the work directory's ancestors.
    monkeypatch.syspath_prepend(str(tmp_path / "p"))
    build_daemon(settings(tmp_path / "p", runtime="bwrap"), hardware=HARDWARE)


def _provider_run(tmp_path: Path, *flags: str, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path, "GPUMESH_PROVIDER_DATA_DIR": str(tmp_path / "p")}
    return subprocess.run([sys.executable, "-m", "gpumesh", "provider", "run", "-c", "127.0.0.1:1", *flags],
                          env=env, capture_output=True, text=True, timeout=120)


def test_without_a_sandbox_the_daemon_refuses_to_start(tmp_path):
    """The real command, on a PATH without bwrap: auto and bwrap refuse, naming the fix; process
    refuses without --unisolated. Nothing is made but the key."""
    no_bwrap = str(Path(sys.executable).parent)
    for flags in ((), ("--runtime", "auto"), ("--runtime", "bwrap"), ("--runtime", "auto", "--unisolated")):
        done = _provider_run(tmp_path, *flags, path=no_bwrap)
        assert done.returncode == 1, done.stderr
        assert "FailedPrecondition: runtime:" in done.stderr and "apt-get install bubblewrap" in done.stderr
    done = _provider_run(tmp_path, "--runtime", "process", path=no_bwrap)
    assert done.returncode == 1 and "pass --unisolated" in done.stderr
    assert not (tmp_path / "p" / "work").exists()


@pytest.mark.e2e
def test_sealed_and_isolation_requiring_jobs_never_go_to_an_unisolated_provider(tmp_path, tiny_model):
    ok, why = BwrapRuntime.available()
    if not ok:
        pytest.skip(why)
    from gpumesh.client import Client
    from gpumesh.jobspec import JobSpec, Requirements
    from gpumesh.localnet import LocalNetwork

    prompts = "".join(json.dumps({"prompt": p}) + "\n" for p in ("a", "b", "c")).encode()
    with LocalNetwork(tmp_path / "net", lease_ttl_s=5, heartbeat_interval_s=0.5) as net:
        net.start_coordinator({"GPUMESH_COORDINATOR_VERIFY": "false"})
        net.start_provider("bare", runtime="process", threads=1, price=1)  # cheapest: it would win any job
        net.wait_providers(1)
        with Client.connect(net.target, wallet=Wallet.generate()) as client:
            [bare] = client.list_providers()
            assert bare.runtime == "process" and not bare.isolated
            model = client.upload(tiny_model)
            sealed = client.submit(JobSpec(name="sealed", model_cid=model, input_cid=client.upload(prompts, seal=True)))
            boxed = client.submit(JobSpec(name="boxed", model_cid=model, input_cid=client.upload(prompts),
                                          requirements=Requirements(isolated=True)))
            plain = client.submit(JobSpec(name="plain", model_cid=model, input_cid=client.upload(b'{"prompt": "x"}\n')))
            assert plain.wait(timeout=120).state == "COMPLETED"  # the unisolated node does run other work
            for job in (sealed, boxed):
                status = client.get_job(job.id)
                assert status.state == "QUEUED" and status.raw.spec.requirements.isolated
                assert "needs an isolated provider" in status.pending_reason, status.pending_reason
            net.start_provider("sandboxed", runtime="auto", threads=1, price=1000)
            for job in (sealed, boxed):
                done = job.wait(timeout=180)
                assert done.state == "COMPLETED", done.error
                ran_on = {t.provider_id for t in done.raw.tasks}
                assert ran_on and bare.provider_id not in ran_on
