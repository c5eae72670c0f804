"""A minimal base image for the Docker runtime's ``host_env`` mode: only the system shared
libraries the host's Python environment actually maps (read off ``/proc/self/maps`` of an
interpreter that imported the workload stack), the dynamic loader, the merged-/usr symlinks, an
``/etc/passwd`` with ``nobody`` and an empty ``/tmp``. Imported into Docker (``docker import``,
no registry), its image ID is itself a content pin."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# What a workload process loads; their native libraries decide which system libraries it needs.
WORKLOAD_MODULES = ("torch", "transformers", "safetensors", "tokenizers", "numpy", "peft", "gguf",
                    "provider_node.workloads.inference", "provider_node.workloads.finetune")
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
PASSWD = "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
MARKER = "etc/gpumesh-base"


def mapped_libraries(python: str = sys.executable, modules: Iterable[str] = WORKLOAD_MODULES) -> list[Path]:
    """Shared objects outside the Python prefix that ``python`` maps after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        "maps = [l.split()[5] for l in open('/proc/self/maps') if len(l.split()) >= 6]\n"
        "print(json.dumps(sorted({p for p in maps if '.so' in p and not p.startswith(sys.prefix)})))\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return [Path(p) for p in json.loads(out.stdout.splitlines()[-1])]


def _aliases(library: Path) -> list[Path]:
    """``library`` and every symlink beside it that resolves to it (its sonames)."""
    real = library.resolve()
    return sorted(p for p in library.parent.iterdir() if p.resolve() == real)


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _below_root_links(path: Path) -> Path:
    """``path`` with a leading root symlink (``/lib64 -> usr/lib64``) replaced by its target."""
    top = Path("/", path.parts[1])
    return Path("/", os.readlink(top), *path.parts[2:]) if top.is_symlink() else path


def build_rootfs(libraries: Iterable[Path], *, label: str = "gpumesh host-env base") -> bytes:
    """The rootfs tarball: ``libraries`` (with their soname links and every directory above them),
    the host's root symlinks (``/lib -> usr/lib`` ...) and the loader they name, /etc, /tmp."""
    files: dict[str, Path] = {}
    for lib in libraries:
        for alias in _aliases(Path(lib)):
            files[str(alias).lstrip("/")] = alias
    interp = _below_root_links(Path("/lib64/ld-linux-x86-64.so.2"))  # the loader binaries name
    if interp.is_symlink() or interp.exists():
        files.setdefault(str(interp).lstrip("/"), interp)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = {"etc", "tmp", "proc", "dev", "sys", "usr"}
        links = {name for name in ROOT_LINKS if Path("/", name).is_symlink()}
        for name in sorted({d for path in files for d in _parents(path) if d.split("/")[0] not in links} | dirs):
            _add_dir(tar, name, 0o1777 if name == "tmp" else 0o755)
        for name in sorted(links):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(Path("/", name))
            tar.addfile(info)
        for name, path in sorted(files.items()):
            if name.split("/")[0] in links:
                continue  # reached through the root symlinks
            tar.add(path, arcname=name, recursive=False)
        _add_text(tar, "etc/passwd", PASSWD)
        _add_text(tar, "etc/group", GROUP)
        _add_text(tar, MARKER, label + "\n")
    return buf.getvalue()


def import_rootfs(client: Any, rootfs: bytes, repository: str = "gpumesh-host-env", tag: str = "local") -> str:
    """``docker import`` the tarball; returns the image ID (``sha256:...``), a valid pin."""
    answer = client.api.import_image_from_data(rootfs, repository=repository, tag=tag)
    status = json.loads(answer.strip().splitlines()[-1]) if isinstance(answer, str) else answer
    image_id = status.get("status", "") if isinstance(status, dict) else ""
    if not image_id.startswith("sha256:"):
        image_id = client.images.get(f"{repository}:{tag}").id
    return image_id
