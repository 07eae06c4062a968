// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IProviderStaking} from "./interfaces/IProviderStaking.sol";

/// @title ProviderStaking
/// @notice Collateral behind providers' promises. A provider stakes a token; the market locks a
///         share of it per open deal; on a no-show or a lost dispute the market slashes that share
///         straight to the harmed buyer. Stake leaves only through an unstake cooldown, so a
///         provider cannot pull collateral out from under a deal that is about to go wrong.
///
/// Invariants: locked + pending <= staked for every (provider, token); a slash never takes more
/// than what is locked (hence never more than staked); the contract's token balance is at least
/// the sum of staked + pending for that token (fee-on-transfer stakes are credited as received).
contract ProviderStaking is IProviderStaking, AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // ───────────────────────────── constants ─────────────────────────────

    /// @notice Held by the market contract(s) allowed to lock, unlock and slash.
    bytes32 public constant MARKET_ROLE = keccak256("MARKET_ROLE");
    uint256 public constant MAX_COOLDOWN = 90 days;

    // ───────────────────────────── storage ─────────────────────────────

    struct Position {
        uint128 staked; // everything the provider has in here, locked or not, excluding pending
        uint128 locked; // collateral behind open deals
        uint128 pending; // on its way out, claimable at availableAt
        uint64 availableAt;
    }

    uint256 public cooldown;
    mapping(address token => bool allowed) private _collateralTokens;
    mapping(address provider => mapping(address token => Position)) private _positions;

    // ───────────────────────────── constructor ─────────────────────────────

    constructor(address admin, uint256 cooldown_) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setCooldown(cooldown_);
    }

    // ───────────────────────────── provider ─────────────────────────────

    /// @inheritdoc IProviderStaking
    function stake(address token, uint256 amount) external nonReentrant {
        if (amount == 0) revert ProviderStakingZeroAmount();
        if (!_collateralTokens[token]) revert ProviderStakingTokenNotAllowed(token);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        // A strict equality on a measured amount, not on a balance an attacker can steer.
        // slither-disable-next-line incorrect-equality
        if (received == 0) revert ProviderStakingZeroAmount();
        // Positions are uint128: a larger stake (possible with many-decimal tokens) reverts
        // instead of being truncated and stranded.
        _positions[msg.sender][token].staked += SafeCast.toUint128(received);
        emit Staked(msg.sender, token, received);
    }

    /// @inheritdoc IProviderStaking
    function requestUnstake(address token, uint256 amount) external {
        if (amount == 0) revert ProviderStakingZeroAmount();
        Position storage position = _positions[msg.sender][token];
        uint256 free = position.staked - position.locked;
        if (amount > free) revert ProviderStakingInsufficientFreeStake(msg.sender, token, free, amount);
        unchecked {
            // amount <= free <= staked
            position.staked -= uint128(amount);
        }
        position.pending += uint128(amount);
        // A new request restarts the cooldown for everything pending: no skipping the queue.
        uint64 availableAt = uint64(block.timestamp + cooldown);
        position.availableAt = availableAt;
        emit UnstakeRequested(msg.sender, token, amount, availableAt);
    }

    /// @inheritdoc IProviderStaking
    function withdrawUnstaked(address token) external nonReentrant {
        Position storage position = _positions[msg.sender][token];
        uint256 amount = position.pending;
        if (amount == 0) revert ProviderStakingNothingToWithdraw(msg.sender, token);
        if (block.timestamp < position.availableAt) {
            revert ProviderStakingCooldownActive(msg.sender, token, position.availableAt);
        }
        position.pending = 0;
        emit Unstaked(msg.sender, token, amount);
        IERC20(token).safeTransfer(msg.sender, amount);
    }

    // ───────────────────────────── market ─────────────────────────────

    /// @inheritdoc IProviderStaking
    function lock(address provider, address token, uint256 amount) external onlyRole(MARKET_ROLE) {
        Position storage position = _positions[provider][token];
        uint256 free = uint256(position.staked) - position.locked;
        if (amount > free) revert ProviderStakingInsufficientFreeStake(provider, token, free, amount);
        position.locked += uint128(amount); // amount <= free <= staked, a uint128
        emit CollateralLocked(provider, token, amount);
    }

    /// @inheritdoc IProviderStaking
    function unlock(address provider, address token, uint256 amount) external onlyRole(MARKET_ROLE) {
        Position storage position = _positions[provider][token];
        if (amount > position.locked) revert ProviderStakingInsufficientLocked(provider, token, position.locked, amount);
        unchecked {
            // amount <= locked was checked just above
            position.locked -= uint128(amount);
        }
        emit CollateralUnlocked(provider, token, amount);
    }

    /// @inheritdoc IProviderStaking
    function slash(address provider, address token, uint256 amount, address recipient)
        external
        onlyRole(MARKET_ROLE)
        nonReentrant
    {
        Position storage position = _positions[provider][token];
        if (amount > position.locked) revert ProviderStakingInsufficientLocked(provider, token, position.locked, amount);
        unchecked {
            // amount <= locked <= staked
            position.locked -= uint128(amount);
            position.staked -= uint128(amount);
        }
        emit Slashed(provider, token, amount, recipient);
        IERC20(token).safeTransfer(recipient, amount);
    }

    // ───────────────────────────── admin ─────────────────────────────

    function setCollateralToken(address token, bool allowed) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _collateralTokens[token] = allowed;
        emit CollateralTokenSet(token, allowed);
    }

    function setCooldown(uint256 cooldown_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setCooldown(cooldown_);
    }

    // ───────────────────────────── views ─────────────────────────────

    /// @inheritdoc IProviderStaking
    function freeStake(address provider, address token) external view returns (uint256) {
        Position storage position = _positions[provider][token];
        return position.staked - position.locked;
    }

    function positionOf(address provider, address token)
        external
        view
        returns (uint256 staked, uint256 locked, uint256 pending, uint256 availableAt)
    {
        Position storage position = _positions[provider][token];
        return (position.staked, position.locked, position.pending, position.availableAt);
    }

    function isCollateralToken(address token) external view returns (bool) {
        return _collateralTokens[token];
    }

    // ───────────────────────────── internal ─────────────────────────────

    function _setCooldown(uint256 cooldown_) private {
        if (cooldown_ > MAX_COOLDOWN) revert ProviderStakingCooldownTooLong(cooldown_, MAX_COOLDOWN);
        cooldown = cooldown_;
        emit CooldownSet(cooldown_);
    }
}
