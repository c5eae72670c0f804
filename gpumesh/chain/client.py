"""``ChainClient``: the settlement contracts (TestToken, ProviderRegistry, JobEscrow) over web3.

Amounts are token base units (ints). A submitter's job id is hashed to bytes32 with ``job_key``;
the escrow keys a job by its depositor and that id (``claims.escrow_key``). Signers are ``LocalAccount``s or hex private keys; address arguments also take a
``LocalAccount``. Every write returns a ``TxResult`` with the receipt's decoded events, and a
revert raises ``ChainRevert`` named after the contract's custom error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eth_utils import event_abi_to_log_topic, keccak, to_checksum_address

from gpumesh.chain.artifacts import load_all
from gpumesh.chain.calldata import settle_args
from gpumesh.chain.claims import ClaimDomain, escrow_key
from gpumesh.chain.errors import RevertDecoder
from gpumesh.chain.models import (
    Deployment,
    EscrowJob,
    JobStatus,
    Settlement,
    Stake,
    TxResult,
    job_key,
)
from gpumesh.chain.tx import TxSender, account_lock, as_account
from gpumesh.errors import InvalidArgument

COORDINATOR_ROLE = keccak(text="COORDINATOR_ROLE")
DEFAULT_UNBONDING_DELAY_S = 7 * 24 * 3600
DEFAULT_MAX_SLASH_BPS = 2500  # one incident takes at most a quarter of a provider's stake


def address_of(who: Any) -> str:
    """A checksummed address from a str, a LocalAccount or anything with ``.address``."""
    raw = getattr(who, "address", who)
    try:
        return to_checksum_address(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"not an address: {raw!r} ({exc})", field="address") from None


class ChainClient:
    """The gpumesh contracts at one ``Deployment`` on one ``Web3``."""

    def __init__(self, web3, deployment: Deployment, *, build_dir=None, receipt_timeout: float = 60.0,
                 poll_interval: float = 0.05, verify_chain_id: bool = True) -> None:
        self.web3 = web3
        self.deployment = deployment
        self.artifacts = load_all(build_dir)
        self.decoder = RevertDecoder(a.abi for a in self.artifacts.values())
        self.tx = TxSender(web3, self.decoder, receipt_timeout=receipt_timeout, poll_interval=poll_interval)
        addresses = {"TestToken": deployment.token, "ProviderRegistry": deployment.registry,
                     "JobEscrow": deployment.escrow}
        self.contracts = {
            name: web3.eth.contract(address=address_of(addresses[name]), abi=art.abi)
            for name, art in self.artifacts.items()
        }
        self.token = self.contracts["TestToken"]
        self.registry = self.contracts["ProviderRegistry"]
        self.escrow = self.contracts["JobEscrow"]
        self._log_events: dict[tuple[str, bytes], tuple[str, Any]] = {}
        for name, contract in self.contracts.items():
            for item in contract.abi:
                if item.get("type") == "event" and not item.get("anonymous"):
                    key = (contract.address.lower(), event_abi_to_log_topic(item))
                    self._log_events[key] = (name, contract.events[item["name"]]())
        if verify_chain_id and deployment.chain_id and self.tx.chain_id != deployment.chain_id:
            raise InvalidArgument(
                f"deployment is for chain {deployment.chain_id}, the node is chain {self.tx.chain_id}",
                field="deployment",
            )

    @classmethod
    def connect(cls, url: str, deployment: Deployment, *, timeout: float = 10.0, **kwargs: Any) -> ChainClient:
        from gpumesh.chain.node import json_rpc_web3

        return cls(json_rpc_web3(url, timeout=timeout), deployment, **kwargs)

    # -- deployment ------------------------------------------------------------------------

    @classmethod
    def deploy(cls, web3, admin: Any, *, coordinator: Any = None,
               unbonding_delay_s: int = DEFAULT_UNBONDING_DELAY_S, max_slash_bps: int = DEFAULT_MAX_SLASH_BPS,
               build_dir=None, receipt_timeout: float = 60.0) -> Deployment:
        """Deploy TestToken, ProviderRegistry and JobEscrow from ``admin`` and grant
        COORDINATOR_ROLE on both to ``coordinator`` (default: the admin)."""
        arts = load_all(build_dir)
        sender = TxSender(web3, RevertDecoder(a.abi for a in arts.values()), receipt_timeout=receipt_timeout)
        admin_account = as_account(admin)
        admin_addr = admin_account.address
        coordinator_addr = address_of(coordinator if coordinator is not None else admin_account)

        def create(name: str, *args: Any) -> Any:
            factory = web3.eth.contract(abi=arts[name].abi, bytecode=arts[name].bytecode)
            receipt = sender.send(admin_account, None, factory.constructor(*args).data_in_transaction)
            return receipt

        token_receipt = create("TestToken")
        token = token_receipt["contractAddress"]
        registry = create("ProviderRegistry", token, int(unbonding_delay_s), int(max_slash_bps),
                          admin_addr)["contractAddress"]
        escrow = create("JobEscrow", token, registry, admin_addr)["contractAddress"]
        for name, address in (("ProviderRegistry", registry), ("JobEscrow", escrow)):
            contract = web3.eth.contract(address=address, abi=arts[name].abi)
            sender.send(admin_account, address, contract.encode_abi("grantRole", [COORDINATOR_ROLE, coordinator_addr]))
        return Deployment(chain_id=sender.chain_id, token=address_of(token), registry=address_of(registry),
                          escrow=address_of(escrow), block_number=int(token_receipt["blockNumber"]))

    # -- plumbing --------------------------------------------------------------------------

    def _send(self, signer: Any, contract, fn: str, *args: Any) -> TxResult:
        data = self.tx.guard(lambda: contract.encode_abi(fn, args=list(args)))
        return self._result(self.tx.send(signer, contract.address, data))

    def _read(self, contract, fn: str, *args: Any) -> Any:
        return self.tx.guard(lambda: getattr(contract.functions, fn)(*args).call())

    def _result(self, receipt) -> TxResult:
        events = []
        for log in receipt["logs"]:
            if not log["topics"]:
                continue
            found = self._log_events.get((log["address"].lower(), bytes(log["topics"][0])))
            if found is not None:
                events.append(self._event_dict(found[0], found[1].process_log(log)))
        return TxResult(tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
                        block_number=int(receipt["blockNumber"]), gas_used=int(receipt["gasUsed"]),
                        events=tuple(events))

    @staticmethod
    def _event_dict(contract_name: str, data) -> dict[str, Any]:
        return {
            "contract": contract_name,
            "event": data["event"],
            "args": dict(data["args"]),
            "tx_hash": "0x" + bytes(data["transactionHash"]).hex(),
            "block_number": int(data["blockNumber"]),
            "log_index": int(data["logIndex"]),
        }

    def _with_allowance(self, owner: Any, spender: str, amount: int, fn) -> TxResult:
        """Approve ``spender`` (if needed, mined first) then run ``fn``, with the owner's lock held
        across both, so concurrent callers sharing a key cannot spend each other's allowance."""
        account = as_account(owner)
        with account_lock(account.address):
            if self.allowance(account, spender) < amount:
                self.approve(account, spender, amount)
            return fn(account)

    def block_timestamp(self, block: str | int = "latest") -> int:
        return int(self.tx.guard(lambda: self.web3.eth.get_block(block)["timestamp"]))

    def describe(self) -> dict[str, Any]:
        d = self.deployment
        return {"chain_id": d.chain_id, "token": d.token, "registry": d.registry, "escrow": d.escrow}

    # -- token -----------------------------------------------------------------------------

    def send_value(self, sender: Any, to: Any, wei: int) -> TxResult:
        """Send native currency (gas money), e.g. to a provider that wants to withdraw."""
        return self._result(self.tx.send(sender, address_of(to), b"", value=int(wei)))

    def mint(self, sender: Any, to: Any, amount: int) -> TxResult:
        return self._send(sender, self.token, "mint", address_of(to), int(amount))

    def approve(self, owner: Any, spender: Any, amount: int) -> TxResult:
        return self._send(owner, self.token, "approve", address_of(spender), int(amount))

    def allowance(self, owner: Any, spender: Any) -> int:
        return int(self._read(self.token, "allowance", address_of(owner), address_of(spender)))

    def token_balance(self, who: Any) -> int:
        return int(self._read(self.token, "balanceOf", address_of(who)))

    # -- escrow ----------------------------------------------------------------------------

    @property
    def claim_domain(self) -> ClaimDomain:
        """Where this escrow's claims are signed for."""
        return ClaimDomain(self.tx.chain_id, self.escrow.address)

    def deposit(self, submitter: Any, job_id: str | bytes, amount: int, deadline: int) -> TxResult:
        """Fund ``submitter``'s job ``job_id`` (approving the escrow for ``amount`` first when needed)."""
        key = job_key(job_id)
        return self._with_allowance(
            submitter, self.escrow.address, int(amount),
            lambda acct: self._send(acct, self.escrow, "deposit", key, int(amount), int(deadline)),
        )

    def fund_account(self, submitter: Any, amount: int) -> TxResult:
        """Prepay ``amount`` into ``submitter``'s escrow account (approving first when needed)."""
        return self._with_allowance(submitter, self.escrow.address, int(amount),
                                    lambda acct: self._send(acct, self.escrow, "fundAccount", int(amount)))

    def set_spend_limit(self, submitter: Any, limit: int) -> TxResult:
        """Let coordinators commit at most ``limit`` more of ``submitter``'s account to jobs."""
        return self._send(submitter, self.escrow, "setSpendLimit", int(limit))

    def withdraw_account(self, submitter: Any, amount: int) -> TxResult:
        return self._send(submitter, self.escrow, "withdrawAccount", int(amount))

    def open_job(self, coordinator: Any, submitter: Any, job_id: str | bytes, amount: int, deadline: int) -> TxResult:
        """A coordinator opens ``submitter``'s job ``job_id`` from its account (within its spend limit)."""
        return self._send(coordinator, self.escrow, "openJob", address_of(submitter), job_key(job_id), int(amount),
                          int(deadline))

    def account_of(self, submitter: Any) -> tuple[int, int]:
        """``(prepaid, spend_limit)`` of ``submitter``'s escrow account."""
        prepaid, limit = self._read(self.escrow, "accountOf", address_of(submitter))
        return int(prepaid), int(limit)

    def settle_batch(self, coordinator: Any, settlements: Sequence[Settlement],
                     invoices: Mapping[str, bytes] | None = None) -> TxResult:
        """Settle many jobs in one transaction; payouts are credited (pull: ``withdraw``), one
        ``Credited`` event per payee with its payouts in the batch summed. A provider in
        ``invoices`` (address -> its signature of ``calldata.invoice_lines(settlements, it)``) is
        paid under that invoice; the others under their per-job claims."""
        if not settlements:
            raise InvalidArgument("no settlements", field="settlements")
        return self._send(coordinator, self.escrow, "settleBatch", *settle_args(settlements, invoices))

    def settle_job(self, coordinator: Any, settlement: Settlement) -> TxResult:
        """Settle one job, transferring the payouts and the refund directly."""
        payees, _, (job,) = settle_args([settlement])
        return self._send(coordinator, self.escrow, "settleJob", payees, job)

    def reclaim(self, submitter: Any, job_id: str | bytes) -> TxResult:
        """The submitter takes back its job's whole budget (after the deadline, if never settled)."""
        return self._send(submitter, self.escrow, "reclaim", job_key(job_id))

    def withdraw(self, account: Any) -> TxResult:
        return self._send(account, self.escrow, "withdraw")

    def job(self, submitter: Any, job_id: str | bytes) -> EscrowJob:
        """The escrow record of ``submitter``'s job ``job_id``."""
        return self.job_at(escrow_key(address_of(submitter), job_id))

    def job_at(self, key: bytes) -> EscrowJob:
        submitter, amount, deadline, status = self._read(self.escrow, "getJob", bytes(key))
        return EscrowJob(address_of(submitter), int(amount), int(deadline), JobStatus(int(status)))

    def escrow_balance(self, who: Any) -> int:
        return int(self._read(self.escrow, "balanceOf", address_of(who)))

    def deposits_for(self, submitter: Any, job_id: str | bytes) -> list[dict[str, Any]]:
        return self.events("JobEscrow", "Deposited", key=escrow_key(address_of(submitter), job_id))

    # -- registry --------------------------------------------------------------------------

    def register(self, provider: Any) -> TxResult:
        """Register ``provider`` (its own transaction) so the escrow may pay it."""
        return self._send(provider, self.registry, "register")

    def is_registered(self, who: Any) -> bool:
        return bool(self._read(self.registry, "isRegistered", address_of(who)))

    def stake(self, provider: Any, amount: int) -> TxResult:
        return self._with_allowance(
            provider, self.registry.address, int(amount),
            lambda acct: self._send(acct, self.registry, "stake", int(amount)),
        )

    def request_unbond(self, provider: Any, amount: int) -> TxResult:
        return self._send(provider, self.registry, "requestUnbond", int(amount))

    def withdraw_unbonded(self, provider: Any) -> TxResult:
        return self._send(provider, self.registry, "withdrawUnbonded")

    def slash(self, coordinator: Any, provider: Any, commitment: str, signature: bytes, check_record: bytes,
              amount: int, beneficiary: Any) -> TxResult:
        """Slash ``amount`` of a provider's stake to ``beneficiary`` for the result ``commitment`` (the text it
        signed, ``gpumesh.identity.result_text``) that the check ``check_record`` (a bytes32 digest) found invalid."""
        return self._send(coordinator, self.registry, "slash", address_of(provider), commitment.encode(),
                          bytes(signature), bytes(check_record), int(amount), address_of(beneficiary))

    def max_slash(self, who: Any) -> int:
        """The most one incident may take from ``who`` now."""
        return self.stake_of(who).total * int(self._read(self.registry, "maxSlashBps")) // 10_000

    def stake_of(self, who: Any) -> Stake:
        active, unbonding, unlock_at = self._read(self.registry, "stakeOf", address_of(who))
        return Stake(int(active), int(unbonding), int(unlock_at))

    def funder_of(self, who: Any) -> str:
        """The address that first sent ``who`` payment tokens (what its stake is paid from), or ``""``
        when it has received none or only minted ones. One funder behind several provider
        identities ties them together (``coordinator.verification.independence``)."""
        zero = "0x" + "0" * 40
        for event in self.events("TestToken", "Transfer", to=address_of(who)):
            sender = str(event["args"]["from"])
            if sender.lower() != zero:
                return address_of(sender)
        return ""

    # -- roles -----------------------------------------------------------------------------

    def grant_coordinator(self, admin: Any, coordinator: Any) -> tuple[TxResult, TxResult]:
        """Let another coordinator key settle and slash."""
        who = address_of(coordinator)
        return (self._send(admin, self.registry, "grantRole", COORDINATOR_ROLE, who),
                self._send(admin, self.escrow, "grantRole", COORDINATOR_ROLE, who))

    def is_coordinator(self, who: Any) -> bool:
        who = address_of(who)
        return bool(self._read(self.escrow, "hasRole", COORDINATOR_ROLE, who)
                    and self._read(self.registry, "hasRole", COORDINATOR_ROLE, who))

    # -- events ----------------------------------------------------------------------------

    def events(self, contract_name: str, event_name: str, from_block: int | None = None,
               to_block: int | str = "latest", **filters: Any) -> list[dict[str, Any]]:
        """Decoded events (``args``, ``tx_hash``, ``block_number``, ``log_index``) in block order;
        keyword arguments filter on indexed arguments (``key=escrow_key(...)``)."""
        if contract_name not in self.contracts:
            raise InvalidArgument(f"unknown contract {contract_name!r}", field="contract_name")
        contract = self.contracts[contract_name]
        start = self.deployment.block_number if from_block is None else from_block
        try:
            event = contract.events[event_name]()
        except Exception:
            raise InvalidArgument(f"{contract_name} has no event {event_name!r}", field="event_name") from None
        logs = self.tx.guard(lambda: event.get_logs(argument_filters=filters or None,
                                                    from_block=start, to_block=to_block))
        return [self._event_dict(contract_name, log) for log in logs]
