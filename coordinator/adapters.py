"""What the coordinator checks of a LoRA adapter before a job may name it: that its artifact is a
tar of a peft adapter directory (``adapter_config.json`` of a LoRA, ``adapter_model.safetensors``
whose header is whole and whose tensors fill the file exactly, no pickled weights). A truncated or
altered file is refused here, before any provider is paid to find out."""

from __future__ import annotations

import json
import struct
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gpumesh.artifacts import ArtifactStore

MAX_ADAPTER_BYTES = 4 << 30
MAX_HEADER_BYTES = 64 << 20
CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class AdapterInfo:
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    tensors: int
    size_bytes: int


class _IterReader:
    """A read-only file over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks) -> None:
        self._it, self._buf = iter(chunks), b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            chunk = next(self._it, None)
            if chunk is None:
                break
            self._buf += chunk
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        return out


def is_adapter_tar(artifacts: ArtifactStore, cid: str) -> bool:
    """Whether the tar at ``cid`` has an adapter_config.json at its root (read as a stream, to it)."""
    try:
        with tarfile.open(fileobj=_IterReader(artifacts.iter_bytes(cid)), mode="r|") as tar:
            return any(m.name.removeprefix("./") == CONFIG for m in tar)
    except tarfile.TarError:
        return False


def adapter_from_checkpoint(checkpoint_tar: bytes, final_tar: bytes) -> bytes:
    """A peft adapter (tar) of a LoRA run's checkpoint: the run's adapter config, and the
    checkpoint's trainable tensors under the names peft saves them by (without the adapter's own)."""
    import re

    from safetensors.numpy import load, save

    from gpumesh.tarball import pack_dir, read_members

    config = read_members(final_tar).get(CONFIG)
    weights = read_members(checkpoint_tar).get("weights.safetensors")
    if config is None or weights is None:
        raise ValueError("not a LoRA run's checkpoint and adapter")
    tensors = {re.sub(r"\.default(?=\.weight$|\.bias$|$)", "", name): t for name, t in load(weights).items()
               if ".lora_" in name}
    if not tensors:
        raise ValueError("the checkpoint holds no LoRA tensors")
    with tempfile.TemporaryDirectory(prefix="gpumesh-ckpt-") as tmp:
        (Path(tmp) / CONFIG).write_bytes(config)
        (Path(tmp) / WEIGHTS).write_bytes(save(tensors))
        return pack_dir(Path(tmp))


def inspect_adapter(artifacts: ArtifactStore, cid: str) -> AdapterInfo:
    """The adapter's shape, or ValueError saying what is wrong with it."""
    size = artifacts.size(cid)
    if size > MAX_ADAPTER_BYTES:
        raise ValueError(f"{size} bytes, over the {MAX_ADAPTER_BYTES}-byte limit for an adapter")
    with tempfile.TemporaryDirectory(prefix="gpumesh-adapter-") as tmp:
        path = Path(tmp) / "adapter.tar"
        artifacts.get_file(cid, path)
        return inspect_adapter_tar(path, size)


def inspect_adapter_tar(path: Path, size: int) -> AdapterInfo:
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = {PurePosixPath(m.name).as_posix().removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            if any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in members):
                raise ValueError("pickled weights are not accepted; save the adapter with safe_serialization=True")
            if CONFIG not in members or WEIGHTS not in members:
                raise ValueError(f"not a peft adapter: expected {CONFIG} and {WEIGHTS} at the tar's root")
            config = _config(tar.extractfile(members[CONFIG]).read(1 << 20))
            f = tar.extractfile(members[WEIGHTS])
            tensors = _check_safetensors(f, members[WEIGHTS].size)
    except tarfile.TarError as exc:
        raise ValueError(f"not a tar of an adapter directory ({exc})") from None
    targets = config.get("target_modules") or ()
    return AdapterInfo(int(config.get("r") or 0), float(config.get("lora_alpha") or 0),
                       tuple(sorted(targets)) if isinstance(targets, list) else (str(targets),), tensors, size)


def _config(raw: bytes) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{CONFIG} is not JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ValueError(f"{CONFIG} is not a LoRA adapter's config (peft_type "
                         f"{config.get('peft_type') if isinstance(config, dict) else None!r})")
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= 4096:
        raise ValueError(f"{CONFIG}: r must be an integer from 1 to 4096")
    return config


def _check_safetensors(f, size: int) -> int:
    """The number of tensors; ValueError unless the header is valid and the tensors exactly tile the data."""
    head = f.read(8)
    if len(head) < 8:
        raise ValueError(f"{WEIGHTS} is truncated")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise ValueError(f"{WEIGHTS} has a header length of {n} bytes, past its end")
    try:
        header = json.loads(f.read(n))
    except ValueError:
        raise ValueError(f"{WEIGHTS}'s header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError(f"{WEIGHTS}'s header is not an object")
    spans = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(t, dict) or t.get("dtype") not in DTYPE_BYTES or not isinstance(t.get("shape"), list) \
                or not isinstance(t.get("data_offsets"), list) or len(t["data_offsets"]) != 2:
            raise ValueError(f"{WEIGHTS}: tensor {name!r} is malformed")
        count = 1
        for d in t["shape"]:
            if not isinstance(d, int) or d < 0:
                raise ValueError(f"{WEIGHTS}: tensor {name!r} has a bad shape")
            count *= d
        lo, hi = t["data_offsets"]
        if not (isinstance(lo, int) and isinstance(hi, int)) or hi - lo != count * DTYPE_BYTES[t["dtype"]]:
            raise ValueError(f"{WEIGHTS}: tensor {name!r}'s bytes do not match its shape")
        spans.append((lo, hi))
    spans.sort()
    end = 0
    for lo, hi in spans:
        if lo != end:
            raise ValueError(f"{WEIGHTS}: its tensors overlap or leave gaps")
        end = hi
    if not spans:
        raise ValueError(f"{WEIGHTS} holds no tensors")
    if 8 + n + end != size:
        raise ValueError(f"{WEIGHTS} is {size} bytes; its header describes {8 + n + end} (truncated or altered)")
    return len(spans)
