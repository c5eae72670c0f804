"""A py-evm chain for the contract tests: deploy from contracts/build, send, decode custom errors.

Built on web3 + eth-tester alone, but for the signatures: claims and result commitments are signed
with gpumesh.chain.claims and gpumesh.identity, so the contracts are checked against the signers the
product uses.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils import keccak
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.logs import DISCARD

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "contracts" / "build"
COORDINATOR_ROLE = keccak(text="COORDINATOR_ROLE")
DEFAULT_ADMIN_ROLE = b"\x00" * 32
GAS = 10_000_000


def load_artifact(name: str) -> dict:
    return json.loads((BUILD / f"{name}.json").read_text())


def _abi_type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][len('tuple'):]}"
    return param["type"]


def error_table(abi: list[dict]) -> dict[bytes, tuple[str, list[str]]]:
    """Maps each custom error's 4-byte selector to (name, argument types)."""
    table = {}
    for item in abi:
        if item["type"] == "error":
            types = [_abi_type(p) for p in item["inputs"]]
            table[keccak(text=f"{item['name']}({','.join(types)})")[:4]] = (item["name"], types)
    return table


def revert_data(exc: Exception) -> bytes:
    """The raw revert data of a failed call, from eth-tester (in process) or web3 (JSON-RPC)."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes):
        return data
    msg = exc.args[0] if exc.args else ""
    if isinstance(msg, Exception) and msg.args:
        msg = msg.args[0]
    if isinstance(msg, bytes):
        return msg
    # web3's eth-tester provider re-raises as "execution reverted: b'...'" (the repr of the data).
    prefix = "execution reverted: "
    if isinstance(msg, str) and msg.startswith(prefix) and msg[len(prefix):].startswith(("b'", 'b"')):
        return ast.literal_eval(msg[len(prefix):])
    if isinstance(msg, str) and msg.strip() in ("execution reverted", "execution reverted: "):
        return b""
    raise AssertionError(f"no revert data in {exc!r}")


class Chain:
    """A fresh in-process chain with the 10 funded eth-tester accounts."""

    def __init__(self) -> None:
        self.tester = EthereumTester(PyEVMBackend())
        self.w3 = Web3(EthereumTesterProvider(self.tester))
        self.accounts = self.w3.eth.accounts
        self.errors: dict[bytes, tuple[str, list[str]]] = {}

    def factory(self, name: str, artifact: dict | None = None):
        """The contract factory of a build artifact (its errors become decodable)."""
        art = artifact or load_artifact(name)
        self.errors.update(error_table(art["abi"]))
        return self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])

    def deploy(self, name: str, *args: Any, sender: str | None = None, artifact: dict | None = None):
        factory = self.factory(name, artifact)
        tx = factory.constructor(*args).transact({"from": sender or self.accounts[0], "gas": GAS})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        assert receipt["status"] == 1, f"deploying {name} failed"
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=factory.abi)

    def send(self, fn, sender: str):
        """Sends a transaction (gas estimated first, so a revert raises) and returns its receipt."""
        receipt = self.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}))
        assert receipt["status"] == 1
        return receipt

    def decode_error(self, data: bytes) -> tuple[str, tuple]:
        if not data:
            return ("", ())
        if data[:4] not in self.errors:
            raise AssertionError(f"unknown error selector {data[:4].hex()} (data {data.hex()})")
        name, types = self.errors[data[:4]]
        values = abi_decode(types, data[4:])
        return name, tuple(Web3.to_checksum_address(v) if t == "address" else v for t, v in zip(types, values))

    def revert_of(self, fn, sender: str) -> tuple[str, tuple]:
        """Sends `fn` (a function call or a constructor) expecting a revert; returns the error as (name, args)."""
        try:
            fn.transact({"from": sender})
        except (TransactionFailed, ContractCustomError, ContractLogicError) as exc:
            return self.decode_error(revert_data(exc))
        raise AssertionError("transaction did not revert")

    def expect_revert(self, fn, sender: str, name: str, *args: Any) -> None:
        got = self.revert_of(fn, sender)
        assert got == (name, tuple(args)), f"expected {name}{args}, got {got[0]}{got[1]}"

    def events(self, contract, receipt, name: str) -> list[dict]:
        """The decoded `name` events that `contract` emitted in the transaction."""
        logs = [log for log in receipt["logs"] if log["address"] == contract.address]
        event = getattr(contract.events, name)()
        return [dict(e["args"]) for e in event.process_receipt({**receipt, "logs": logs}, errors=DISCARD)]

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def travel_to(self, timestamp: int) -> None:
        """Moves the clock so that the next transaction is mined in a block stamped `timestamp`."""
        self.tester.time_travel(timestamp)


# --- signatures the contracts check ------------------------------------------------------------


def private_key(chain: Chain, account: str) -> bytes:
    """The eth-tester account's private key."""
    for key in chain.tester.backend.account_keys:
        if key.public_key.to_checksum_address() == account:
            return key.to_bytes()
    raise KeyError(account)


def claim_payout(chain: Chain, escrow, key: bytes, provider: str, amount: int, claimed: int | None = None,
                 *, signer: str | None = None) -> tuple:
    """A JobEscrow.Payout of ``amount`` to ``provider`` under its signed claim of ``claimed`` (default: the
    amount) for job ``key``; ``signer`` signs instead of the provider (a forgery)."""
    from gpumesh.chain.claims import ClaimDomain, compact

    claimed = amount if claimed is None else claimed
    domain = ClaimDomain(chain.w3.eth.chain_id, escrow.address)
    typed = domain.typed_data(key, provider, claimed)
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    signature = bytes(Account.sign_message(encode_typed_data(full_message=typed),
                                           private_key(chain, signer or provider)).signature)
    return (provider, amount, claimed, *compact(signature))


def payee_args(settlements: list[tuple]) -> tuple[list[str], list[tuple]]:
    """``settleBatch``'s arguments from ``[(key, [(provider, amount, claimed, r, vs), ...]), ...]``: the payee list
    (every provider once, by increasing address) and each payout naming its provider by index there, in the order
    given (so a test can send payouts out of order)."""
    payees = sorted({p[0] for _, payouts in settlements for p in payouts}, key=lambda a: int(a, 16))
    index = {a: i for i, a in enumerate(payees)}
    return payees, [(key, [(index[p[0]], *p[1:]) for p in payouts], []) for key, payouts in settlements]


def settle_batch(escrow, settlements: list[tuple]):
    """The ``settleBatch`` call of ``settlements`` given with provider addresses (see ``payee_args``), under
    per-job claims only (no invoices)."""
    payees, jobs = payee_args(settlements)
    return escrow.functions.settleBatch(payees, [], jobs)


def settle_job(escrow, settlement: tuple):
    """The ``settleJob`` call of one ``(key, payouts)`` given with provider addresses."""
    payees, (job,) = payee_args([settlement])
    return escrow.functions.settleJob(payees, job)


def commitment(chain: Chain, account: str, task: str, output: str) -> tuple[bytes, bytes]:
    """A result commitment (gpumesh.identity.result_text) and ``account``'s EIP-191 signature of it."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    from gpumesh.identity import result_text

    text = result_text(task, output).encode()
    return text, bytes(Account.sign_message(encode_defunct(primitive=text), private_key(chain, account)).signature)
