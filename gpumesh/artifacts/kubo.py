"""``ArtifactStore`` over an IPFS node's HTTP RPC API (Kubo's ``/api/v0``), with plain httpx.

Adds spell out Kubo's CIDv1 defaults (256 KiB chunks, raw leaves, 174-link balanced DAG) and
are hashed locally while they stream, so the node's CID is checked and equals the embedded
store's. Nothing read from the node is trusted: ``cat`` streams are re-imported locally and
must hash to the CID asked for. Reads use only the node's own blocks (``offline=true``);
nodes that wait for a missing block instead (js-ipfs) are cut off after ``lookup_timeout``.
Connection errors, timeouts and 5xx answers are retried with exponential backoff and jitter;
then ``Unavailable`` names the node. 4xx answers map to typed errors and are not retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path

import httpx

from gpumesh.artifacts.base import write_atomically
from gpumesh.artifacts.cid import RAW, SHA2_256, Cid, parse_cid
from gpumesh.artifacts.unixfs import FileImporter, file_size
from gpumesh.errors import (
    FailedPrecondition,
    GpumeshError,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 20
_BOUNDARY = "gpumesh-kubo-7d1f0c2b9a"
_ADD_PARAMS = {
    "chunker": "size-262144",
    "raw-leaves": "true",
    "cid-version": "1",
    "hash": "sha2-256",
    "pin": "true",
    "cid-base": "base32",
    "progress": "false",
}
# How nodes say a block is not there: Kubo offline ("block was not found locally (offline):
# ipld: could not find ..."), js-ipfs ("Not Found"), or a lookup that ran out of its timeout.
_MISSING = ("not found", "could not find", "timed out", "deadline exceeded")


class _Transient(Exception):
    """A failure worth retrying (connection, timeout, 5xx); never leaves this module."""


def _discard(_cid: Cid, _block: bytes) -> None:
    return None


def _api_url(url: str) -> str:
    """``http://host:port`` from a URL (with or without ``/api/v0``) or a ``/ip4/../tcp/..`` multiaddr."""
    if url.startswith(("/ip4/", "/ip6/", "/dns/", "/dns4/", "/dns6/")):
        parts = url.strip("/").split("/")
        if len(parts) < 4 or parts[2] != "tcp":
            raise InvalidArgument(f"unsupported API multiaddr {url!r}", field="api_url")
        host = f"[{parts[1]}]" if parts[0] == "ip6" else parts[1]
        return f"http://{host}:{parts[3]}"
    url = url.rstrip("/")
    url = url.removesuffix("/api/v0")
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"API URL must be http(s) or a multiaddr, got {url!r}", field="api_url")
    return url


def _as_cid(cid: str) -> Cid:
    c = parse_cid(cid)
    if c.hash_code != SHA2_256:
        raise InvalidArgument(f"unsupported multihash in {c}; only sha2-256", field="cid")
    return c


