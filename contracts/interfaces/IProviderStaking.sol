// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ProviderStaking interface
/// @notice Provider collateral: staked per (provider, token), locked per open deal by the market,
///         slashed to the harmed buyer on no-show or a lost dispute, unstaked after a cooldown.
interface IProviderStaking {
    // ───────────────────────────── errors ─────────────────────────────

    /// @notice Thrown when an amount is zero.
    error ProviderStakingZeroAmount();
    /// @notice Thrown when a token is not accepted as collateral.
    error ProviderStakingTokenNotAllowed(address token);
    /// @notice Thrown when a provider's free (unlocked, not unstaking) stake does not cover `needed`.
    error ProviderStakingInsufficientFreeStake(address provider, address token, uint256 free, uint256 needed);
    /// @notice Thrown when the market unlocks or slashes more than is locked.
    error ProviderStakingInsufficientLocked(address provider, address token, uint256 locked, uint256 needed);
    /// @notice Thrown when unstaked funds are withdrawn before the cooldown ends.
    error ProviderStakingCooldownActive(address provider, address token, uint256 availableAt);
    /// @notice Thrown when nothing is pending withdrawal.
    error ProviderStakingNothingToWithdraw(address provider, address token);
    /// @notice Thrown when a cooldown is configured above the maximum.
    error ProviderStakingCooldownTooLong(uint256 cooldown, uint256 maximum);

    // ───────────────────────────── events ─────────────────────────────

    /// @notice Emitted when a provider adds stake (amount actually received).
    event Staked(address indexed provider, address indexed token, uint256 amount);
    /// @notice Emitted when a provider starts the unstake cooldown.
    event UnstakeRequested(address indexed provider, address indexed token, uint256 amount, uint256 availableAt);
    /// @notice Emitted when unstaked funds leave the contract.
    event Unstaked(address indexed provider, address indexed token, uint256 amount);
    /// @notice Emitted when the market locks collateral behind a deal.
    event CollateralLocked(address indexed provider, address indexed token, uint256 amount);
    /// @notice Emitted when the market releases a deal's collateral.
    event CollateralUnlocked(address indexed provider, address indexed token, uint256 amount);
    /// @notice Emitted when locked collateral is slashed to `recipient` (the harmed buyer).
    event Slashed(address indexed provider, address indexed token, uint256 amount, address indexed recipient);
    /// @notice Emitted when a collateral token is allowed or disallowed.
    event CollateralTokenSet(address indexed token, bool allowed);
    /// @notice Emitted when the unstake cooldown changes.
    event CooldownSet(uint256 cooldown);

    // ───────────────────────────── functions ─────────────────────────────

    function stake(address token, uint256 amount) external;
    function requestUnstake(address token, uint256 amount) external;
    function withdrawUnstaked(address token) external;
    function lock(address provider, address token, uint256 amount) external;
    function unlock(address provider, address token, uint256 amount) external;
    function slash(address provider, address token, uint256 amount, address recipient) external;

    function freeStake(address provider, address token) external view returns (uint256);
}
