// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IComputeMarket} from "../../contracts/interfaces/IComputeMarket.sol";
import {MarketModel} from "./MarketModel.sol";

/// @title MarketChecks
/// @notice The invariants, as views over the contracts and the model. They live next to the
///         ghost state so that reading it costs no ABI round trips (forge's EVM is the campaign's
///         bottleneck). Every property reverts with a message naming it.
///
/// After every call (MarketInvariantsBase.invariant_marketplace):
///  - conservation and solvency of the market, staking and the reward pool, on contract balances;
///  - every deal's accounting and state-machine bookkeeping (model); every internal balance, stake
///    position and parameter against the contracts;
///  - every deal, order, reward epoch and wallet the call touched (named in its calls to the
///    contracts, plus the current epoch) field by field against the contracts. They change only
///    through calls that name them, so this covers them;
/// and at the end of every run (afterInvariant), all deals, orders, epochs and wallets again.
abstract contract MarketChecks is MarketModel {
    /// @notice Every per-call property, in one external call (a call into this large contract
    ///         is costly in forge's EVM).
    function checkInvariants() external view {
        (uint256[2] memory escrowOwed, uint256[2][N_ACTORS] memory liveCollateral) = checkDeals();
        _checkMarketSolvency(escrowOwed);
        checkOrderFills();
        _checkStaking(liveCollateral);
        checkRewards();
        checkWalletsAndParameters();
    }

    /// @notice Market solvency, per token: the market's token balance == Σ internal balances (fees
    ///         are the treasury's internal balance) + Σ escrow owed to live deals (+ tokens sent to
    ///         it directly, which nobody can claim). Provider collateral is not held by the market
    ///         but by ProviderStaking (_checkStaking). Internal balances are the model's.
    function _checkMarketSolvency(uint256[2] memory escrowOwed) internal view {
        for (uint256 t = 0; t < 2; ++t) {
            address token = address(_token(t));
            uint256 internalSum;
            for (uint256 a = 0; a < N_ACCOUNTS; ++a) {
                uint256 balance = market.balanceOf(accounts[a], token);
                require(balance == ghostInternal[a][t], "internal balance != model");
                internalSum += balance;
            }
            require(
                IERC20(token).balanceOf(address(market)) == internalSum + escrowOwed[t] + ghostDonatedMarket[t],
                "market balance != internal balances + escrow"
            );
        }
    }

    /// @notice For every deal: provider paid + buyer refunded + fee == escrowed once terminal;
    ///         while live, nothing refunded and paid (accrued withdrawals) + fee + escrow still
    ///         held == escrowed; a terminal state is reached once; a refunded deal never paid its
    ///         provider (no deal both paid and refunded); a slash never exceeds the deal's
    ///         collateral and happens only on a refund or a resolution. Deals the call touched are
    ///         compared with the contract field by field (status included: a terminal state never
    ///         changes, since the model has no transition out of one).
    ///         Returns, from the same pass, the escrow owed per token and the collateral of live
    ///         deals per provider and token, for the solvency and staking checks.
    function checkDeals()
        public
        view
        returns (uint256[2] memory escrowOwed, uint256[2][N_ACTORS] memory liveCollateral)
    {
        uint256 n = _deals.length;
        require(market.dealCount() == n, "deal count != model");
        for (uint256 i = 0; i < n; ++i) {
            DealModel storage d = _deals[i];
            uint8 status = d.status;
            if (status >= S_SETTLED) {
                require(d.terminalTransitions == 1, "deal reached a terminal state twice");
                require(d.paid + d.refunded + d.fee == d.escrow, "terminal deal: paid + refunded + fee != escrow");
                if (status == S_REFUNDED) {
                    require(d.paid == 0 && d.fee == 0 && d.refunded == d.escrow, "refunded deal also paid the provider");
                }
            } else {
                require(d.terminalTransitions == 0 && d.refunded == 0, "live deal already paid out");
                uint256 held = d.escrow - _gross(d, d.withdrawnSeconds);
                require(d.paid + d.fee + held == d.escrow, "live deal: paid + fee + held != escrow");
                escrowOwed[d.token] += held;
                liveCollateral[d.providerIndex][d.token] += d.collateral;
            }
            require(d.slashed <= d.collateral, "deal slashed more than its collateral");
            require(d.slashed == 0 || status == S_REFUNDED || status == S_RESOLVED, "slash outside refund/resolve");
        }
        for (uint256 k = 0; k < _touchedDeals.length; ++k) {
            uint256 id = _touchedDeals[k];
            if (id <= n) _checkDealFields(id);
        }
    }

    /// @notice Every deal against the contract, field by field (end of every run).
    function checkAllDeals() public view {
        for (uint256 id = 1; id <= _deals.length; ++id) {
            _checkDealFields(id);
        }
    }

    /// @notice Filled GPU-hours never exceed an offer's capacity, filled hours never exceed a
    ///         request's total; fills and cancellations are the model's. For the orders the call
    ///         touched (fills change only through a call naming the order).
    function checkOrderFills() public view {
        for (uint256 k = 0; k < _touchedOrders.length; ++k) {
            _checkOrder(_touchedOrders[k]);
        }
    }

    /// @notice checkOrderFills for every order (end of every run).
    function checkAllOrders() public view {
        for (uint256 i = 0; i < _offers.length; ++i) {
            _checkOrder(_offers[i].hash);
        }
        for (uint256 i = 0; i < _requests.length; ++i) {
            _checkOrder(_requests[i].hash);
        }
    }

    /// @notice ProviderStaking's token balance ≥ Σ(staked + pending) (== once direct transfers are
    ///         counted); locked ≤ staked per provider; locked == Σ collateral of the provider's
    ///         live deals; a slash never exceeds the stake (Σ slashed ≤ Σ staked, and staked +
    ///         pending + slashed never exceeds what was put in); positions are the model's.
    function _checkStaking(uint256[2][N_ACTORS] memory liveCollateral) internal view {
        for (uint256 t = 0; t < 2; ++t) {
            address token = address(_token(t));
            uint256 sum;
            for (uint256 a = 0; a < N_ACTORS; ++a) {
                (uint256 staked, uint256 locked, uint256 pending, uint256 availableAt) =
                    staking.positionOf(accounts[a], token);
                require(locked <= staked, "locked > staked");
                require(locked == liveCollateral[a][t], "locked != collateral of live deals");
                require(ghostSlashedFrom[a][t] <= ghostStakedIn[a][t], "slashed more than was staked");
                require(staked + pending + ghostSlashedFrom[a][t] <= ghostStakedIn[a][t], "stake appeared from nowhere");
                Position storage p = _positions[a][t];
                require(staked == p.staked && locked == p.locked && pending == p.pending, "position != model");
                require(pending == 0 || availableAt == p.availableAt, "unstake availableAt != model");
                sum += staked + pending;
            }
            uint256 balance = IERC20(token).balanceOf(address(staking));
            require(balance >= sum, "staking balance < sum(staked + pending)");
            require(balance == sum + ghostDonatedStaking[t], "staking balance != sum + direct transfers");
        }
    }

    /// @notice Reward claims never exceed funding, per epoch and in total; the pool holds exactly
    ///         what was funded and not yet claimed. Epochs the call may have changed (the ones it
    ///         named, and the current one, which deliveries go to) are compared with the contract:
    ///         claims ≤ funding, weights add up to the total, all fields are the model's.
    function checkRewards() public view {
        uint256 unclaimed;
        for (uint256 i = 0; i < touchedEpochs.length; ++i) {
            EpochModel storage e = _epochs[touchedEpochs[i]];
            require(e.claimed <= e.funding && e.claimed <= e.fundedIn, "epoch claims exceed its funding (model)");
            unclaimed += e.funding - e.claimed;
        }
        require(ghostRewardsClaimed <= ghostRewardsFunded, "claims exceed funding");
        require(credit.balanceOf(address(pool)) == unclaimed, "pool balance != funded - claimed");
        _checkEpoch(_currentEpoch());
        for (uint256 k = 0; k < _callEpochs.length; ++k) {
            _checkEpoch(_callEpochs[k]);
        }
    }

    /// @notice Every epoch in play against the contract (end of every run).
    function checkAllEpochs() external view {
        for (uint256 i = 0; i < touchedEpochs.length; ++i) {
            _checkEpoch(touchedEpochs[i]);
        }
    }

    /// @notice Wallets and reward wallets of the accounts the call moved tokens for, and the
    ///         parameters, are the model's. A transfer to any other account would also show in the
    ///         market / staking / pool balance checks (money left them that the model did not send).
    function checkWalletsAndParameters() public view {
        _checkWallets(_callAccounts);
        require(market.protocolFeeBps() == ghostFeeBps, "fee != model");
        require(market.collateralBps() == ghostCollateralBps, "collateral ratio != model");
        require(market.isSettlementToken(address(dai)) == ghostSettlementAllowed[1], "mDAI listing != model");
    }

    /// @notice Every account's wallets (end of every run).
    function checkAllWallets() external view {
        _checkWallets(type(uint256).max);
    }

    // ───────────────────────────── internal ─────────────────────────────

    function _checkDealFields(uint256 id) internal view {
        DealModel storage d = _deals[id - 1];
        IComputeMarket.Deal memory c = market.getDeal(id);
        require(uint8(c.status) == d.status, "deal status != model (illegal or missed transition)");
        require(
            c.buyer == d.buyer && c.provider == d.provider && c.token == address(_token(d.token))
                && c.pricePerGpuHour == d.price && c.gpuCount == d.gpuCount && c.bookedHours == d.bookedHours
                && c.feeBps == d.feeBps && c.collateralBps == d.collateralBps,
            "deal terms != model"
        );
        require(
            c.startDeadline == d.startDeadline && c.startedAt == d.startedAt && c.completedAt == d.completedAt
                && c.usedSeconds == d.usedSeconds && c.withdrawnSeconds == d.withdrawnSeconds
                && c.resultHash == d.resultHash,
            "deal lifecycle fields != model"
        );
        uint256 held = d.status >= S_SETTLED ? 0 : d.escrow - _gross(d, d.withdrawnSeconds);
        require(market.escrowOf(id) == held, "escrowOf != model");
    }

    function _checkWallets(uint256 accountBits) internal view {
        for (uint256 a = 0; a < N_ACCOUNTS; ++a) {
            if (accountBits & (1 << a) == 0) continue;
            for (uint256 t = 0; t < 2; ++t) {
                require(IERC20(address(_token(t))).balanceOf(accounts[a]) == ghostWallet[a][t], "wallet balance != model");
            }
            require(credit.balanceOf(accounts[a]) == ghostCredit[a], "reward wallet != model");
        }
    }

    function _checkEpoch(uint256 epoch) internal view {
        (uint256 funding, uint256 totalWeight, uint256 claimed) = pool.epochInfo(epoch);
        require(claimed <= funding, "epoch claims exceed its funding");
        EpochModel storage e = _epochs[epoch];
        require(funding == e.funding && totalWeight == e.totalWeight && claimed == e.claimed, "epoch != model");
        uint256 weightSum;
        for (uint256 a = 0; a < N_ACTORS; ++a) {
            uint256 w = _weights[epoch][a];
            weightSum += w;
            // Zero weights are covered by the sum against the contract's total below.
            if (w == 0 && !_claimedBy[epoch][a]) continue;
            require(pool.weightOf(epoch, accounts[a]) == w, "weight != model");
            require(pool.hasClaimed(epoch, accounts[a]) == _claimedBy[epoch][a], "claimed flag != model");
        }
        require(weightSum == totalWeight, "sum of weights != total weight");
    }

    function _checkOrder(bytes32 hash) internal view {
        (uint32 filled, bool cancelled) = market.orderState(hash);
        require(filled <= _orderLimit[hash], "order filled beyond its capacity / total hours");
        require(filled == ghostFilled[hash] && cancelled == ghostCancelled[hash], "order state != model");
    }
}
