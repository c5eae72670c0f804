"""ProviderRegistry on py-evm (every revert path), and reentrancy probes for both contracts.

The probes need a token that calls back while it transfers: a small test-only ERC-20 compiled here with the
pinned solcjs (contracts/node_modules, installed on first use by tests.npm_deps; skipped, with the reason,
where node or npm is missing).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

import pytest
from eth_abi import decode as abi_decode
from web3 import Web3

from gpumesh.chain.claims import escrow_key
from tests import npm_deps
from tests.contracts_evm import (
    COORDINATOR_ROLE,
    ROOT,
    Chain,
    claim_payout,
    commitment,
    private_key,
    settle_batch,
    settle_job,
)

E18 = 10**18
DELAY = 7 * 86_400
CAP_BPS = 2500
ZERO = "0x" + "00" * 20
CHECK = Web3.keccak(text="referee rescore of task-42: 3 of 8 records off")


@dataclass
class Reg:
    chain: Chain
    token: object
    registry: object
    admin: str
    coord: str
    p1: str
    p2: str
    referee: str
    stranger: str

    def stake_of(self, provider: str) -> tuple:
        return tuple(self.registry.functions.stakeOf(provider).call())

    def tok(self, account: str) -> int:
        return self.token.functions.balanceOf(account).call()

    def evidence(self, provider: str, task: str = "job_1-t00000", output: str = "bafkreiwrong",
                 signer: str | None = None) -> tuple[bytes, bytes]:
        text, _ = commitment(self.chain, provider, task, output)
        _, signature = commitment(self.chain, signer or provider, task, output)
        return text, signature

    def slash(self, provider: str, amount: int, *, task: str = "job_1-t00000", beneficiary: str | None = None,
              check: bytes = CHECK, evidence: tuple[bytes, bytes] | None = None):
        text, sig = evidence or self.evidence(provider, task)
        return self.registry.functions.slash(provider, text, sig, check, amount, beneficiary or self.referee)


def make_registry(chain: Chain, token) -> Reg:
    admin, coord, p1, p2, referee, stranger = chain.accounts[:6]
    registry = chain.deploy("ProviderRegistry", token.address, DELAY, CAP_BPS, admin)
    chain.send(registry.functions.grantRole(COORDINATOR_ROLE, coord), admin)
    for p in (p1, p2):
        chain.send(token.functions.mint(p, 100 * E18), p)
        chain.send(token.functions.approve(registry.address, 2**256 - 1), p)
    return Reg(chain, token, registry, admin, coord, p1, p2, referee, stranger)


@pytest.fixture
def reg() -> Reg:
    chain = Chain()
    return make_registry(chain, chain.deploy("TestToken"))


def test_views_and_constructor_checks(reg):
    c, r = reg.chain, reg.registry
    assert r.functions.token().call() == reg.token.address
    assert r.functions.unbondingDelay().call() == DELAY and r.functions.maxSlashBps().call() == CAP_BPS
    assert r.functions.MIN_UNBONDING_DELAY().call() == 86_400
    assert r.functions.COMMITMENT_PREFIX().call() == b"gpumesh task result\ntask: "
    assert r.functions.COORDINATOR_ROLE().call() == COORDINATOR_ROLE
    assert reg.stake_of(reg.p1) == (0, 0, 0)
    factory = c.factory("ProviderRegistry")
    t = reg.token.address
    for args, error in (((ZERO, DELAY, CAP_BPS, reg.admin), ("ZeroAddress", ())),
                        ((t, DELAY, CAP_BPS, ZERO), ("ZeroAddress", ())),
                        ((t, 0, CAP_BPS, reg.admin), ("UnbondingDelayTooShort", (0, 86_400))),
                        ((t, 86_399, CAP_BPS, reg.admin), ("UnbondingDelayTooShort", (86_399, 86_400))),
                        ((t, DELAY, 0, reg.admin), ("InvalidSlashCap", (0,))),
                        ((t, DELAY, 10_001, reg.admin), ("InvalidSlashCap", (10_001,)))):
        assert c.revert_of(factory.constructor(*args), reg.admin) == error
    c.deploy("ProviderRegistry", t, 86_400, 10_000, reg.admin)  # the bounds themselves are accepted


def test_register_once_and_staking_registers(reg):
    c, r = reg.chain, reg.registry
    assert not r.functions.isRegistered(reg.p1).call()
    receipt = c.send(r.functions.register(), reg.p1)
    assert c.events(r, receipt, "Registered") == [{"provider": reg.p1}]
    assert c.events(r, c.send(r.functions.register(), reg.p1), "Registered") == []  # idempotent
    receipt = c.send(r.functions.stake(E18), reg.p2)
    assert c.events(r, receipt, "Registered") == [{"provider": reg.p2}]
    assert r.functions.isRegistered(reg.p1).call() and r.functions.isRegistered(reg.p2).call()
    assert not r.functions.isRegistered(reg.stranger).call()


def test_stake_unbond_withdraw(reg):
    c, r = reg.chain, reg.registry
    receipt = c.send(r.functions.stake(10 * E18), reg.p1)
    assert c.events(r, receipt, "Staked") == [{"provider": reg.p1, "amount": 10 * E18}]
    c.send(r.functions.stake(5 * E18), reg.p1)
    assert reg.stake_of(reg.p1) == (15 * E18, 0, 0)
    assert reg.tok(r.address) == 15 * E18 and reg.tok(reg.p1) == 85 * E18

    receipt = c.send(r.functions.requestUnbond(4 * E18), reg.p1)
    first_unlock = c.now() + DELAY
    assert c.events(r, receipt, "UnbondRequested") == [
        {"provider": reg.p1, "amount": 4 * E18, "unlockAt": first_unlock}]
    assert reg.stake_of(reg.p1) == (11 * E18, 4 * E18, first_unlock)
    c.expect_revert(r.functions.withdrawUnbonded(), reg.p1, "StillBonding", first_unlock)

    c.travel_to(first_unlock - 100)
    c.send(r.functions.requestUnbond(E18), reg.p1)  # adds up and restarts the clock
    unlock = c.now() + DELAY
    assert reg.stake_of(reg.p1) == (10 * E18, 5 * E18, unlock)
    c.travel_to(first_unlock)
    c.expect_revert(r.functions.withdrawUnbonded(), reg.p1, "StillBonding", unlock)
    c.travel_to(unlock)  # withdrawable from unlockAt on
    receipt = c.send(r.functions.withdrawUnbonded(), reg.p1)
    assert c.events(r, receipt, "Withdrawn") == [{"provider": reg.p1, "amount": 5 * E18}]
    assert reg.stake_of(reg.p1) == (10 * E18, 0, 0)
    assert reg.tok(reg.p1) == 90 * E18 and reg.tok(r.address) == 10 * E18
    c.expect_revert(r.functions.withdrawUnbonded(), reg.p1, "NothingUnbonding")  # paid once


def test_stake_and_unbond_reverts(reg):
    c, r = reg.chain, reg.registry
    c.expect_revert(r.functions.stake(0), reg.p1, "ZeroAmount")
    c.expect_revert(r.functions.stake(E18), reg.stranger, "ERC20InsufficientAllowance", r.address, 0, E18)
    c.expect_revert(r.functions.requestUnbond(0), reg.p1, "ZeroAmount")
    c.expect_revert(r.functions.requestUnbond(1), reg.p1, "InsufficientStake", 0, 1)
    c.send(r.functions.stake(3 * E18), reg.p1)
    c.expect_revert(r.functions.requestUnbond(3 * E18 + 1), reg.p1, "InsufficientStake", 3 * E18, 3 * E18 + 1)
    c.send(r.functions.requestUnbond(2 * E18), reg.p1)
    # Unbonding stake is no longer active: only 1 left to unbond.
    c.expect_revert(r.functions.requestUnbond(2 * E18), reg.p1, "InsufficientStake", E18, 2 * E18)
    c.expect_revert(r.functions.withdrawUnbonded(), reg.p2, "NothingUnbonding")


def test_slash_takes_active_then_unbonding_a_bounded_share_per_incident(reg):
    c, r = reg.chain, reg.registry
    c.send(r.functions.stake(16 * E18), reg.p1)
    c.send(r.functions.requestUnbond(12 * E18), reg.p1)
    unlock = reg.stake_of(reg.p1)[2]
    text, sig = reg.evidence(reg.p1, "job_1-t00003")
    receipt = c.send(reg.slash(reg.p1, 4 * E18, evidence=(text, sig)), reg.coord)  # 25% of 16
    assert c.events(r, receipt, "Slashed") == [{"provider": reg.p1, "amount": 4 * E18, "beneficiary": reg.referee,
                                                "incident": Web3.keccak(text), "checkRecord": CHECK}]
    assert r.functions.isSlashed(Web3.keccak(text)).call()
    assert reg.stake_of(reg.p1) == (0, 12 * E18, unlock)  # active first, then unbonding: no escape by unbonding
    c.expect_revert(reg.slash(reg.p1, 3 * E18 + 1, task="job_1-t00004"), reg.coord, "SlashExceedsCap", 3 * E18,
                    3 * E18 + 1)  # a quarter of what is left
    c.send(reg.slash(reg.p1, 3 * E18, task="job_1-t00004"), reg.coord)
    assert reg.stake_of(reg.p1) == (0, 9 * E18, unlock)
    assert reg.tok(reg.referee) == 7 * E18 and reg.tok(r.address) == 9 * E18
    # The same incident cannot be slashed again (not even as another amount).
    c.expect_revert(reg.slash(reg.p1, E18, evidence=(text, sig)), reg.coord, "IncidentAlreadySlashed",
                    Web3.keccak(text))


def test_a_coordinator_cannot_slash_without_the_providers_own_commitment_nor_to_itself(reg):
    c, slash = reg.chain, reg.slash
    c.send(reg.registry.functions.stake(8 * E18), reg.p1)
    for caller in (reg.stranger, reg.p1, reg.admin):
        c.expect_revert(slash(reg.p1, E18), caller, "AccessControlUnauthorizedAccount", caller, COORDINATOR_ROLE)
    c.expect_revert(slash(reg.p1, 0), reg.coord, "ZeroAmount")
    c.expect_revert(slash(reg.p1, E18, beneficiary=ZERO), reg.coord, "ZeroAddress")
    c.expect_revert(slash(reg.p1, E18, beneficiary=reg.coord), reg.coord, "BeneficiaryIsCoordinator", reg.coord)
    c.expect_revert(slash(reg.p1, E18, check=b"\0" * 32), reg.coord, "MissingCheckRecord")
    # Evidence the provider never signed: forged by the coordinator, or its real signature over another output.
    forged = reg.evidence(reg.p1, signer=reg.coord)
    c.expect_revert(slash(reg.p1, E18, evidence=forged), reg.coord, "BadCommitmentSignature", reg.coord, reg.p1)
    real_text, real_sig = reg.evidence(reg.p1, output="bafkreiright")
    tampered = real_text.replace(b"bafkreiright", b"bafkreiwrong")
    got = c.revert_of(slash(reg.p1, E18, evidence=(tampered, real_sig)), reg.coord)
    assert got[0] == "BadCommitmentSignature" and got[1][1] == reg.p1
    # Something else the provider did sign (a registration challenge, a signed request) is no result commitment.
    from eth_account import Account
    from eth_account.messages import encode_defunct

    other = b"gpumesh registration\naddress: " + reg.p1.encode()
    sig = bytes(Account.sign_message(encode_defunct(primitive=other), private_key(c, reg.p1)).signature)
    c.expect_revert(slash(reg.p1, E18, evidence=(other, sig)), reg.coord, "NotAResultCommitment")
    c.expect_revert(slash(reg.p1, E18, evidence=(b"gpumesh task result\ntask: ", sig)), reg.coord,
                    "NotAResultCommitment")
    # Bounded: never the whole stake at once, nothing of a provider without stake.
    c.expect_revert(slash(reg.p1, 8 * E18), reg.coord, "SlashExceedsCap", 2 * E18, 8 * E18)
    c.expect_revert(slash(reg.p2, 1), reg.coord, "SlashExceedsCap", 0, 1)
    assert reg.stake_of(reg.p1) == (8 * E18, 0, 0)


# --- reentrancy probes ------------------------------------------------------------------------

HOOK_TOKEN = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// Test-only token whose next transfer() first calls `target` with `payload`: either a re-entry (its revert is
/// bubbled) or a probe of the caller's state in the middle of its payment (the return data is kept).
contract HookToken is ERC20 {
    address private _target;
    bytes private _payload;
    bool private _bubble;
    bytes public observed;

    constructor() ERC20("hook", "HOOK") {}

    function mint(address to, uint256 amount) external { _mint(to, amount); }

    function setHook(address target, bytes calldata payload, bool bubble) external {
        (_target, _payload, _bubble) = (target, payload, bubble);
    }

    function transfer(address to, uint256 value) public override returns (bool) {
        address target = _target;
        if (target != address(0)) {
            _target = address(0);
            (bool ok, bytes memory ret) = target.call(_payload);
            if (!ok && _bubble) assembly { revert(add(ret, 32), mload(ret)) }
            observed = ret;
        }
        return super.transfer(to, value);
    }
}
"""

