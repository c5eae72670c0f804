"""The artifact contract against ``KuboArtifactStore`` on a real IPFS HTTP node (js-ipfs), CIDs
equal to the embedded store's, lying and failing nodes (a proxy in front of the real one), and
the node going down and coming back."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aleph_cid
import httpx
import pytest

from gpumesh.artifacts import EmbeddedBlockstore, cid_of_bytes, parse_cid
from gpumesh.artifacts.kubo import KuboArtifactStore
from gpumesh.artifacts.open import open_artifact_store
from gpumesh.artifacts.unixfs import decode_pbnode
from gpumesh.errors import (
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from gpumesh.localnet import free_port
from tests.artifact_contract import CHUNK, UNKNOWN, ArtifactStoreContract, payload
from tests.ipfs_node import IpfsNode, skip_or_fail_without_node

MULTI_LEVEL = 175 * CHUNK + 12345  # 176 leaves: a root over a full 174-leaf node and a 2-leaf node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsNode]:
    skip_or_fail_without_node()
    n = IpfsNode(tmp_path_factory.mktemp("ipfs"))
    n.start()
    yield n
    n.stop()


@pytest.fixture
def store(node: IpfsNode) -> Iterator[KuboArtifactStore]:
    node.start()  # a no-op unless a test left it stopped
    with KuboArtifactStore(node.api_url, lookup_timeout=1.0, timeout=20, retries=3, backoff=0.05) as s:
        yield s


class TestKuboArtifactStoreContract(ArtifactStoreContract):
    pass


def kubo_v1(data: bytes) -> str:
    hasher = aleph_cid.CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


def rpc(node: IpfsNode, cmd: str, **params: str) -> httpx.Response:
    resp = httpx.post(f"{node.api_url}/api/v0/{cmd}", params=params, timeout=30)
    resp.raise_for_status()
    return resp


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, random.Random(11).randrange(2 * CHUNK, 9 * CHUNK)])
def test_cids_equal_the_embedded_store_and_aleph_cid(store: KuboArtifactStore, tmp_path: Path, size: int) -> None:
    data = payload(size, seed=21)
    cid = store.put_bytes(data)
    assert cid == EmbeddedBlockstore(tmp_path / "e", fsync=False).put_bytes(data) == kubo_v1(data)
    assert cid.startswith("bafk" if size <= CHUNK else "bafy")
    assert store.get_bytes(cid) == data


def test_multi_level_dag_streamed_both_ways(store: KuboArtifactStore, node: IpfsNode, tmp_path: Path) -> None:
    data = random.Random(12).randbytes(MULTI_LEVEL)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    embedded = EmbeddedBlockstore(tmp_path / "e", fsync=False)
    cid = store.put_file(src)
    assert cid == embedded.put_file(src) == cid_of_bytes(data)
    root = parse_cid(cid)
    links = decode_pbnode(embedded.get_block(root)).links  # the DAG really has two levels
    assert [len(decode_pbnode(embedded.get_block(link.cid)).links) for link in links] == [174, 2]
    assert store.size(cid) == MULTI_LEVEL and store.has(cid)
    pins = rpc(node, "pin/ls", arg=cid, type="recursive").json()["Keys"]
    assert [parse_cid(k).to_v1() for k in pins] == [root]
    dest = tmp_path / "out" / "copy.bin"
    store.get_file(cid, dest)
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["copy.bin"]


def test_put_stream_of_many_small_chunks(store: KuboArtifactStore) -> None:
    data = payload(2 * CHUNK + 3, seed=22)
    cid = store.put_stream(data[i : i + 999] for i in range(0, len(data), 999))
    assert cid == cid_of_bytes(data)
    assert b"".join(store.iter_bytes(cid)) == data


def test_a_missing_leaf_on_the_node(node: IpfsNode) -> None:
    store = KuboArtifactStore(node.api_url, lookup_timeout=0.5, timeout=2, retries=0)
    data = payload(3 * CHUNK, seed=23)
    cid = store.put_bytes(data)
    leaf = rpc(node, "refs", arg=cid).text.splitlines()[1]  # {"Ref": ...} of the second leaf
    rpc(node, "pin/rm", arg=cid)
    rpc(node, "block/rm", arg=leaf.split('"')[3])
    assert not store.has(cid)
    assert store.size(cid) == 3 * CHUNK  # the root alone knows the size
    store.put_bytes(data)  # adding again restores the block, and the pin
    assert store.has(cid) and store.get_bytes(cid) == data


def test_pin(store: KuboArtifactStore, node: IpfsNode) -> None:
    cid = store.put_bytes(payload(CHUNK + 2, seed=24))
    rpc(node, "pin/rm", arg=cid)
    store.pin(cid)
    assert rpc(node, "pin/ls", arg=cid).json()["Keys"]
    with pytest.raises(NotFound):
        store.pin(UNKNOWN)


def test_api_url_forms(node: IpfsNode) -> None:
    cid = cid_of_bytes(b"url forms")
    for url in (node.api_url, node.api_url + "/api/v0/", f"/ip4/127.0.0.1/tcp/{node.port}"):
        with KuboArtifactStore(url) as s:
            assert s.api_url == node.api_url
            assert s.put_bytes(b"url forms") == cid
    for bad in ("127.0.0.1:5001", "/ip4/127.0.0.1/udp/1"):
        with pytest.raises(InvalidArgument):
            KuboArtifactStore(bad)


def test_open_artifact_store(node: IpfsNode, tmp_path: Path) -> None:
    embedded = open_artifact_store("embedded", path=tmp_path / "blocks", fsync=False)
    assert isinstance(embedded, EmbeddedBlockstore)
    kubo = open_artifact_store("kubo", kubo_url=node.api_url, retries=1)
    assert isinstance(kubo, KuboArtifactStore) and kubo.retries == 1
    assert kubo.put_bytes(b"either") == embedded.put_bytes(b"either")
    for kind, kwargs in [("embedded", {}), ("kubo", {}), ("s3", {"path": tmp_path}),
                         ("embedded", {"path": tmp_path, "retries": 2})]:
        with pytest.raises(InvalidArgument):
            open_artifact_store(kind, **kwargs)  # type: ignore[arg-type]


# -- lying and failing nodes: a proxy in front of the real one --------------------------------


class Proxy:
    """Forwards ``/api/v0`` calls to ``upstream``; ``faults`` (a list of callables taking the
    command, consumed in order) may answer instead, and ``rewrite`` may alter answers."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list = []
        self.rewrite = None
        self.calls: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                return None

            def do_POST(self) -> None:
                body = self._body()
                cmd = self.path.split("?")[0].removeprefix("/api/v0/")
                with proxy._lock:
                    proxy.calls.append(cmd)
                    fault = proxy.faults.pop(0) if proxy.faults else None
                if fault is not None and fault(self, cmd):
                    return
                up = httpx.post(proxy.upstream + self.path, content=body, timeout=60,
                                headers={"Content-Type": self.headers.get("Content-Type", "")})
                content = proxy.rewrite(cmd, up.content) if proxy.rewrite else up.content
                self.answer(up.status_code, content)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return bytes(out)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def answer(self, status: int, content: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def status(code: int, message: str = "injected"):
    def fault(handler, _cmd) -> bool:
        handler.answer(code, f'{{"Message":"{message}","Code":0,"Type":"error"}}'.encode())
        return True

    return fault


def drop(handler, _cmd) -> bool:
    """Read the request, then close the connection without an answer."""
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)
    return True


