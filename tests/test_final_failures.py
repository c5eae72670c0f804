"""Failures that are final for a task: classified where they are raised (a bad tar, a chat template
that fails, an adapter that does not fit), reported final by the executor, and confirmed by an
independent provider before the coordinator fails the job, blaming nobody; a provider that lies
"final" about a good task cannot fail its job (coordinator.failures)."""

from __future__ import annotations

import asyncio
import io
import sys
import tarfile
import time
from pathlib import Path

import pytest

from coordinator.failures import FailureAction, contradicted, decide_failure
from gpumesh.chatdata import ChatTemplateError, render_chat
from gpumesh.errors import ArtifactError, IntegrityError, Unavailable, WorkloadError, is_final
from gpumesh.identity import Wallet
from gpumesh.jobspec import JobSpec
from gpumesh.tarball import TarError, TarLayoutError, check_members, extract, read_members
from gpumesh.v1 import provider_pb2
from provider_node.executor import TaskExecutor
from provider_node.hardware import HardwareInfo
from provider_node.model_cache import ModelCache
from provider_node.workloads.adapters import AdapterError
from provider_node.workloads.common import EXIT_BAD_MODEL, EXIT_BAD_REQUEST, EXIT_RETRYABLE, failure
from provider_node.workloads.engines import render_prompts
from tests.conftest import ServerThread
from tests.scripted import ScriptedProvider

PROMPTS = b'{"prompt": "one"}\n{"prompt": "two"}\n'


def _tar(*members: tuple[str, str]) -> bytes:
    """A ustar of ``(name, "f"|"d"|"l")`` members (a file, a directory, a symlink to /etc)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc"
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"{}"))
    return buf.getvalue()


POISON = _tar(("config.json", "f"), ("x", "f"), ("x/", "d"))  # a file and a directory of one name


# ---- where failures are classified -----------------------------------------------------------


@pytest.mark.parametrize(("members", "message"), [
    ((("x", "f"), ("x/", "d")), 'member "x" is both a file and a directory'),
    ((("x/", "d"), ("x", "f")), 'member "x" is both a file and a directory'),
    ((("x", "f"), ("x/y/z", "f")), 'member "x" is both a file and a directory'),  # an implied directory
    ((("a/b/c", "f"), ("a/b", "f")), 'member "a/b" is both a file and a directory'),
    ((("x", "f"), ("./x", "f")), 'member "x" appears twice'),
], ids=["file-then-dir", "dir-then-file", "implied-dir", "implied-later", "duplicate"])
def test_colliding_members_refuse_the_whole_tar_before_a_byte_is_written(tmp_path, members, message):
    data = _tar(("config.json", "f"), *members)
    with pytest.raises(TarLayoutError, match=message):
        extract(io.BytesIO(data), tmp_path)
    assert list(tmp_path.iterdir()) == []  # checked first: not even config.json was written
    with pytest.raises(TarLayoutError, match=message):
        read_members(data)


@pytest.mark.parametrize(("member", "message"), [
    (("../up", "f"), "escapes"), (("/etc/x", "f"), "escapes"), (("link", "l"), "not a regular file"),
])
def test_unsafe_members_are_tar_errors(member, message):
    with tarfile.open(fileobj=io.BytesIO(_tar(member))) as tar, pytest.raises(TarError, match=message):
        check_members(tar)


def test_a_directory_listed_twice_and_the_dot_root_are_kept(tmp_path):
    extract(io.BytesIO(_tar(("./", "d"), ("a/", "d"), ("a/b", "f"), ("a/", "d"))), tmp_path)
    assert (tmp_path / "a" / "b").read_bytes() == b"{}"


def test_a_poison_model_tar_is_a_final_artifact_error_naming_its_cid(tmp_path):
    from gpumesh.artifacts.blockstore import EmbeddedBlockstore

    store = EmbeddedBlockstore(tmp_path / "blocks")
    cid = store.put_bytes(POISON)
    with pytest.raises(ArtifactError) as err:
        ModelCache(tmp_path / "models", store, max_bytes=1 << 20).get(cid)
    assert is_final(err.value) and f'model artifact {cid}: member "x" is both a file and a directory' in str(err.value)
    assert list((tmp_path / "models").iterdir()) == []  # nothing half-extracted stays in the cache


def test_only_typed_task_errors_are_final():
    assert is_final(ArtifactError("bad tar")) and is_final(AdapterError("bafy", "other shapes"))
    assert is_final(WorkloadError("input line 3: bad", field="input"))
    for exc in (WorkloadError("no room", retryable=True), IntegrityError("bytes do not match the CID"),
                Unavailable("artifact node down"), OSError(28, "No space left on device"),
                FileExistsError(17, "File exists"), RuntimeError("CUDA out of memory")):
        assert not is_final(exc), exc


@pytest.mark.parametrize(("exc", "code", "field"), [
    (AdapterError("bafyadapter", "its modules are not in the base model"), EXIT_BAD_MODEL, "adapter"),
    (WorkloadError("the model's chat template failed", field="chat_template"), EXIT_BAD_MODEL, "chat_template"),
    (ArtifactError("cannot load hf-dir model"), EXIT_BAD_MODEL, "model"),
    (WorkloadError("input line 2: bad", field="input"), EXIT_BAD_REQUEST, "input"),
    (WorkloadError("loading GGUF models needs the accelerate package", retryable=True), EXIT_RETRYABLE, None),
    (MemoryError(), EXIT_RETRYABLE, None),
])
def test_the_workload_reports_final_exactly_the_final_errors(exc, code, field):
    got, report = failure(exc)
    assert (got, report["field"], report["retryable"]) == (code, field, code == EXIT_RETRYABLE)


class _Template:
    """A tokenizer whose template renders in jinja2's sandbox, as transformers renders them."""

    def __init__(self, source: str) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.chat_template = source
        self.template = ImmutableSandboxedEnvironment().from_string(source)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt)


