"""Signing, sending and waiting: every transaction is signed locally with an ``eth_account`` key.

Nonces come from the node ("pending") under a process-wide per-account lock, so threads that
share a key never reuse a nonce; fees are EIP-1559 where the latest block has a base fee, else
a legacy gas price; gas is estimated (a revert there raises ``ChainRevert`` before anything is
sent); a mined transaction with status 0 is replayed as a call to name its error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from gpumesh.chain.errors import ChainError, ChainRevert, RevertDecoder
from gpumesh.errors import GpumeshError, InvalidArgument

T = TypeVar("T")

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()
_RETRY_SEND = ("nonce too low", "already known", "replacement transaction underpriced", "invalid transaction nonce")
_FATAL_SEND = ("insufficient funds", "exceeds block gas limit", "intrinsic gas too low")
DEFAULT_TIP = 10**9  # 1 gwei, when the node cannot suggest one


def account_lock(address: str) -> threading.RLock:
    """The process-wide lock of one sending account (re-entrant: hold it across a sequence)."""
    key = address.lower()
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.RLock()
        return lock


@lru_cache(maxsize=256)
def _account_from_key(key: str):
    from eth_account import Account

    return Account.from_key(key)


def as_account(signer: Any):
    """A ``LocalAccount`` from a LocalAccount, a hex private key or 32 raw key bytes."""
    if hasattr(signer, "sign_transaction") and hasattr(signer, "address"):
        return signer
    if isinstance(signer, (bytes, bytearray)):
        signer = "0x" + bytes(signer).hex()
    if isinstance(signer, str):
        try:
            return _account_from_key(signer if signer.startswith("0x") else "0x" + signer)
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"not a private key: {exc}", field="signer") from None
    raise InvalidArgument(f"expected a LocalAccount or a hex private key, got {type(signer).__name__}",
                          field="signer")


def translate(exc: BaseException, decoder: RevertDecoder, *, tx_hash: str | None = None) -> BaseException:
    """Map a web3 / eth-tester / transport exception to the gpumesh error hierarchy."""
    import requests
    from web3 import exceptions as w3e

    if isinstance(exc, GpumeshError):
        return exc
    revert = decoder.from_exception(exc, tx_hash=tx_hash)
    if revert is not None:
        return revert
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, w3e.ProviderConnectionError,
                        w3e.RequestTimedOut, w3e.TimeExhausted, ConnectionError, TimeoutError)):
        return ChainError(f"chain node unavailable: {type(exc).__name__}: {exc}", tx_hash=tx_hash)
    if isinstance(exc, (w3e.Web3ValidationError, w3e.MismatchedABI, w3e.InvalidAddress)):
        return InvalidArgument(f"{type(exc).__name__}: {exc}")
    text = str(exc)
    lowered = text.lower()
    if any(s in lowered for s in _RETRY_SEND):
        return ChainError(f"transaction not accepted, try again: {text}")
    if isinstance(exc, w3e.Web3Exception) or type(exc).__module__.split(".")[0] in ("eth_tester", "eth"):
        return ChainError(f"{type(exc).__name__}: {text}", retryable=False)
    return exc


class TxSender:
    """Builds, signs, sends and awaits transactions on one ``Web3``."""

    def __init__(self, w3, decoder: RevertDecoder, *, receipt_timeout: float = 60.0,
                 poll_interval: float = 0.05, gas_margin: float = 1.25) -> None:
        self.w3 = w3
        self.decoder = decoder
        self.receipt_timeout = receipt_timeout
        self.poll_interval = poll_interval
        self.gas_margin = gas_margin
        self._chain_id: int | None = None
        self._eip1559: bool | None = None
        self._tip: tuple[float, int] | None = None
        self._next_nonce: dict[str, int] = {}

    def guard(self, fn: Callable[[], T], *, tx_hash: str | None = None) -> T:
        """Run a web3 call, raising ChainRevert / ChainError / InvalidArgument instead of web3's errors."""
        try:
            return fn()
        except Exception as exc:
            mapped = translate(exc, self.decoder, tx_hash=tx_hash)
            if mapped is exc:
                raise
            raise mapped from exc

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.guard(lambda: self.w3.eth.chain_id))
        return self._chain_id

    def _fees(self, latest) -> dict[str, int]:
        eth = self.w3.eth
        base = latest.get("baseFeePerGas")
        if self._eip1559 is None:
            self._eip1559 = base is not None
        if not self._eip1559:
            return {"gasPrice": int(eth.gas_price)}
        now = time.monotonic()
        if self._tip is None or now - self._tip[0] > 15:
            try:
                tip = int(eth.max_priority_fee)
            except Exception:  # nodes without eth_maxPriorityFeePerGas
                tip = DEFAULT_TIP
            self._tip = (now, tip)
        tip = self._tip[1]
        return {"maxFeePerGas": 2 * int(base) + tip, "maxPriorityFeePerGas": tip}

    def _nonce(self, address: str) -> int:
        node = int(self.w3.eth.get_transaction_count(address, "pending"))
        return max(node, self._next_nonce.get(address, 0))

    def send(self, signer: Any, to: str | None, data: str | bytes, *, value: int = 0,
             gas: int | None = None, wait: bool = True) -> Any:
        """Sign and send one transaction; returns its receipt (or the hash if ``wait`` is False)."""
        account = as_account(signer)
        address = account.address
        data_hex = data if isinstance(data, str) else "0x" + bytes(data).hex()
        call = {"from": address, "data": data_hex, "value": int(value)}
        if to is not None:
            call["to"] = to
        for attempt in range(3):
            with account_lock(address):
                try:
                    tx_hash, gas_limit = self.guard(lambda: self._sign_and_send(account, call, gas))
                    break
                except ChainError as exc:
                    self._next_nonce.pop(address, None)
                    if not exc.retryable or attempt == 2 or "try again" not in exc.message:
                        raise
        if not wait:
            return tx_hash
        return self.wait(tx_hash, call, gas_limit)

    def _sign_and_send(self, account, call: dict, gas: int | None) -> tuple[str, int]:
        eth = self.w3.eth
        nonce = self._nonce(account.address)
        latest = eth.get_block("latest")
        if gas is None:
            estimate = int(eth.estimate_gas(call))
            gas = min(int(estimate * self.gas_margin) + 5_000, int(latest["gasLimit"]))
        tx = {**call, "gas": gas, "nonce": nonce, "chainId": self.chain_id, **self._fees(latest)}
        signed = account.sign_transaction(tx)
        tx_hash = eth.send_raw_transaction(signed.raw_transaction)
        self._next_nonce[account.address] = nonce + 1
        return "0x" + bytes(tx_hash).hex(), gas

    def wait(self, tx_hash: str, call: dict | None = None, gas_limit: int | None = None) -> Any:
        """Wait for the receipt; raise ChainRevert (named by replaying ``call``) if it failed."""
        receipt = self.guard(
            lambda: self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout, poll_latency=self.poll_interval),
            tx_hash=tx_hash,
        )
        if receipt["status"] == 1:
            return receipt
        if call is not None:
            replay = {**call, "gas": gas_limit or receipt["gasUsed"]}
            try:
                self.guard(lambda: self.w3.eth.call(replay, receipt["blockNumber"]), tx_hash=tx_hash)
            except ChainRevert as revert:
                raise revert from None
            except ChainError:
                pass
        if gas_limit is not None and receipt["gasUsed"] >= gas_limit:
            raise ChainRevert("OutOfGas", tx_hash=tx_hash)
        raise ChainRevert("Reverted", tx_hash=tx_hash)
