"""Plain values of the settlement client (no web3 import, so the CLI can use them cheaply)."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpumesh.errors import InvalidArgument


class JobStatus(enum.IntEnum):
    """``JobEscrow.JobStatus`` (a uint8 on chain)."""

    NONE = 0
    FUNDED = 1
    SETTLED = 2
    RECLAIMED = 3

    def is_terminal(self) -> bool:
        return self in (JobStatus.SETTLED, JobStatus.RECLAIMED)

    @property
    def label(self) -> str:  # the Solidity spelling: "None", "Funded", ...
        return self.name.capitalize()


def job_key(job_id: str | bytes) -> bytes:
    """The escrow's bytes32 key of a job: keccak256 of the UTF-8 job id.

    32 raw bytes, or a ``0x`` + 64 hex digit string (a key already), are taken as the key itself,
    so ``job_key(job_key_hex(x)) == job_key(x)``.
    """
    if isinstance(job_id, (bytes, bytearray)):
        if len(job_id) != 32:
            raise InvalidArgument(f"a job key is 32 bytes, got {len(job_id)}", field="job_id")
        return bytes(job_id)
    if not isinstance(job_id, str) or not job_id:
        raise InvalidArgument("job id must be a non-empty string or 32 bytes", field="job_id")
    if len(job_id) == 66 and job_id[:2] in ("0x", "0X"):
        try:
            return bytes.fromhex(job_id[2:])
        except ValueError:
            pass
    from eth_utils import keccak

    return keccak(text=job_id)


def job_key_hex(job_id: str | bytes) -> str:
    return "0x" + job_key(job_id).hex()


def reason_bytes(reason: str | bytes) -> bytes:
    """A slash reason as bytes32: UTF-8 right-padded if it fits, else its keccak256."""
    if isinstance(reason, (bytes, bytearray)) and len(reason) == 32:
        return bytes(reason)
    raw = reason.encode() if isinstance(reason, str) else bytes(reason)
    if len(raw) <= 32:
        return raw.ljust(32, b"\0")
    from eth_utils import keccak

    return keccak(raw)


def reason_text(reason: bytes) -> str:
    """Inverse of ``reason_bytes`` for short reasons (hex for hashed ones)."""
    stripped = bytes(reason).rstrip(b"\0")
    try:
        text = stripped.decode()
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return "0x" + bytes(reason).hex()


@dataclass(frozen=True)
class Deployment:
    """Where the three contracts live; saved next to a node's config as JSON."""

    chain_id: int
    token: str
    registry: str
    escrow: str
    block_number: int = 0  # the deployment block: a lower bound for event queries

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        raw = json.loads(text)
        try:
            return cls(
                chain_id=int(raw["chain_id"]), token=raw["token"], registry=raw["registry"],
                escrow=raw["escrow"], block_number=int(raw.get("block_number", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"bad deployment JSON: {exc}", field="deployment") from exc

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Deployment:
        return cls.from_json(Path(path).read_text())


@dataclass(frozen=True)
class Payout:
    """``amount`` to ``provider``, who signed (``signature``, 65 bytes) a claim of ``claimed`` for the job."""

    provider: str
    amount: int
    claimed: int = 0
    signature: bytes = b""


@dataclass(frozen=True)
class Settlement:
    """One job's settlement: payouts to providers; the rest of the budget goes back to the submitter.
    ``key`` is the escrow's key of the job (``claims.escrow_key(submitter, job_id)``)."""

    key: bytes
    payouts: tuple[Payout, ...] = ()

    @property
    def paid(self) -> int:
        return sum(p.amount for p in self.payouts)


@dataclass(frozen=True)
class EscrowJob:
    submitter: str
    amount: int
    deadline: int
    status: JobStatus


@dataclass(frozen=True)
class Stake:
    active: int
    unbonding: int
    unlock_at: int

    @property
    def total(self) -> int:
        return self.active + self.unbonding


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    events: tuple[dict[str, Any], ...] = field(default=())

    def named(self, event: str) -> list[dict[str, Any]]:
        """The decoded events called ``event`` (their ``args``)."""
        return [e["args"] for e in self.events if e["event"] == event]
