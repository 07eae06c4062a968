// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IRewardPool} from "./interfaces/IRewardPool.sol";

/// @title RewardPool
/// @notice Sponsors escrow reward tokens (ComputeCredit) for fixed-length epochs. The market
///         records each provider's delivered GPU-seconds (weighted ×greenMultiplier for
///         green-energy offers) as deals settle. Once an epoch has closed, each provider pulls
///         floor(funding × weight / totalWeight).
///
/// Remainders: flooring leaves at most one base unit per claimant in the pool (dust, never
/// claimable, so claims can never exceed funding). An epoch that closes with no delivered work
/// can be rolled over by anyone into the current epoch, so sponsor funds are never stranded.
contract RewardPool is IRewardPool, AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // ───────────────────────────── constants ─────────────────────────────

    /// @notice Held by the market: the only account that may record delivered work.
    bytes32 public constant RECORDER_ROLE = keccak256("RECORDER_ROLE");
    uint256 public constant BPS = 10_000;
    uint256 public constant MAX_GREEN_MULTIPLIER_BPS = 30_000;

    // ───────────────────────────── storage ─────────────────────────────

    struct Epoch {
        uint256 funding;
        uint256 totalWeight;
        uint256 claimed;
    }

    IERC20 public immutable rewardToken;
    uint256 public immutable genesis;
    uint256 public immutable epochLength;
    uint256 public greenMultiplierBps;

    mapping(uint256 epoch => Epoch) private _epochs;
    mapping(uint256 epoch => mapping(address provider => uint256 weight)) private _weights;
    mapping(uint256 epoch => mapping(address provider => bool claimed)) private _claimed;

    // ───────────────────────────── constructor ─────────────────────────────

    constructor(address admin, IERC20 rewardToken_, uint256 epochLength_, uint256 greenMultiplierBps_) {
        if (epochLength_ == 0) revert RewardPoolInvalidEpochLength();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        rewardToken = rewardToken_;
        genesis = block.timestamp;
        epochLength = epochLength_;
        _setGreenMultiplier(greenMultiplierBps_);
    }

    // ───────────────────────────── external ─────────────────────────────

    /// @inheritdoc IRewardPool
    function fund(uint256 epoch, uint256 amount) external nonReentrant {
        if (amount == 0) revert RewardPoolZeroAmount();
        uint256 current = currentEpoch();
        if (epoch < current) revert RewardPoolEpochClosed(epoch, current);
        uint256 before = rewardToken.balanceOf(address(this));
        rewardToken.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = rewardToken.balanceOf(address(this)) - before;
        _epochs[epoch].funding += received;
        emit RewardsFunded(epoch, msg.sender, received);
    }

    /// @inheritdoc IRewardPool
    function recordDelivery(address provider, uint256 gpuSeconds, bool green) external onlyRole(RECORDER_ROLE) {
        if (gpuSeconds == 0) revert RewardPoolZeroAmount();
        uint256 epoch = currentEpoch();
        uint256 weight = green ? gpuSeconds * greenMultiplierBps / BPS : gpuSeconds;
        _epochs[epoch].totalWeight += weight;
        _weights[epoch][provider] += weight;
        emit DeliveryRecorded(epoch, provider, gpuSeconds, weight);
    }

    /// @inheritdoc IRewardPool
    function claim(uint256 epoch) external nonReentrant returns (uint256 amount) {
        uint256 current = currentEpoch();
        if (epoch >= current) revert RewardPoolEpochNotClosed(epoch, current);
        if (_claimed[epoch][msg.sender]) revert RewardPoolAlreadyClaimed(epoch, msg.sender);
        amount = _share(epoch, msg.sender);
        if (amount == 0) revert RewardPoolNothingToClaim(epoch, msg.sender);
        _claimed[epoch][msg.sender] = true;
        _epochs[epoch].claimed += amount;
        emit RewardsClaimed(epoch, msg.sender, amount);
        rewardToken.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IRewardPool
    function rollOver(uint256 epoch) external {
        uint256 current = currentEpoch();
        if (epoch >= current) revert RewardPoolEpochNotClosed(epoch, current);
        Epoch storage closed = _epochs[epoch];
        uint256 amount = closed.funding;
        if (closed.totalWeight != 0 || amount == 0) {
            revert RewardPoolCannotRollOver(epoch, closed.totalWeight, amount);
        }
        closed.funding = 0;
        _epochs[current].funding += amount;
        emit RewardsRolledOver(epoch, current, amount);
    }

    function setGreenMultiplier(uint256 multiplierBps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setGreenMultiplier(multiplierBps);
    }

    // ───────────────────────────── views ─────────────────────────────

    /// @inheritdoc IRewardPool
    function currentEpoch() public view returns (uint256) {
        return (block.timestamp - genesis) / epochLength;
    }

    /// @inheritdoc IRewardPool
    function claimable(uint256 epoch, address provider) external view returns (uint256) {
        if (epoch >= currentEpoch() || _claimed[epoch][provider]) return 0;
        return _share(epoch, provider);
    }

    function epochInfo(uint256 epoch) external view returns (uint256 funding, uint256 totalWeight, uint256 claimed) {
        Epoch storage info = _epochs[epoch];
        return (info.funding, info.totalWeight, info.claimed);
    }

    function weightOf(uint256 epoch, address provider) external view returns (uint256) {
        return _weights[epoch][provider];
    }

    function hasClaimed(uint256 epoch, address provider) external view returns (bool) {
        return _claimed[epoch][provider];
    }

    function epochEndsAt(uint256 epoch) external view returns (uint256) {
        return genesis + (epoch + 1) * epochLength;
    }

    // ───────────────────────────── internal ─────────────────────────────

    function _share(uint256 epoch, address provider) private view returns (uint256) {
        Epoch storage info = _epochs[epoch];
        if (info.totalWeight == 0) return 0;
        // Rounded down: the sum over providers never exceeds funding.
        return Math.mulDiv(info.funding, _weights[epoch][provider], info.totalWeight);
    }

    function _setGreenMultiplier(uint256 multiplierBps) private {
        if (multiplierBps < BPS || multiplierBps > MAX_GREEN_MULTIPLIER_BPS) {
            revert RewardPoolMultiplierOutOfRange(multiplierBps);
        }
        greenMultiplierBps = multiplierBps;
        emit GreenMultiplierSet(multiplierBps);
    }
}
