"""Where a ``Web3`` comes from: an in-process py-evm chain, any JSON-RPC URL, a ``DevNode``
(an in-process chain served over HTTP JSON-RPC so several processes can share it) or a
throwaway ``Anvil``.

Every local chain here prefunds the same dev accounts, derived from ``DEV_MNEMONIC`` along
``m/44'/60'/0'/0/i`` exactly as anvil and hardhat do, so ``dev_keys()`` are valid everywhere.

DevNode JSON-RPC methods: all of web3's eth-tester endpoints (``eth_chainId``, ``eth_blockNumber``,
``eth_getBalance``, ``eth_getTransactionCount`` (incl. "pending"), ``eth_getCode``,
``eth_getStorageAt``, ``eth_call``, ``eth_estimateGas``, ``eth_sendRawTransaction``,
``eth_sendTransaction`` (dev accounts), ``eth_getTransactionReceipt``, ``eth_getTransactionByHash``,
``eth_getBlockByNumber``/``ByHash``, ``eth_getLogs``, ``eth_newFilter``/``eth_getFilterChanges``/
``eth_getFilterLogs``/``eth_uninstallFilter``, ``eth_gasPrice``, ``eth_maxPriorityFeePerGas``,
``eth_feeHistory``, ``eth_accounts``, ``net_version``, ``web3_clientVersion``), plus
``evm_increaseTime [seconds]``, ``evm_setNextBlockTimestamp [ts]`` (both mine one block at the new
time at once), ``evm_mine`` (``[]``, ``[n blocks]`` or anvil's ``[{"blocks": n}]``),
``evm_snapshot``/``evm_revert``. Batch requests are answered as batches. Transactions are mined
at once, one block each. Reverts answer ``{"code": 3, "message": "execution reverted",
"data": "0x<revert data>"}`` as geth and anvil do.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gpumesh.chain.errors import ChainError, revert_data

DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_PATH = "m/44'/60'/0'/0"
DEV_BALANCE = 10_000 * 10**18
ENV_ANVIL = "GPUMESH_ANVIL"
_ANVIL_IN_REPO = Path(__file__).resolve().parents[2] / "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@lru_cache(maxsize=8)
def _dev_keys(mnemonic: str, count: int) -> tuple[str, ...]:
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    seed = seed_from_mnemonic(mnemonic, "")
    return tuple("0x" + key_from_seed(seed, f"{DEV_PATH}/{i}").hex() for i in range(count))


def dev_keys(mnemonic: str = DEV_MNEMONIC, count: int = 10) -> list[str]:
    """Private keys (hex) of the prefunded dev accounts of every local chain made here."""
    return list(_dev_keys(mnemonic, count))


def fund_dev_gas(chain, address: str, *, at_least: int = 10**16, amount: int = 10**17) -> bool:
    """On a local dev chain, send ``address`` ``amount`` wei of gas money from dev account 2 if it
    holds under ``at_least``; returns whether it sent. ``chain``: a ``ChainClient``."""
    from eth_account import Account

    if chain.web3.eth.get_balance(address) >= at_least:
        return False
    chain.send_value(Account.from_key(dev_keys()[2]), address, amount)
    return True


def _measured_gas_estimate(state, transaction) -> int:
    """py-evm gas estimation in ~2 executions instead of a ~13-step binary search: run once at
    the block gas limit, try what it used (+1/63 for nested calls' 63/64 rule, + a margin),
    and fall back to py-evm's binary search only if that is not enough."""
    from eth.estimators.gas import binary_gas_search_intrinsic_tolerance
    from eth.vm.spoof import SpoofTransaction

    def run(gas: int):
        snapshot = state.snapshot()
        try:
            return state.apply_transaction(SpoofTransaction(transaction, gas=gas, gas_price=0))
        finally:
            state.revert(snapshot)

    computation = run(state.gas_limit)
    if computation.is_error:
        raise computation.error
    used = state.gas_limit - computation.get_gas_remaining()
    candidate = min(state.gas_limit, used + used // 63 + 3_000)
    if not run(candidate).is_error:
        return candidate
    return binary_gas_search_intrinsic_tolerance(state, transaction)


def _new_tester(mnemonic: str, accounts: int, balance: int):
    from eth_tester import EthereumTester, PyEVMBackend

    backend = PyEVMBackend.from_mnemonic(
        mnemonic, num_accounts=accounts, hd_path=DEV_PATH, genesis_state_overrides={"balance": balance}
    )
    # The chain class is made per backend, so this touches no other py-evm chain in the process;
    # the instance copy is what py-evm reads (set in its __init__), the class copy survives resets.
    type(backend.chain).gas_estimator = staticmethod(_measured_gas_estimate)
    backend.chain.gas_estimator = _measured_gas_estimate
    return EthereumTester(backend)


def _locked_provider_class():
    from web3 import EthereumTesterProvider

    class LockedEthereumTesterProvider(EthereumTesterProvider):
        """py-evm is not thread-safe: one request at a time."""

        def __init__(self, tester, lock: threading.RLock) -> None:
            super().__init__(tester)
            self.lock = lock

        def make_request(self, method, params):
            with self.lock:
                return super().make_request(method, params)

    return LockedEthereumTesterProvider


def in_process_web3(*, mnemonic: str = DEV_MNEMONIC, accounts: int = 10, balance: int = DEV_BALANCE):
    """A fresh py-evm chain inside this process; its funded accounts are ``dev_keys(mnemonic, accounts)``."""
    from web3 import Web3

    provider = _locked_provider_class()(_new_tester(mnemonic, accounts, balance), threading.RLock())
    return Web3(provider)


def json_rpc_web3(url: str, *, timeout: float = 10.0):
    from web3 import Web3

    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}))


