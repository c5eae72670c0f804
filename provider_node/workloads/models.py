"""Model artifact formats, detected by content.

* ``gguf``: one GGUF file (magic ``b"GGUF"``), loaded by transformers' GGUF reader.
* ``hf-tar``: an uncompressed tar of a Hugging Face model directory (``config.json``,
  safetensors weights, tokenizer files), as made by :func:`pack_model_dir`.
* ``hf-dir``: such a directory already on disk (an extracted ``hf-tar``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gpumesh.errors import ArtifactError, WorkloadError
from gpumesh.tarball import TarError, extract, pack_dir

if TYPE_CHECKING:
    import torch

ModelFormat = Literal["gguf", "hf-tar", "hf-dir"]

GGUF_MAGIC = b"GGUF"
_TAR_MAGIC_OFFSET = 257  # "ustar" in the first header block (POSIX and GNU tars)
_CHUNK = 1 << 20


def _model_error(message: str) -> ArtifactError:
    """A bad model artifact (its format, its tar's layout, what transformers makes of it): final."""
    return ArtifactError(message, field="model")


def detect_format(path: Path) -> ModelFormat:
    """Classify a model artifact by its content; raise ``ArtifactError(field="model")`` otherwise."""
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf-dir"
        raise _model_error(f"{path} is a directory without config.json")
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise _model_error(f"cannot read model {path}: {exc.strerror or exc}") from exc
    if head[:4] == GGUF_MAGIC:
        return "gguf"
    if len(head) == 512 and head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "hf-tar"
    raise _model_error(f"{path.name} is neither a GGUF file nor an uncompressed model tar")


def pack_model_dir(src_dir: Path) -> bytes:
    """A deterministic uncompressed tar of a model directory: equal trees give equal bytes
    (``gpumesh.tarball.pack_dir``)."""
    src_dir = Path(src_dir)
    if not (src_dir / "config.json").is_file():
        raise _model_error(f"{src_dir} has no config.json")
    return pack_dir(src_dir)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _extract(artifact: Path, dest: Path, max_bytes: int) -> None:
    """Extract every member under ``dest`` once all of them are checked (none escapes it, none
    collides with another), writing at most ``max_bytes`` (sparse members are refused, so a tar
    never writes more than its own size)."""
    try:
        extract(artifact, dest, max_bytes=max_bytes)
    except TarError as exc:
        raise _model_error(str(exc)) from exc
    if not (dest / "config.json").is_file() and not (dest / "adapter_config.json").is_file():
        raise _model_error("model tar has no config.json (nor, for a LoRA adapter, adapter_config.json) at its root")


def materialize(artifact: Path, cache_dir: Path, *, max_bytes: int | None = None) -> Path:
    """A loadable path for ``artifact``: a GGUF file or model directory as is, a tar extracted.

    A tar is extracted once into ``cache_dir/hf-<sha256 prefix>``: into a temporary
    directory first, then renamed, so a half-extracted model is never seen. It may write at most
    its own size, and at most ``max_bytes`` (the caller's disk budget).
    """
    artifact = Path(artifact)
    fmt = detect_format(artifact)
    if fmt != "hf-tar":
        return artifact
    dest = Path(cache_dir) / f"hf-{_file_digest(artifact)[:32]}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        size = artifact.stat().st_size
        _extract(artifact, tmp, size if max_bytes is None else min(size, max_bytes))
        tmp.chmod(0o755)  # mkdtemp makes it private; the sandboxed workload must read it
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.is_dir():  # lost a race with another extractor: theirs is complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_causal_lm(
    path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode on ``device``; the tokenizer pads on the left.

    Accepts all three formats (a tar is extracted to a temporary directory for the load).
    Unloadable models raise ``ArtifactError(field="model")``; out-of-memory propagates.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "hf-tar":
        with tempfile.TemporaryDirectory(prefix="gpumesh-model-") as tmp:
            return load_causal_lm(materialize(path, Path(tmp)), device=device, dtype=dtype)

    if fmt == "gguf" and importlib.util.find_spec("accelerate") is None:
        # A provider setup problem, not a bad model: another provider may run it.
        raise WorkloadError("loading GGUF models needs the accelerate package", retryable=True)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if fmt == "gguf":
        where, kwargs = str(path.parent), {"gguf_file": path.name}
    else:
        where, kwargs = str(path), {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:  # transformers raises many types for a broken model
        raise _model_error(f"cannot load {fmt} model: {type(exc).__name__}: {exc}") from exc
    model.to(device=device, dtype=dtype or torch.float32)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer
