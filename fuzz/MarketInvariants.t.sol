// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ComputeCredit} from "../contracts/ComputeCredit.sol";
import {ComputeMarket} from "../contracts/ComputeMarket.sol";
import {ProviderStaking} from "../contracts/ProviderStaking.sol";
import {RewardPool} from "../contracts/RewardPool.sol";
import {MockStablecoin} from "../contracts/test/MockStablecoin.sol";
import {MarketHandler} from "./handlers/MarketHandler.sol";
import {MarketModel} from "./handlers/MarketModel.sol";
import {Vm, VM_ADDRESS} from "./utils/Vm.sol";

/// @title MarketInvariantsBase
/// @notice Foundry invariant campaign over the wired contract set, driven by MarketHandler.
///         `invariant_marketplace` is the single entry point, so one campaign is runs × depth
///         handler calls and every property of MarketChecks is checked after every call.
abstract contract MarketInvariantsBase {
    Vm internal constant vm = Vm(VM_ADDRESS);

    uint256 internal constant CREDIT_MAX_SUPPLY = 1_000_000_000 * 10 ** 18; // as marketplace/deploy.py
    uint256 internal constant START_TIME = 1_750_000_000;

    /// @dev marketplace/deploy.py's DeployConfig fields.
    struct Config {
        uint256 challengeWindow;
        uint16 protocolFeeBps;
        uint16 collateralBps;
        uint256 unstakeCooldown;
        uint256 epochLength;
        uint256 greenMultiplierBps;
    }

    MarketHandler internal handler;

    function _config() internal pure virtual returns (Config memory);

    /// @dev Names this campaign's statistics file.
    function _campaign() internal pure virtual returns (string memory);

    function setUp() public {
        vm.warp(START_TIME);
        handler = new MarketHandler(_deploy(_config()));
        vm.label(address(handler), "MarketHandler");
    }

    /// @dev The deployment plan and wiring of marketplace/deploy.py (devnet tokens), with
    ///      treasury, arbiter and verifier as accounts of their own so that their flows are visible.
    function _deploy(Config memory c) internal returns (MarketModel.Deployment memory dep) {
        dep.admin = address(this);
        dep.treasury = address(0x7EA5);
        dep.arbiter = address(0xA4B1);
        dep.sponsor = address(0x5905);
        dep.verifierPk = uint256(keccak256("fuzz verifier"));
        dep.credit = new ComputeCredit(dep.admin, CREDIT_MAX_SUPPLY);
        dep.usdc = new MockStablecoin("Mock USD Coin", "mUSDC", 6);
        dep.dai = new MockStablecoin("Mock Dai Stablecoin", "mDAI", 18);
        dep.staking = new ProviderStaking(dep.admin, c.unstakeCooldown);
        dep.pool = new RewardPool(dep.admin, IERC20(address(dep.credit)), c.epochLength, c.greenMultiplierBps);
        dep.market = new ComputeMarket(
            dep.admin, dep.treasury, dep.staking, dep.pool, c.challengeWindow, c.protocolFeeBps, c.collateralBps
        );
        dep.staking.grantRole(dep.staking.MARKET_ROLE(), address(dep.market));
        dep.pool.grantRole(dep.pool.RECORDER_ROLE(), address(dep.market));
        dep.market.grantRole(dep.market.ARBITER_ROLE(), dep.arbiter);
        dep.market.grantRole(dep.market.VERIFIER_ROLE(), vm.addr(dep.verifierPk));
        for (uint256 t = 0; t < 2; ++t) {
            address token = t == 0 ? address(dep.usdc) : address(dep.dai);
            dep.market.setSettlementToken(token, true);
            dep.staking.setCollateralToken(token, true);
        }
        vm.label(address(dep.market), "ComputeMarket");
        vm.label(address(dep.staking), "ProviderStaking");
        vm.label(address(dep.pool), "RewardPool");
    }

    /// @notice Foundry reads this (forge-std's StdInvariant does the same): only the handler is called.
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// @notice After every handler call.
    function invariant_marketplace() public view {
        handler.checkInvariants();
    }

    /// @notice After every run: every deal and order against the contracts again, then (when
    ///         $FUZZ_STATS names a folder) one "action,accepted,rejected" line per action and the
    ///         deals by final status into <folder>/<campaign>.csv, which `make fuzz` sums up.
    function afterInvariant() public {
        handler.checkAllDeals();
        handler.checkAllOrders();
        handler.checkAllEpochs();
        handler.checkAllWallets();
        string memory folder = vm.envOr("FUZZ_STATS", string(""));
        if (bytes(folder).length == 0) return;
        string memory path = string.concat(folder, "/", _campaign(), ".csv");
        uint256 n = handler.actionCount();
        for (uint256 i = 0; i < n; ++i) {
            string memory action = handler.actionNames(i);
            vm.writeLine(
                path,
                string.concat(
                    action, ",", vm.toString(handler.accepted(action)), ",", vm.toString(handler.rejected(action))
                )
            );
        }
        uint256[9] memory byStatus;
        for (uint256 id = 1; id <= handler.dealCount(); ++id) {
            ++byStatus[handler.dealStatus(id)];
        }
        string[9] memory names =
            ["None", "Open", "Running", "Completed", "Disputed", "Settled", "Refunded", "Aborted", "Resolved"];
        for (uint256 s = 1; s < 9; ++s) {
            vm.writeLine(path, string.concat("deals ending ", names[s], ",", vm.toString(byStatus[s]), ",0"));
        }
    }
}

/// @notice marketplace/deploy.py's DeployConfig defaults: 1 h challenge window, 1 % fee, 20 %
///         collateral, 7-day unstake cooldown and reward epochs, green ×1.2.
contract MarketInvariants is MarketInvariantsBase {
    function _campaign() internal pure override returns (string memory) {
        return "default-config";
    }

    function _config() internal pure override returns (Config memory) {
        return Config({
            challengeWindow: 3600,
            protocolFeeBps: 100,
            collateralBps: 2000,
            unstakeCooldown: 7 days,
            epochLength: 7 days,
            greenMultiplierBps: 12_000
        });
    }
}

/// @notice The edges of every parameter: no challenge window (settle at once, no dispute of a
///         completed deal), the maximum fee (10 %), full collateral, no unstake cooldown,
///         one-day epochs, green ×3.
contract MarketInvariantsEdgeConfig is MarketInvariantsBase {
    function _campaign() internal pure override returns (string memory) {
        return "edge-config";
    }

    function _config() internal pure override returns (Config memory) {
        return Config({
            challengeWindow: 0,
            protocolFeeBps: 1000,
            collateralBps: 10_000,
            unstakeCooldown: 0,
            epochLength: 1 days,
            greenMultiplierBps: 30_000
        });
    }
}
