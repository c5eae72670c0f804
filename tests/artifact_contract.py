"""The contract every ``ArtifactStore`` adapter must meet.

Subclass ``ArtifactStoreContract`` in a ``test_*.py`` module as ``Test<Adapter>`` and provide
a ``store`` fixture returning a fresh, empty store.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpumesh.artifacts import ArtifactStore, cid_of_bytes
from gpumesh.errors import InvalidArgument, NotFound

CHUNK = 262144
SIZES = [0, 1, 1000, CHUNK, CHUNK + 1, 3 * CHUNK + 7]
UNKNOWN = cid_of_bytes(b"never stored in any contract test \x00\x01")


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + size).randbytes(size)


def split(data: bytes, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 100, 65536, CHUNK - 1, CHUNK + 3])
        yield data[pos : pos + step]
        pos += step


class ArtifactStoreContract:
    """Behaviour shared by every adapter; needs a ``store`` fixture."""

    def test_implements_protocol(self, store: ArtifactStore) -> None:
        assert isinstance(store, ArtifactStore)

    @pytest.mark.parametrize("size", SIZES)
    def test_put_get_bytes_round_trip(self, store: ArtifactStore, size: int) -> None:
        data = payload(size)
        cid = store.put_bytes(data)
        assert cid == cid_of_bytes(data)
        assert store.get_bytes(cid) == data

    def test_same_cid_by_any_path(self, store: ArtifactStore, tmp_path: Path) -> None:
        data = payload(2 * CHUNK + 5, seed=1)
        src = tmp_path / "input.bin"
        src.write_bytes(data)
        cids = {
            store.put_bytes(data),
            store.put_file(src),
            store.put_stream(split(data, seed=2)),
            store.put_stream([data]),
        }
        assert cids == {cid_of_bytes(data)}

    def test_put_is_idempotent(self, store: ArtifactStore) -> None:
        data = payload(CHUNK + 10, seed=3)
        assert store.put_bytes(data) == store.put_bytes(data)
        assert store.get_bytes(cid_of_bytes(data)) == data

    def test_iter_bytes_streams_in_order(self, store: ArtifactStore) -> None:
        data = payload(3 * CHUNK + 7, seed=4)
        chunks = list(store.iter_bytes(store.put_bytes(data)))
        assert len(chunks) > 1
        assert b"".join(chunks) == data

    def test_get_file(self, store: ArtifactStore, tmp_path: Path) -> None:
        data = payload(CHUNK + 1, seed=5)
        cid = store.put_bytes(data)
        dest = tmp_path / "out" / "file.bin"
        store.get_file(cid, dest)
        assert dest.read_bytes() == data
        assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]

    def test_get_file_replaces_atomically(self, store: ArtifactStore, tmp_path: Path) -> None:
        out = tmp_path / "dest"
        out.mkdir()
        dest = out / "file.bin"
        dest.write_bytes(b"old")
        with pytest.raises(NotFound):
            store.get_file(UNKNOWN, dest)
        assert dest.read_bytes() == b"old"
        assert [p.name for p in out.iterdir()] == ["file.bin"]
        store.get_file(store.put_bytes(b"new"), dest)
        assert dest.read_bytes() == b"new"
        assert [p.name for p in out.iterdir()] == ["file.bin"]

    @pytest.mark.parametrize("size", [0, 5, CHUNK + 1])
    def test_has_and_size(self, store: ArtifactStore, size: int) -> None:
        data = payload(size, seed=6)
        cid = store.put_bytes(data)
        assert store.has(cid)
        assert store.size(cid) == size

    def test_unknown_cid(self, store: ArtifactStore, tmp_path: Path) -> None:
        assert not store.has(UNKNOWN)
        for call in (
            lambda: store.get_bytes(UNKNOWN),
            lambda: store.iter_bytes(UNKNOWN),
            lambda: store.size(UNKNOWN),
            lambda: store.get_file(UNKNOWN, tmp_path / "x"),
        ):
            with pytest.raises(NotFound) as err:
                call()
            assert err.value.field == "cid"
            assert UNKNOWN in str(err.value)
        assert not (tmp_path / "x").exists()

    @pytest.mark.parametrize("method", ["get_bytes", "has", "size"])
    def test_malformed_cid(self, store: ArtifactStore, method: str) -> None:
        with pytest.raises(InvalidArgument) as err:
            getattr(store, method)("not-a-cid")
        assert err.value.field == "cid"

    def test_concurrent_puts(self, store: ArtifactStore) -> None:
        base = payload(3 * CHUNK, seed=7)
        datas = [base[: 2 * CHUNK + i] for i in range(4)] * 3  # shared and identical blocks
        results: dict[int, str] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(datas))

        def work(i: int) -> None:
            try:
                barrier.wait()
                results[i] = store.put_stream(split(datas[i], seed=i))
                assert store.get_bytes(results[i]) == datas[i]
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(datas))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for i, data in enumerate(datas):
            assert results[i] == cid_of_bytes(data)
            assert store.get_bytes(results[i]) == data
