"""The SettlementChain port over gpumesh.chain (web3.py against any JSON-RPC node)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from coordinator.settlement.payouts import JobPayout
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
        job = self.client.job(escrow_key)
        return EscrowView(job.submitter, job.amount, job.deadline, job.status.label)

    def settled_tx(self, escrow_key: str) -> str:
        from gpumesh.chain import job_key

        events = self.client.events("JobEscrow", "JobSettled", jobId=job_key(escrow_key))
        return events[-1]["tx_hash"] if events else ""

    def settle(self, batch: Sequence[tuple[str, JobPayout]]) -> str:
        from gpumesh.chain import Payout, Settlement

        settlements = [
            Settlement(key, tuple(Payout(provider, amount) for provider, amount in payout.payouts))
            for key, payout in batch
        ]
        return self.client.settle_batch(self.account, settlements).tx_hash

    # ---- the StakeRegistry port (coordinator.settlement.slasher) ----------------------------

    def stake_of(self, address: str) -> int:
        return self.client.stake_of(address).active

    def slashable(self, address: str) -> int:
        return self.client.stake_of(address).total

    def slash(self, address: str, amount: int, beneficiary: str, reason: bytes) -> str:
        return self.client.slash(self.account, address, amount, beneficiary or self.account.address, reason).tx_hash

    def was_slashed(self, address: str, reason: bytes) -> tuple[bool, int, str]:
        for event in self.client.events("ProviderRegistry", "Slashed", provider=address):
            if bytes(event["args"]["reason"]) == reason:
                return True, int(event["args"]["amount"]), event["tx_hash"]
        return False, 0, ""

    @property
    def address(self) -> str:
        return self.account.address

    def describe(self) -> dict:
        return {**self.client.describe(), "chain_url": self.url}
