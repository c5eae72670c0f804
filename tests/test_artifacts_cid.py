"""CIDs and the UnixFS importer against known Kubo values and the independent ``aleph_cid``."""

from __future__ import annotations

import random

import aleph_cid
import pytest

from gpumesh.artifacts import FileImporter, cid_of_bytes, parse_cid
from gpumesh.artifacts import unixfs
from gpumesh.artifacts.cid import (
    DAG_PB,
    RAW,
    Cid,
    b58decode,
    b58encode,
    decode_varint,
    encode_varint,
    sha256_cid,
)
from gpumesh.artifacts.unixfs import PBLink, PBNode, UnixFSData, decode_pbnode, encode_pbnode
from gpumesh.errors import InvalidArgument

C = unixfs.CHUNK_SIZE
EMPTY = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
HELLO_V1 = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"  # b"hello world\n"
HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"  # same bytes, Kubo default add


def kubo_v1(data: bytes) -> str:
    hasher = aleph_cid.CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


@pytest.fixture(scope="module")
def blob() -> bytes:
    return random.Random(20240601).randbytes(174 * C + 2 * C)


def test_known_kubo_cids() -> None:
    assert cid_of_bytes(b"") == EMPTY
    assert cid_of_bytes(b"hello world\n") == HELLO_V1
    assert kubo_v1(b"hello world\n") == HELLO_V1
    assert aleph_cid.compute_cid(b"hello world\n") == HELLO_V0


@pytest.mark.parametrize(
    "size",
    [0, 1, 1000, C - 1, C, C + 1, 3 * C + 7, 174 * C, 174 * C + 1, 175 * C + 12345],
)
def test_matches_aleph_cid(blob: bytes, size: int) -> None:
    data = blob[:size]
    assert cid_of_bytes(data) == kubo_v1(data)


def test_matches_aleph_cid_random_sizes(blob: bytes) -> None:
    rng = random.Random(7)
    for size in [rng.randrange(len(blob)) for _ in range(3)] + [rng.randrange(4 * C) for _ in range(5)]:
        assert cid_of_bytes(blob[:size]) == kubo_v1(blob[:size]), size


def test_prefixes() -> None:
    assert cid_of_bytes(b"x" * C).startswith("bafkrei")
    assert cid_of_bytes(b"x" * (C + 1)).startswith("bafybei")


def test_importer_independent_of_update_sizes(blob: bytes) -> None:
    data = blob[: 5 * C + 99]
    rng = random.Random(3)
    blocks: dict[Cid, bytes] = {}
    importer = FileImporter(lambda cid, block: blocks.__setitem__(cid, block))
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 17, C - 1, C, C + 1, 3 * C])
        importer.update(data[pos : pos + step])
        pos += step
    root = importer.finish()
    assert str(root) == kubo_v1(data)
    assert len(blocks) == 7  # six raw leaves and one root
    for cid, block in blocks.items():
        assert sha256_cid(cid.codec, block) == cid


def test_importer_rejects_use_after_finish() -> None:
    importer = FileImporter(lambda cid, block: None)
    importer.finish()
    with pytest.raises(RuntimeError):
        importer.update(b"x")


def test_depth_two_root_node(blob: bytes) -> None:
    """174 full leaves fill one node; one more byte adds a root over it and a one-leaf node."""
    blocks: dict[Cid, bytes] = {}
    importer = FileImporter(lambda cid, block: blocks.__setitem__(cid, block))
    importer.update(blob[: 174 * C + 1])
    root = importer.finish()
    node = decode_pbnode(blocks[root])
    meta = UnixFSData.decode(node.data or b"")
    assert meta.type == unixfs.UNIXFS_FILE and meta.data is None
    assert meta.filesize == 174 * C + 1 and meta.blocksizes == [174 * C, 1]
    full, tail = (decode_pbnode(blocks[link.cid]) for link in node.links)
    assert len(full.links) == 174 and len(tail.links) == 1
    assert tail.links[0].cid.codec == RAW and tail.links[0].tsize == 1
    assert all(link.name == "" for link in node.links + full.links)
    total = sum(len(block) for block in blocks.values())
    assert sum(link.tsize for link in node.links) + len(blocks[root]) == total