def _tester_of(w3):
    return getattr(w3.provider, "ethereum_tester", None)


def increase_time(w3, seconds: int) -> int:
    """Move chain time forward by ``seconds`` and mine a block; returns the new block's timestamp.

    In-process this is eth-tester's ``time_travel``; over JSON-RPC ``evm_increaseTime`` +
    ``evm_mine`` (anvil, hardhat, DevNode). Raises ChainError(retryable=False) where unsupported.
    """
    tester = _tester_of(w3)
    if tester is not None:
        lock = getattr(w3.provider, "lock", None) or threading.RLock()
        with lock:
            tester.time_travel(tester.get_block_by_number("pending")["timestamp"] + int(seconds))
    else:
        for method, params in (("evm_increaseTime", [int(seconds)]), ("evm_mine", [])):
            response = w3.provider.make_request(method, params)
            if response.get("error"):
                raise ChainError(f"this node cannot travel in time: {method}: {response['error']}", retryable=False)
    return int(w3.eth.get_block("latest")["timestamp"])


def _jsonable(value: Any) -> Any:
    """eth-tester's Python values -> JSON-RPC wire values (quantities and bytes as 0x-hex)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


class _RpcError(Exception):
    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class TesterRpc:
    """Answers JSON-RPC requests from an EthereumTester, applying web3's eth-tester formatters."""

    _FILL_FROM = ("eth_call", "eth_estimateGas", "eth_createAccessList")

    def __init__(self, tester, lock: threading.RLock | None = None) -> None:
        from web3.providers.eth_tester.defaults import API_ENDPOINTS
        from web3.providers.eth_tester.middleware import request_formatters, result_formatters

        self.tester = tester
        self.lock = lock or threading.RLock()
        self._endpoints = API_ENDPOINTS
        self._request_formatters = request_formatters
        self._result_formatters = result_formatters
        self._time_offset = 0

    def handle(self, request: Any) -> dict | None:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}}
        rid = request.get("id")
        try:
            result = self.call(request["method"], list(request.get("params") or []))
            return {"jsonrpc": "2.0", "id": rid, "result": result}
        except _RpcError as e:
            error = {"code": e.code, "message": e.message}
            if e.data is not None:
                error["data"] = e.data
            return {"jsonrpc": "2.0", "id": rid, "error": error}

    def call(self, method: str, params: list) -> Any:
        with self.lock:
            try:
                return _jsonable(self._call(method, params))
            except _RpcError:
                raise
            except NotImplementedError:
                raise _RpcError(-32601, f"method not implemented: {method}") from None
            except Exception as exc:  # a revert, or eth-tester/py-evm refusing the request
                data = revert_data(exc)
                if data is not None:
                    raise _RpcError(3, "execution reverted", "0x" + data.hex()) from None
                raise _RpcError(-32000, f"{type(exc).__name__}: {exc}") from None

    def _call(self, method: str, params: list) -> Any:
        tester = self.tester
        if method == "net_version":
            return str(self._chain_id())
        if method == "web3_clientVersion":
            return "gpumesh-devnode/" + self._endpoints["web3"]["clientVersion"](tester, []).split("/")[1]
        if method == "evm_increaseTime":
            seconds = _int(params[0])
            self._time_offset += seconds
            tester.time_travel(tester.get_block_by_number("pending")["timestamp"] + seconds)
            return self._time_offset
        if method == "evm_setNextBlockTimestamp":
            tester.time_travel(_int(params[0]))
            return None
        if method == "evm_mine":
            arg = params[0] if params else 1
            blocks = _int(arg.get("blocks", 1)) if isinstance(arg, dict) else _int(arg)
            tester.mine_blocks(max(1, blocks))
            return "0x0"
        namespace, _, endpoint = method.partition("_")
        delegator = self._endpoints.get(namespace, {}).get(endpoint)
        if delegator is None:
            raise _RpcError(-32601, f"method not found: {method}")
        if method in self._FILL_FROM and params and isinstance(params[0], dict) and not params[0].get("from"):
            params = [{**params[0], "from": tester.get_accounts()[0]}, *params[1:]]
        formatter = self._request_formatters.get(method)
        if formatter is not None:
            params = formatter(params)
        result = delegator(tester, params)
        formatter = self._result_formatters.get(method)
        return formatter(result) if formatter is not None else result

    def _chain_id(self) -> int:
        return int(self._endpoints["eth"]["chainId"](self.tester, []))


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) and value.startswith("0x") else int(value)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: web3 reuses one connection
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    rpc: TesterRpc  # set on the per-server subclass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self._reply({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
            return
        if isinstance(request, list):
            replies = [r for r in (self.rpc.handle(item) for item in request) if r is not None]
            self._reply(replies)
        else:
            self._reply(self.rpc.handle(request))

    def _reply(self, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class DevNode:
    """An in-process py-evm chain served over HTTP JSON-RPC on ``127.0.0.1:<port>``.

    ``with DevNode() as node: w3 = json_rpc_web3(node.url)``; ``node.keys`` are funded.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, mnemonic: str = DEV_MNEMONIC,
                 accounts: int = 10, balance: int = DEV_BALANCE) -> None:
        self.host, self.port = host, port
        self.keys = dev_keys(mnemonic, accounts)
        self._tester_args = (mnemonic, accounts, balance)
        self.rpc: TesterRpc | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> DevNode:
        if self._server is not None:
            return self
        self.rpc = TesterRpc(_new_tester(*self._tester_args))
        handler = type("DevNodeHandler", (_Handler,), {"rpc": self.rpc})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"devnode-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5)

    def serve_forever(self) -> None:
        """Block until interrupted (for ``gpumesh chain devnode``-style commands)."""
        self.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()

    def __enter__(self) -> DevNode:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def find_anvil() -> str | None:
    """The anvil binary: ``$GPUMESH_ANVIL``, the repo's npm copy, or ``anvil`` on PATH."""
    for candidate in (os.environ.get(ENV_ANVIL), str(_ANVIL_IN_REPO), shutil.which("anvil")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class Anvil:
    """A throwaway anvil process on a free loopback port (for tests and demos)."""

    def __init__(self, *, binary: str | None = None, port: int = 0, mnemonic: str = DEV_MNEMONIC,
                 accounts: int = 10, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = binary or find_anvil()
        self.port = port
        self.mnemonic, self.accounts, self.extra_args = mnemonic, accounts, tuple(extra_args)
        self.keys = dev_keys(mnemonic, accounts)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> Anvil:
        if self.binary is None:
            raise ChainError("anvil binary not found (npm ci --prefix contracts, or set $GPUMESH_ANVIL)",
                             retryable=False)
        self.port = self.port or free_port()
        args = [self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--quiet",
                "--mnemonic", self.mnemonic, "--accounts", str(self.accounts), *self.extra_args]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
        import urllib.request

        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                raise ChainError(f"anvil exited with {self.proc.returncode}: {err}", retryable=False)
            try:
                req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=1) as resp:
                    if "result" in json.loads(resp.read()):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ChainError(f"anvil did not answer on {self.url} within {timeout:.0f}s")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m gpumesh.chain.node [--port N]``: serve a DevNode and print its funded keys."""
    import argparse

    parser = argparse.ArgumentParser(description="serve an in-process py-evm chain over JSON-RPC")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8545)
    parser.add_argument("--accounts", type=int, default=10)
    args = parser.parse_args(argv)
    node = DevNode(host=args.host, port=args.port, accounts=args.accounts).start()
    print(f"DevNode listening on {node.url} (chain id {int(node.rpc.call('eth_chainId', []), 16)})", flush=True)
    for i, key in enumerate(node.keys):
        print(f"  ({i}) {key}", flush=True)
    try:
        node.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