class _OneShot:
    """Wraps a caller's iterable; tells whether any of it has been consumed (then no replay)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._it:
            self.started = True
            yield chunk


def _multipart(chunks: Iterable[bytes], local: list[Cid]) -> Iterator[bytes]:
    """A one-file ``multipart/form-data`` body; appends the content's CID to ``local`` at the end."""
    importer = FileImporter(_discard)
    yield (
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for chunk in chunks:
        if chunk:  # an empty chunk would end a chunked transfer
            importer.update(chunk)
            yield bytes(chunk)
    local.append(importer.finish())
    yield f"\r\n--{_BOUNDARY}--\r\n".encode()


class KuboArtifactStore:
    """``ArtifactStore`` backed by a Kubo-compatible node; thread-safe (one pooled client).

    ``retries`` retries follow the first attempt, the n-th after a pause drawn from
    ``[d/2, d]`` with ``d = min(max_backoff, backoff * 2**n)``. ``offline=False`` lets the node
    fetch missing blocks from its peers; raise ``lookup_timeout`` then.
    """

    def __init__(
        self,
        api_url: str,
        *,
        timeout: float = 60.0,
        lookup_timeout: float = 5.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        offline: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if timeout <= 0 or lookup_timeout <= 0 or retries < 0 or backoff < 0 or max_backoff < 0:
            raise InvalidArgument("timeouts must be positive; retries and backoffs non-negative")
        self.api_url = _api_url(api_url)
        self.timeout = timeout
        self.lookup_timeout = lookup_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.offline = offline
        self._http = httpx.Client(timeout=httpx.Timeout(timeout), transport=transport)
        self._rng = random.Random()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KuboArtifactStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KuboArtifactStore({self.api_url!r})"

    # -- transport --------------------------------------------------------------------------

    def _params(self, params: dict[str, str], *, lookup: bool = False) -> dict[str, str]:
        out = dict(params)
        if self.offline:
            out["offline"] = "true"
        if lookup:  # a whole-command deadline: only for answers that are small
            out["timeout"] = f"{max(1, round(self.lookup_timeout * 1000))}ms"
        return out

    def _deadline(self) -> dict[str, str]:
        """A node-side deadline for a walk of a whole DAG (a node that waits would never end)."""
        return {"timeout": f"{round(self.timeout * 1000)}ms"}

    def _attempt(
        self, cmd: str, params: dict[str, str], *, content: Iterable[bytes] | None = None,
        stream: bool = False, cid: str | None = None,
    ) -> httpx.Response:
        """One request. Returns a 2xx response (open if ``stream``); raises typed or _Transient."""
        headers = {"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"} if content is not None else {}
        request = self._http.build_request(
            "POST", f"{self.api_url}/api/v0/{cmd}", params=params, content=content, headers=headers
        )
        try:
            resp = self._http.send(request, stream=True)
            if resp.status_code < 400 and stream:
                return resp
            try:
                resp.read()
            finally:
                resp.close()
        except httpx.TransportError as exc:  # connect, read and write errors and timeouts
            raise _Transient(f"{type(exc).__name__}: {exc or 'no detail'}") from None
        if resp.status_code < 400:
            return resp
        raise self._error(cmd, resp, cid)

    def _error(self, cmd: str, resp: httpx.Response, cid: str | None) -> Exception:
        try:
            message = str(json.loads(resp.content)["Message"])
        except (ValueError, KeyError, TypeError):
            message = resp.text.strip()[:300] or resp.reason_phrase
        status, where = resp.status_code, f"artifact node {self.api_url} ({cmd})"
        if cid is not None and (status == 404 or any(m in message.lower() for m in _MISSING)):
            return NotFound(f"artifact {cid} not found on {where}: {message}", field="cid")
        if status >= 500:
            return _Transient(f"HTTP {status}: {message}")
        if status == 400:
            return InvalidArgument(f"{where} rejected the request: {message}", field="cid" if cid else None)
        if status in (401, 403):
            return PermissionDenied(f"{where} refused the request: {message}")
        if status == 404 or status == 405:
            return FailedPrecondition(f"{where} does not offer /api/v0/{cmd}: {message}")
        if status in (413, 429):
            return ResourceExhausted(f"{where}: HTTP {status}: {message}")
        return GpumeshError(f"{where}: HTTP {status}: {message}")

    def _pause(self, cmd: str, attempt: int, cause: _Transient, *, replayable: bool = True) -> None:
        """Sleep before retry ``attempt + 1``, or raise ``Unavailable`` when none is left."""
        if not replayable:
            raise Unavailable(
                f"artifact node {self.api_url} failed during {cmd} after the stream was read; "
                f"a one-shot stream cannot be replayed: {cause}"
            )
        if attempt >= self.retries:
            raise Unavailable(
                f"artifact node {self.api_url} unavailable ({cmd}, {attempt + 1} attempts): {cause}"
            )
        cap = min(self.max_backoff, self.backoff * 2**attempt)
        delay = self._rng.uniform(cap / 2, cap)
        log.warning("artifact node %s: %s failed (%s); retry %d of %d in %.2fs",
                    self.api_url, cmd, cause, attempt + 1, self.retries, delay)
        time.sleep(delay)

    def _call(self, cmd: str, params: dict[str, str], *, cid: str | None = None) -> httpx.Response:
        attempt = 0
        while True:
            try:
                return self._attempt(cmd, params, cid=cid)
            except _Transient as exc:
                self._pause(cmd, attempt, exc)
                attempt += 1

    # -- writes -----------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        return self._add(lambda: (data,))

    def put_file(self, path: Path) -> str:
        def read() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(_READ_SIZE):
                    yield chunk

        Path(path).stat()  # a missing file fails here, not as a node error
        return self._add(read)

    def put_stream(self, chunks: Iterable[bytes]) -> str:
        """Retried when ``chunks`` can be read again (a collection), or failed before reading it."""
        if isinstance(chunks, Collection):
            return self._add(lambda: chunks)
        source = _OneShot(chunks)
        return self._add(lambda: source, replayable=lambda: not source.started)

    def _add(self, open_chunks: Callable[[], Iterable[bytes]], replayable: Callable[[], bool] = lambda: True) -> str:
        """One streamed multipart upload per attempt, hashed locally on the way."""
        attempt = 0
        while True:
            local: list[Cid] = []  # the root CID, once the whole body has been sent
            try:
                body = _multipart(open_chunks(), local)
                resp = self._attempt("add", self._params(_ADD_PARAMS), content=body)
                return self._check_added(resp, local)
            except _Transient as exc:
                self._pause("add", attempt, exc, replayable=replayable())
                attempt += 1

    def _check_added(self, resp: httpx.Response, local: list[Cid]) -> str:
        hashes = []
        for line in resp.text.splitlines():
            obj = json.loads(line) if line.strip() else {}
            if obj.get("Type") == "error" or ("Message" in obj and "Hash" not in obj):
                raise _Transient(f"add failed on the node: {obj.get('Message')}")
            if "Hash" in obj:
                hashes.append(obj["Hash"])
        if not local or not hashes:  # the node answered before reading it all, or said nothing
            raise _Transient("the node's add answer has no CID for the whole upload")
        got = parse_cid(hashes[-1])
        if got.to_v1() != local[0]:
            raise IntegrityError(
                f"artifact node {self.api_url} added the bytes as {hashes[-1]}, but they hash to "
                f"{local[0]} with Kubo's CIDv1 defaults (check the node's Import settings)",
                field="cid",
            )
        return str(local[0])

    def pin(self, cid: str) -> None:
        """Pin a file (recursively) on the node; ``put_*`` already pin what they add."""
        self._root(cid)  # unknown CIDs fail fast; the pin itself walks the whole DAG
        params = self._params({"arg": str(_as_cid(cid)), "recursive": "true"}) | self._deadline()
        self._call("pin/add", params, cid=cid)

    # -- reads ------------------------------------------------------------------------------

    def _root(self, cid: str) -> tuple[Cid, bytes]:
        """The root block, verified against its CID."""
        want = _as_cid(cid)
        block = self._call("block/get", self._params({"arg": str(want)}, lookup=True), cid=cid).content
        if hashlib.sha256(block).digest() != want.digest:
            raise IntegrityError(f"artifact node {self.api_url} returned a root block that is not {cid}", field="cid")
        return want, block

    def size(self, cid: str) -> int:
        want, block = self._root(cid)
        return file_size(want, block)

    def iter_bytes(self, cid: str) -> Iterator[bytes]:
        """Stream the content; ``IntegrityError`` at the end if it does not hash to ``cid``."""
        want, block = self._root(cid)  # unknown or malformed CIDs fail here, before any byte
        return self._cat(cid, want, file_size(want, block))

    def _cat(self, text: str, want: Cid, total: int) -> Iterator[bytes]:
        importer = FileImporter(_discard)
        done = attempt = 0
        while True:
            params = self._params({"arg": str(want)} | ({"offset": str(done)} if done else {}))
            try:
                resp = self._attempt("cat", params, stream=True, cid=text)
                try:
                    for chunk in resp.iter_bytes():
                        if done + len(chunk) > total:
                            raise IntegrityError(
                                f"artifact node {self.api_url} sent more than the {total} bytes of {text}",
                                field="cid",
                            )
                        importer.update(chunk)
                        done += len(chunk)
                        yield chunk
                except httpx.TransportError as exc:  # cut mid-stream: resume at ``done``
                    raise _Transient(f"{type(exc).__name__}: {exc or 'no detail'}") from None
                finally:
                    resp.close()
                break
            except _Transient as exc:
                self._pause("cat", attempt, exc)
                attempt += 1
        got = importer.finish()
        if done != total or got != want.to_v1():
            raise IntegrityError(
                f"artifact node {self.api_url} sent {done} of {total} bytes for {text}, hashing to {got}",
                field="cid",
            )

    def get_bytes(self, cid: str) -> bytes:
        return b"".join(self.iter_bytes(cid))

    def get_file(self, cid: str, dest: Path) -> None:
        """Download to ``dest`` atomically; nothing is left behind when verification fails."""
        write_atomically(self.iter_bytes(cid), dest)  # an unknown CID fails before a file is made

    def has(self, cid: str) -> bool:
        """Whether the node holds every block: the root, then a recursive ``refs`` walk."""
        try:
            want, _ = self._root(cid)
            if want.codec == RAW:
                return True
            params = {"arg": str(want), "recursive": "true", "unique": "true"}
            resp = self._call("refs", self._params(params) | self._deadline(), cid=cid)
        except NotFound:
            return False
        return not any(json.loads(line).get("Err") for line in resp.text.splitlines() if line.strip())
