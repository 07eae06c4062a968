// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title RewardPool interface
/// @notice Sponsor-funded reward epochs. The market records delivered GPU-seconds per provider;
///         after an epoch closes each provider claims funding × theirWeight / totalWeight.
interface IRewardPool {
    // ───────────────────────────── errors ─────────────────────────────

    /// @notice Thrown when an amount or weight is zero.
    error RewardPoolZeroAmount();
    /// @notice Thrown when funding an epoch that has already closed.
    error RewardPoolEpochClosed(uint256 epoch, uint256 currentEpoch);
    /// @notice Thrown when claiming or rolling over an epoch that is still open.
    error RewardPoolEpochNotClosed(uint256 epoch, uint256 currentEpoch);
    /// @notice Thrown when a provider claims an epoch twice.
    error RewardPoolAlreadyClaimed(uint256 epoch, address provider);
    /// @notice Thrown when a provider has no reward for an epoch.
    error RewardPoolNothingToClaim(uint256 epoch, address provider);
    /// @notice Thrown when an epoch with delivered work is rolled over, or an empty one has no funding.
    error RewardPoolCannotRollOver(uint256 epoch, uint256 totalWeight, uint256 funding);
    /// @notice Thrown when a green multiplier is outside [1×, 3×].
    error RewardPoolMultiplierOutOfRange(uint256 multiplierBps);
    /// @notice Thrown when the epoch length is zero.
    error RewardPoolInvalidEpochLength();

    // ───────────────────────────── events ─────────────────────────────

    /// @notice Emitted when a sponsor funds an epoch (amount actually received).
    event RewardsFunded(uint256 indexed epoch, address indexed sponsor, uint256 amount);
    /// @notice Emitted when the market records delivered work for a provider.
    event DeliveryRecorded(uint256 indexed epoch, address indexed provider, uint256 gpuSeconds, uint256 weight);
    /// @notice Emitted when a provider claims an epoch's reward.
    event RewardsClaimed(uint256 indexed epoch, address indexed provider, uint256 amount);
    /// @notice Emitted when an epoch nobody delivered in passes its funding to `toEpoch`.
    event RewardsRolledOver(uint256 indexed fromEpoch, uint256 indexed toEpoch, uint256 amount);
    /// @notice Emitted when the green-energy multiplier changes.
    event GreenMultiplierSet(uint256 multiplierBps);

    // ───────────────────────────── functions ─────────────────────────────

    function fund(uint256 epoch, uint256 amount) external;
    function recordDelivery(address provider, uint256 gpuSeconds, bool green) external;
    function claim(uint256 epoch) external returns (uint256);
    function rollOver(uint256 epoch) external;
    function currentEpoch() external view returns (uint256);
    function claimable(uint256 epoch, address provider) external view returns (uint256);
}
