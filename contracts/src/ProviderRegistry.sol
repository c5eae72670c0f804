// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title gpumesh provider registry
/// @notice Providers bond a stake in the payment token. Stake leaves in two steps (request, then withdraw after
/// `unbondingDelay`), and the coordinator may slash both the active and the unbonding part, so a cheater cannot
/// escape a pending slash by unbonding.
contract ProviderRegistry is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Role allowed to slash providers.
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");

    /// @dev Two slots per provider: `active` alone (touched by stake and slash), then the unbonding amount packed
    /// with its unlock time (always written together).
    struct StakeRecord {
        uint256 active;
        uint192 unbonding;
        uint64 unlockAt;
    }

    IERC20 private immutable _token;
    uint64 private immutable _unbondingDelay;
    mapping(address provider => StakeRecord) private _stakes;

    /// @notice Emitted when `provider` adds `amount` to its active stake.
    event Staked(address indexed provider, uint256 amount);
    /// @notice Emitted when `provider` moves `amount` from active to unbonding stake, withdrawable from `unlockAt`.
    event UnbondRequested(address indexed provider, uint256 amount, uint64 unlockAt);
    /// @notice Emitted when `provider` withdraws `amount` of unbonded stake.
    event Withdrawn(address indexed provider, uint256 amount);
    /// @notice Emitted when `amount` of `provider`'s stake is slashed and paid to `beneficiary`.
    event Slashed(address indexed provider, uint256 amount, address indexed beneficiary, bytes32 reason);

    /// @notice An amount of zero was given.
    error ZeroAmount();
    /// @notice The zero address was given where an account is required.
    error ZeroAddress();
    /// @notice The caller asked to unbond more than its active stake.
    error InsufficientStake(uint256 available, uint256 requested);
    /// @notice The caller has no unbonding stake to withdraw.
    error NothingUnbonding();
    /// @notice The unbonding stake cannot be withdrawn before `unlockAt`.
    error StillBonding(uint64 unlockAt);
    /// @notice The slash asked for more than the provider's active plus unbonding stake.
    error SlashExceedsStake(uint256 stake, uint256 requested);

    /// @param token_ The ERC-20 token stakes are held in.
    /// @param unbondingDelay_ Seconds between an unbond request and the earliest withdrawal.
    /// @param admin Receives DEFAULT_ADMIN_ROLE (grants COORDINATOR_ROLE).
    constructor(IERC20 token_, uint64 unbondingDelay_, address admin) {
        if (address(token_) == address(0) || admin == address(0)) revert ZeroAddress();
        _token = token_;
        _unbondingDelay = unbondingDelay_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Adds `amount` to the caller's active stake, pulled with transferFrom (approve this contract first).
    /// @param amount Tokens to stake; must be non-zero.
    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        _stakes[msg.sender].active += amount;
        emit Staked(msg.sender, amount);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Moves `amount` of the caller's active stake to unbonding. A new request adds to the amount already
    /// unbonding and restarts the clock for all of it: `unlockAt = block.timestamp + unbondingDelay`.
    /// @param amount Tokens to unbond; non-zero and at most the active stake.
    function requestUnbond(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        StakeRecord storage s = _stakes[msg.sender];
        uint256 active = s.active;
        if (amount > active) revert InsufficientStake(active, amount);
        uint64 unlockAt = uint64(block.timestamp) + _unbondingDelay;
        unchecked {
            s.active = active - amount;
        }
        s.unbonding = SafeCast.toUint192(s.unbonding + amount);
        s.unlockAt = unlockAt;
        emit UnbondRequested(msg.sender, amount, unlockAt);
    }

    /// @notice Transfers the caller's whole unbonding stake back to it once `unlockAt` has passed.
    function withdrawUnbonded() external nonReentrant {
        StakeRecord storage s = _stakes[msg.sender];
        uint256 amount = s.unbonding;
        if (amount == 0) revert NothingUnbonding();
        uint64 unlockAt = s.unlockAt;
        if (block.timestamp < unlockAt) revert StillBonding(unlockAt);
        s.unbonding = 0;
        s.unlockAt = 0;
        emit Withdrawn(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @notice Slashes `amount` of `provider`'s stake, active first and then unbonding, and pays it to `beneficiary`.
    /// @param provider The provider being punished.
    /// @param amount Tokens to take; non-zero and at most active plus unbonding stake.
    /// @param beneficiary Receives the slashed tokens (e.g. the referee, the harmed submitter or a treasury).
    /// @param reason Opaque reference to the evidence (e.g. a task id or a hash), recorded in the event.
    function slash(address provider, uint256 amount, address beneficiary, bytes32 reason)
        external
        onlyRole(COORDINATOR_ROLE)
        nonReentrant
    {
        if (amount == 0) revert ZeroAmount();
        if (beneficiary == address(0)) revert ZeroAddress();
        StakeRecord storage s = _stakes[provider];
        uint256 active = s.active;
        if (amount <= active) {
            unchecked {
                s.active = active - amount;
            }
        } else {
            uint256 unbonding = s.unbonding;
            uint256 total = active + unbonding;
            if (amount > total) revert SlashExceedsStake(total, amount);
            if (active != 0) s.active = 0;
            unchecked {
                uint256 left = total - amount; // < unbonding, fits in uint192
                s.unbonding = uint192(left);
                if (left == 0) s.unlockAt = 0;
            }
        }
        emit Slashed(provider, amount, beneficiary, reason);
        _token.safeTransfer(beneficiary, amount);
    }

    /// @notice The stake of `provider`.
    /// @return active Stake that backs the provider's work and can be slashed.
    /// @return unbonding Stake on its way out (still slashable).
    /// @return unlockAt Earliest timestamp at which `unbonding` can be withdrawn (0 when nothing is unbonding).
    function stakeOf(address provider) external view returns (uint256 active, uint256 unbonding, uint64 unlockAt) {
        StakeRecord storage s = _stakes[provider];
        return (s.active, s.unbonding, s.unlockAt);
    }

    /// @notice The ERC-20 token stakes are held in.
    function token() external view returns (address) {
        return address(_token);
    }

    /// @notice Seconds between an unbond request and the earliest withdrawal.
    function unbondingDelay() external view returns (uint64) {
        return _unbondingDelay;
    }
}
