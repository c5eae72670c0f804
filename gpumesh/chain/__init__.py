"""On-chain settlement: the gpumesh contracts over web3.py, on an in-process py-evm chain
(``in_process_web3``), a shared ``DevNode``, ``Anvil`` or any JSON-RPC node (``json_rpc_web3``).

Values and errors import cheaply; ``ChainClient`` and the node helpers import web3 (~0.3 s) on
first use, so the CLI can import this package without paying for it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from gpumesh.chain.claims import ClaimDomain, compact, escrow_key
from gpumesh.chain.errors import ChainError, ChainRevert
from gpumesh.chain.models import (
    Deployment,
    EscrowJob,
    JobStatus,
    Payout,
    Settlement,
    Stake,
    TxResult,
    job_key,
    job_key_hex,
    reason_bytes,
    reason_text,
)

_LAZY = {
    "ChainClient": "gpumesh.chain.client",
    "COORDINATOR_ROLE": "gpumesh.chain.client",
    "address_of": "gpumesh.chain.client",
    "DEV_MNEMONIC": "gpumesh.chain.node",
    "Anvil": "gpumesh.chain.node",
    "DevNode": "gpumesh.chain.node",
    "dev_keys": "gpumesh.chain.node",
    "find_anvil": "gpumesh.chain.node",
    "fund_dev_gas": "gpumesh.chain.node",
    "in_process_web3": "gpumesh.chain.node",
    "increase_time": "gpumesh.chain.node",
    "json_rpc_web3": "gpumesh.chain.node",
    "Artifact": "gpumesh.chain.artifacts",
    "load_artifact": "gpumesh.chain.artifacts",
    "RevertDecoder": "gpumesh.chain.errors",
}

if TYPE_CHECKING:
    from gpumesh.chain.artifacts import Artifact, load_artifact
    from gpumesh.chain.client import COORDINATOR_ROLE, ChainClient, address_of
    from gpumesh.chain.errors import RevertDecoder
    from gpumesh.chain.node import (
        DEV_MNEMONIC,
        Anvil,
        DevNode,
        dev_keys,
        find_anvil,
        in_process_web3,
        increase_time,
        json_rpc_web3,
    )


def deploy(web3, admin, **kwargs: Any) -> Deployment:
    """``ChainClient.deploy``: deploy the three contracts; returns their ``Deployment``."""
    from gpumesh.chain.client import ChainClient

    return ChainClient.deploy(web3, admin, **kwargs)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gpumesh.chain' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ChainError", "ChainRevert", "ClaimDomain", "Deployment", "compact", "escrow_key", "EscrowJob", "JobStatus", "Payout", "Settlement",
    "Stake", "TxResult", "deploy", "job_key", "job_key_hex", "reason_bytes", "reason_text",
] + list(_LAZY)
