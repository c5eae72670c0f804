"""The SettlementChain port over gpumesh.chain (web3.py against any JSON-RPC node)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from coordinator.settlement.payouts import Claim, JobPayout
from coordinator.settlement.settler import EscrowView
from gpumesh.errors import InvalidArgument


class Web3SettlementChain:
    def __init__(self, client, account, url: str) -> None:
        self.client = client
        self.account = account
        self.url = url

    @classmethod
    def connect(cls, url: str, deployment_file: Path, key_file: Path) -> Web3SettlementChain:
        from eth_account import Account

        from gpumesh.chain import ChainClient, Deployment

        if not deployment_file or not key_file:
            raise InvalidArgument("settling on-chain needs a deployment file and a key file",
                                  field="deployment_file" if not deployment_file else "chain_key_file")
        client = ChainClient.connect(url, Deployment.load(deployment_file))
        account = Account.from_key(Path(key_file).read_text().strip())
        if not client.is_coordinator(account.address):
            raise InvalidArgument(f"{account.address} lacks COORDINATOR_ROLE on the escrow", field="chain_key_file")
        return cls(client, account, url)

    def escrow(self, escrow_key: str) -> EscrowView:
        job = self.client.job_at(_key(escrow_key))
        return EscrowView(job.submitter, job.amount, job.deadline, job.status.label)

    def settled_tx(self, escrow_key: str) -> str:
        events = self.client.events("JobEscrow", "JobSettled", key=_key(escrow_key))
        return events[-1]["tx_hash"] if events else ""

    def account_of(self, address: str) -> tuple[int, int]:
        return self.client.account_of(address)

    def open_job(self, submitter: str, job_id: bytes, amount: int, deadline: int) -> str:
        return self.client.open_job(self.account, submitter, job_id, amount, deadline).tx_hash

    def is_registered(self, address: str) -> bool:
        return self.client.is_registered(address)

    def chain_time(self) -> int:
        return self.client.block_timestamp()

    def settle(self, batch: Sequence[tuple[str, JobPayout, Mapping[str, Claim]]],
               invoices: Mapping[str, bytes] | None = None) -> str:
        from gpumesh.chain import Payout, Settlement

        invoiced = {a.lower() for a in invoices or {}}
        settlements = []
        for key, payout, claims in batch:
            payouts = []
            for provider, amount in payout.payouts:  # ordered for the escrow by gpumesh.chain.calldata
                if provider.lower() in invoiced:
                    payouts.append(Payout(provider, amount))
                else:
                    claim = claims[provider.lower()]
                    payouts.append(Payout(provider, amount, claim.amount, claim.signature))
            settlements.append(Settlement(_key(key), tuple(payouts)))
        return self.client.settle_batch(self.account, settlements, invoices).tx_hash

    # ---- the StakeRegistry port (coordinator.settlement.slasher) ----------------------------

    def stake_of(self, address: str) -> int:
        return self.client.stake_of(address).active

    def funder_of(self, address: str) -> str:
        return self.client.funder_of(address)

    def max_slash(self, address: str) -> int:
        return self.client.max_slash(address)

    def slash(self, address: str, commitment: str, signature: bytes, check_record: bytes, amount: int,
              beneficiary: str) -> str:
        return self.client.slash(self.account, address, commitment, signature, check_record, amount,
                                 beneficiary).tx_hash

    def was_slashed(self, address: str, commitment: str) -> tuple[bool, int, str]:
        from eth_utils import keccak

        for event in self.client.events("ProviderRegistry", "Slashed", provider=address,
                                        incident=keccak(commitment.encode())):
            return True, int(event["args"]["amount"]), event["tx_hash"]
        return False, 0, ""

    @property
    def address(self) -> str:
        return self.account.address

    def describe(self) -> dict:
        return {**self.client.describe(), "chain_url": self.url}


def _key(escrow_key: str) -> bytes:
    return bytes.fromhex(escrow_key.removeprefix("0x"))