def test_a_chat_template_the_sandbox_refuses_is_final_and_blames_the_template():
    unsafe = _Template("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateError, match="SecurityError") as err:
        render_chat(unsafe, [{"role": "user", "content": "hi"}])
    assert err.value.param == "model"
    with pytest.raises(WorkloadError) as err:
        render_prompts(unsafe, [[{"role": "user", "content": "hi"}]], chat=True)
    assert err.value.field == "chat_template" and is_final(err.value) and "SecurityError" in err.value.message
    assert render_prompts(_Template("{{ messages[0].content }}!"), ["hi"], chat=True) == ["hi!"]


# ---- the coordinator's rule (pure) -----------------------------------------------------------


def test_the_failure_rule():
    def decide(retryable, attempts=1, trusted=False, final_by=""):
        return decide_failure(retryable=retryable, attempts=attempts, max_attempts=2, trusted_reporter=trusted,
                              final_reported_by=final_by)

    assert (decide(True).action, decide(True).blame) == (FailureAction.RETRY, True)
    assert decide(True, attempts=2).action is FailureAction.FAIL and decide(True, attempts=2).blame
    first = decide(False, attempts=5)  # out of attempts, still confirmed once
    assert (first.action, first.blame) == (FailureAction.CONFIRM, False)
    for confirmed in (decide(False, final_by="prov_a"), decide(False, trusted=True)):
        assert (confirmed.action, confirmed.blame) == (FailureAction.FAIL, False)
    assert contradicted("prov_a", "prov_b") == "prov_a" and contradicted("", "prov_b") == ""


# ---- over a real coordinator socket ----------------------------------------------------------


class _NoRuntime:
    """The runtime of a provider whose task fails before anything runs (its model is refused)."""

    name, isolated, python = "none", True, sys.executable

    async def run(self, spec):
        raise AssertionError(f"nothing should run: {spec.argv}")


@pytest.fixture
def srv(coordinator_settings):
    # one host: the network key off, so two scripted providers count as independent (as gpumesh localnet)
    settings = coordinator_settings.model_copy(update={"verify": False, "hardware_checks": False,
                                                       "independent_networks": False, "lease_ttl_s": 30.0})
    srv = ServerThread(settings).start()
    yield srv
    srv.stop()


def _providers(srv, n: int = 2) -> list[ScriptedProvider]:
    providers = [ScriptedProvider(srv.target, name=f"p{i}", price=1 + i) for i in range(n)]
    deadline = time.monotonic() + 10
    while len(srv.core.sessions.sessions()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return providers


def _first_lease(providers: list[ScriptedProvider], timeout: float = 15.0):
    """(provider, lease): whichever provider is sent the next lease."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in providers:
            try:
                return p, p.next("lease", timeout=0.05)
            except Exception:  # noqa: BLE001 -- queue.Empty: not this one (yet)
                continue
    raise AssertionError("no lease was sent")


def _executor(p: ScriptedProvider, root: Path) -> TaskExecutor:
    """The real executor of a provider, over its signed artifact calls."""
    return TaskExecutor(artifacts=p.artifacts, models=ModelCache(root / "models", p.artifacts, max_bytes=1 << 30),
                        runtime=_NoRuntime(), wallet=p.wallet, work_dir=root / "work", threads=1,
                        hardware=HardwareInfo(gpus=(), cpu_count=8, memory_total_mb=64_000, cpu_model="",
                                              platform=""))


def _final(client, job_id: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while (job := client.get_job(job_id)).state not in ("FAILED", "COMPLETED") and time.monotonic() < deadline:
        time.sleep(0.05)
    return job


def test_a_poison_model_fails_its_job_after_one_independent_confirmation_blaming_no_provider(srv, tmp_path):
    from gpumesh.client import Client

    providers = _providers(srv)
    try:
        with Client.connect(srv.target, wallet=Wallet.generate()) as client:
            model = client.upload(POISON)
            job = client.submit(JobSpec(name="poison", model_cid=model, input_cid=client.upload(PROMPTS)))
            seen = []
            for _ in range(2):  # the report, then its confirmation on the other provider
                p, lease = _first_lease(providers)
                seen.append(p.provider_id)
                reply = asyncio.run(_executor(p, tmp_path / p.provider_id).execute(lease))
                assert not reply.failure.retryable
                p._out.put(reply)
            status = _final(client, job.id)
            assert status.state == "FAILED"
            assert f'model artifact {model}: member "x" is both a file and a directory' in status.error
            assert "confirmed by an independent provider" in status.error
            assert len(set(seen)) == 2 and status.raw.tasks[0].attempts == 2  # no third lease
            for p in providers:
                assert srv.core.store.get_provider(p.provider_id).leases_abandoned == 0
                with pytest.raises(Exception):  # noqa: B017 -- queue.Empty: nobody is sent it again
                    p.next("lease", timeout=0.3)
    finally:
        for p in providers:
            p.close()


def test_a_provider_lying_final_about_a_good_job_cannot_fail_it(srv):
    from gpumesh.client import Client

    providers = _providers(srv)
    try:
        with Client.connect(srv.target, wallet=Wallet.generate()) as client:
            job = client.submit(JobSpec(name="good", model_cid=client.upload(b"a good model"),
                                        input_cid=client.upload(PROMPTS)))
            liar, lease = _first_lease(providers)
            liar._out.put(provider_pb2.ProviderMessage(failure=provider_pb2.TaskFailure(
                lease_id=lease.lease_id, task_id=lease.task_id, retryable=False,
                error=f'model_cid: model artifact {lease.model_cid}: member "x" is both a file and a directory')))
            honest, again = _first_lease(providers)
            assert honest is not liar and again.task_id == lease.task_id
            honest.answer(again)
            assert _final(client, job.id).state == "COMPLETED"
            store = srv.core.store
            assert store.get_provider(liar.provider_id).leases_abandoned == 1  # contradicted: charged after all
            assert store.get_provider(honest.provider_id).leases_abandoned == 0
    finally:
        for p in providers:
            p.close()
