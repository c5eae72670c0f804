// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IProviderRegistry} from "src/IProviderRegistry.sol";

/// @title gpumesh provider registry
/// @notice Providers register (opting in to be paid by the escrow) and bond a stake in the payment token. Stake
/// leaves in two steps (request, then withdraw after `unbondingDelay`, at least `MIN_UNBONDING_DELAY`), and the
/// coordinator may slash both the active and the unbonding part, so a cheater cannot escape a pending slash by
/// unbonding. What the coordinator can take is bounded: a slash needs the provider's own signed result commitment
/// (the evidence of what it claimed), takes at most `maxSlashBps` of its stake, never goes to a coordinator, and
/// each commitment is slashed at most once.
contract ProviderRegistry is AccessControl, ReentrancyGuardTransient, IProviderRegistry {
    using SafeERC20 for IERC20;

    /// @notice Role allowed to slash providers.
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");
    /// @notice The shortest unbonding delay a registry accepts: long enough for a cheat found late to be slashed.
    uint64 public constant MIN_UNBONDING_DELAY = 1 days;
    /// @notice The first bytes of every result commitment a provider signs (`gpumesh.identity.result_text`).
    bytes public constant COMMITMENT_PREFIX = "gpumesh task result\ntask: ";

    /// @dev Two slots per provider: `active` alone (touched by stake and slash), then the unbonding amount packed
    /// with its unlock time (always written together).
    struct StakeRecord {
        uint256 active;
        uint192 unbonding;
        uint64 unlockAt;
    }

    IERC20 private immutable _token;
    uint64 private immutable _unbondingDelay;
    uint16 private immutable _maxSlashBps;
    mapping(address provider => StakeRecord) private _stakes;
    mapping(address provider => bool) private _registered;
    mapping(bytes32 incident => bool) private _slashedIncidents;

    /// @notice Emitted when `provider` registers to take paid work.
    event Registered(address indexed provider);
    /// @notice Emitted when `provider` adds `amount` to its active stake.
    event Staked(address indexed provider, uint256 amount);
    /// @notice Emitted when `provider` moves `amount` from active to unbonding stake, withdrawable from `unlockAt`.
    event UnbondRequested(address indexed provider, uint256 amount, uint64 unlockAt);
    /// @notice Emitted when `provider` withdraws `amount` of unbonded stake.
    event Withdrawn(address indexed provider, uint256 amount);
    /// @notice Emitted when `amount` of `provider`'s stake is slashed to `beneficiary` for the result commitment whose
    /// keccak256 is `incident`, found invalid by the check recorded as `checkRecord`.
    event Slashed(address indexed provider, uint256 amount, address indexed beneficiary, bytes32 indexed incident,
        bytes32 checkRecord);

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
    /// @notice The slash asked for more than `maxSlashBps` of the provider's active plus unbonding stake.
    error SlashExceedsCap(uint256 cap, uint256 requested);
    /// @notice The unbonding delay is below `MIN_UNBONDING_DELAY`.
    error UnbondingDelayTooShort(uint64 delay, uint64 minimum);
    /// @notice The per-incident slash cap is not within 1..10000 basis points.
    error InvalidSlashCap(uint16 bps);
    /// @notice The evidence is not a gpumesh result commitment.
    error NotAResultCommitment();
    /// @notice The result commitment was not signed by the provider being slashed.
    error BadCommitmentSignature(address signer, address provider);
    /// @notice This result commitment was slashed already (one slash per incident).
    error IncidentAlreadySlashed(bytes32 incident);
    /// @notice No record of the check that found the result invalid was given.
    error MissingCheckRecord();
    /// @notice Slashed stake may not go to an account holding COORDINATOR_ROLE.
    error BeneficiaryIsCoordinator(address beneficiary);

    /// @param token_ The ERC-20 token stakes are held in.
    /// @param unbondingDelay_ Seconds between an unbond request and the earliest withdrawal (>= MIN_UNBONDING_DELAY).
    /// @param maxSlashBps_ The most one incident may take, in basis points of the provider's stake (1..10000).
    /// @param admin Receives DEFAULT_ADMIN_ROLE (grants COORDINATOR_ROLE).
    constructor(IERC20 token_, uint64 unbondingDelay_, uint16 maxSlashBps_, address admin) {
        if (address(token_) == address(0) || admin == address(0)) revert ZeroAddress();
        if (unbondingDelay_ < MIN_UNBONDING_DELAY) revert UnbondingDelayTooShort(unbondingDelay_, MIN_UNBONDING_DELAY);
        if (maxSlashBps_ == 0 || maxSlashBps_ > 10_000) revert InvalidSlashCap(maxSlashBps_);
        _token = token_;
        _unbondingDelay = unbondingDelay_;
        _maxSlashBps = maxSlashBps_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Registers the caller as a provider the escrow may pay (idempotent).
    function register() external {
        _register(msg.sender);
    }

    /// @notice Adds `amount` to the caller's active stake, pulled with transferFrom (approve this contract first);
    /// registers the caller.
    /// @param amount Tokens to stake; must be non-zero.
    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        _register(msg.sender);
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

    /// @notice Slashes `amount` of `provider`'s stake, active first and then unbonding, and pays it to `beneficiary`,
    /// for one result `provider` committed to and a check found invalid.
    /// @param provider The provider being punished.
    /// @param commitment The result commitment `provider` signed (EIP-191 personal_sign of these bytes), starting
    /// with `COMMITMENT_PREFIX`: the task and the output it claimed. Its keccak256 is the incident, slashed once.
    /// @param signature `provider`'s 65-byte signature of `commitment`.
    /// @param checkRecord A digest of the check that found the result invalid (the coordinator keeps its preimage).
    /// @param amount Tokens to take; non-zero and at most `maxSlashBps` of active plus unbonding stake.
    /// @param beneficiary Receives the slashed tokens (the harmed submitter, a referee, a treasury); never a coordinator.
    function slash(
        address provider,
        bytes calldata commitment,
        bytes calldata signature,
        bytes32 checkRecord,
        uint256 amount,
        address beneficiary
    ) external onlyRole(COORDINATOR_ROLE) nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (beneficiary == address(0)) revert ZeroAddress();
        if (hasRole(COORDINATOR_ROLE, beneficiary)) revert BeneficiaryIsCoordinator(beneficiary);
        if (checkRecord == bytes32(0)) revert MissingCheckRecord();
        bytes32 incident = _checkCommitment(provider, commitment, signature);
        StakeRecord storage s = _stakes[provider];
        uint256 active = s.active;
        uint256 total = active + s.unbonding;
        uint256 cap = total * _maxSlashBps / 10_000;
        if (amount > cap) revert SlashExceedsCap(cap, amount);
        _slashedIncidents[incident] = true;
        if (amount <= active) {
            unchecked {
                s.active = active - amount;
            }
        } else {
            if (active != 0) s.active = 0;
            unchecked {
                uint256 left = total - amount; // < unbonding, fits in uint192
                s.unbonding = uint192(left);
                if (left == 0) s.unlockAt = 0;
            }
        }
        emit Slashed(provider, amount, beneficiary, incident, checkRecord);
        _token.safeTransfer(beneficiary, amount);
    }

    /// @notice Whether `provider` registered to take paid work.
    function isRegistered(address provider) external view returns (bool) {
        return _registered[provider];
    }

    /// @notice Whether the result commitment whose keccak256 is `incident` was slashed.
    function isSlashed(bytes32 incident) external view returns (bool) {
        return _slashedIncidents[incident];
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

    /// @notice The most one incident may take, in basis points of the provider's active plus unbonding stake.
    function maxSlashBps() external view returns (uint16) {
        return _maxSlashBps;
    }

    function _register(address provider) private {
        if (_registered[provider]) return;
        _registered[provider] = true;
        emit Registered(provider);
    }

    /// @dev The incident id of `commitment` after checking it is a result commitment `provider` signed and was not
    /// slashed before.
    function _checkCommitment(address provider, bytes calldata commitment, bytes calldata signature)
        private
        view
        returns (bytes32 incident)
    {
        bytes memory prefix = COMMITMENT_PREFIX;
        if (commitment.length <= prefix.length || keccak256(commitment[:prefix.length]) != keccak256(prefix)) {
            revert NotAResultCommitment();
        }
        (address signer, ECDSA.RecoverError err,) =
            ECDSA.tryRecover(MessageHashUtils.toEthSignedMessageHash(commitment), signature);
        if (err != ECDSA.RecoverError.NoError || signer != provider) revert BadCommitmentSignature(signer, provider);
        incident = keccak256(commitment);
        if (_slashedIncidents[incident]) revert IncidentAlreadySlashed(incident);
    }
}