@pytest.fixture
def proxy(node: IpfsNode) -> Iterator[Proxy]:
    node.start()
    p = Proxy(node.api_url)
    yield p
    p.close()


@pytest.fixture
def via_proxy(proxy: Proxy) -> Iterator[KuboArtifactStore]:
    with KuboArtifactStore(proxy.url, lookup_timeout=0.5, timeout=10, retries=3, backoff=0.05) as s:
        yield s


def flip_cat(cmd: str, content: bytes) -> bytes:
    if cmd != "cat" or not content:
        return content
    mid = len(content) // 2
    return content[:mid] + bytes([content[mid] ^ 1]) + content[mid + 1 :]


@pytest.mark.parametrize("rewrite", [flip_cat, lambda cmd, c: c[:-1] if cmd == "cat" else c,
                                     lambda cmd, c: c + b"x" if cmd == "cat" else c],
                         ids=["flipped", "short", "long"])
def test_a_lying_node_is_caught(proxy: Proxy, via_proxy: KuboArtifactStore, tmp_path: Path, rewrite) -> None:
    data = payload(2 * CHUNK + 9, seed=31)
    cid = via_proxy.put_bytes(data)
    proxy.rewrite = rewrite
    with pytest.raises(IntegrityError):
        via_proxy.get_bytes(cid)
    with pytest.raises(IntegrityError):
        b"".join(via_proxy.iter_bytes(cid))
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(IntegrityError):
        via_proxy.get_file(cid, dest)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert via_proxy.size(cid) == len(data)  # the root block itself is honest here


