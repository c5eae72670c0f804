"""Compiled contract artifacts (ABI + creation bytecode) written by ``contracts/compile.mjs``.

Looked up, in order: an explicit directory, ``$GPUMESH_CONTRACTS_BUILD``, the checkout's
``contracts/build`` (next to the ``gpumesh`` package), and the copy shipped inside an installed
wheel as package data (``gpumesh/chain/contracts_build``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gpumesh.errors import NotFound

CONTRACTS = ("TestToken", "ProviderRegistry", "JobEscrow")
ENV_BUILD_DIR = "GPUMESH_CONTRACTS_BUILD"
_PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list
    bytecode: str  # 0x-prefixed creation code

    def error_names(self) -> list[str]:
        return [item["name"] for item in self.abi if item.get("type") == "error"]


def candidate_dirs(build_dir: str | os.PathLike | None = None) -> list[Path]:
    dirs = []
    if build_dir is not None:
        dirs.append(Path(build_dir))
    if os.environ.get(ENV_BUILD_DIR):
        dirs.append(Path(os.environ[ENV_BUILD_DIR]))
    dirs.append(_PACKAGE_DIR.parents[1] / "contracts" / "build")  # a source checkout
    dirs.append(_PACKAGE_DIR / "contracts_build")  # package data of an installed wheel
    return dirs


def find_build_dir(build_dir: str | os.PathLike | None = None) -> Path:
    """The first candidate directory that holds all three artifacts."""
    dirs = candidate_dirs(build_dir)
    for d in dirs:
        if all((d / f"{name}.json").is_file() for name in CONTRACTS):
            return d
    raise NotFound(
        "compiled contracts not found (run `node contracts/compile.mjs`); looked in "
        + ", ".join(str(d) for d in dirs),
        field="contracts",
    )


def _load(path: Path) -> Artifact:
    return _load_version(str(path), path.stat().st_mtime_ns)  # a recompile is picked up


@lru_cache(maxsize=32)
def _load_version(path: str, mtime_ns: int) -> Artifact:
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    bytecode = raw["bytecode"]
    if not bytecode.startswith("0x"):
        bytecode = "0x" + bytecode
    return Artifact(raw.get("contractName") or Path(path).stem, raw["abi"], bytecode)


def load_artifact(name: str, build_dir: str | os.PathLike | None = None) -> Artifact:
    if name not in CONTRACTS:
        raise NotFound(f"unknown contract {name!r} (one of {', '.join(CONTRACTS)})", field="contract")
    return _load(find_build_dir(build_dir) / f"{name}.json")


def load_all(build_dir: str | os.PathLike | None = None) -> dict[str, Artifact]:
    root = find_build_dir(build_dir)
    return {name: _load(root / f"{name}.json") for name in CONTRACTS}
