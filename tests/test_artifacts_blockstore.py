"""The artifact contract against ``EmbeddedBlockstore``, plus on-disk specifics."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.artifact_contract import CHUNK, ArtifactStoreContract, payload

from gpumesh.artifacts import EmbeddedBlockstore, cid_of_bytes, parse_cid
from gpumesh.artifacts import unixfs
from gpumesh.artifacts.cid import RAW, Cid, sha256_cid
from gpumesh.errors import IntegrityError, InvalidArgument, NotFound


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedBlockstore:
    return EmbeddedBlockstore(tmp_path / "store")


class TestEmbeddedBlockstoreContract(ArtifactStoreContract):
    pass


def block_files(store: EmbeddedBlockstore) -> list[Path]:
    return sorted(p for p in (store.root / "blocks").rglob("*") if p.is_file())


def leaf_cids(store: EmbeddedBlockstore) -> list[Cid]:
    return [c for c in (parse_cid(p.name) for p in block_files(store)) if c.codec == RAW]


def test_block_layout(store: EmbeddedBlockstore) -> None:
    store.put_bytes(payload(2 * CHUNK + 1))
    files = block_files(store)
    assert len(files) == 4  # three raw leaves and one dag-pb root
    for path in files:
        assert path.parent.name == path.name[-3:-1]
        assert path.parent.parent == store.root / "blocks"
        assert str(parse_cid(path.name)) == path.name


def test_corrupted_block_raises_integrity_error(store: EmbeddedBlockstore, tmp_path: Path) -> None:
    data = payload(2 * CHUNK + 1, seed=1)
    cid = store.put_bytes(data)
    victim = store._path(leaf_cids(store)[0])
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        store.get_bytes(cid)
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(IntegrityError):
        store.get_file(cid, dest)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir() if p.name != "store"] == ["out.bin"]


def test_corrupted_root_raises_integrity_error(store: EmbeddedBlockstore) -> None:
    cid = store.put_bytes(b"small file")
    store._path(parse_cid(cid)).write_bytes(b"tampered file")
    for call in (store.get_bytes, store.size, store.get_block):
        with pytest.raises(IntegrityError):
            call(cid)


def test_missing_leaf(store: EmbeddedBlockstore) -> None:
    cid = store.put_bytes(payload(3 * CHUNK, seed=2))
    store._path(leaf_cids(store)[1]).unlink()
    assert not store.has(cid)
    assert store.size(cid) == 3 * CHUNK  # the root alone knows the size
    with pytest.raises(NotFound):
        store.get_bytes(cid)


def test_block_api(store: EmbeddedBlockstore) -> None:
    block = b"raw block"
    cid = sha256_cid(RAW, block)
    assert not store.has_block(cid)
    with pytest.raises(NotFound):
        store.get_block(str(cid))
    with pytest.raises(IntegrityError):
        store.put_block(cid, b"other bytes")
    assert not store.has_block(cid)
    store.put_block(str(cid), block)
    store.put_block(cid, block)  # idempotent
    assert store.has_block(str(cid)) and store.get_block(cid) == block
    assert store.get_bytes(str(cid)) == block


def test_cidv0_is_read_as_its_v1_block(store: EmbeddedBlockstore) -> None:
    cid = parse_cid(store.put_bytes(payload(CHUNK + 1, seed=3)))
    v0 = Cid(0, cid.codec, cid.digest)
    assert store.get_bytes(str(v0)) == payload(CHUNK + 1, seed=3)


def test_unsupported_multihash(store: EmbeddedBlockstore) -> None:
    blake3 = Cid(1, RAW, bytes(32), hash_code=0x1E)
    with pytest.raises(InvalidArgument) as err:
        store.get_bytes(str(blake3))
    assert err.value.field == "cid"


def test_depth_two_round_trip(tmp_path: Path) -> None:
    store = EmbeddedBlockstore(tmp_path / "s", fsync=False)
    data = random.Random(5).randbytes(174 * CHUNK + 1)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    cid = store.put_file(src)
    assert cid == cid_of_bytes(data)
    assert store.has(cid) and store.size(cid) == len(data)
    dest = tmp_path / "copy.bin"
    store.get_file(cid, dest)
    assert dest.read_bytes() == data


def test_depth_three_round_trip(store: EmbeddedBlockstore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unixfs, "CHUNK_SIZE", 8)
    monkeypatch.setattr(unixfs, "MAX_LINKS", 3)
    data = payload(8 * 30 + 3, seed=6)  # 31 leaves: depth 4 with at most 3 links per node
    cid = store.put_stream([data[:50], data[50:]])
    assert store.get_bytes(cid) == data and store.size(cid) == len(data) and store.has(cid)
    assert [len(c) for c in store.iter_bytes(cid)] == [8] * 30 + [3]


def test_concurrent_readers_and_writers(store: EmbeddedBlockstore) -> None:
    """Readers of one file run while writers race to add the same new blocks."""
    old, new = payload(4 * CHUNK + 3, seed=8), payload(4 * CHUNK + 3, seed=9)
    old_cid = store.put_bytes(old)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def run(fn: Callable[[], None]) -> None:
        try:
            barrier.wait()
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read() -> None:
        for _ in range(3):
            assert store.get_bytes(old_cid) == old

    def write() -> None:
        assert store.put_bytes(new) == cid_of_bytes(new)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in [read] * 4 + [write] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert store.get_bytes(cid_of_bytes(new)) == new
    assert not list((store.root / "blocks").rglob(".tmp-*"))