def test_a_lying_root_block_and_add_answer(proxy: Proxy, via_proxy: KuboArtifactStore) -> None:
    cid = via_proxy.put_bytes(b"honest bytes")
    other = cid_of_bytes(b"other bytes")
    proxy.rewrite = lambda cmd, c: b"tampered" if cmd == "block/get" else c
    for call in (via_proxy.size, via_proxy.get_bytes, via_proxy.has):
        with pytest.raises(IntegrityError):
            call(cid)
    proxy.rewrite = lambda cmd, c: c.replace(cid.encode(), other.encode()) if cmd == "add" else c
    with pytest.raises(IntegrityError, match="Import settings"):
        via_proxy.put_bytes(b"honest bytes")


def test_5xx_and_dropped_connections_are_retried(proxy: Proxy, via_proxy: KuboArtifactStore) -> None:
    data = payload(CHUNK + 5, seed=32)
    proxy.faults = [status(503), drop]
    cid = via_proxy.put_bytes(data)
    assert proxy.calls == ["add"] * 3
    proxy.calls.clear()
    proxy.faults = [status(500, "internal hiccup"), drop]
    assert via_proxy.get_bytes(cid) == data
    assert proxy.calls == ["block/get"] * 3 + ["cat"]


def test_a_cat_cut_mid_stream_resumes_at_its_offset(proxy: Proxy, via_proxy: KuboArtifactStore) -> None:
    data = payload(3 * CHUNK + 1, seed=34)
    cid = via_proxy.put_bytes(data)
    proxy.calls.clear()
    resumed: list[str] = []

    def cut(handler, cmd) -> bool:  # the real answer's headers, a quarter of its body, then gone
        content = httpx.post(proxy.upstream + handler.path, timeout=30).content
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content[: len(content) // 4])
        handler.wfile.flush()
        return drop(handler, cmd)

    proxy.faults = [lambda h, c: False, cut, lambda h, c: resumed.append(h.path) and False]
    assert via_proxy.get_bytes(cid) == data
    assert proxy.calls == ["block/get", "cat", "cat"]
    assert f"offset={len(data) // 4}" in resumed[0]


def test_4xx_is_not_retried(proxy: Proxy, via_proxy: KuboArtifactStore) -> None:
    cid = via_proxy.put_bytes(b"four hundred")
    proxy.faults = [status(400, "invalid path")]
    with pytest.raises(InvalidArgument, match="invalid path"):
        via_proxy.size(cid)
    proxy.faults = [status(405)]
    with pytest.raises(FailedPrecondition):
        via_proxy.put_bytes(b"x")
    assert proxy.calls == ["add", "block/get", "add"]


def test_a_one_shot_stream_is_not_replayed_once_read(proxy: Proxy, via_proxy: KuboArtifactStore) -> None:
    data = payload(CHUNK + 7, seed=33)
    proxy.faults = [drop]
    with pytest.raises(Unavailable, match="cannot be replayed"):
        via_proxy.put_stream(iter([data[:100], data[100:]]))
    assert proxy.calls == ["add"]
    proxy.faults = [drop]
    assert via_proxy.put_stream([data]) == cid_of_bytes(data)  # a list can be read again


def test_a_dead_node_fails_promptly_naming_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with KuboArtifactStore(url, retries=2, backoff=0.05) as s:
        for call in (lambda: s.put_bytes(b"x"), lambda: s.get_bytes(UNKNOWN), lambda: s.has(UNKNOWN)):
            began = time.monotonic()
            with pytest.raises(Unavailable, match=url) as err:
                call()
            assert time.monotonic() - began < 2
            assert "3 attempts" in str(err.value) and err.value.retryable


def test_a_silent_node_times_out() -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with KuboArtifactStore(url, timeout=0.3, retries=1, backoff=0.05) as s:
            began = time.monotonic()
            with pytest.raises(Unavailable, match="Timeout"):
                s.size(UNKNOWN)
            assert time.monotonic() - began < 3


def test_the_node_restarts_within_the_retry_budget(node: IpfsNode) -> None:
    """Runs last: it stops the shared node. Calls made while it is down succeed once it is back."""
    store = KuboArtifactStore(node.api_url, retries=30, backoff=0.1, max_backoff=1.0, lookup_timeout=2)
    old = payload(2 * CHUNK + 1, seed=41)
    new = payload(CHUNK + 3, seed=42)
    cid = store.put_bytes(old)
    node.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{node.api_url}/api/v0/version")
    results: dict[str, object] = {}

    def run(name, fn) -> None:
        try:
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - asserted below
            results[name] = exc

    calls = {
        "get": lambda: store.get_bytes(cid),
        "put": lambda: store.put_bytes(new),
        "stream": lambda: store.put_stream(iter([new[:10], new[10:]])),
        "has": lambda: store.has(cid),
    }
    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    began = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(0.5)
    node.start()
    for t in threads:
        t.join(60)
    assert results == {"get": old, "put": cid_of_bytes(new), "stream": cid_of_bytes(new), "has": True}
    assert time.monotonic() - began > 0.5
    store.close()
