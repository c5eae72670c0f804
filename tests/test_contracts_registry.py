"""ProviderRegistry on py-evm (every revert path), and reentrancy probes for both contracts.

The probes need a token that calls back while it transfers: a small test-only ERC-20 compiled here with the
pinned solcjs (skipped, with the reason, when node or contracts/node_modules is missing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from eth_abi import decode as abi_decode
from web3 import Web3

from tests.contracts_evm import COORDINATOR_ROLE, ROOT, Chain

E18 = 10**18
DELAY = 7 * 86_400
ZERO = "0x" + "00" * 20
REASON = Web3.keccak(text="task-42 mismatch")


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


def make_registry(chain: Chain, token) -> Reg:
    admin, coord, p1, p2, referee, stranger = chain.accounts[:6]
    registry = chain.deploy("ProviderRegistry", token.address, DELAY, admin)
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
    c = reg.chain
    assert reg.registry.functions.token().call() == reg.token.address
    assert reg.registry.functions.unbondingDelay().call() == DELAY
    assert reg.registry.functions.COORDINATOR_ROLE().call() == COORDINATOR_ROLE
    assert reg.stake_of(reg.p1) == (0, 0, 0)
    factory = c.factory("ProviderRegistry")
    assert c.revert_of(factory.constructor(ZERO, DELAY, reg.admin), reg.admin) == ("ZeroAddress", ())
    assert c.revert_of(factory.constructor(reg.token.address, DELAY, ZERO), reg.admin) == ("ZeroAddress", ())


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


def test_slash_active_then_unbonding(reg):
    c, r = reg.chain, reg.registry
    c.send(r.functions.stake(10 * E18), reg.p1)
    c.send(r.functions.requestUnbond(6 * E18), reg.p1)
    unlock = reg.stake_of(reg.p1)[2]
    receipt = c.send(r.functions.slash(reg.p1, 3 * E18, reg.referee, REASON), reg.coord)
    assert c.events(r, receipt, "Slashed") == [
        {"provider": reg.p1, "amount": 3 * E18, "beneficiary": reg.referee, "reason": REASON}]
    assert reg.stake_of(reg.p1) == (E18, 6 * E18, unlock)  # active first
    c.send(r.functions.slash(reg.p1, 4 * E18, reg.referee, REASON), reg.coord)
    assert reg.stake_of(reg.p1) == (0, 3 * E18, unlock)  # then into unbonding: no escape by unbonding
    assert reg.tok(reg.referee) == 7 * E18 and reg.tok(r.address) == 3 * E18
    c.expect_revert(r.functions.slash(reg.p1, 3 * E18 + 1, reg.referee, REASON), reg.coord,
                    "SlashExceedsStake", 3 * E18, 3 * E18 + 1)
    c.send(r.functions.slash(reg.p1, 3 * E18, reg.referee, REASON), reg.coord)
    assert reg.stake_of(reg.p1) == (0, 0, 0)  # fully slashed: the unlock time is cleared too
    c.travel_to(unlock)
    c.expect_revert(r.functions.withdrawUnbonded(), reg.p1, "NothingUnbonding")
    assert reg.tok(reg.referee) == 10 * E18 and reg.tok(r.address) == 0


def test_slash_reverts(reg):
    c, slash = reg.chain, reg.registry.functions.slash
    c.send(reg.registry.functions.stake(2 * E18), reg.p1)
    for caller in (reg.stranger, reg.p1, reg.admin):
        c.expect_revert(slash(reg.p1, E18, reg.referee, REASON), caller, "AccessControlUnauthorizedAccount", caller,
                        COORDINATOR_ROLE)
    c.expect_revert(slash(reg.p1, 0, reg.referee, REASON), reg.coord, "ZeroAmount")
    c.expect_revert(slash(reg.p1, E18, ZERO, REASON), reg.coord, "ZeroAddress")
    c.expect_revert(slash(reg.p1, 2 * E18 + 1, reg.referee, REASON), reg.coord, "SlashExceedsStake", 2 * E18,
                    2 * E18 + 1)
    c.expect_revert(slash(reg.p2, 1, reg.referee, REASON), reg.coord, "SlashExceedsStake", 0, 1)
    assert reg.stake_of(reg.p1) == (2 * E18, 0, 0)


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
    node, solc = shutil.which("node"), ROOT / "contracts" / "node_modules" / "solc"
    if node is None or not solc.is_dir():
        reason = "node is not on PATH" if node is None else f"{solc} is missing (npm ci --prefix contracts)"
        print(f"skipping reentrancy probes: {reason}")
        pytest.skip(reason)
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
    escrow = chain.deploy("JobEscrow", token.address, reg.admin)
    chain.send(escrow.functions.grantRole(COORDINATOR_ROLE, reg.coord), reg.admin)
    chain.send(token.functions.approve(escrow.address, 2**256 - 1), reg.p2)
    deadline = chain.now() + 3600
    for name in ("pull", "push", "reclaim"):
        chain.send(escrow.functions.deposit(Web3.keccak(text=name), 10 * E18, deadline), reg.p2)
    chain.send(escrow.functions.settleBatch([(Web3.keccak(text="pull"), [(reg.p1, 4 * E18)])]), reg.coord)
    chain.send(reg.registry.functions.stake(10 * E18), reg.p1)
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
    c.expect_revert(escrow.functions.settleJob((Web3.keccak(text="push"), [(reg.p1, E18)])), reg.coord,
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

    push = Web3.keccak(text="push")
    probe(escrow, escrow.functions.getJob(push))
    c.send(escrow.functions.settleJob((push, [(reg.p1, E18)])), reg.coord)
    assert _observed(token, ["address", "uint256", "uint64", "uint8"])[3] == 2  # Settled before paying

    c.travel_to(deadline + 1)
    job = Web3.keccak(text="reclaim")
    probe(escrow, escrow.functions.getJob(job))
    c.send(escrow.functions.reclaim(job), reg.p2)
    assert _observed(token, ["address", "uint256", "uint64", "uint8"])[3] == 3  # Reclaimed before refunding

    probe(reg.registry, reg.registry.functions.stakeOf(reg.p1))
    c.travel_to(deadline + DELAY)
    c.send(reg.registry.functions.withdrawUnbonded(), reg.p1)
    assert _observed(token, ["uint256", "uint256", "uint64"]) == (0, 0, 0)