def test_balanced_layout_depth_three(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kubo's balanced shape with small limits: never collapses single-child nodes."""
    monkeypatch.setattr(unixfs, "CHUNK_SIZE", 4)
    monkeypatch.setattr(unixfs, "MAX_LINKS", 2)
    blocks: dict[Cid, bytes] = {}
    importer = FileImporter(lambda cid, block: blocks.__setitem__(cid, block))
    importer.update(b"aaaabbbbccccddddee")  # five leaves -> depth 3
    root = importer.finish()

    def shape(cid: Cid) -> object:
        if cid.codec == RAW:
            return blocks[cid].decode()
        return [shape(link.cid) for link in decode_pbnode(blocks[cid]).links]

    assert shape(root) == [[["aaaa", "bbbb"], ["cccc", "dddd"]], [["ee"]]]
    meta = UnixFSData.decode(decode_pbnode(blocks[root]).data or b"")
    assert meta.filesize == 18 and meta.blocksizes == [16, 2]


def test_pbnode_links_before_data() -> None:
    leaf = sha256_cid(RAW, b"x")
    encoded = encode_pbnode(PBNode((PBLink(leaf, 1),), b"\x08\x02"))
    assert encoded[0] == 0x12  # field 2 (Links) first
    assert encoded.endswith(b"\x0a\x02\x08\x02")  # field 1 (Data) last
    assert b"\x12\x00" in encoded  # empty Name is written
    assert decode_pbnode(encoded) == PBNode((PBLink(leaf, 1),), b"\x08\x02")


def test_unixfs_accepts_packed_blocksizes() -> None:
    packed = b"\x08\x02\x18\x05\x22\x02\x02\x03"
    assert UnixFSData.decode(packed).blocksizes == [2, 3]


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32, 2**63 - 1])
def test_varint_round_trip(n: int) -> None:
    encoded = encode_varint(n)
    assert decode_varint(encoded) == (n, len(encoded))


def test_base58_round_trip() -> None:
    for raw in [b"", b"\0\0ab", bytes(range(40))]:
        assert b58decode(b58encode(raw)) == raw


def test_parse_v1_round_trip() -> None:
    for text in (EMPTY, HELLO_V1, cid_of_bytes(b"y" * (C + 1))):
        cid = parse_cid(text)
        assert cid.version == 1 and str(cid) == text and len(cid.digest) == 32
    assert parse_cid(EMPTY).codec == RAW
    assert parse_cid(cid_of_bytes(b"y" * (C + 1))).codec == DAG_PB


def test_parse_v0_round_trip() -> None:
    cid = parse_cid(HELLO_V0)
    assert (cid.version, cid.codec) == (0, DAG_PB)
    assert str(cid) == HELLO_V0
    v1 = cid.to_v1()
    assert str(v1).startswith("bafybei") and parse_cid(str(v1)).digest == cid.digest


def test_parse_other_multibases() -> None:
    cid = parse_cid(HELLO_V1)
    raw = cid.to_bytes()
    assert parse_cid("f" + raw.hex()) == cid
    assert parse_cid("z" + b58encode(raw)) == cid
    assert parse_cid(HELLO_V1.upper()) == cid


@pytest.mark.parametrize(
    "text",
    [
        "",
        "b",
        "hello",
        "bafy",
        EMPTY[:-3],
        EMPTY + "aa",
        EMPTY[:10] + "1" + EMPTY[11:],  # '1' is not base32
        "bafkreiHdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",  # mixed case
        HELLO_V0[:-1] + "0",  # '0' is not base58
        "Qm" + "1" * 44,
        "zzzz",
        "f0155",
        " " + EMPTY,
    ],
)
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_cid(text)
    assert err.value.field == "cid"


def test_parse_rejects_non_string() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_cid(None)  # type: ignore[arg-type]
    assert err.value.field == "cid"
