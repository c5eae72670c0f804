"""dag-pb + UnixFS encoding, and a streaming importer whose CIDs equal Kubo's.

Kubo ``ipfs add --cid-version=1`` defaults: fixed 256 KiB chunks stored as raw leaves,
balanced layout with at most 174 links per node, sha2-256, CIDv1. The balanced layout
grows depth only when data remains: the old root becomes the first child of a new root,
which is then filled with subtrees one level shallower. Interior nodes are never collapsed,
so a node with a single child does occur (e.g. 174 * 256 KiB + 1 bytes gives a root with a
full 174-leaf node and a node holding one 1-byte leaf).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gpumesh.artifacts.cid import (
    DAG_PB,
    RAW,
    Cid,
    cid_from_bytes,
    decode_varint,
    encode_varint,
    sha256_cid,
)
from gpumesh.errors import InvalidArgument

CHUNK_SIZE = 262144
MAX_LINKS = 174

# UnixFS Data.DataType
UNIXFS_RAW = 0
UNIXFS_DIRECTORY = 1
UNIXFS_FILE = 2

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _tag(field_no: int, wire: int) -> bytes:
    return encode_varint(field_no << 3 | wire)


def _len_field(field_no: int, payload: bytes) -> bytes:
    return _tag(field_no, _LEN) + encode_varint(len(payload)) + payload


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field_no, wire_type, value)`` for each protobuf field. ValueError if malformed."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = decode_varint(buf, pos)
        field_no, wire = key >> 3, key & 7
        if field_no == 0:
            raise ValueError("protobuf field number 0")
        value: int | bytes
        if wire == _VARINT:
            value, pos = decode_varint(buf, pos)
        elif wire == _LEN:
            size, pos = decode_varint(buf, pos)
            if pos + size > end:
                raise ValueError("truncated protobuf field")
            value, pos = bytes(buf[pos : pos + size]), pos + size
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if pos + width > end:
                raise ValueError("truncated protobuf field")
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field_no, wire, value


@dataclass(frozen=True, slots=True)
class PBLink:
    cid: Cid
    tsize: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


def encode_pbnode(node: PBNode) -> bytes:
    """Canonical dag-pb: Links (field 2) first, then Data (field 1); Name always written."""
    out = bytearray()
    for link in node.links:
        body = (
            _len_field(1, link.cid.to_bytes())
            + _len_field(2, link.name.encode("utf-8"))
            + _tag(3, _VARINT)
            + encode_varint(link.tsize)
        )
        out += _len_field(2, body)
    if node.data is not None:
        out += _len_field(1, node.data)
    return bytes(out)


def decode_pbnode(buf: bytes) -> PBNode:
    """Decode a dag-pb block. ValueError if malformed."""
    links: list[PBLink] = []
    data: bytes | None = None
    for field_no, wire, value in _fields(buf):
        if field_no == 2 and wire == _LEN:
            links.append(_decode_link(value))  # type: ignore[arg-type]
        elif field_no == 1 and wire == _LEN:
            data = value  # type: ignore[assignment]
        else:
            raise ValueError(f"unexpected dag-pb field {field_no}")
    return PBNode(tuple(links), data)


def _decode_link(buf: bytes) -> PBLink:
    cid: Cid | None = None
    name, tsize = "", 0
    for field_no, wire, value in _fields(buf):
        if field_no == 1 and wire == _LEN:
            cid = cid_from_bytes(value)  # type: ignore[arg-type]
        elif field_no == 2 and wire == _LEN:
            name = value.decode("utf-8")  # type: ignore[union-attr]
        elif field_no == 3 and wire == _VARINT:
            tsize = value  # type: ignore[assignment]
        else:
            raise ValueError(f"unexpected dag-pb link field {field_no}")
    if cid is None:
        raise ValueError("dag-pb link without a hash")
    return PBLink(cid, tsize, name)


@dataclass(slots=True)
class UnixFSData:
    """The UnixFS ``Data`` message (only the fields files use)."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        out = bytearray(_tag(1, _VARINT) + encode_varint(self.type))
        if self.data is not None:
            out += _len_field(2, self.data)
        if self.filesize is not None:
            out += _tag(3, _VARINT) + encode_varint(self.filesize)
        for size in self.blocksizes:
            out += _tag(4, _VARINT) + encode_varint(size)
        return bytes(out)

    @classmethod
    def decode(cls, buf: bytes) -> UnixFSData:
        msg = cls(type=-1)
        for field_no, wire, value in _fields(buf):
            if field_no == 1 and wire == _VARINT:
                msg.type = value  # type: ignore[assignment]
            elif field_no == 2 and wire == _LEN:
                msg.data = value  # type: ignore[assignment]
            elif field_no == 3 and wire == _VARINT:
                msg.filesize = value  # type: ignore[assignment]
            elif field_no == 4 and wire == _VARINT:
                msg.blocksizes.append(value)  # type: ignore[arg-type]
            elif field_no == 4 and wire == _LEN:  # packed encoding
                pos, packed = 0, value
                while pos < len(packed):  # type: ignore[arg-type]
                    size, pos = decode_varint(packed, pos)  # type: ignore[arg-type]
                    msg.blocksizes.append(size)
        if msg.type < 0:
            raise ValueError("UnixFS data without a type")
        return msg

    @property
    def content_size(self) -> int:
        return self.filesize if self.filesize is not None else len(self.data or b"")


