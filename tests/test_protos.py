"""The committed stubs in gpumesh/v1 must be exactly what grpcio-tools makes of proto/."""

import importlib.util
import re
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]

# The grpc stubs name the grpcio-tools release that wrote them: the oldest grpcio they run on,
# not part of what the protos say. Any patch release of the tools writes the same stubs otherwise.
_VERSION = re.compile(rb"^GRPC_GENERATED_VERSION = '([0-9.]+)'$", re.M)


def _version(text: bytes) -> tuple[int, ...] | None:
    found = _VERSION.search(text)
    return tuple(int(x) for x in found.group(1).split(b".")) if found else None


def test_generated_stubs_match_protos(tmp_path):
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = {p.name: p.read_bytes() for p in gen.generate(tmp_path)}
    committed = {p.name: p.read_bytes() for p in (ROOT / "gpumesh" / "v1").glob("*_pb2*.py*")}
    assert fresh.keys() == committed.keys()
    stale = [name for name in fresh if _VERSION.sub(b"", fresh[name]) != _VERSION.sub(b"", committed[name])]
    assert not stale, f"regenerate with `python proto/generate.py`: {stale}"
    installed = tuple(int(x) for x in grpc.__version__.split(".")[:3])
    for name, text in committed.items():
        if (needs := _version(text)) is not None:
            assert needs <= installed, f"{name} needs grpcio {needs}, {grpc.__version__} is installed"