COMPILE_JS = """
const fs = require('fs'), path = require('path');
const [solcPath, nodeModules] = process.argv.slice(2);
const solc = require(solcPath);
const input = {language: 'Solidity', sources: {'HookToken.sol': {content: fs.readFileSync(0, 'utf8')}},
  settings: {evmVersion: 'cancun', optimizer: {enabled: true, runs: 200},
             outputSelection: {'*': {'*': ['abi', 'evm.bytecode.object']}}}};
const load = (p) => { const f = path.join(nodeModules, p);
  return fs.existsSync(f) ? {contents: fs.readFileSync(f, 'utf8')} : {error: 'not found: ' + p}; };
process.stdout.write(solc.compile(JSON.stringify(input), {import: load}));
"""


@pytest.fixture(scope="module")
def hook_artifact(tmp_path_factory) -> dict:
    node = npm_deps.contracts_node()  # installs contracts/node_modules on first use; skips (or fails) without
    solc = ROOT / "contracts" / "node_modules" / "solc"
    script = tmp_path_factory.mktemp("hook") / "compile.cjs"
    script.write_text(COMPILE_JS)
    proc = subprocess.run([node, str(script), str(solc), str(ROOT / "contracts" / "node_modules")],
                          input=HOOK_TOKEN, capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(proc.stdout)
    errors = [e["formattedMessage"] for e in out.get("errors", []) if e["severity"] == "error"]
    assert not errors, errors
    c = out["contracts"]["HookToken.sol"]["HookToken"]
    return {"abi": c["abi"], "bytecode": "0x" + c["evm"]["bytecode"]["object"]}


@pytest.fixture
def hooked(hook_artifact):
    """An escrow and a registry on a HookToken, a funded job settled to p1 (pull), p1 staked and unbonding."""
    chain = Chain()
    token = chain.deploy("HookToken", artifact=hook_artifact)
    reg = make_registry(chain, token)
    escrow = chain.deploy("JobEscrow", token.address, reg.registry.address, reg.admin)
    chain.send(escrow.functions.grantRole(COORDINATOR_ROLE, reg.coord), reg.admin)
    chain.send(token.functions.approve(escrow.address, 2**256 - 1), reg.p2)
    deadline = chain.now() + 3600
    for name in ("pull", "push", "reclaim"):
        chain.send(escrow.functions.deposit(Web3.keccak(text=name), 10 * E18, deadline), reg.p2)
    chain.send(reg.registry.functions.stake(10 * E18), reg.p1)
    pull = escrow_key(reg.p2, Web3.keccak(text="pull"))
    chain.send(settle_batch(escrow, [(pull, [claim_payout(chain, escrow, pull, reg.p1, 4 * E18)])]), reg.coord)
    chain.send(reg.registry.functions.requestUnbond(10 * E18), reg.p1)
    return reg, escrow, deadline


def _observed(token, types: list[str]) -> tuple:
    return tuple(abi_decode(types, token.functions.observed().call()))


def test_reentering_during_a_payment_is_refused(hooked):
    reg, escrow, deadline = hooked
    c, token = reg.chain, reg.token

    def hook(target, fn) -> None:
        c.send(token.functions.setHook(target.address, fn._encode_transaction_data(), True), reg.stranger)

    hook(escrow, escrow.functions.withdraw())
    c.expect_revert(escrow.functions.withdraw(), reg.p1, "ReentrancyGuardReentrantCall")
    hook(escrow, escrow.functions.withdraw())
    push = escrow_key(reg.p2, Web3.keccak(text="push"))
    c.expect_revert(settle_job(escrow, (push, [claim_payout(c, escrow, push, reg.p1, E18)])), reg.coord,
                    "ReentrancyGuardReentrantCall")
    c.travel_to(deadline + 1)
    hook(escrow, escrow.functions.reclaim(Web3.keccak(text="reclaim")))
    c.expect_revert(escrow.functions.reclaim(Web3.keccak(text="reclaim")), reg.p2, "ReentrancyGuardReentrantCall")
    c.travel_to(deadline + DELAY)
    hook(reg.registry, reg.registry.functions.withdrawUnbonded())
    c.expect_revert(reg.registry.functions.withdrawUnbonded(), reg.p1, "ReentrancyGuardReentrantCall")


def test_state_is_updated_before_every_transfer(hooked):
    reg, escrow, deadline = hooked
    c, token = reg.chain, reg.token

    def probe(target, fn) -> None:
        c.send(token.functions.setHook(target.address, fn._encode_transaction_data(), False), reg.stranger)

    probe(escrow, escrow.functions.balanceOf(reg.p1))
    c.send(escrow.functions.withdraw(), reg.p1)
    assert _observed(token, ["uint256"]) == (0,)  # the credit was cleared before the tokens moved
    assert reg.tok(reg.p1) == 94 * E18

    push = escrow_key(reg.p2, Web3.keccak(text="push"))
    probe(escrow, escrow.functions.getJob(push))
    c.send(settle_job(escrow, (push, [claim_payout(c, escrow, push, reg.p1, E18)])), reg.coord)
    assert _observed(token, ["address", "uint256", "uint64", "uint8"])[3] == 2  # Settled before paying

    c.travel_to(deadline + 1)
    job = Web3.keccak(text="reclaim")
    probe(escrow, escrow.functions.getJob(escrow_key(reg.p2, job)))
    c.send(escrow.functions.reclaim(job), reg.p2)
    assert _observed(token, ["address", "uint256", "uint64", "uint8"])[3] == 3  # Reclaimed before refunding

    probe(reg.registry, reg.registry.functions.stakeOf(reg.p1))
    c.travel_to(deadline + DELAY)
    c.send(reg.registry.functions.withdrawUnbonded(), reg.p1)
    assert _observed(token, ["uint256", "uint256", "uint64"]) == (0, 0, 0)
