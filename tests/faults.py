"""Fault injection for tests/test_faults.py: a JSON-RPC proxy that acts on the wire, a full disk
on tmpfs, a persistent anvil that can be restarted, and the money checks of a settled job."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy (returned), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(interval)
    return value


# ---- the chain's wire -------------------------------------------------------------------------


def tx_input(raw: bytes) -> bytes:
    """The calldata of a signed raw transaction (typed EIP-2718 or legacy RLP)."""
    if raw and raw[0] < 0x7F:
        from eth_account.typed_transactions import TypedTransaction
        from hexbytes import HexBytes

        data = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()["data"]
        return bytes.fromhex(data[2:]) if isinstance(data, str) else bytes(data)
    import rlp

    return bytes(rlp.decode(raw)[5])


def selector(contract: str, function: str) -> bytes:
    """The 4-byte selector of ``contract.function`` from the compiled ABI."""
    from eth_utils import function_abi_to_4byte_selector

    from gpumesh.chain.artifacts import load_all

    abi = load_all()[contract].abi
    (item,) = [i for i in abi if i.get("type") == "function" and i["name"] == function]
    return function_abi_to_4byte_selector(item)


@dataclass
class _Trap:
    match: Callable[[bytes], bool]  # on the raw transaction
    action: Callable[[], None]
    before: bool  # act instead of forwarding (the tx never reaches the chain), else after it is mined


class RpcProxy:
    """A JSON-RPC proxy on loopback in front of ``upstream``. ``trap(...)`` arms a one-shot action
    on the first ``eth_sendRawTransaction`` whose raw bytes match: run it before forwarding (and
    drop the request) or after the node has accepted (and, automining, mined) the transaction."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._trap: _Trap | None = None
        self._lock = threading.Lock()
        self.fired = threading.Event()
        self.fired_at = 0.0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                trap = proxy._take(body)
                if trap is not None and trap.before:
                    proxy._fire(trap)
                    self.close_connection = True  # the sender is gone; nothing was forwarded
                    return
                reply = proxy._forward(body)
                if trap is not None:
                    proxy._fire(trap)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:  # the trap killed the sender: nobody reads the reply
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def trap(self, match: Callable[[bytes], bool], action: Callable[[], None], *, before: bool) -> None:
        with self._lock:
            self._trap = _Trap(match, action, before)
            self.fired.clear()

    def _take(self, body: bytes) -> _Trap | None:
        with self._lock:
            if self._trap is None:
                return None
            try:
                request = json.loads(body)
            except ValueError:
                return None
            for item in request if isinstance(request, list) else [request]:
                if isinstance(item, dict) and item.get("method") == "eth_sendRawTransaction":
                    raw = bytes.fromhex(str(item["params"][0]).removeprefix("0x"))
                    if self._trap.match(raw):
                        trap, self._trap = self._trap, None
                        return trap
            return None

    def _fire(self, trap: _Trap) -> None:
        self.fired_at = time.monotonic()
        trap.action()
        self.fired.set()

    def _forward(self, body: bytes) -> bytes:
        request = urllib.request.Request(self.upstream, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.read()
        except (urllib.error.URLError, OSError) as exc:
            return json.dumps({"jsonrpc": "2.0", "id": None,
                               "error": {"code": -32603, "message": f"proxy: upstream down: {exc}"}}).encode()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class PersistentAnvil:
    """Anvil keeping its state in ``state_file`` (dumped on SIGTERM, loaded on start), so it can be
    stopped and started again on the same port with the same chain."""

    def __init__(self, state_file: Path) -> None:
        from gpumesh.chain.node import free_port
        from tests import npm_deps

        self.binary = npm_deps.anvil()  # installs contracts/node_modules on first use; skips (or fails) without
        self.state_file = state_file
        self.port = free_port()
        self.node = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PersistentAnvil:
        from gpumesh.chain.node import Anvil

        self.node = Anvil(binary=self.binary, port=self.port,
                          extra_args=("--state", str(self.state_file))).start()
        return self

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()  # SIGTERM: anvil writes its state file on the way out
            self.node = None


# ---- disks -------------------------------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted on ``path`` (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a small disk needs a tmpfs mount, which needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def resize(path: Path, size_bytes: int) -> None:
    """Grow (or shrink) the tmpfs on ``path`` in place: the disk is freed without a restart."""
    subprocess.run(["mount", "-o", f"remount,size={size_bytes}", str(path)], check=True, capture_output=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``path`` with one file, leaving ``leave`` bytes free."""
    filler = path / ".filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free_bytes(path) - leave))
    assert free_bytes(path) <= leave, f"{free_bytes(path)} bytes still free on {path}"
    return filler


# ---- money --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EscrowOutcome:
    settled_events: list[dict]
    earned: dict[str, int]  # provider name -> escrow balance credited
    refund: int


def escrow_outcome(chain, escrow_key: str, providers: dict[str, str], submitter: str) -> EscrowOutcome:
    """What the escrow did for one job: its JobSettled events and the balances it credited
    (providers: name -> address; each wallet in these tests takes part in one job only)."""
    events = chain.events("JobEscrow", "JobSettled", key=bytes.fromhex(escrow_key.removeprefix("0x")))
    earned = {name: chain.escrow_balance(address) for name, address in providers.items()}
    return EscrowOutcome(events, earned, chain.escrow_balance(submitter))


def assert_paid_once(outcome: EscrowOutcome, deposit: int) -> None:
    """Exactly one JobSettled; its paid/refunded match the balances; they add up to the deposit."""
    assert len(outcome.settled_events) == 1, f"settled {len(outcome.settled_events)} times"
    args = outcome.settled_events[0]["args"]
    paid = sum(outcome.earned.values())
    assert (int(args["paid"]), int(args["refunded"])) == (paid, outcome.refund), (args, outcome)
    assert paid + outcome.refund == deposit, f"paid {paid} + refund {outcome.refund} != deposit {deposit}"


# ---- jobs ---------------------------------------------------------------------------------------


def prompts_jsonl(prompts: list[str]) -> bytes:
    return "".join(json.dumps({"prompt": p}) + "\n" for p in prompts).encode()


def direct_completions(model_tar: Path, prompts: list[str], root: Path, max_new_tokens: int) -> list[str]:
    """The completions the workload gives these prompts run directly, without the marketplace."""
    from provider_node.workloads.inference import run_inference
    from provider_node.workloads.models import materialize

    root.mkdir(parents=True, exist_ok=True)
    (root / "in.jsonl").write_bytes(prompts_jsonl(prompts))
    model = materialize(model_tar, root / "model")
    run_inference(model, root / "in.jsonl", root / "out.jsonl", {"max_new_tokens": max_new_tokens})
    return [json.loads(line)["completion"] for line in (root / "out.jsonl").read_text().splitlines()]


def completions(client, job_id: str) -> list[str]:
    from gpumesh.client import JobHandle

    return [o["completion"] for o in JobHandle(client, job_id).outputs()]


def provider_ids(client) -> dict[str, str]:
    """Provider name -> provider id."""
    return {p.name: p.provider_id for p in client.list_providers()}


def connected(client) -> set[str]:
    return {p.name for p in client.list_providers(connected_only=True)}
