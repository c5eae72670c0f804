// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title gpumesh job escrow
/// @notice Submitters deposit a job's budget; the coordinator settles jobs, paying providers and refunding the unspent
/// budget; a submitter may reclaim the whole budget of a job never settled once its deadline has passed.
/// @dev `settleBatch` credits internal balances (pull payments, withdrawn with `withdraw`), so a batch of many jobs
/// makes no token transfer at all; `settleJob` pays with direct transfers and is the per-job baseline. Tokens with
/// transfer fees or rebasing are not supported.
contract JobEscrow is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Role allowed to settle jobs.
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");

    /// @notice Lifecycle of a job's escrow; `None` means no deposit was ever made for the id.
    enum JobStatus {
        None,
        Funded,
        Settled,
        Reclaimed
    }

    /// @notice `amount` tokens credited to `provider`.
    struct Payout {
        address provider;
        uint256 amount;
    }

    /// @notice The payouts of one job; the rest of its budget goes back to the submitter.
    struct Settlement {
        bytes32 jobId;
        Payout[] payouts;
    }

    /// @dev Slot 0 holds everything settlement reads and writes (one cold load, one store per job); the deadline,
    /// only needed by `reclaim`, sits alone in slot 1. Records are kept after closing so an id is never reused.
    struct Job {
        address submitter;
        uint88 amount;
        JobStatus status;
        uint64 deadline;
    }

    IERC20 private immutable _token;
    mapping(bytes32 jobId => Job) private _jobs;
    mapping(address account => uint256) private _balances;

    /// @notice Emitted when `submitter` escrows `amount` for `jobId`, reclaimable after `deadline`.
    event Deposited(bytes32 indexed jobId, address indexed submitter, uint256 amount, uint64 deadline);
    /// @notice Emitted once per settled job: `paid` to providers and `refunded` to the submitter.
    event JobSettled(bytes32 indexed jobId, uint256 paid, uint256 refunded);
    /// @notice Emitted when `submitter` takes back the whole `amount` of an unsettled job after its deadline.
    event Reclaimed(bytes32 indexed jobId, address indexed submitter, uint256 amount);
    /// @notice Emitted when `account` withdraws its credited balance.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice An amount of zero was given.
    error ZeroAmount();
    /// @notice The zero address was given where an account is required.
    error ZeroAddress();
    /// @notice The deposit does not fit the job record (more than 2**88 - 1 base units).
    error AmountTooLarge();
    /// @notice A deposit was already made for `jobId` (ids are never reused).
    error JobExists(bytes32 jobId);
    /// @notice The deadline is not in the future.
    error DeadlineInPast(uint64 deadline);
    /// @notice No deposit was ever made for `jobId`.
    error UnknownJob(bytes32 jobId);
    /// @notice The job is no longer funded: `status` is Settled (2) or Reclaimed (3).
    error JobClosed(bytes32 jobId, uint8 status);
    /// @notice The payouts of `jobId` add up to at least `payout`, more than its `budget`.
    error PayoutExceedsBudget(bytes32 jobId, uint256 payout, uint256 budget);
    /// @notice Only the job's submitter may reclaim it.
    error NotSubmitter(address caller);
    /// @notice The job cannot be reclaimed until after `deadline`.
    error DeadlineNotReached(uint64 deadline);
    /// @notice The caller has no credited balance.
    error NothingToWithdraw();

    /// @param token_ The ERC-20 token budgets are paid in.
    /// @param admin Receives DEFAULT_ADMIN_ROLE (grants COORDINATOR_ROLE).
    constructor(IERC20 token_, address admin) {
        if (address(token_) == address(0) || admin == address(0)) revert ZeroAddress();
        _token = token_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Escrows `amount` tokens (pulled with transferFrom; approve first) as the budget of `jobId`.
    /// @param jobId Identifier chosen by the submitter; one deposit per id, ever.
    /// @param amount Budget in base units; non-zero and below 2**88.
    /// @param deadline Timestamp after which the submitter may reclaim the budget if the job was not settled.
    function deposit(bytes32 jobId, uint256 amount, uint64 deadline) external {
        if (amount == 0) revert ZeroAmount();
        if (amount > type(uint88).max) revert AmountTooLarge();
        if (deadline <= block.timestamp) revert DeadlineInPast(deadline);
        Job storage job = _jobs[jobId];
        if (job.status != JobStatus.None) revert JobExists(jobId);
        _jobs[jobId] = Job({
            submitter: msg.sender, amount: uint88(amount), status: JobStatus.Funded, deadline: deadline
        });
        emit Deposited(jobId, msg.sender, amount, deadline);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Settles many jobs in one transaction, crediting balances that providers and submitters `withdraw`.
    /// @dev For each job: Funded -> Settled, each payout credited to its provider, the unspent budget credited to the
    /// submitter, one JobSettled event. The whole batch reverts if any job fails (unknown, closed, a payout to the
    /// zero address, or payouts above the budget; a job listed twice fails as closed).
    /// @param settlements The jobs and their payouts.
    function settleBatch(Settlement[] calldata settlements) external onlyRole(COORDINATOR_ROLE) {
        uint256 n = settlements.length;
        for (uint256 i; i < n; ) {
            Settlement calldata s = settlements[i];
            bytes32 jobId = s.jobId;
            (address submitter, uint256 budget) = _close(jobId);
            uint256 paid = _credit(jobId, s.payouts, budget);
            unchecked {
                uint256 refunded = budget - paid;
                if (refunded != 0) _balances[submitter] += refunded;
                emit JobSettled(jobId, paid, refunded);
                ++i;
            }
        }
    }

    /// @notice Settles one job paying providers and the submitter's refund by direct token transfers (push).
    /// @dev Same checks and event as `settleBatch`; the status is updated before any transfer.
    /// @param settlement The job and its payouts.
    function settleJob(Settlement calldata settlement) external onlyRole(COORDINATOR_ROLE) nonReentrant {
        bytes32 jobId = settlement.jobId;
        (address submitter, uint256 budget) = _close(jobId);
        Payout[] calldata payouts = settlement.payouts;
        uint256 m = payouts.length;
        uint256 paid;
        for (uint256 j; j < m; ) {
            uint256 amount = payouts[j].amount;
            if (payouts[j].provider == address(0)) revert ZeroAddress();
            unchecked {
                if (amount > budget - paid) revert PayoutExceedsBudget(jobId, _saturatingAdd(paid, amount), budget);
                paid += amount;
                ++j;
            }
        }
        uint256 refunded;
        unchecked {
            refunded = budget - paid;
        }
        emit JobSettled(jobId, paid, refunded);
        for (uint256 j; j < m; ) {
            uint256 amount = payouts[j].amount;
            if (amount != 0) _token.safeTransfer(payouts[j].provider, amount);
            unchecked {
                ++j;
            }
        }
        if (refunded != 0) _token.safeTransfer(submitter, refunded);
    }

    /// @notice Returns the whole budget of an unsettled job to its submitter once the deadline has passed.
    /// @param jobId The job to reclaim; only its submitter may call, only while Funded, only after the deadline.
    function reclaim(bytes32 jobId) external nonReentrant {
        Job storage job = _jobs[jobId];
        JobStatus status = job.status;
        if (status == JobStatus.None) revert UnknownJob(jobId);
        address submitter = job.submitter;
        if (msg.sender != submitter) revert NotSubmitter(msg.sender);
        if (status != JobStatus.Funded) revert JobClosed(jobId, uint8(status));
        uint64 deadline = job.deadline;
        if (block.timestamp <= deadline) revert DeadlineNotReached(deadline);
        uint256 amount = job.amount;
        job.status = JobStatus.Reclaimed;
        emit Reclaimed(jobId, submitter, amount);
        _token.safeTransfer(submitter, amount);
    }

    /// @notice Transfers the caller's whole credited balance (payouts and refunds from `settleBatch`) to it.
    function withdraw() external nonReentrant {
        uint256 amount = _balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        _balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @notice The escrow record of `jobId` (all zero if no deposit was ever made).
    /// @return submitter The depositor.
    /// @return amount The budget deposited (kept after the job closes).
    /// @return deadline After this timestamp an unsettled job may be reclaimed.
    /// @return status JobStatus as uint8: 0 None, 1 Funded, 2 Settled, 3 Reclaimed.
    function getJob(bytes32 jobId)
        external
        view
        returns (address submitter, uint256 amount, uint64 deadline, uint8 status)
    {
        Job storage job = _jobs[jobId];
        return (job.submitter, job.amount, job.deadline, uint8(job.status));
    }

    /// @notice Tokens credited to `account` and not yet withdrawn.
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @notice The ERC-20 token budgets are paid in.
    function token() external view returns (address) {
        return address(_token);
    }

    /// @dev Funded -> Settled for `jobId`, returning what settlement needs from the record (one slot).
    function _close(bytes32 jobId) private returns (address submitter, uint256 budget) {
        Job storage job = _jobs[jobId];
        submitter = job.submitter;
        budget = job.amount;
        JobStatus status = job.status;
        if (status != JobStatus.Funded) {
            if (status == JobStatus.None) revert UnknownJob(jobId);
            revert JobClosed(jobId, uint8(status));
        }
        job.status = JobStatus.Settled;
    }

    /// @dev Credits every payout to its provider's balance and returns their sum; reverts on a zero provider or
    /// when the sum exceeds `budget`. The hot loop of `settleBatch`, in assembly: Solidity has already checked that
    /// `payouts` lies within calldata when the array was accessed, so elements are read with plain calldataload.
    function _credit(bytes32 jobId, Payout[] calldata payouts, uint256 budget) private returns (uint256 paid) {
        uint256 balancesSlot;
        assembly ("memory-safe") {
            balancesSlot := _balances.slot
        }
        uint256 end;
        unchecked {
            end = payouts.length * 64;
        }
        for (uint256 k; k < end; ) {
            address provider;
            uint256 amount;
            assembly ("memory-safe") {
                let at := add(payouts.offset, k)
                let word := calldataload(at)
                // ABI decoding rejects addresses with dirty upper bits; so do we.
                if shr(160, word) { revert(0, 0) }
                provider := word
                amount := calldataload(add(at, 32))
            }
            if (provider == address(0)) revert ZeroAddress();
            unchecked {
                if (amount > budget - paid) revert PayoutExceedsBudget(jobId, _saturatingAdd(paid, amount), budget);
                paid += amount;
                k += 64;
            }
            // Credits never exceed the tokens this contract holds, so they cannot overflow.
            assembly ("memory-safe") {
                mstore(0, provider)
                mstore(32, balancesSlot)
                let slot := keccak256(0, 64)
                sstore(slot, add(sload(slot), amount))
            }
        }
    }

    function _saturatingAdd(uint256 a, uint256 b) private pure returns (uint256) {
        unchecked {
            uint256 c = a + b;
            return c < a ? type(uint256).max : c;
        }
    }
}
