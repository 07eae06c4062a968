// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IComputeMarket} from "../../contracts/interfaces/IComputeMarket.sol";
import {MarketChecks} from "./MarketChecks.sol";
import {MarketModel} from "./MarketModel.sol";
import {MockStablecoin} from "../../contracts/test/MockStablecoin.sol";

/// @title MarketHandler
/// @notice The only contract Foundry's invariant runner calls. Each external function is one
///         bounded random action on the real, wired ComputeMarket + ProviderStaking + RewardPool.
///
/// It is a differential model: before every action it *predicts* from its ghost state whether the
/// contracts must accept or reject it, applies the predicted effects to the ghost state, then makes
/// the call and requires the outcome to match (a rejected valid action reverts with
/// UnexpectedRevert, an accepted invalid one with UnexpectedSuccess; the campaign runs with
/// fail_on_revert, so either fails the run). The invariant contract then compares the ghost state
/// with the contracts after every call, and checks the protocol-level invariants on contract state.
contract MarketHandler is MarketChecks {
    /// @dev Every actor starts with vault balances and stake in both tokens, so deals can open
    ///      from the first calls on; the fuzzer moves them from there.
    uint256 internal constant INITIAL_DEPOSIT = 1_000_000_000;
    uint256 internal constant INITIAL_STAKE = 300_000_000;

    constructor(Deployment memory dep) MarketModel(dep) {
        for (uint256 a = 0; a < N_ACTORS; ++a) {
            for (uint256 t = 0; t < 2; ++t) {
                MockStablecoin token = _token(t);
                token.mint(accounts[a], INITIAL_DEPOSIT + INITIAL_STAKE);
                vm.startPrank(accounts[a]);
                token.approve(address(market), INITIAL_DEPOSIT);
                market.deposit(address(token), INITIAL_DEPOSIT);
                token.approve(address(staking), INITIAL_STAKE);
                staking.stake(address(token), INITIAL_STAKE);
                vm.stopPrank();
                ghostInternal[a][t] = INITIAL_DEPOSIT;
                _positions[a][t].staked = INITIAL_STAKE;
                ghostStakedIn[a][t] = INITIAL_STAKE;
            }
        }
    }

    // ═════════════════════════════ entry points ═════════════════════════════
    // Foundry picks entry points uniformly and has no weights, so rare actions share entry points
    // (chosen by `kind`) and deal lifecycle actions get most of the calls.

    /// @notice Money in and out: a vault deposit or withdrawal (actors and the treasury), a stake,
    ///         a request to unstake (which restarts the cooldown), or a withdrawal of unstaked funds.
    function funds(uint256 kind, uint256 accountSeed, uint256 tokenSeed, uint256 amount) external step {
        kind = _mix(kind) % 20;
        if (kind < 6) _deposit(accountSeed, tokenSeed, amount);
        else if (kind < 10) _withdraw(accountSeed, tokenSeed, amount);
        else if (kind < 14) _stake(accountSeed, tokenSeed, amount);
        else if (kind < 18) _requestUnstake(accountSeed, tokenSeed, amount);
        else _withdrawUnstaked(accountSeed, tokenSeed);
    }

    /// @notice A provider signs an offer or a trainer a request (sometimes with a future counter or
    ///         a wrong key); 12 % of the time an order is cancelled or a counter bumped instead.
    function postOrder(uint256 actorSeed, uint256 s1, uint256 s2, uint256 s3) external step {
        (s1, s2, s3) = (_mix(s1), _mix(s2), _mix(s3));
        if (s3 % 100 < 12) _revokeOrders(s3 >> 8, s1, s2);
        else if ((s3 >> 8) % 2 == 0) _postOffer(actorSeed % N_ACTORS, s1, s2, s3);
        else _postRandomRequest(actorSeed, s1, s2, s3);
    }

    // ═════════════════════════════ vault ═════════════════════════════

    function _deposit(uint256 actorSeed, uint256 tokenSeed, uint256 amount) internal {
        uint256 a = actorSeed % N_ACTORS;
        _touchAccount(a);
        uint256 t = tokenSeed % 2;
        amount = _mix(amount) % 23 == 0 ? 0 : _bound(amount, 1, 2_000_000_000);
        address who = accounts[a];
        if (amount != 0) {
            _token(t).mint(who, amount);
            ghostWallet[a][t] += amount;
        }
        bool ok = amount != 0 && ghostSettlementAllowed[t];
        if (ok) {
            ghostWallet[a][t] -= amount;
            ghostInternal[a][t] += amount;
        }
        vm.startPrank(who);
        _token(t).approve(address(market), amount);
        try market.deposit(address(_token(t)), amount) {
            vm.stopPrank();
            _expectOk(ok, "deposit", 0);
        } catch (bytes memory reason) {
            vm.stopPrank();
            _expectRevert(ok, "deposit", 0, reason);
        }
    }

    function _withdraw(uint256 accountSeed, uint256 tokenSeed, uint256 amount) internal {
        uint256 a = accountSeed % (N_ACTORS + 1); // the actors and the treasury
        _touchAccount(a);
        uint256 t = tokenSeed % 2;
        uint256 balance = ghostInternal[a][t];
        uint256 kind = _mix(amount);
        if (kind % 11 == 0) amount = balance + 1 + amount % 1000; // more than available
        else if (kind % 13 == 0) amount = 0;
        else amount = _bound(amount, 1, balance == 0 ? 1 : balance);
        bool ok = amount != 0 && amount <= balance;
        if (ok) {
            ghostInternal[a][t] -= amount;
            ghostWallet[a][t] += amount;
        }
        vm.prank(accounts[a]);
        try market.withdraw(address(_token(t)), amount) {
            _expectOk(ok, "withdraw", 0);
        } catch (bytes memory reason) {
            _expectRevert(ok, "withdraw", 0, reason);
        }
    }

    /// @dev Tokens sent straight to the market or staking contract, bypassing deposit/stake.
    function _donate(uint256 tokenSeed, uint256 amount, bool toStaking) internal {
        uint256 t = tokenSeed % 2;
        amount = _bound(amount, 1, 1_000_000);
        _token(t).mint(address(this), amount);
        _token(t).transfer(toStaking ? address(staking) : address(market), amount);
        if (toStaking) ghostDonatedStaking[t] += amount;
        else ghostDonatedMarket[t] += amount;
        _count(true, "donate");
    }

    // ═════════════════════════════ staking ═════════════════════════════

    function _stake(uint256 actorSeed, uint256 tokenSeed, uint256 amount) internal {
        uint256 a = actorSeed % N_ACTORS;
        _touchAccount(a);
        uint256 t = tokenSeed % 2;
        amount = _bound(amount, 1, 1_000_000_000);
        address who = accounts[a];
        _token(t).mint(who, amount);
        _positions[a][t].staked += amount;
        ghostStakedIn[a][t] += amount;
        vm.startPrank(who);
        _token(t).approve(address(staking), amount);
        try staking.stake(address(_token(t)), amount) {
            vm.stopPrank();
            _expectOk(true, "stake", 0);
        } catch (bytes memory reason) {
            vm.stopPrank();
            _expectRevert(true, "stake", 0, reason);
        }
    }

    function _requestUnstake(uint256 actorSeed, uint256 tokenSeed, uint256 amount) internal {
        uint256 a = actorSeed % N_ACTORS;
        uint256 t = tokenSeed % 2;
        Position storage p = _positions[a][t];
        uint256 free = p.staked - p.locked;
        if (_mix(amount) % 9 == 0) amount = free + 1 + amount % 100;
        else amount = _bound(amount, 1, free == 0 ? 1 : free);
        bool ok = amount <= free;
        if (ok) {
            p.staked -= amount;
            p.pending += amount;
            p.availableAt = ghostNow + COOLDOWN;
        }
        vm.prank(accounts[a]);
        try staking.requestUnstake(address(_token(t)), amount) {
            _expectOk(ok, "requestUnstake", 0);
        } catch (bytes memory reason) {
            _expectRevert(ok, "requestUnstake", 0, reason);
        }
    }

    function _withdrawUnstaked(uint256 actorSeed, uint256 tokenSeed) internal {
        uint256 a = actorSeed % N_ACTORS;
        _touchAccount(a);
        uint256 t = tokenSeed % 2;
        Position storage p = _positions[a][t];
        bool ok = p.pending != 0 && ghostNow >= p.availableAt;
        if (ok) {
            ghostWallet[a][t] += p.pending;
            p.pending = 0;
        }
        vm.prank(accounts[a]);
        try staking.withdrawUnstaked(address(_token(t))) {
            _expectOk(ok, "withdrawUnstaked", 0);
        } catch (bytes memory reason) {
            _expectRevert(ok, "withdrawUnstaked", 0, reason);
        }
    }

    // ═════════════════════════════ orders ═════════════════════════════

    function _postRandomRequest(uint256 actorSeed, uint256 s1, uint256 s2, uint256 s3) internal {
        IComputeMarket.Request memory r;
        r.trainer = accounts[actorSeed % N_ACTORS];
        r.gpuModel = uint16(s1 % 10 < 7 ? 0 : 1 + s1 % 2);
        r.gpuCount = uint16((s1 >> 8) % 50 == 0 ? 0 : 1 + (s1 >> 16) % ((s1 >> 20) % 4 == 0 ? 4 : 2));
        r.minVramGb = uint16([uint256(0), 0, 0, 40, 40, 80][(s1 >> 24) % 6]);
        r.regionMask = (s1 >> 32) % 8 != 0 ? 0xF : (s1 >> 40) % 16;
        r.greenOnly = (s1 >> 48) % 10 == 0;
        r.token = address(_token(_pickToken(s1 >> 56)));
        r.maxPricePerGpuHour = (s2 % 8 != 0) ? 10_000_000 : _pickPrice(s2 >> 8);
        r.totalHours = uint32(1 + (s2 >> 128) % 48);
        r.minHours = uint32(1 + (s2 >> 136) % r.totalHours);
        _finishRequest(r, s3);
    }

    function _postOffer(uint256 provider, uint256 s1, uint256 s2, uint256 s3) internal {
        IComputeMarket.Offer memory o;
        o.provider = accounts[provider];
        o.gpuModel = uint16(1 + s1 % 2);
        o.gpuCount = uint16(1 + (s1 >> 8) % 8);
        o.vramGb = (s1 >> 16) % 2 == 0 ? 40 : 80;
        o.region = uint8((s1 >> 24) % 4);
        o.greenEnergy = (s1 >> 32) % 2 == 0;
        o.token = address(_token(_pickToken(s1 >> 40)));
        o.pricePerGpuHour = _pickPrice(s2);
        o.minHours = uint32(1 + (s2 >> 64) % 4);
        o.maxHours = uint32(o.minHours + (s2 >> 72) % 45);
        // Often small, so that capacity, not the hour bounds, limits fills (and is probed one past).
        o.capacityGpuHours = uint32(1 + (s2 >> 88) % ((s2 >> 120) % 5 < 2 ? 24 : 200));
        o.availableUntil = uint64(ghostNow + HOUR + (s3 % 30 days));
        o.expiry = uint64(ghostNow + HOUR + ((s3 >> 64) % 14 days));
        o.salt = ++_salt;
        o.counter = ghostCounter[o.provider] + ((s3 >> 128) % 32 == 0 ? 1 : 0);
        bytes32 hash = _hashOffer(o);
        uint256 key = (s3 >> 136) % 32 == 0 ? strangerPk : actorPks[provider];
        OfferEntry storage entry = _offers.push();
        entry.offer = o;
        entry.hash = hash;
        entry.signature = _sign(key, _digest(hash));
        entry.ownerSigned = key == actorPks[provider];
        _orderLimit[hash] = o.capacityGpuHours;
        _count(true, "postOffer");
    }

    /// @dev A request that fits offer `oi` by construction (another trainer, same token, a GPU
    ///      model / count / VRAM / region / energy the offer has, a bid at or above the ask, hours
    ///      overlapping the offer's bounds); time, counter and signature still vary.
    function _postRequestFor(uint256 oi, uint256 s1, uint256 s2, uint256 s3) internal {
        IComputeMarket.Offer storage o = _offers[oi].offer;
        IComputeMarket.Request memory r;
        r.trainer = accounts[(_idx(o.provider) + 1 + s1 % (N_ACTORS - 1)) % N_ACTORS];
        r.gpuModel = (s1 >> 8) % 2 == 0 ? 0 : o.gpuModel;
        uint256 maxGpus = o.gpuCount < 4 ? o.gpuCount : 4;
        r.gpuCount = uint16(1 + (s1 >> 16) % maxGpus);
        r.minVramGb = (s1 >> 24) % 2 == 0 ? 0 : o.vramGb;
        r.regionMask = (s1 >> 32) % 2 == 0 ? 0xF : uint256(1) << o.region;
        r.greenOnly = o.greenEnergy && (s1 >> 40) % 2 == 0;
        r.token = o.token;
        r.maxPricePerGpuHour = uint96(o.pricePerGpuHour + (s2 % 3 == 0 ? 0 : (s2 >> 8) % 1_000_000));
        r.totalHours = uint32(o.minHours + (s2 >> 64) % (o.maxHours - o.minHours + 8));
        r.minHours = uint32(1 + (s2 >> 96) % o.minHours);
        _finishRequest(r, s3);
    }

    function _finishRequest(IComputeMarket.Request memory r, uint256 s3) internal {
        r.startBy = uint64(ghostNow + (s3 % 3 days));
        r.expiry = uint64(ghostNow + HOUR + ((s3 >> 64) % 14 days));
        r.jobSpecHash = keccak256(abi.encode(s3));
        r.settlementRule = uint8((s3 >> 128) % 30 == 0 ? 3 : (s3 >> 136) % 3);
        r.salt = ++_salt;
        r.counter = ghostCounter[r.trainer] + ((s3 >> 144) % 32 == 0 ? 1 : 0);
        bytes32 hash = _hashRequest(r);
        uint256 owner = _idx(r.trainer);
        uint256 key = (s3 >> 152) % 32 == 0 ? strangerPk : actorPks[owner];
        RequestEntry storage entry = _requests.push();
        entry.request = r;
        entry.hash = hash;
        entry.signature = _sign(key, _digest(hash));
        entry.ownerSigned = key == actorPks[owner];
        _orderLimit[hash] = r.totalHours;
        _count(true, "postRequest");
    }

    /// @dev Instead of posting (12 %): cancels an offer or a request (sometimes by someone else),
    ///      or, one time in six, bumps an actor's counter (invalidating all their orders so far).
    function _revokeOrders(uint256 kind, uint256 seed, uint256 callerSeed) internal {
        if (kind % 6 == 0) _incrementCounter(seed);
        else _cancelOrder(seed, kind % 2 == 0, callerSeed);
    }

    function _cancelOrder(uint256 seed, bool isOffer, uint256 callerSeed) internal {
        uint256 n = isOffer ? _offers.length : _requests.length;
        if (n == 0) return _count(false, "cancelOrder");
        uint256 i = _pickRecent(seed, n);
        address owner = isOffer ? _offers[i].offer.provider : _requests[i].request.trainer;
        bytes32 hash = isOffer ? _offers[i].hash : _requests[i].hash;
        address caller = _caller(callerSeed, owner);
        bool ok = caller == owner;
        if (ok) ghostCancelled[hash] = true;
        _touchedOrders.push(hash);
        vm.prank(caller);
        if (isOffer) {
            try market.cancelOffer(_offers[i].offer) {
                _expectOk(ok, "cancelOrder", 0);
            } catch (bytes memory reason) {
                _expectRevert(ok, "cancelOrder", 0, reason);
            }
        } else {
            try market.cancelRequest(_requests[i].request) {
                _expectOk(ok, "cancelOrder", 0);
            } catch (bytes memory reason) {
                _expectRevert(ok, "cancelOrder", 0, reason);
            }
        }
    }

    function _incrementCounter(uint256 actorSeed) internal {
        address who = accounts[actorSeed % N_ACTORS];
        uint256 expected = ++ghostCounter[who];
        vm.prank(who);
        uint256 got = market.incrementCounter();
        if (got != expected) revert ModelBroken("incrementCounter result", got);
        _count(true, "incrementCounter");
    }

    // ═════════════════════════════ opening deals ═════════════════════════════

    /// @notice With 8 or more deals live, 7 calls in 10 advance one of them instead (as
    ///         advanceDeal): it keeps the deal population, and so the per-call checks, bounded and
    ///         gives the lifecycle more of the calls. Otherwise 3 in 10 are an openDeals batch
    ///         (below), the rest one openDeal: half the time on a fresh offer and a request made
    ///         to fit it (both then stay in the pools for later fills), else on a pairing from the
    ///         pools.
    function openDeal(uint256 offerSeed, uint256 requestSeed, uint256 hoursSeed, uint256 callerSeed) external step {
        uint256 choice = _mix(callerSeed >> 1) % 10;
        if (_liveDeals() >= 8 && choice < 7) {
            (, uint256 live) = _pickLiveDeal(offerSeed);
            return _advance(live, _mix(requestSeed), hoursSeed, callerSeed);
        }
        if (choice >= 7) return _openDeals(offerSeed, requestSeed, hoursSeed, callerSeed);
        if (_mix(callerSeed) % 2 == 0 || _offers.length == 0 || _requests.length == 0) {
            return _openFreshPair(offerSeed, requestSeed, hoursSeed, callerSeed);
        }
        (uint256 oi, uint256 ri, uint32 dealHours) = _pickPair(offerSeed, requestSeed, hoursSeed);
        _openOne(oi, ri, dealHours, callerSeed);
    }

    /// @dev A provider and a trainer sign a fresh offer and a request made to fit it, then a
    ///      matcher submits them (hours sometimes out of bounds).
    function _openFreshPair(uint256 offerSeed, uint256 requestSeed, uint256 hoursSeed, uint256 callerSeed) internal {
        (offerSeed, requestSeed, hoursSeed) = (_mix(offerSeed), _mix(requestSeed), _mix(hoursSeed));
        _postOffer(offerSeed % N_ACTORS, offerSeed >> 8, requestSeed, hoursSeed);
        uint256 oi = _offers.length - 1;
        _postRequestFor(oi, offerSeed >> 16, requestSeed >> 8, hoursSeed >> 8);
        uint256 ri = _requests.length - 1;
        _openOne(oi, ri, _pickHours(oi, ri, hoursSeed >> 16, hoursSeed % 16 == 0), callerSeed);
    }

    function _openOne(uint256 oi, uint256 ri, uint32 dealHours, uint256 callerSeed) internal {
        _touchOrders(oi, ri);
        string memory why = _openRejection(oi, ri, dealHours);
        bool ok = bytes(why).length == 0;
        if (!ok) _count(false, string.concat("openDeal rejected: ", why));
        uint256 expectedId = _deals.length + 1;
        if (ok) _applyOpen(oi, ri, dealHours);
        OfferEntry storage o = _offers[oi];
        RequestEntry storage r = _requests[ri];
        vm.prank(_anyone(callerSeed));
        try market.openDeal(o.offer, o.signature, r.request, r.signature, dealHours) returns (uint256 id) {
            _expectOk(ok, "openDeal", expectedId);
            if (id != expectedId) revert ModelBroken("openDeal id", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "openDeal", expectedId, reason);
        }
    }

    /// @dev openDeals with 2-4 pairings from the pools (repeats allowed): the model predicts
    ///      them in order, each against the state the previous ones left.
    function _openDeals(uint256 offerSeeds, uint256 requestSeeds, uint256 hoursSeeds, uint256 callerSeed) internal {
        if (_offers.length == 0 || _requests.length == 0) return _count(false, "openDeals");
        (offerSeeds, requestSeeds, hoursSeeds, callerSeed) =
            (_mix(offerSeeds), _mix(requestSeeds), _mix(hoursSeeds), _mix(callerSeed));
        uint256 n = 2 + callerSeed % 3;
        IComputeMarket.Match[] memory matches = new IComputeMarket.Match[](n);
        uint256[] memory expectedIds = new uint256[](n);
        for (uint256 k = 0; k < n; ++k) {
            (uint256 oi, uint256 ri, uint32 dealHours) =
                _pickPair(offerSeeds >> (k * 48), requestSeeds >> (k * 48), hoursSeeds >> (k * 48));
            _touchOrders(oi, ri);
            string memory why = _openRejection(oi, ri, dealHours);
            if (bytes(why).length == 0) {
                _applyOpen(oi, ri, dealHours);
                expectedIds[k] = _deals.length;
            } else {
                _count(false, string.concat("openDeal rejected: ", why));
            }
            matches[k] = IComputeMarket.Match(
                _offers[oi].offer, _offers[oi].signature, _requests[ri].request, _requests[ri].signature, dealHours
            );
        }
        vm.prank(_anyone(callerSeed >> 8));
        try market.openDeals(matches) returns (uint256[] memory ids) {
            for (uint256 k = 0; k < n; ++k) {
                if (ids[k] != expectedIds[k]) {
                    if (expectedIds[k] == 0) revert UnexpectedSuccess("openDeals", ids[k]);
                    revert UnexpectedRevert("openDeals", expectedIds[k], "");
                }
                _count(ids[k] != 0, "openDeals");
            }
        } catch (bytes memory reason) {
            revert UnexpectedRevert("openDeals", 0, reason);
        }
    }

    // ═════════════════════════════ deal lifecycle ═════════════════════════════

    /// @notice The next natural step of a live deal (or, when none is live, a fresh deal), branching at random the
    ///         way providers, buyers, verifiers, the arbiter and keepers would: start or refund an
    ///         open deal; withdraw, complete, abort or dispute a running one; settle, accept, attest
    ///         or dispute a completed one; resolve, accept or attest a disputed one. Each action
    ///         still varies its caller and arguments (and is then predicted to be rejected).
    function advanceDeal(uint256 dealSeed, uint256 branch, uint256 seedA, uint256 seedB) external step {
        (bool found, uint256 id) = _pickLiveDeal(dealSeed);
        if (!found) return _openFreshPair(dealSeed, branch, seedA, seedB);
        _advance(id, _mix(branch), seedA, seedB);
    }

    /// @notice Any lifecycle action, for the paths advanceDeal does not take (wrong states, early
    ///         or late calls): 2 times in 10 on a deal in a terminal state (which must never change),
    ///         1 in 10 on any deal, else on a deal in a state the action applies to.
    function dealAction(uint256 kind, uint256 dealSeed, uint256 seedA, uint256 seedB) external step {
        kind = _mix(kind);
        uint256 action = kind % 11;
        uint256 target = (kind >> 8) % 10;
        bool found;
        uint256 id;
        if (action == 9) return _settleMany(dealSeed, seedA);
        if (target < 2) (found, id) = _pickTerminalDeal(dealSeed);
        else if (target == 2) (found, id) = _pickDeal(dealSeed, type(uint256).max);
        else if (action == 0 || action == 8) (found, id) = _pickDeal(dealSeed, 1 << S_OPEN);
        else if (action <= 2 || action == 10) (found, id) = _pickDeal(dealSeed, 1 << S_RUNNING);
        else if (action == 3) (found, id) = _pickSettleable(dealSeed);
        else if (action == 4) (found, id) = _pickReported(dealSeed, RULE_BUYER_ACCEPTANCE);
        else if (action == 5) (found, id) = _pickDeal(dealSeed, (1 << S_COMPLETED) | (1 << S_RUNNING));
        else if (action == 6) (found, id) = _pickDeal(dealSeed, 1 << S_DISPUTED);
        else (found, id) = _pickReported(dealSeed, RULE_ATTESTATION);
        if (!found) return _count(false, "dealAction: no deal");
        if (action == 0) _startDeal(id, seedA);
        else if (action == 1) _withdrawAccrued(id, seedA);
        else if (action == 2) _completeDeal(id, seedA, seedB);
        else if (action == 3) _settle(id, seedA);
        else if (action == 4) _accept(id, seedA);
        else if (action == 5) _dispute(id, seedA);
        else if (action == 6) _resolveDispute(id, seedA, seedB);
        else if (action == 7) _settleWithAttestation(id, seedA, seedB);
        else if (action == 8) _claimRefund(id, seedA);
        else _abort(id, seedA);
    }

    function _advance(uint256 id, uint256 branch, uint256 seedA, uint256 seedB) internal {
        DealModel storage d = _deals[id - 1];
        uint256 r = branch % 20;
        uint8 status = d.status;
        if (status == S_OPEN) {
            if (ghostNow <= d.startDeadline && r != 0) _startDeal(id, seedA);
            else _claimRefund(id, seedA);
        } else if (status == S_RUNNING) {
            if (r < 5) _withdrawAccrued(id, seedA);
            else if (r < 16) _completeDeal(id, seedA, seedB);
            else if (r < 18) _abort(id, seedA);
            else _dispute(id, seedA);
        } else if (status == S_COMPLETED) {
            bool due = ghostNow >= uint256(d.completedAt) + CHALLENGE_WINDOW;
            if (d.rule == RULE_CHALLENGE_WINDOW && due) {
                if (r < 10) _settle(id, seedA);
                else if (r < 17) _settleMany(branch >> 8, seedA, id);
                else _accept(id, seedA);
            } else if (d.rule == RULE_CHALLENGE_WINDOW) {
                if (r < 6) _dispute(id, seedA);
                else if (r < 10) _accept(id, seedA);
                else if (r < 12) _settleWithAttestation(id, seedA, seedB);
                else _settle(id, seedA); // too early: must be rejected
            } else if (d.rule == RULE_BUYER_ACCEPTANCE) {
                if (r < 13) _accept(id, seedA);
                else if (r < 17) _dispute(id, seedA);
                else if (r < 19) _settleWithAttestation(id, seedA, seedB);
                else _settle(id, seedA); // the rule forbids it
            } else {
                if (r < 13) _settleWithAttestation(id, seedA, seedB);
                else if (r < 17) _dispute(id, seedA);
                else if (r < 19) _accept(id, seedA);
                else _settle(id, seedA); // the rule forbids it
            }
        } else if (d.completedAt != 0 && r >= 12) {
            // disputed after completion: the buyer may withdraw the dispute, a verifier may attest
            if (r < 16) _accept(id, seedA);
            else _settleWithAttestation(id, seedA, seedB);
        } else {
            _resolveDispute(id, seedA, seedB);
        }
    }

    function _startDeal(uint256 id, uint256 callerSeed) internal {
        DealModel storage d = _deals[id - 1];
        address caller = _caller(callerSeed, d.provider);
        bool ok = d.status == S_OPEN && caller == d.provider && ghostNow <= d.startDeadline;
        if (ok) {
            d.status = S_RUNNING;
            d.startedAt = uint32(ghostNow);
        }
        vm.prank(caller);
        try market.startDeal(id) {
            _expectOk(ok, "startDeal", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "startDeal", id, reason);
        }
    }

    function _withdrawAccrued(uint256 id, uint256 callerSeed) internal {
        DealModel storage d = _deals[id - 1];
        address caller = _caller(callerSeed, d.provider);
        bool ok = d.status == S_RUNNING && caller == d.provider && _elapsed(d) > d.withdrawnSeconds;
        if (ok) {
            uint32 elapsed = _elapsed(d);
            _payProvider(d, d.withdrawnSeconds, elapsed);
            d.withdrawnSeconds = elapsed;
        }
        vm.prank(caller);
        try market.withdrawAccrued(id) {
            _expectOk(ok, "withdrawAccrued", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "withdrawAccrued", id, reason);
        }
    }

    /// @dev Reported usage: mostly within [withdrawn, elapsed] (often all of it), sometimes anything.
    function _completeDeal(uint256 id, uint256 callerSeed, uint256 usedSeed) internal {
        DealModel storage d = _deals[id - 1];
        address caller = _caller(callerSeed, d.provider);
        uint256 maxSeconds = d.status == S_RUNNING ? _elapsed(d) : 0;
        uint256 used;
        usedSeed = _mix(usedSeed);
        if (usedSeed % 5 == 0) used = (usedSeed >> 8) % (maxSeconds + 2 * HOUR);
        else if (usedSeed % 5 == 1) used = maxSeconds;
        else used = _bound(usedSeed >> 8, d.withdrawnSeconds, maxSeconds < d.withdrawnSeconds ? d.withdrawnSeconds : maxSeconds);
        bytes32 resultHash = keccak256(abi.encode("result", id, usedSeed));
        bool ok = d.status == S_RUNNING && caller == d.provider && used <= maxSeconds && used >= d.withdrawnSeconds;
        if (ok) {
            d.status = S_COMPLETED;
            d.completedAt = uint32(ghostNow);
            d.usedSeconds = uint32(used);
            d.resultHash = resultHash;
        }
        vm.prank(caller);
        try market.completeDeal(id, uint32(used), resultHash) {
            _expectOk(ok, "completeDeal", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "completeDeal", id, reason);
        }
    }

    function _settle(uint256 id, uint256 callerSeed) internal {
        DealModel storage d = _deals[id - 1];
        bool ok = _settleable(d);
        if (ok) _applySettle(d);
        vm.prank(_anyone(callerSeed));
        try market.settle(id) {
            _expectOk(ok, "settle", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "settle", id, reason);
        }
    }

    function _settleMany(uint256 seeds, uint256 callerSeed) internal {
        if (_deals.length == 0) return _count(false, "settleMany");
        _settleMany(seeds, callerSeed, 0);
    }

    /// @dev settleMany over 1-5 deals (`first` first, if not 0): half of them due ones, the others
    ///      any deal (terminal ones included), a repeat of an earlier id, or an unknown id. The due
    ///      ones settle (a repeat only once), the others are skipped.
    function _settleMany(uint256 seeds, uint256 callerSeed, uint256 first) internal {
        seeds = _mix(seeds);
        uint256 n = 1 + seeds % 5;
        uint256[] memory ids = new uint256[](n);
        uint256 expected;
        for (uint256 k = 0; k < n; ++k) {
            uint256 seed = seeds >> (8 + k * 40);
            uint256 kind = seed % 16;
            if (k == 0 && first != 0) {
                ids[k] = first;
                _touchDeal(first);
            } else if (kind == 0) {
                ids[k] = _deals.length + 1 + (seed >> 4) % 3; // no such deal: skipped
                continue;
            } else if (kind < 3 && k != 0) {
                ids[k] = ids[(seed >> 4) % k]; // a repeat
                if (ids[k] > _deals.length) continue;
            } else if (kind < 8) {
                ids[k] = (seed >> 4) % _deals.length + 1; // any deal
                _touchDeal(ids[k]);
            } else {
                (, ids[k]) = _pickSettleable(seed);
            }
            DealModel storage d = _deals[ids[k] - 1];
            if (_settleable(d)) {
                _applySettle(d);
                ++expected;
            }
        }
        vm.prank(_anyone(callerSeed));
        try market.settleMany(ids) returns (uint256 settled) {
            if (settled != expected) revert ModelBroken("settleMany count", settled);
            _count(settled != 0, "settleMany");
        } catch (bytes memory reason) {
            revert UnexpectedRevert("settleMany", 0, reason);
        }
    }

    function _accept(uint256 id, uint256 callerSeed) internal {
        DealModel storage d = _deals[id - 1];
        address caller = _caller(callerSeed, d.buyer);
        bool ok = caller == d.buyer && _reported(d);
        if (ok) _applySettle(d);
        vm.prank(caller);
        try market.accept(id) {
            _expectOk(ok, "accept", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "accept", id, reason);
        }
    }

    function _dispute(uint256 id, uint256 callerSeed) internal {
        DealModel storage d = _deals[id - 1];
        address caller = _caller(callerSeed, d.buyer);
        bool ok;
        if (caller == d.buyer) {
            if (d.status == S_COMPLETED) {
                ok = ghostNow < uint256(d.completedAt) + CHALLENGE_WINDOW;
            } else if (d.status == S_RUNNING) {
                ok = ghostNow >= uint256(d.startedAt) + uint256(d.bookedHours) * HOUR + CHALLENGE_WINDOW;
            }
        }
        if (ok) d.status = S_DISPUTED;
        vm.prank(caller);
        try market.dispute(id) {
            _expectOk(ok, "dispute", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "dispute", id, reason);
        }
    }

    /// @dev The arbiter (one time in ten someone else) pays the provider for some seconds within
    ///      [withdrawn, booked] (or, sometimes, anything up to an hour past booked).
    function _resolveDispute(uint256 id, uint256 callerSeed, uint256 secondsSeed) internal {
        DealModel storage d = _deals[id - 1];
        (callerSeed, secondsSeed) = (_mix(callerSeed), _mix(secondsSeed));
        address caller = callerSeed % 10 == 0 ? accounts[(callerSeed >> 8) % N_ACCOUNTS] : arbiter;
        bool providerAtFault = (callerSeed >> 16) % 2 == 0;
        uint256 booked = uint256(d.bookedHours) * HOUR;
        uint256 providerSeconds;
        if (secondsSeed % 6 == 0) providerSeconds = (secondsSeed >> 8) % (booked + HOUR);
        else if (secondsSeed % 6 == 1) providerSeconds = d.withdrawnSeconds;
        else if (secondsSeed % 6 == 2) providerSeconds = booked;
        else providerSeconds = _bound(secondsSeed >> 8, d.withdrawnSeconds, booked);
        bool ok = caller == arbiter && d.status == S_DISPUTED && providerSeconds >= d.withdrawnSeconds
            && providerSeconds <= booked;
        if (ok) _applyResolve(d, uint32(providerSeconds), providerAtFault);
        vm.prank(caller);
        try market.resolveDispute(id, uint32(providerSeconds), providerAtFault) {
            _expectOk(ok, "resolveDispute", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "resolveDispute", id, reason);
        }
    }

    /// @dev A verifier's attestation, mostly passed; sometimes over another hash, signed by a
    ///      non-verifier, or for the other verdict than the one submitted (all must be rejected).
    function _settleWithAttestation(uint256 id, uint256 callerSeed, uint256 variant) internal {
        DealModel storage d = _deals[id - 1];
        variant = _mix(variant);
        bool passed = (variant >> 16) % 4 != 0;
        bytes32 resultHash = variant % 10 == 0 ? keccak256(abi.encode(variant)) : d.resultHash;
        uint256 key = variant % 10 == 1 ? actorPks[(variant >> 8) % N_ACTORS] : verifierPk;
        bool signedVerdict = variant % 10 == 2 ? !passed : passed;
        bytes memory signature = _sign(
            key,
            _digest(keccak256(abi.encode(ATTESTATION_TYPEHASH, id, resultHash, signedVerdict)))
        );
        bool ok = _reported(d) && resultHash == d.resultHash && key == verifierPk && signedVerdict == passed;
        if (ok) {
            if (passed) _applySettle(d);
            else _applyResolve(d, d.withdrawnSeconds, true);
        }
        vm.prank(_anyone(callerSeed));
        try market.settleWithAttestation(id, resultHash, passed, signature) {
            _expectOk(ok, "settleWithAttestation", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "settleWithAttestation", id, reason);
        }
    }

    function _claimRefund(uint256 id, uint256 callerSeed) internal {
        DealModel storage d = _deals[id - 1];
        bool ok = d.status == S_OPEN && ghostNow > d.startDeadline;
        if (ok) {
            d.status = S_REFUNDED;
            ++d.terminalTransitions;
            d.refunded += d.escrow;
            ghostInternal[d.buyerIndex][d.token] += d.escrow;
            _slash(d, d.collateral);
        }
        vm.prank(_anyone(callerSeed));
        try market.claimRefund(id) {
            _expectOk(ok, "claimRefund", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "claimRefund", id, reason);
        }
    }

    function _abort(uint256 id, uint256 callerSeed) internal {
        DealModel storage d = _deals[id - 1];
        address caller = _caller(callerSeed, d.buyer);
        bool ok = d.status == S_RUNNING && caller == d.buyer;
        if (ok) {
            d.status = S_ABORTED;
            ++d.terminalTransitions;
            uint32 elapsed = _elapsed(d);
            d.usedSeconds = elapsed;
            _payout(d, elapsed);
            _positions[d.providerIndex][d.token].locked -= d.collateral;
            _recordDelivery(d, elapsed);
        }
        vm.prank(caller);
        try market.abort(id) {
            _expectOk(ok, "abort", id);
        } catch (bytes memory reason) {
            _expectRevert(ok, "abort", id, reason);
        }
    }

    // ═════════════════════════════ time ═════════════════════════════

    /// @notice Time passes: mostly minutes to hours (inside deals and challenge windows),
    ///         sometimes up to a day (start deadlines) or a week (cooldowns, epochs).
    function warp(uint256 seconds_) external step {
        seconds_ = _mix(seconds_);
        uint256 kind = seconds_ % 100;
        uint256 maxStep = kind < 80 ? 2 * HOUR : kind < 92 ? 1 days : 8 days;
        ghostNow += _bound(seconds_ >> 8, 1, maxStep);
        vm.warp(ghostNow);
        _count(true, "warp");
    }

    // ═════════════════════════════ rewards ═════════════════════════════

    /// @notice A sponsor funds an epoch (sometimes a closed one), a provider claims a closed
    ///         epoch, or anyone rolls an epoch without deliveries over.
    function rewards(uint256 kind, uint256 actorSeed, uint256 epochSeed, uint256 amount) external step {
        kind = _mix(kind) % 10;
        if (kind < 4) _fundRewards(epochSeed, amount);
        else if (kind < 9) _claim(actorSeed, epochSeed);
        else _rollOver(epochSeed, actorSeed);
    }

    function _fundRewards(uint256 epochSeed, uint256 amount) internal {
        uint256 current = _currentEpoch();
        epochSeed = _mix(epochSeed);
        uint256 epoch = current + (epochSeed % 20 < 12 ? 0 : epochSeed % 20 < 17 ? 1 : 2);
        if (epochSeed % 10 == 9 && current > 0) epoch = current - 1 - (epochSeed >> 8) % current; // closed
        amount = _bound(amount, 1, 1e24);
        vm.prank(admin);
        credit.mint(sponsor, amount);
        bool ok = epoch >= current;
        _touchEpoch(epoch);
        if (ok) {
            _epochs[epoch].funding += amount;
            _epochs[epoch].fundedIn += amount;
            ghostRewardsFunded += amount;
        }
        vm.startPrank(sponsor);
        credit.approve(address(pool), amount);
        try pool.fund(epoch, amount) {
            vm.stopPrank();
            _expectOk(ok, "fundRewards", epoch);
        } catch (bytes memory reason) {
            vm.stopPrank();
            _expectRevert(ok, "fundRewards", epoch, reason);
        }
        if (!ok) {
            vm.prank(sponsor);
            credit.transfer(address(0xdead), amount); // keep the sponsor's wallet empty
        }
    }

    function _claim(uint256 actorSeed, uint256 epochSeed) internal {
        uint256 epoch = _pickClaimableEpoch(epochSeed);
        actorSeed = _mix(actorSeed);
        uint256 a = (actorSeed >> 8) % N_ACTORS;
        // Four times in five a provider that has an unclaimed weight in the epoch, if any.
        for (uint256 k = 0; k < N_ACTORS && actorSeed % 5 != 0; ++k) {
            uint256 candidate = (a + k) % N_ACTORS;
            if (_weights[epoch][candidate] != 0 && !_claimedBy[epoch][candidate]) {
                a = candidate;
                break;
            }
        }
        _touchEpoch(epoch);
        _touchAccount(a);
        EpochModel storage e = _epochs[epoch];
        uint256 share = e.totalWeight == 0 ? 0 : e.funding * _weights[epoch][a] / e.totalWeight;
        bool ok = epoch < _currentEpoch() && !_claimedBy[epoch][a] && share != 0;
        if (ok) {
            _claimedBy[epoch][a] = true;
            e.claimed += share;
            ghostCredit[a] += share;
            ghostRewardsClaimed += share;
        }
        vm.prank(accounts[a]);
        try pool.claim(epoch) returns (uint256 amount) {
            _expectOk(ok, "claimRewards", epoch);
            if (amount != share) revert ModelBroken("claim amount", amount);
        } catch (bytes memory reason) {
            _expectRevert(ok, "claimRewards", epoch, reason);
        }
    }

    function _rollOver(uint256 epochSeed, uint256 callerSeed) internal {
        uint256 epoch = _pickEpoch(epochSeed);
        uint256 current = _currentEpoch();
        EpochModel storage e = _epochs[epoch];
        bool ok = epoch < current && e.totalWeight == 0 && e.funding != 0;
        _touchEpoch(epoch);
        _touchEpoch(current);
        if (ok) {
            _epochs[current].funding += e.funding;
            _epochs[current].fundedIn += e.funding;
            e.funding = 0;
        }
        vm.prank(_anyone(callerSeed));
        try pool.rollOver(epoch) {
            _expectOk(ok, "rollOver", epoch);
        } catch (bytes memory reason) {
            _expectRevert(ok, "rollOver", epoch, reason);
        }
    }

    // ═════════════════════════════ admin ═════════════════════════════

    /// @notice Rare events: new fee / collateral ratio (deals already open keep their snapshots),
    ///         mDAI delisted or relisted, tokens sent straight to the market or staking.
    function adminAction(uint256 kind, uint256 seed1, uint256 seed2) external step {
        kind = _mix(kind);
        if (kind % 3 == 0) _setParameters(seed1, seed2);
        else if (kind % 3 == 1) _toggleDai();
        else _donate(seed1, seed2, kind % 2 == 0);
    }

    function _setParameters(uint256 feeSeed, uint256 collateralSeed) internal {
        (feeSeed, collateralSeed) = (_mix(feeSeed), _mix(collateralSeed));
        uint256 fee = feeSeed % 8 == 0 ? 1001 + (feeSeed >> 8) % 500 : (feeSeed >> 8) % 1001;
        uint256 ratio = collateralSeed % 8 == 0 ? 10_001 + (collateralSeed >> 8) % 500 : (collateralSeed >> 8) % 10_001;
        if (collateralSeed % 8 == 1) ratio = 0;
        bool feeOk = fee <= 1000;
        bool ratioOk = ratio <= BPS;
        if (feeOk) ghostFeeBps = uint16(fee);
        if (ratioOk) ghostCollateralBps = uint16(ratio);
        vm.prank(admin);
        try market.setProtocolFee(uint16(fee)) {
            _expectOk(feeOk, "setProtocolFee", fee);
        } catch (bytes memory reason) {
            _expectRevert(feeOk, "setProtocolFee", fee, reason);
        }
        vm.prank(admin);
        try market.setCollateralRatio(uint16(ratio)) {
            _expectOk(ratioOk, "setCollateralRatio", ratio);
        } catch (bytes memory reason) {
            _expectRevert(ratioOk, "setCollateralRatio", ratio, reason);
        }
    }

    /// @notice The admin delists or relists mDAI: deposits and new deals stop, withdrawals and
    ///         open deals go on.
    function _toggleDai() internal {
        ghostSettlementAllowed[1] = !ghostSettlementAllowed[1];
        vm.prank(admin);
        market.setSettlementToken(address(dai), ghostSettlementAllowed[1]);
        _count(true, "toggleDai");
    }
}
