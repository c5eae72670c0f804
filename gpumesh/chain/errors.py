"""Chain errors, and the one place where both shapes of an EVM revert become ``ChainRevert``.

In-process, eth-tester raises ``TransactionFailed("execution reverted: b'...'")`` (the revert
data as a bytes repr, or the reason text for ``Error(string)``); a JSON-RPC node answers with an
error whose ``data`` is the hex revert data, which web3 raises as ``ContractLogicError`` /
``ContractCustomError`` / ``ContractPanicError``. ``revert_data`` gets the raw bytes out of any
of them and ``RevertDecoder`` names the custom error from the contracts' ABIs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Any

from gpumesh.errors import GpumeshError

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
_REVERTED = "execution reverted"


class ChainError(GpumeshError):
    """The node could not be reached, timed out, or refused the transaction for a non-contract
    reason (``retryable`` is False for those, e.g. insufficient funds for gas)."""

    grpc_code = "UNAVAILABLE"
    retryable = True

    def __init__(self, message: str, *, retryable: bool = True, field: str | None = None,
                 tx_hash: str | None = None) -> None:
        super().__init__(message + (f" (tx {tx_hash} may still be mined)" if tx_hash else ""), field=field)
        self.retryable = retryable
        self.tx_hash = tx_hash


class ChainRevert(GpumeshError):
    """A contract call or transaction reverted. ``error`` is the custom error's name
    (``"PayoutExceedsBudget"``; ``"Error"`` for ``require`` strings, ``"Panic"``, ``"OutOfGas"``,
    or ``"Reverted"`` when no data came back); ``args`` are its decoded arguments."""

    grpc_code = "FAILED_PRECONDITION"
    retryable = False

    def __init__(self, error: str, args: tuple = (), *, data: bytes = b"", tx_hash: str | None = None) -> None:
        shown = ", ".join(_show(a) for a in args)
        super().__init__(f"reverted: {error}({shown})" + (f" in tx {tx_hash}" if tx_hash else ""))
        self.error = error
        self.args = tuple(args)
        self.data = data
        self.tx_hash = tx_hash

    def __reduce__(self):  # keep pickling (multiprocessing, logging handlers) working
        return (_rebuild_revert, (self.error, self.args, self.data, self.tx_hash))


def _rebuild_revert(error: str, args: tuple, data: bytes, tx_hash: str | None) -> ChainRevert:
    return ChainRevert(error, args, data=data, tx_hash=tx_hash)


def _show(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, (bytes, bytearray)) else repr(value)


def _error_string_data(reason: str) -> bytes:
    from eth_abi import encode

    return ERROR_STRING_SELECTOR + encode(["string"], [reason])


def _hex_to_bytes(value: str) -> bytes:
    value = value[2:] if value[:2] in ("0x", "0X") else value
    return bytes.fromhex(value)


def _from_tester_text(text: str) -> bytes:
    """eth-tester's revert text -> raw revert data (``b'..'`` repr, or an Error(string) reason)."""
    if text.startswith(_REVERTED):
        text = text[len(_REVERTED):].lstrip(": ")
    if text[:2] in ("b'", 'b"'):
        try:
            value = ast.literal_eval(text)
            if isinstance(value, bytes):
                return value
        except (ValueError, SyntaxError):
            pass
    if text.startswith("0x"):
        try:
            return _hex_to_bytes(text)
        except ValueError:
            pass
    return _error_string_data(text) if text else b""


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert data carried by a web3 or eth-tester exception, or None if it is no revert."""
    from web3.exceptions import ContractLogicError

    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."}
            data = data.get("data") or next(iter(data.values()), None)
        if isinstance(data, str) and data.startswith("0x"):
            try:
                return _hex_to_bytes(data)
            except ValueError:
                pass
        message = exc.message or ""
        return _from_tester_text(message) if message.startswith(_REVERTED) else b""
    try:
        from eth_tester.exceptions import TransactionFailed
    except ImportError:  # pragma: no cover - eth-tester is only needed in-process
        return None
    if isinstance(exc, TransactionFailed):
        first = exc.args[0] if exc.args else b""
        if isinstance(first, BaseException):
            first = first.args[0] if first.args else b""
        if isinstance(first, (bytes, bytearray)):
            return bytes(first)
        return _from_tester_text(str(first))
    return None


def _abi_type(param: dict) -> str:
    kind = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param.get("components", [])) + ")" + kind[5:]
    return kind


class RevertDecoder:
    """Maps 4-byte selectors to custom errors from a set of ABIs (+ Error(string), Panic)."""

    def __init__(self, abis: Iterable[list[dict]]) -> None:
        from eth_utils import keccak

        self._errors: dict[bytes, tuple[str, list[str]]] = {
            ERROR_STRING_SELECTOR: ("Error", ["string"]),
            PANIC_SELECTOR: ("Panic", ["uint256"]),
        }
        for abi in abis:
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = [_abi_type(p) for p in item.get("inputs", [])]
                selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
                self._errors.setdefault(selector, (item["name"], types))

    def decode(self, data: bytes, *, tx_hash: str | None = None) -> ChainRevert:
        from eth_abi import decode
        from eth_utils import to_checksum_address

        if len(data) < 4:
            return ChainRevert("Reverted", data=data, tx_hash=tx_hash)
        known = self._errors.get(data[:4])
        if known is None:
            return ChainRevert("0x" + data[:4].hex(), (data[4:],), data=data, tx_hash=tx_hash)
        name, types = known
        try:
            args = tuple(
                to_checksum_address(v) if t == "address" else v for t, v in zip(types, decode(types, data[4:]))
            )
        except Exception:  # malformed payload: keep the name, hand back the raw bytes
            args = (data[4:],)
        return ChainRevert(name, args, data=data, tx_hash=tx_hash)

    def from_exception(self, exc: BaseException, *, tx_hash: str | None = None) -> ChainRevert | None:
        """A ChainRevert for a revert exception of either shape, else None."""
        data = revert_data(exc)
        return None if data is None else self.decode(data, tx_hash=tx_hash)
