// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IRewardPool} from "../interfaces/IRewardPool.sol";

/// @title RewardClaimer
/// @notice Test-only provider account: claims a RewardPool epoch as itself when its driver says so.
contract RewardClaimer {
    address private immutable _driver;

    constructor() {
        _driver = msg.sender;
    }

    function claim(IRewardPool pool, uint256 epoch) external returns (uint256) {
        require(msg.sender == _driver, "driver only");
        return pool.claim(epoch);
    }
}

/// @title RewardPoolDriver
/// @notice Test-only harness for property tests: one transaction funds an epoch and records work
///         for up to `claimers.length` providers (it holds RECORDER_ROLE and the reward tokens),
///         one more makes every provider claim as itself. Each claim is a real `RewardPool.claim`
///         from a distinct account; only the transaction count shrinks. Never deploy outside tests.
contract RewardPoolDriver {
    using SafeERC20 for IERC20;

    IRewardPool public immutable pool;
    IERC20 public immutable rewardToken;
    RewardClaimer[] public claimers;

    constructor(IRewardPool pool_, IERC20 rewardToken_, uint256 claimerCount) {
        pool = pool_;
        rewardToken = rewardToken_;
        for (uint256 i = 0; i < claimerCount; ++i) {
            claimers.push(new RewardClaimer());
        }
    }

    /// @notice Funds `epoch` with `funding` (from this contract's balance) and records
    ///         `gpuSeconds[i]` (green or not) for claimer i.
    function fundAndRecord(uint256 epoch, uint256 funding, uint256[] calldata gpuSeconds, bool[] calldata green)
        external
    {
        rewardToken.forceApprove(address(pool), funding);
        pool.fund(epoch, funding);
        for (uint256 i = 0; i < gpuSeconds.length; ++i) {
            pool.recordDelivery(address(claimers[i]), gpuSeconds[i], green[i]);
        }
    }

    /// @notice Claimers 0..count-1 claim `epoch`; a claimer whose share rounds to zero gets
    ///         RewardPoolNothingToClaim, which is recorded as 0. Any other revert bubbles.
    function claimAll(uint256 epoch, uint256 count) external returns (uint256[] memory amounts) {
        amounts = new uint256[](count);
        for (uint256 i = 0; i < count; ++i) {
            try claimers[i].claim(pool, epoch) returns (uint256 amount) {
                amounts[i] = amount;
            } catch (bytes memory reason) {
                if (bytes4(reason) != IRewardPool.RewardPoolNothingToClaim.selector) {
                    assembly ("memory-safe") {
                        revert(add(reason, 0x20), mload(reason))
                    }
                }
            }
        }
    }

    function claimerAt(uint256 index) external view returns (address) {
        return address(claimers[index]);
    }
}
