"""Gas per settled job: naive per-job settlement vs batched settlement, on py-evm in process.

Every job has a budget, two payouts to providers drawn from a pool of 20 and a non-zero refund to its
submitter (one of 5). Each payout carries the provider's EIP-712 claim signature (the escrow checks it
and that the provider is registered in the ProviderRegistry), so the figures include what bounding
the coordinator costs: an ecrecover (3k gas) per payout, a registry lookup per payee and call, and 64
bytes of calldata. The calls name each payee once (a payee list, payouts by index, built by
`gpumesh.chain.calldata.settle_args` as the client does). For each mode the same 100 jobs are
settled, either one `settleJob` transaction per job (push: two provider transfers plus the refund
transfer) or `settleBatch` in transactions of 1, 10 or 100 jobs (pull: internal credits, each
payee's summed and written once per batch, one `Credited` event per payee); the figure is the sum of
the receipts' gasUsed (which includes the 21k base cost and calldata, after the storage refund of
the job slot a settlement clears) divided by the number of jobs.

Two rounds per mode on the same contracts: "fresh" (the providers' and submitters' balances start at
zero, so their first credit or transfer writes a new slot) and "steady" (another 100 jobs, when all
of them already hold a balance).

    python bench/settlement_gas.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from eth_tester import EthereumTester, PyEVMBackend
from web3 import EthereumTesterProvider, Web3

from gpumesh.chain.calldata import invoice_lines, settle_args
from gpumesh.chain.claims import ClaimDomain, escrow_key
from gpumesh.chain.models import Payout, Settlement

BUILD = Path(__file__).resolve().parents[1] / "contracts" / "build"
JOBS = 100
PROVIDERS = 20
SUBMITTERS = 5
PAYOUTS_PER_JOB = 2
GAS = 29_000_000


def artifact(name: str) -> dict:
    return json.loads((BUILD / f"{name}.json").read_text())


class Setup:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        backend = PyEVMBackend(genesis_state=PyEVMBackend.generate_genesis_state(num_accounts=1 + SUBMITTERS + PROVIDERS))
        self.w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
        accounts = self.w3.eth.accounts
        self.keys = {k.public_key.to_checksum_address(): k.to_bytes() for k in backend.account_keys}
        self.admin = accounts[0]
        self.submitters = accounts[1 : 1 + SUBMITTERS]
        self.providers = accounts[1 + SUBMITTERS : 1 + SUBMITTERS + PROVIDERS]
        self.token = self.deploy("TestToken")
        self.registry = self.deploy("ProviderRegistry", self.token.address, 86_400, 2500, self.admin)
        self.escrow = self.deploy("JobEscrow", self.token.address, self.registry.address, self.admin)
        self.domain = ClaimDomain(self.w3.eth.chain_id, self.escrow.address)
        role = self.escrow.functions.COORDINATOR_ROLE().call()
        self.send(self.escrow.functions.grantRole(role, self.admin), self.admin)
        for p in self.providers:
            self.send(self.registry.functions.register(), p)
        for s in self.submitters:
            self.send(self.token.functions.mint(s, 10**30), self.admin)
            self.send(self.token.functions.approve(self.escrow.address, 2**256 - 1), s)
        self.deadline = self.w3.eth.get_block("latest")["timestamp"] + 86_400
        self.counter = 0
        self.deposit_gas: list[int] = []

    def deploy(self, name: str, *args):
        a = artifact(name)
        factory = self.w3.eth.contract(abi=a["abi"], bytecode=a["bytecode"])
        receipt = self.w3.eth.wait_for_transaction_receipt(
            factory.constructor(*args).transact({"from": self.admin, "gas": GAS}))
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=a["abi"])

    def send(self, fn, sender: str) -> int:
        receipt = self.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "gas": GAS}))
        assert receipt["status"] == 1
        return receipt["gasUsed"]

    def funded_jobs(self, n: int) -> list[Settlement]:
        """Deposits n jobs and returns their settlements, each payout under its provider's signed claim."""
        jobs = []
        for _ in range(n):
            self.counter += 1
            job_id = Web3.keccak(text=f"job-{self.counter}")
            budget = self.rng.randrange(10**18, 10**20)
            submitter = self.rng.choice(self.submitters)
            self.deposit_gas.append(self.send(self.escrow.functions.deposit(job_id, budget, self.deadline), submitter))
            providers = sorted(self.rng.sample(self.providers, PAYOUTS_PER_JOB), key=lambda a: int(a, 16))
            key = escrow_key(submitter, job_id)
            payouts = []
            for provider in providers:
                share = self.rng.randrange(budget // 4, budget // 2)
                payouts.append(Payout(provider, share, share, self.domain.sign(self.keys[provider], key, share)))
            jobs.append(Settlement(key, tuple(payouts)))
        return jobs


def settle_naive(setup: Setup, jobs: list[Settlement]) -> int:
    total = 0
    for job in jobs:
        payees, _, (settlement,) = settle_args([job])
        total += setup.send(setup.escrow.functions.settleJob(payees, settlement), setup.admin)
    return total


def invoices_of(setup: Setup, jobs: list[Settlement]) -> dict[str, bytes]:
    """Each payee's invoice signature over all its payouts in ``jobs`` (as its daemon signs it)."""
    payees = {p.provider for s in jobs for p in s.payouts}
    return {a: setup.domain.sign_invoice(setup.keys[a], invoice_lines(jobs, a)) for a in payees}


def settle_batched(setup: Setup, jobs: list[Settlement], size: int, *, invoiced: bool = False) -> int:
    total = 0
    for i in range(0, len(jobs), size):
        batch = jobs[i : i + size]
        args = settle_args(batch, invoices_of(setup, batch) if invoiced else None)
        total += setup.send(setup.escrow.functions.settleBatch(*args), setup.admin)
    return total


def calldata_gas(data: bytes) -> tuple[int, int]:
    """(standard, EIP-7623 floor) gas of calldata: 4 per zero byte and 16 per other; the floor (Prague)
    counts 10 per token (a zero byte is 1 token, another byte 4) and applies when above the whole
    execution cost."""
    zeros = data.count(0)
    return 4 * zeros + 16 * (len(data) - zeros), 10 * (zeros + 4 * (len(data) - zeros))


def main() -> None:
    modes = [("settleJob (naive, push)", None, False), ("settleBatch x1", 1, False), ("settleBatch x10", 10, False),
             ("settleBatch x100", 100, False), ("settleBatch x10, invoices", 10, True),
             ("settleBatch x100, invoices", 100, True)]
    rows = []
    deposits: list[int] = []
    calldata = {}
    for label, size, invoiced in modes:
        setup = Setup(seed=7)
        per_round = []
        for _ in ("fresh", "steady"):
            jobs = setup.funded_jobs(JOBS)
            total = settle_naive(setup, jobs) if size is None else settle_batched(setup, jobs, size, invoiced=invoiced)
            per_round.append(total / JOBS)
        if size == JOBS:
            args = settle_args(jobs, invoices_of(setup, jobs) if invoiced else None)
            data = bytes.fromhex(setup.escrow.encode_abi("settleBatch", args=list(args))[2:])
            calldata[invoiced] = (len(data), *calldata_gas(data))
        rows.append((label, size, *per_round))
        deposits += setup.deposit_gas
    naive_fresh, naive_steady = rows[0][2], rows[0][3]
    print(f"{JOBS} jobs per round, {PAYOUTS_PER_JOB} payouts each from {PROVIDERS} providers, refunds to "
          f"{SUBMITTERS} submitters; gas = sum(receipt.gasUsed) / jobs, 21k base + calldata included")
    print(f"{'mode':<26}{'txs':>5}{'fresh gas/job':>15}{'vs naive':>10}{'steady gas/job':>16}{'vs naive':>10}")
    for label, size, fresh, steady in rows:
        txs = JOBS if size is None else JOBS // size
        print(f"{label:<26}{txs:>5}{fresh:>15,.0f}{fresh / naive_fresh:>10.3f}"
              f"{steady:>16,.0f}{steady / naive_steady:>10.3f}")
    print(f"for reference, deposit (approve already given): {sum(deposits) / len(deposits):,.0f} gas/job")
    claims, invoices = rows[3], rows[-1]
    assert 0 < claims[2] < naive_fresh and 0 < claims[3] < naive_steady, "batching should be cheaper"
    print(f"batch 100, steady: {claims[3] / PAYOUTS_PER_JOB:,.0f} gas per payout under per-job claims, "
          f"{invoices[3] / PAYOUTS_PER_JOB:,.0f} under invoices (claim or invoice check and registry lookup included)")
    print(f"invoices / claims at batch 100: fresh {invoices[2] / claims[2]:.3f}, steady {invoices[3] / claims[3]:.3f}")
    for invoiced, best in ((False, claims), (True, invoices)):
        size, standard, floor = (x / JOBS for x in calldata[invoiced])
        floor += 21_000 / JOBS
        binds = "binds" if floor >= best[3] else "does not bind"
        print(f"batch 100{', invoices' if invoiced else ''} calldata: {size:,.0f} bytes/job, {standard:,.0f} gas/job; "
              f"its EIP-7623 floor, {floor:,.0f} gas/job with the base cost, {binds}")

if __name__ == "__main__":
    main()