@dataclass(frozen=True, slots=True)
class _Child:
    cid: Cid
    tsize: int  # encoded size of the whole subtree
    filesize: int  # file bytes under it


class FileImporter:
    """Streams bytes into a Kubo-identical UnixFS DAG, handing each block to ``put_block``.

    Memory stays constant: one pending chunk plus at most 174 links per tree level.
    """

    def __init__(self, put_block: Callable[[Cid, bytes], None]) -> None:
        self._put = put_block
        self._buf = bytearray()
        self._levels: list[list[_Child]] = []  # levels[i]: children of the open depth-(i+1) node
        self._done = False

    def update(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("FileImporter already finished")
        view = memoryview(data).cast("B")
        if self._buf:
            need = CHUNK_SIZE - len(self._buf)
            self._buf += view[:need]
            view = view[need:]
            if len(self._buf) < CHUNK_SIZE:
                return
            self._add_leaf(bytes(self._buf))
            self._buf.clear()
        whole = len(view) - len(view) % CHUNK_SIZE
        for start in range(0, whole, CHUNK_SIZE):
            self._add_leaf(bytes(view[start : start + CHUNK_SIZE]))
        self._buf += view[whole:]

    def finish(self) -> Cid:
        """Flush the last chunk and the open interior nodes; return the root CID."""
        if self._done:
            raise RuntimeError("FileImporter already finished")
        self._done = True
        if self._buf or not self._levels:
            self._add_leaf(bytes(self._buf))
        self._buf = bytearray()
        level = 0
        while True:
            children = self._levels[level]
            if level == len(self._levels) - 1 and len(children) == 1:
                return children[0].cid
            self._push(level + 1, self._build(children))
            level += 1

    def _add_leaf(self, chunk: bytes) -> None:
        cid = sha256_cid(RAW, chunk)
        self._put(cid, chunk)
        self._push(0, _Child(cid, len(chunk), len(chunk)))

    def _push(self, level: int, child: _Child) -> None:
        if level == len(self._levels):
            self._levels.append([])
        siblings = self._levels[level]
        if len(siblings) == MAX_LINKS:  # the open node is full: close it one level up
            self._push(level + 1, self._build(siblings))
            siblings = self._levels[level] = []
        siblings.append(child)

    def _build(self, children: list[_Child]) -> _Child:
        unixfs = UnixFSData(
            UNIXFS_FILE,
            filesize=sum(c.filesize for c in children),
            blocksizes=[c.filesize for c in children],
        )
        links = tuple(PBLink(c.cid, c.tsize) for c in children)
        block = encode_pbnode(PBNode(links, unixfs.encode()))
        cid = sha256_cid(DAG_PB, block)
        self._put(cid, block)
        return _Child(cid, len(block) + sum(c.tsize for c in children), unixfs.filesize or 0)


def _discard(_cid: Cid, _block: bytes) -> None:
    return None


def cid_of_bytes(data: bytes) -> str:
    """The CID Kubo prints for ``ipfs add --cid-version=1`` of ``data`` (nothing is stored)."""
    importer = FileImporter(_discard)
    importer.update(data)
    return str(importer.finish())


def _file_node(cid: Cid, block: bytes) -> tuple[PBNode, UnixFSData]:
    """Decode a dag-pb block holding a UnixFS file node; InvalidArgument otherwise."""
    try:
        node = decode_pbnode(block)
        if node.data is None:
            raise ValueError("dag-pb node without UnixFS data")
        unixfs = UnixFSData.decode(node.data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{cid} is not a UnixFS file: {exc}", field="cid") from None
    if unixfs.type not in (UNIXFS_FILE, UNIXFS_RAW):
        raise InvalidArgument(f"{cid} is not a UnixFS file (type {unixfs.type})", field="cid")
    return node, unixfs


def _check_codec(cid: Cid) -> None:
    if cid.codec not in (RAW, DAG_PB):
        raise InvalidArgument(f"{cid} is not a UnixFS file (codec {cid.codec:#x})", field="cid")


def file_size(root: Cid, block: bytes) -> int:
    """File size in bytes, from the root block alone."""
    _check_codec(root)
    if root.codec == RAW:
        return len(block)
    return _file_node(root, block)[1].content_size


def iter_file(
    root: Cid, get_block: Callable[[Cid], bytes], root_block: bytes | None = None
) -> Iterator[bytes]:
    """Yield a UnixFS file's content in order, fetching blocks lazily depth-first."""
    stack: list[Cid] = [root]
    while stack:
        cid = stack.pop()
        _check_codec(cid)
        if root_block is not None:
            block, root_block = root_block, None
        else:
            block = get_block(cid)
        if cid.codec == RAW:
            if block:
                yield block
            continue
        node, unixfs = _file_node(cid, block)
        if unixfs.data:
            yield unixfs.data
        stack.extend(link.cid for link in reversed(node.links))


def iter_file_blocks(root: Cid, get_block: Callable[[Cid], bytes]) -> Iterator[Cid]:
    """Yield every block CID of a file; interior (dag-pb) blocks are fetched, leaves are not."""
    stack: list[Cid] = [root]
    while stack:
        cid = stack.pop()
        _check_codec(cid)
        yield cid
        if cid.codec == DAG_PB:
            node, _ = _file_node(cid, get_block(cid))
            stack.extend(link.cid for link in reversed(node.links))
