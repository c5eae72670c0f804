// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IProviderRegistry} from "src/IProviderRegistry.sol";

/// @title gpumesh job escrow
/// @notice Submitters deposit a job's budget; the coordinator settles jobs, paying providers and refunding the unspent
/// budget; a submitter reclaims the whole budget of a job not settled by its deadline.
/// @dev What the coordinator key can do with a deposit is bounded here, not by trust: it settles only before the
/// deadline (after it, only the submitter's reclaim works), it pays only registered providers that are not
/// coordinators, each at most the amount that provider itself signed for that job (an EIP-712 `Claim`), each provider
/// once per job, and never more than the budget; the rest goes back to the submitter. A job's key is bound to its
/// depositor (`jobKey(submitter, jobId)`), so nobody can take another wallet's job id. Both settle calls name the
/// providers they pay once, in a payee list, and each payout by its index there: a payee is checked once per call.
/// In `settleBatch` a provider may instead sign one EIP-712 `Invoice` for all its payments of the call (each job and
/// exact amount, in call order): one signature per payee and batch rather than one claim per payout.
/// `settleBatch` credits internal balances (pull payments, withdrawn with `withdraw`), each payee's once per batch
/// with its payouts summed; `settleJob` pays with direct transfers and is the per-job baseline. A submitter may also prepay an account and let coordinators open jobs from it (`fundAccount`,
/// `setSpendLimit`, `openJob`: how HTTP API keys spend): the coordinator then opens at most the spend limit the
/// submitter set, from what it prepaid, with deadlines at most `MAX_OPEN_WINDOW` ahead, and the unspent budget of
/// such a job goes back to that account. Tokens with transfer fees or rebasing are not supported.
contract JobEscrow is AccessControl, ReentrancyGuardTransient, EIP712 {
    using SafeERC20 for IERC20;

    /// @notice Role allowed to settle jobs.
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");
    /// @notice What a provider signs to be paid for a job: at most `amount` for its work on `job` (a job key).
    bytes32 public constant CLAIM_TYPEHASH = keccak256("Claim(bytes32 job,address provider,uint256 amount)");
    /// @notice What a provider signs to be paid, in one `settleBatch`, exactly `amount` for each job of its `lines`.
    bytes32 public constant INVOICE_TYPEHASH =
        keccak256("Invoice(address provider,Line[] lines)Line(bytes32 job,uint256 amount)");
    /// @notice One line of an invoice: `amount` for the provider's work on the job key `job`.
    bytes32 public constant LINE_TYPEHASH = keccak256("Line(bytes32 job,uint256 amount)");
    /// @notice The furthest deadline a coordinator may give a job it opens from a submitter's account.
    uint64 public constant MAX_OPEN_WINDOW = 8 days;
    /// @dev Half the secp256k1 group order: a claim signature's s must not exceed it (no malleable twins).
    uint256 private constant _HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @notice Lifecycle of a job's escrow; `None` means no deposit was ever made for the key.
    enum JobStatus {
        None,
        Funded,
        Settled,
        Reclaimed
    }

    /// @notice `amount` tokens to the provider `payees[payee]` of the call's payee list, who signed (`r`, `vs`: an
    /// EIP-2098 compact signature) a claim of `claimed` for the job; `amount` is at most `claimed`.
    struct Payout {
        uint256 payee;
        uint256 amount;
        uint256 claimed;
        bytes32 r;
        bytes32 vs;
    }

    /// @notice `amount` tokens to the provider `payees[payee]`, under the invoice that provider signed for the call.
    struct Line {
        uint256 payee;
        uint256 amount;
    }

    /// @notice The payouts of one job: under per-job claims (`payouts`) and under invoices (`lines`), each by strictly
    /// increasing payee index; a payee with an invoice in the call is paid only by lines, any other only by payouts.
    /// The rest goes back to the submitter.
    struct Settlement {
        bytes32 key;
        Payout[] payouts;
        Line[] lines;
    }

    /// @notice `payees[payee]`'s signature (`r`, `vs`: EIP-2098) of its `Invoice`: its `lines` lines of the call, in
    /// the order the call gives them (settlement by settlement). Invoices go by strictly increasing payee index.
    struct Invoice {
        uint256 payee;
        uint256 lines;
        bytes32 r;
        bytes32 vs;
    }

    /// @dev A `settleBatch` call while its settlements are walked: `credits[payee]` sums the payee's payments;
    /// `slotOf[payee]` is 1 + the payee's invoice index (0: none); each invoice's line hashes fill `hashes` from
    /// `next[i]` up to `end[i]`.
    struct Batch {
        uint256[] credits;
        uint256[] slotOf;
        uint256[] next;
        uint256[] end;
        bytes32[] hashes;
    }

    /// @dev Slot 0 holds the submitter, the budget and the recorded status (None, Funded or Reclaimed); slot 1 the
    /// deadline and the account flag, needed only while the job is open. Closing a job clears slot 1 (one write
    /// that earns a storage refund): a job recorded Funded whose deadline is zero is Settled (a deadline is in the
    /// future when set, so never zero while open; see `_statusOf`), and reclaim records Reclaimed. Slot 0 is kept
    /// after closing so a key is never reused.
    struct Job {
        address submitter;
        uint88 amount;
        JobStatus status;
        uint64 deadline;
        bool fromAccount; // opened by a coordinator from the submitter's prepaid account: refunds go back to it
    }

    /// @dev What a submitter prepaid, and how much of it coordinators may still commit to jobs.
    struct Account {
        uint256 prepaid;
        uint256 spendLimit;
    }

    IERC20 private immutable _token;
    IProviderRegistry private immutable _registry;
    mapping(bytes32 key => Job) private _jobs;
    mapping(address account => uint256) private _balances;
    mapping(address submitter => Account) private _accounts;

    /// @notice Emitted when `submitter` escrows `amount` for its `jobId` (the job's key is `key`), reclaimable after
    /// `deadline` unless settled before.
    event Deposited(bytes32 indexed key, address indexed submitter, bytes32 jobId, uint256 amount, uint64 deadline);
    /// @notice Emitted once per settled job: `paid` to providers and `refunded` to the submitter.
    event JobSettled(bytes32 indexed key, uint256 paid, uint256 refunded);
    /// @notice Emitted once per `settleBatch` for each provider it paid: `amount` is the sum of its payouts there.
    event Credited(address indexed account, uint256 amount);
    /// @notice Emitted when `submitter` takes back the whole `amount` of a job not settled by its deadline.
    event Reclaimed(bytes32 indexed key, address indexed submitter, uint256 amount);
    /// @notice Emitted when `account` withdraws its credited balance.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice Emitted when `submitter` prepays `amount` into its account (now holding `prepaid`).
    event AccountFunded(address indexed submitter, uint256 amount, uint256 prepaid);
    /// @notice Emitted when `submitter` lets coordinators commit at most `spendLimit` more of its account.
    event SpendLimitSet(address indexed submitter, uint256 spendLimit);
    /// @notice Emitted when a coordinator opens the job `key` for `submitter` from its account.
    event JobOpened(bytes32 indexed key, address indexed submitter, address indexed coordinator, uint256 amount);
    /// @notice Emitted when `submitter` takes `amount` of its prepaid account back.
    event AccountWithdrawn(address indexed submitter, uint256 amount);

    /// @notice An amount of zero was given.
    error ZeroAmount();
    /// @notice The zero address was given where an account is required.
    error ZeroAddress();
    /// @notice The deposit does not fit the job record (more than 2**88 - 1 base units).
    error AmountTooLarge();
    /// @notice The depositor already made a deposit under this job id (keys are never reused).
    error JobExists(bytes32 key);
    /// @notice The deadline is not in the future.
    error DeadlineInPast(uint64 deadline);
    /// @notice No deposit was ever made under `key`.
    error UnknownJob(bytes32 key);
    /// @notice The job is no longer funded: `status` is Settled (2) or Reclaimed (3).
    error JobClosed(bytes32 key, uint8 status);
    /// @notice The job's deadline has passed: only its submitter's reclaim can close it now.
    error SettlementAfterDeadline(bytes32 key, uint64 deadline);
    /// @notice The payouts of `key` add up to at least `payout`, more than its `budget`.
    error PayoutExceedsBudget(bytes32 key, uint256 payout, uint256 budget);
    /// @notice `provider` is not registered in the provider registry.
    error NotRegistered(address provider);
    /// @notice `provider` holds COORDINATOR_ROLE: a coordinator cannot pay itself.
    error PayeeIsCoordinator(address provider);
    /// @notice A payout of `amount` to `provider` for `key` is more than the `claimed` it signed.
    error PayoutExceedsClaim(bytes32 key, address provider, uint256 amount, uint256 claimed);
    /// @notice The claim of `provider` for `key` is not signed by `provider`.
    error BadClaimSignature(bytes32 key, address provider);
    /// @notice Payouts must name each provider once, by strictly increasing payee index.
    error PayoutsNotSorted(bytes32 key, address provider);
    /// @notice The payee list must name each provider once, by strictly increasing address.
    error PayeesNotSorted(address provider);
    /// @notice Invoices must name payees by strictly increasing index, each within the payee list.
    error InvoicesNotSorted(uint256 index);
    /// @notice `provider` signed an invoice for this call: it is paid only by lines, not by a claim payout.
    error PayeeInvoiced(bytes32 key, address provider);
    /// @notice A line of `key` pays `provider`, which has no invoice in this call.
    error NotInvoiced(bytes32 key, address provider);
    /// @notice The call gives `provider` `lines` lines, not the number its invoice states.
    error InvoiceLinesMismatch(address provider, uint256 lines);
    /// @notice The invoice of `provider` is not signed by `provider`.
    error BadInvoiceSignature(address provider);
    /// @notice A payout of `key` names `index`, past the end of the payee list.
    error UnknownPayee(bytes32 key, uint256 index);
    /// @notice The job cannot be reclaimed until after `deadline`.
    error DeadlineNotReached(uint64 deadline);
    /// @notice The caller has no credited balance.
    error NothingToWithdraw();
    /// @notice The submitter's account holds `available`, less than the `requested` amount.
    error InsufficientPrepaid(uint256 available, uint256 requested);
    /// @notice The submitter lets coordinators commit only `limit` more, less than the `requested` amount.
    error SpendLimitExceeded(uint256 limit, uint256 requested);
    /// @notice A coordinator may open a job at most MAX_OPEN_WINDOW ahead; `deadline` is further.
    error DeadlineTooFar(uint64 deadline, uint64 latest);

    /// @param token_ The ERC-20 token budgets are paid in.
    /// @param registry_ The provider registry: only its registered providers are paid.
    /// @param admin Receives DEFAULT_ADMIN_ROLE (grants COORDINATOR_ROLE).
    constructor(IERC20 token_, IProviderRegistry registry_, address admin) EIP712("gpumesh JobEscrow", "1") {
        if (address(token_) == address(0) || address(registry_) == address(0) || admin == address(0)) {
            revert ZeroAddress();
        }
        _token = token_;
        _registry = registry_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Escrows `amount` tokens (pulled with transferFrom; approve first) as the budget of the caller's `jobId`.
    /// @param jobId Identifier chosen by the submitter; its key is `jobKey(msg.sender, jobId)`, one deposit per key.
    /// @param amount Budget in base units; non-zero and below 2**88.
    /// @param deadline Timestamp by which the job must be settled; after it the submitter may reclaim the budget.
    function deposit(bytes32 jobId, uint256 amount, uint64 deadline) external {
        if (amount == 0) revert ZeroAmount();
        if (amount > type(uint88).max) revert AmountTooLarge();
        if (deadline <= block.timestamp) revert DeadlineInPast(deadline);
        bytes32 key = jobKey(msg.sender, jobId);
        Job storage job = _jobs[key];
        if (job.status != JobStatus.None) revert JobExists(key);
        _jobs[key] = Job({
            submitter: msg.sender, amount: uint88(amount), status: JobStatus.Funded, deadline: deadline, fromAccount: false
        });
        emit Deposited(key, msg.sender, jobId, amount, deadline);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Prepays `amount` tokens (pulled with transferFrom; approve first) into the caller's account.
    function fundAccount(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Account storage account = _accounts[msg.sender];
        account.prepaid += amount;
        emit AccountFunded(msg.sender, amount, account.prepaid);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Lets coordinators commit at most `spendLimit` (in total, from now) of the caller's account to jobs.
    function setSpendLimit(uint256 spendLimit) external {
        _accounts[msg.sender].spendLimit = spendLimit;
        emit SpendLimitSet(msg.sender, spendLimit);
    }

    /// @notice Takes `amount` of the caller's prepaid account back (what open jobs hold is not in it).
    function withdrawAccount(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Account storage account = _accounts[msg.sender];
        if (amount > account.prepaid) revert InsufficientPrepaid(account.prepaid, amount);
        account.prepaid -= amount;
        emit AccountWithdrawn(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @notice Opens `submitter`'s job `jobId` with a budget of `amount` taken from its account, within the spend
    /// limit it set; the job is then settled or reclaimed as a deposit, its unspent budget returning to the account.
    /// @param deadline At most MAX_OPEN_WINDOW from now: a coordinator cannot lock an account's money for long.
    function openJob(address submitter, bytes32 jobId, uint256 amount, uint64 deadline)
        external
        onlyRole(COORDINATOR_ROLE)
    {
        if (submitter == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (amount > type(uint88).max) revert AmountTooLarge();
        if (deadline <= block.timestamp) revert DeadlineInPast(deadline);
        uint64 latest = uint64(block.timestamp) + MAX_OPEN_WINDOW;
        if (deadline > latest) revert DeadlineTooFar(deadline, latest);
        bytes32 key = jobKey(submitter, jobId);
        if (_jobs[key].status != JobStatus.None) revert JobExists(key);
        Account storage account = _accounts[submitter];
        if (amount > account.spendLimit) revert SpendLimitExceeded(account.spendLimit, amount);
        if (amount > account.prepaid) revert InsufficientPrepaid(account.prepaid, amount);
        account.spendLimit -= amount;
        account.prepaid -= amount;
        _jobs[key] = Job({
            submitter: submitter, amount: uint88(amount), status: JobStatus.Funded, deadline: deadline, fromAccount: true
        });
        emit Deposited(key, submitter, jobId, amount, deadline);
        emit JobOpened(key, submitter, msg.sender, amount);
    }

    /// @notice Settles many jobs in one transaction, crediting balances that providers and submitters `withdraw`.
    /// @dev For each job: Funded -> Settled, each payout and line checked, the unspent budget credited to the submitter
    /// (or its prepaid account), one JobSettled event. Each payee is checked once (registered, not a coordinator) and
    /// its payouts in the batch are summed in memory: its balance is written once and one Credited event carries the
    /// sum. Each invoice's signature is checked once, over all its lines. The whole batch reverts if any job, payout,
    /// line or invoice fails a check.
    /// @param payees Every provider paid in the batch, once each, by strictly increasing address.
    /// @param invoices The payees paid by invoice, by strictly increasing index, with their signatures.
    /// @param settlements The jobs and their payouts (naming payees by their index in `payees`).
    function settleBatch(address[] calldata payees, Invoice[] calldata invoices, Settlement[] calldata settlements)
        external
        onlyRole(COORDINATOR_ROLE)
    {
        _checkPayees(payees);
        Batch memory inv = _openInvoices(payees.length, invoices);
        uint256 n = settlements.length;
        for (uint256 i; i < n; ) {
            _settleInBatch(payees, settlements[i], inv);
            unchecked {
                ++i;
            }
        }
        _checkInvoices(payees, invoices, inv);
        uint256 np = payees.length;
        for (uint256 k; k < np; ) {
            uint256 credit = inv.credits[k];
            if (credit != 0) {
                address payee = payees[k];
                _balances[payee] += credit;
                emit Credited(payee, credit);
            }
            unchecked {
                ++k;
            }
        }
    }

    /// @dev One job of `settleBatch`: closed, its payouts and lines checked and summed into `credits` (lines into
    /// their invoices), the rest credited to its submitter (or its prepaid account), and its JobSettled event.
    function _settleInBatch(
        address[] calldata payees,
        Settlement calldata s,
        Batch memory inv
    ) private {
        bytes32 key = s.key;
        (address submitter, uint256 budget, bool fromAccount) = _close(key);
        uint256 paid = _checkPayouts(key, payees, s.payouts, budget, inv.credits, inv.slotOf);
        uint256 invoiced = _addLines(key, payees, s.lines, inv);
        if (invoiced > budget - paid) revert PayoutExceedsBudget(key, _saturatingAdd(paid, invoiced), budget);
        unchecked {
            paid += invoiced;
            uint256 refunded = budget - paid;
            if (refunded != 0) {
                if (fromAccount) _accounts[submitter].prepaid += refunded;
                else _balances[submitter] += refunded;
            }
            emit JobSettled(key, paid, refunded);
        }
    }

    /// @notice Settles one job paying providers and the submitter's refund by direct token transfers (push).
    /// @dev Same checks and JobSettled event as `settleBatch`, without invoices (a line reverts `NotInvoiced`); the
    /// status is updated before any transfer.
    /// @param payees The providers paid, once each, by strictly increasing address.
    /// @param settlement The job and its payouts (naming payees by their index in `payees`).
    function settleJob(address[] calldata payees, Settlement calldata settlement)
        external
        onlyRole(COORDINATOR_ROLE)
        nonReentrant
    {
        _checkPayees(payees);
        bytes32 key = settlement.key;
        (address submitter, uint256 budget, bool fromAccount) = _close(key);
        uint256[] memory amounts = new uint256[](payees.length);
        uint256 paid = _paidAlone(key, payees, settlement, budget, amounts);
        uint256 refunded;
        unchecked {
            refunded = budget - paid;
        }
        emit JobSettled(key, paid, refunded);
        uint256 np = payees.length;
        for (uint256 k; k < np; ) {
            uint256 amount = amounts[k];
            if (amount != 0) _token.safeTransfer(payees[k], amount);
            unchecked {
                ++k;
            }
        }
        if (refunded != 0) {
            if (fromAccount) _accounts[submitter].prepaid += refunded;
            else _token.safeTransfer(submitter, refunded);
        }
    }

    /// @notice Returns the whole budget of the caller's `jobId` once its deadline has passed unsettled.
    /// @param jobId The job id the caller deposited under; only while Funded, only after the deadline.
    function reclaim(bytes32 jobId) external nonReentrant {
        bytes32 key = jobKey(msg.sender, jobId);
        Job storage job = _jobs[key];
        JobStatus status = _statusOf(job);
        if (status == JobStatus.None) revert UnknownJob(key);
        if (status != JobStatus.Funded) revert JobClosed(key, uint8(status));
        uint64 deadline = job.deadline;
        if (block.timestamp <= deadline) revert DeadlineNotReached(deadline);
        uint256 amount = job.amount;
        bool fromAccount = job.fromAccount;
        job.status = JobStatus.Reclaimed;
        _clearOpenSlot(job);
        emit Reclaimed(key, msg.sender, amount);
        if (fromAccount) _accounts[msg.sender].prepaid += amount;
        else _token.safeTransfer(msg.sender, amount);
    }

    /// @notice Transfers the caller's whole credited balance (payouts and refunds from `settleBatch`) to it.
    function withdraw() external nonReentrant {
        uint256 amount = _balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        _balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @notice The key of `submitter`'s job `jobId`: keccak256(abi.encode(submitter, jobId)).
    function jobKey(address submitter, bytes32 jobId) public pure returns (bytes32) {
        return keccak256(abi.encode(submitter, jobId));
    }

    /// @notice The EIP-712 digest a provider signs to claim at most `amount` for its work on the job `key`.
    function claimDigest(bytes32 key, address provider, uint256 amount) public view returns (bytes32) {
        return _hashTypedDataV4(_claimHash(key, provider, amount));
    }

    /// @notice The EIP-712 digest a provider signs to be paid, in one `settleBatch`, `amounts[i]` for each job `jobs[i]`.
    function invoiceDigest(address provider, bytes32[] calldata jobs, uint256[] calldata amounts)
        external
        view
        returns (bytes32)
    {
        if (jobs.length != amounts.length) revert InvoiceLinesMismatch(provider, amounts.length);
        bytes32[] memory hashes = new bytes32[](jobs.length);
        for (uint256 i; i < jobs.length; ++i) hashes[i] = _lineHash(jobs[i], amounts[i]);
        return _invoiceDigest(provider, hashes, 0, hashes.length);
    }

    /// @notice The escrow record of the job `key` (all zero if no deposit was ever made).
    /// @return submitter The depositor.
    /// @return amount The budget deposited (kept after the job closes).
    /// @return deadline The job must be settled by this timestamp; after it, it may be reclaimed.
    /// @return status JobStatus as uint8: 0 None, 1 Funded, 2 Settled, 3 Reclaimed.
    function getJob(bytes32 key) external view returns (address submitter, uint256 amount, uint64 deadline, uint8 status) {
        Job storage job = _jobs[key];
        return (job.submitter, job.amount, job.deadline, uint8(_statusOf(job)));
    }

    /// @notice Tokens credited to `account` and not yet withdrawn.
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @notice `submitter`'s prepaid account: what it holds and how much of it coordinators may still commit.
    function accountOf(address submitter) external view returns (uint256 prepaid, uint256 spendLimit) {
        Account storage account = _accounts[submitter];
        return (account.prepaid, account.spendLimit);
    }

    /// @notice The ERC-20 token budgets are paid in.
    function token() external view returns (address) {
        return address(_token);
    }

    /// @notice The provider registry whose registered providers are paid.
    function registry() external view returns (address) {
        return address(_registry);
    }

    /// @dev Funded -> Settled for `key` if its deadline has not passed, returning the submitter, the budget and
    /// whether the job was opened from the submitter's account. Settling clears slot 1 (see `Job`).
    function _close(bytes32 key) private returns (address submitter, uint256 budget, bool fromAccount) {
        Job storage job = _jobs[key];
        submitter = job.submitter;
        budget = job.amount;
        JobStatus status = job.status;
        uint64 deadline = job.deadline;
        if (status != JobStatus.Funded || deadline == 0) {
            if (status == JobStatus.None) revert UnknownJob(key);
            revert JobClosed(key, uint8(_statusOf(job)));
        }
        if (block.timestamp > deadline) revert SettlementAfterDeadline(key, deadline);
        fromAccount = job.fromAccount;
        _clearOpenSlot(job);
    }

    /// @dev Clears the deadline and the account flag in one write: they fill slot 1 of `Job` (slot 0 holds 20 + 11 + 1
    /// bytes: submitter, amount, status). The job reads as closed from then on (see `Job`).
    function _clearOpenSlot(Job storage job) private {
        assembly ("memory-safe") {
            sstore(add(job.slot, 1), 0)
        }
    }

    /// @dev The status of `job`: a job recorded Funded whose deadline was cleared is Settled.
    function _statusOf(Job storage job) private view returns (JobStatus) {
        JobStatus status = job.status;
        return status == JobStatus.Funded && job.deadline == 0 ? JobStatus.Settled : status;
    }

    /// @dev Each payee once by strictly increasing (so non-zero) address, registered and not a coordinator.
    function _checkPayees(address[] calldata payees) private view {
        uint256 n = payees.length;
        address previous;
        for (uint256 k; k < n; ) {
            address payee = payees[k];
            if (uint160(payee) <= uint160(previous)) {
                if (payee == address(0)) revert ZeroAddress();
                revert PayeesNotSorted(payee);
            }
            if (!_registry.isRegistered(payee)) revert NotRegistered(payee);
            if (hasRole(COORDINATOR_ROLE, payee)) revert PayeeIsCoordinator(payee);
            previous = payee;
            unchecked {
                ++k;
            }
        }
    }

    /// @dev What the payouts of job `key` add up to, after every check: payees by strictly increasing index, none
    /// with an invoice in the call (`invoiced[payee] != 0`), each paid at most what it signed for this job, all within
    /// the budget. Each amount is added to `credits[payee]` (`credits` has one entry per payee).
    function _checkPayouts(
        bytes32 key,
        address[] calldata payees,
        Payout[] calldata payouts,
        uint256 budget,
        uint256[] memory credits,
        uint256[] memory invoiced
    ) private view returns (uint256 paid) {
        uint256 m = payouts.length;
        uint256 next; // the lowest payee index the next payout may name
        for (uint256 j; j < m; ) {
            Payout calldata p = payouts[j];
            uint256 payee = p.payee;
            if (payee >= payees.length) revert UnknownPayee(key, payee);
            if (payee < next) revert PayoutsNotSorted(key, payees[payee]);
            if (invoiced[payee] != 0) revert PayeeInvoiced(key, payees[payee]);
            uint256 amount = _checkClaim(key, payees[payee], p, paid, budget);
            unchecked {
                paid += amount; // at most the budget
                credits[payee] += amount; // at most the sum of a batch's budgets, each below 2**88
                next = payee + 1;
                ++j;
            }
        }
    }

    /// @dev What the payouts of a job settled alone add up to (`_checkPayouts`); it has no invoices, so no lines.
    function _paidAlone(
        bytes32 key,
        address[] calldata payees,
        Settlement calldata settlement,
        uint256 budget,
        uint256[] memory amounts
    ) private view returns (uint256) {
        if (settlement.lines.length != 0) {
            uint256 payee = settlement.lines[0].payee;
            if (payee >= payees.length) revert UnknownPayee(key, payee);
            revert NotInvoiced(key, payees[payee]);
        }
        return _checkPayouts(key, payees, settlement.payouts, budget, amounts, new uint256[](payees.length));
    }

    /// @dev What the lines of job `key` add up to, after the per-line checks: payees by strictly increasing index,
    /// each with an invoice in the call. Each line's hash is appended to its payee's invoice and its amount added to
    /// `inv.credits[payee]` (the caller checks the sum against the budget; an overflowing sum reverts).
    function _addLines(bytes32 key, address[] calldata payees, Line[] calldata lines, Batch memory inv)
        private
        pure
        returns (uint256 sum)
    {
        uint256 next; // the lowest payee index the next line may name
        for (uint256 j; j < lines.length; ) {
            uint256 payee = lines[j].payee;
            if (payee >= payees.length) revert UnknownPayee(key, payee);
            if (payee < next) revert PayoutsNotSorted(key, payees[payee]);
            uint256 amount = lines[j].amount;
            sum += amount;
            _appendLine(inv, payee, payees[payee], key, amount);
            unchecked {
                inv.credits[payee] += amount; // the sum is then checked against the budget, or the call reverts
                next = payee + 1;
                ++j;
            }
        }
    }

    /// @dev Appends the line (`key`, `amount`) to the invoice of `payee` (`provider`), which must have one with room.
    function _appendLine(Batch memory inv, uint256 payee, address provider, bytes32 key, uint256 amount)
        private
        pure
    {
        uint256 slot = inv.slotOf[payee];
        if (slot == 0) revert NotInvoiced(key, provider);
        unchecked {
            uint256 cursor = inv.next[--slot]++;
            if (cursor >= inv.end[slot]) revert InvoiceLinesMismatch(provider, cursor + 1 - _start(inv, slot));
            inv.hashes[cursor] = _lineHash(key, amount);
        }
    }

    /// @dev The call's invoices, checked for order, with room for each one's line hashes.
    function _openInvoices(uint256 payees, Invoice[] calldata invoices) private pure returns (Batch memory inv) {
        uint256 k = invoices.length;
        inv.credits = new uint256[](payees);
        inv.slotOf = new uint256[](payees);
        inv.next = new uint256[](k);
        inv.end = new uint256[](k);
        uint256 total;
        uint256 previous;
        for (uint256 i; i < k; ) {
            uint256 payee = invoices[i].payee;
            if (payee >= payees || (i != 0 && payee <= previous)) revert InvoicesNotSorted(payee);
            previous = payee;
            inv.next[i] = total;
            total += invoices[i].lines; // checked: a huge count reverts here, not later
            inv.end[i] = total;
            unchecked {
                inv.slotOf[payee] = i + 1;
                ++i;
            }
        }
        inv.hashes = new bytes32[](total);
    }

    /// @dev Where invoice `slot`'s line hashes start in `inv.hashes` (invoices' lines are laid out in order).
    function _start(Batch memory inv, uint256 slot) private pure returns (uint256) {
        return slot == 0 ? 0 : inv.end[slot - 1];
    }

    /// @dev Each invoice got exactly the lines it states and is signed by its payee over them.
    function _checkInvoices(address[] calldata payees, Invoice[] calldata invoices, Batch memory inv) private view {
        uint256 k = invoices.length;
        for (uint256 i; i < k; ) {
            Invoice calldata invoice = invoices[i];
            address provider = payees[invoice.payee];
            uint256 start = _start(inv, i);
            if (inv.next[i] != inv.end[i]) revert InvoiceLinesMismatch(provider, inv.next[i] - start);
            bytes32 digest = _invoiceDigest(provider, inv.hashes, start, invoice.lines);
            if (!_recovers(digest, provider, invoice.r, invoice.vs)) revert BadInvoiceSignature(provider);
            unchecked {
                ++i;
            }
        }
    }

    /// @dev The EIP-712 digest of `provider`'s invoice whose line hashes are `hashes[start .. start + count)`.
    function _invoiceDigest(address provider, bytes32[] memory hashes, uint256 start, uint256 count)
        private
        view
        returns (bytes32)
    {
        bytes32 lines;
        bytes32 typehash = INVOICE_TYPEHASH;
        bytes32 structHash;
        assembly ("memory-safe") {
            lines := keccak256(add(add(hashes, 0x20), mul(start, 0x20)), mul(count, 0x20))
            let m := mload(0x40)
            mstore(m, typehash)
            mstore(add(m, 0x20), and(provider, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(m, 0x40), lines)
            structHash := keccak256(m, 0x60)
        }
        return _hashTypedDataV4(structHash);
    }

    /// @dev keccak256(abi.encode(LINE_TYPEHASH, job, amount)), in scratch memory.
    function _lineHash(bytes32 job, uint256 amount) private pure returns (bytes32 h) {
        bytes32 typehash = LINE_TYPEHASH;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typehash)
            mstore(add(m, 0x20), job)
            mstore(add(m, 0x40), amount)
            h := keccak256(m, 0x60)
        }
    }

    /// @dev The amount of `p` to `provider` for job `key` once checked: at most the claim `provider` signed, and
    /// within what is left of the budget after `paid`.
    function _checkClaim(bytes32 key, address provider, Payout calldata p, uint256 paid, uint256 budget)
        private
        view
        returns (uint256 amount)
    {
        amount = p.amount;
        uint256 claimed = p.claimed;
        if (amount > claimed) revert PayoutExceedsClaim(key, provider, amount, claimed);
        if (amount > budget - paid) revert PayoutExceedsBudget(key, _saturatingAdd(paid, amount), budget);
        if (!_signedBy(key, provider, claimed, p.r, p.vs)) revert BadClaimSignature(key, provider);
    }

    /// @dev Whether (`r`, `vs`) is `provider`'s signature of the claim (`key`, `claimed`) under the EIP-712 domain
    /// (low-s only, as ECDSA.tryRecover). `provider` is non-zero, so a failed recovery never matches.
    function _signedBy(bytes32 key, address provider, uint256 claimed, bytes32 r, bytes32 vs)
        private
        view
        returns (bool)
    {
        return _recovers(claimDigest(key, provider, claimed), provider, r, vs);
    }

    /// @dev Whether (`r`, `vs`), EIP-2098, is `signer`'s signature of `digest` (low-s only, as ECDSA.tryRecover).
    /// `signer` is non-zero, so a failed recovery never matches.
    function _recovers(bytes32 digest, address signer, bytes32 r, bytes32 vs) private pure returns (bool) {
        bytes32 s = vs & bytes32(type(uint256).max >> 1);
        if (uint256(s) > _HALF_ORDER) return false;
        uint8 v = uint8((uint256(vs) >> 255) + 27);
        return ecrecover(digest, v, r, s) == signer;
    }

    /// @dev keccak256(abi.encode(CLAIM_TYPEHASH, key, provider, amount)), in scratch memory past the free pointer
    /// (abi.encode would allocate anew for every payout of a batch).
    function _claimHash(bytes32 key, address provider, uint256 amount) private pure returns (bytes32 structHash) {
        bytes32 typehash = CLAIM_TYPEHASH;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typehash)
            mstore(add(m, 0x20), key)
            mstore(add(m, 0x40), and(provider, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(m, 0x60), amount)
            structHash := keccak256(m, 0x80)
        }
    }

    function _saturatingAdd(uint256 a, uint256 b) private pure returns (uint256) {
        unchecked {
            uint256 c = a + b;
            return c < a ? type(uint256).max : c;
        }
    }
}
