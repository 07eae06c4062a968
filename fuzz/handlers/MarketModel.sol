// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ComputeCredit} from "../../contracts/ComputeCredit.sol";
import {ComputeMarket} from "../../contracts/ComputeMarket.sol";
import {ProviderStaking} from "../../contracts/ProviderStaking.sol";
import {RewardPool} from "../../contracts/RewardPool.sol";
import {IComputeMarket} from "../../contracts/interfaces/IComputeMarket.sol";
import {MockStablecoin} from "../../contracts/test/MockStablecoin.sol";
import {Vm, VM_ADDRESS} from "../utils/Vm.sol";

/// @title MarketModel
/// @notice Ghost state and the independent model of the contracts' rules that MarketHandler's
///         actions use to predict every outcome (see MarketHandler), plus input-picking helpers.
abstract contract MarketModel {
    Vm internal constant vm = Vm(VM_ADDRESS);

    error UnexpectedRevert(string action, uint256 id, bytes reason);
    error UnexpectedSuccess(string action, uint256 id);
    error ModelBroken(string what, uint256 id);

    // ───────────────────────────── configuration ─────────────────────────────

    uint256 public constant HOUR = 3600;
    uint256 public constant BPS = 10_000;
    // Read from the deployed contracts, so the same model serves every deploy configuration.
    uint256 public immutable CHALLENGE_WINDOW;
    uint256 public immutable COOLDOWN;
    uint256 public immutable EPOCH_LENGTH;
    uint256 public immutable GREEN_MULTIPLIER_BPS;
    uint256 public constant N_ACTORS = 4;
    /// @dev Accounts whose balances the model tracks: 4 actors, the treasury, a stranger.
    uint256 public constant N_ACCOUNTS = 6;
    uint256 public constant TREASURY = 4;
    uint256 public constant STRANGER = 5;

    // EIP-712, from the type strings of marketplace/signing.py (not from the contract): orders
    // signed here open deals only if the market hashes exactly as the off-chain signers do.
    bytes32 internal constant OFFER_TYPEHASH = keccak256(
        "Offer(address provider,uint16 gpuModel,uint16 gpuCount,uint16 vramGb,uint8 region,bool greenEnergy,"
        "address token,uint96 pricePerGpuHour,uint32 minHours,uint32 maxHours,uint32 capacityGpuHours,"
        "uint64 availableUntil,uint64 expiry,uint256 salt,uint256 counter)"
    );
    bytes32 internal constant REQUEST_TYPEHASH = keccak256(
        "Request(address trainer,uint16 gpuModel,uint16 gpuCount,uint16 minVramGb,uint256 regionMask,bool greenOnly,"
        "address token,uint96 maxPricePerGpuHour,uint32 totalHours,uint32 minHours,uint64 startBy,uint64 expiry,"
        "bytes32 jobSpecHash,uint8 settlementRule,uint256 salt,uint256 counter)"
    );
    bytes32 internal constant ATTESTATION_TYPEHASH = keccak256("Attestation(uint256 dealId,bytes32 resultHash,bool passed)");
    bytes32 internal immutable DOMAIN_SEPARATOR;

    uint8 internal constant RULE_CHALLENGE_WINDOW = 0;
    uint8 internal constant RULE_BUYER_ACCEPTANCE = 1;
    uint8 internal constant RULE_ATTESTATION = 2;

    // DealStatus as uint8
    uint8 internal constant S_OPEN = 1;
    uint8 internal constant S_RUNNING = 2;
    uint8 internal constant S_COMPLETED = 3;
    uint8 internal constant S_DISPUTED = 4;
    uint8 internal constant S_SETTLED = 5;
    uint8 internal constant S_REFUNDED = 6;
    uint8 internal constant S_ABORTED = 7;
    uint8 internal constant S_RESOLVED = 8;

    ComputeMarket public immutable market;
    ProviderStaking public immutable staking;
    RewardPool public immutable pool;
    ComputeCredit public immutable credit;
    MockStablecoin public immutable usdc;
    MockStablecoin public immutable dai;
    address public immutable admin;
    address public immutable arbiter;
    address public immutable sponsor;
    uint256 public immutable genesis;
    uint256 internal immutable verifierPk;
    uint256 internal immutable strangerPk;

    address[N_ACCOUNTS] public accounts;
    uint256[N_ACTORS] internal actorPks;

    // ───────────────────────────── ghost state ─────────────────────────────

    uint256 public ghostNow;

    struct Position {
        uint256 staked;
        uint256 locked;
        uint256 pending;
        uint256 availableAt;
    }

    /// @dev [account][token index]
    uint256[2][N_ACCOUNTS] public ghostInternal;
    uint256[2][N_ACCOUNTS] public ghostWallet;
    Position[2][N_ACTORS] internal _positions;
    uint256[2][N_ACTORS] public ghostStakedIn; // cumulative stake ever put in
    uint256[2][N_ACTORS] public ghostSlashedFrom; // cumulative slashed from the provider
    uint256[N_ACCOUNTS] public ghostCredit; // reward-token wallets
    uint256[2] public ghostDonatedMarket;
    uint256[2] public ghostDonatedStaking;
    bool[2] public ghostSettlementAllowed;
    uint16 public ghostFeeBps;
    uint16 public ghostCollateralBps;

    struct OfferEntry {
        IComputeMarket.Offer offer;
        bytes signature;
        bytes32 hash;
        bool ownerSigned; // false: signed with another key (the market must reject it)
    }

    struct RequestEntry {
        IComputeMarket.Request request;
        bytes signature;
        bytes32 hash;
        bool ownerSigned;
    }

    OfferEntry[] internal _offers;
    RequestEntry[] internal _requests;
    mapping(bytes32 orderHash => uint256 filled) public ghostFilled;
    /// @dev An offer's GPU-hour capacity, a request's total hours.
    mapping(bytes32 orderHash => uint256 limit) internal _orderLimit;
    mapping(bytes32 orderHash => bool cancelled) public ghostCancelled;
    mapping(address owner => uint256 counter) public ghostCounter;
    uint256 internal _salt;

    struct DealModel {
        address provider;
        address buyer;
        uint8 token; // index
        uint8 providerIndex; // into accounts
        uint8 buyerIndex;
        uint8 rule;
        bool green;
        uint8 status;
        uint96 price;
        uint16 gpuCount;
        uint32 bookedHours;
        uint16 feeBps;
        uint16 collateralBps;
        uint32 startDeadline;
        uint32 startedAt;
        uint32 completedAt;
        uint32 usedSeconds;
        uint32 withdrawnSeconds;
        bytes32 resultHash;
        uint256 escrow;
        uint256 collateral;
        uint256 paid; // credited to the provider (accrued withdrawals + final)
        uint256 refunded; // credited back to the buyer
        uint256 fee; // credited to the treasury
        uint256 slashed; // collateral sent to the buyer
        uint256 terminalTransitions;
    }

    /// @dev deals[i] is deal id i + 1 (every deal is opened through this handler).
    DealModel[] internal _deals;

    struct EpochModel {
        uint256 funding;
        uint256 totalWeight;
        uint256 claimed;
        uint256 fundedIn; // every unit ever funded into, or rolled into, this epoch
    }

    mapping(uint256 epoch => EpochModel) internal _epochs;
    mapping(uint256 epoch => uint256[N_ACTORS]) internal _weights;
    mapping(uint256 epoch => bool[N_ACTORS]) internal _claimedBy;
    mapping(uint256 epoch => bool) internal _epochTouched;
    uint256[] public touchedEpochs;
    uint256 public ghostRewardsFunded;
    uint256 public ghostRewardsClaimed;

    // ───────────────────────────── coverage counters ─────────────────────────────

    /// @dev Per action: calls the contracts accepted / rejected (both as the model predicted).
    mapping(string action => uint256) public accepted;
    mapping(string action => uint256) public rejected;
    string[] public actionNames;
    mapping(string action => bool) internal _named;

    /// @notice The wired contract set and the role accounts (MarketInvariants.setUp deploys them).
    struct Deployment {
        ComputeMarket market;
        ProviderStaking staking;
        RewardPool pool;
        ComputeCredit credit;
        MockStablecoin usdc;
        MockStablecoin dai;
        address admin;
        address treasury;
        address arbiter;
        address sponsor;
        uint256 verifierPk;
    }

    constructor(Deployment memory dep) {
        market = dep.market;
        staking = dep.staking;
        pool = dep.pool;
        credit = dep.credit;
        usdc = dep.usdc;
        dai = dep.dai;
        admin = dep.admin;
        arbiter = dep.arbiter;
        sponsor = dep.sponsor;
        verifierPk = dep.verifierPk;
        genesis = dep.pool.genesis();
        CHALLENGE_WINDOW = dep.market.challengeWindow();
        COOLDOWN = dep.staking.cooldown();
        EPOCH_LENGTH = dep.pool.epochLength();
        GREEN_MULTIPLIER_BPS = dep.pool.greenMultiplierBps();
        ghostNow = block.timestamp;
        for (uint256 i = 0; i < N_ACTORS; ++i) {
            actorPks[i] = uint256(keccak256(abi.encode("fuzz actor", i)));
            accounts[i] = vm.addr(actorPks[i]);
        }
        accounts[TREASURY] = dep.treasury;
        strangerPk = uint256(keccak256("fuzz stranger"));
        accounts[STRANGER] = vm.addr(strangerPk);
        ghostSettlementAllowed = [true, true];
        DOMAIN_SEPARATOR = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("ComputeMarket"),
                keccak256("1"),
                block.chainid,
                address(dep.market)
            )
        );
        if (DOMAIN_SEPARATOR != dep.market.domainSeparator()) revert ModelBroken("EIP-712 domain", 0);
        ghostFeeBps = dep.market.protocolFeeBps();
        ghostCollateralBps = dep.market.collateralBps();
    }

    /// @dev Deals and orders the current call handed to the contracts: the invariants compare
    ///      these with the model after every call, and all of them at the end of every run.
    uint256[] internal _touchedDeals;
    bytes32[] internal _touchedOrders;
    uint256[] internal _callEpochs;
    /// @dev Bit a: the call may move tokens to or from accounts[a]'s wallet.
    uint256 internal _callAccounts;

    modifier step() {
        // Foundry may or may not carry block.timestamp between calls: the model's clock decides.
        vm.warp(ghostNow);
        delete _touchedDeals;
        delete _touchedOrders;
        delete _callEpochs;
        _callAccounts = 0;
        _;
    }

    // ═════════════════════════════ views for the statistics ═════════════════════════════

    function dealCount() external view returns (uint256) {
        return _deals.length;
    }

    function dealStatus(uint256 id) external view returns (uint8) {
        return _deals[id - 1].status;
    }

    function offerCount() external view returns (uint256) {
        return _offers.length;
    }

    function requestCount() external view returns (uint256) {
        return _requests.length;
    }

    function actionCount() external view returns (uint256) {
        return actionNames.length;
    }

    // ═════════════════════════════ model internals ═════════════════════════════

    /// @dev Empty if the market must open this pairing, else the first reason why it must not.
    function _openRejection(uint256 oi, uint256 ri, uint32 dealHours) internal view returns (string memory) {
        IComputeMarket.Offer storage o = _offers[oi].offer;
        IComputeMarket.Request storage r = _requests[ri].request;
        if (o.token != r.token) return "token mismatch";
        uint256 t = _tokenIndex(o.token);
        if (!ghostSettlementAllowed[t]) return "token delisted";
        if (o.provider == r.trainer) return "self deal";
        if (o.pricePerGpuHour == 0 || r.gpuCount == 0) return "zero price or gpus";
        if (r.gpuModel != 0 && r.gpuModel != o.gpuModel) return "gpu model";
        if (o.gpuCount < r.gpuCount || o.vramGb < r.minVramGb) return "gpu count or vram";
        if ((r.regionMask >> o.region) & 1 == 0) return "region";
        if (r.greenOnly && !o.greenEnergy) return "green";
        if (o.pricePerGpuHour > r.maxPricePerGpuHour) return "price not crossed";
        if (r.settlementRule > 2) return "bad rule";
        string memory why = _orderRejection(_offers[oi].hash, o.provider, o.counter, o.expiry, _offers[oi].ownerSigned);
        if (bytes(why).length != 0) return string.concat("offer ", why);
        why = _orderRejection(_requests[ri].hash, r.trainer, r.counter, r.expiry, _requests[ri].ownerSigned);
        if (bytes(why).length != 0) return string.concat("request ", why);
        uint256 minHours = o.minHours > r.minHours ? o.minHours : r.minHours;
        uint256 maxHours = o.maxHours < r.totalHours ? o.maxHours : r.totalHours;
        if (dealHours == 0 || dealHours < minHours || dealHours > maxHours) return "hours out of bounds";
        if (uint256(r.gpuCount) * dealHours + ghostFilled[_offers[oi].hash] > o.capacityGpuHours) {
            return "offer capacity";
        }
        if (dealHours + ghostFilled[_requests[ri].hash] > r.totalHours) return "request overfilled";
        if (_latestStart(o, r, dealHours) < ghostNow) return "start window closed";
        uint256 escrow = uint256(o.pricePerGpuHour) * r.gpuCount * dealHours;
        if (ghostInternal[_idx(r.trainer)][t] < escrow) return "buyer balance";
        Position storage p = _positions[_idx(o.provider)][t];
        if (_ceilDiv(escrow * ghostCollateralBps, BPS) > p.staked - p.locked) return "provider free stake";
        return "";
    }

    function _applyOpen(uint256 oi, uint256 ri, uint32 dealHours) internal {
        IComputeMarket.Offer storage o = _offers[oi].offer;
        IComputeMarket.Request storage r = _requests[ri].request;
        _touchDeal(_deals.length + 1);
        ghostFilled[_offers[oi].hash] += uint256(r.gpuCount) * dealHours;
        ghostFilled[_requests[ri].hash] += dealHours;
        DealModel storage d = _deals.push();
        d.provider = o.provider;
        d.buyer = r.trainer;
        d.providerIndex = uint8(_idx(o.provider));
        d.buyerIndex = uint8(_idx(r.trainer));
        d.token = uint8(_tokenIndex(o.token));
        d.rule = r.settlementRule;
        d.green = o.greenEnergy;
        d.status = S_OPEN;
        d.price = o.pricePerGpuHour;
        d.gpuCount = r.gpuCount;
        d.bookedHours = dealHours;
        d.feeBps = ghostFeeBps;
        d.collateralBps = ghostCollateralBps;
        d.startDeadline = uint32(_latestStart(o, r, dealHours));
        d.escrow = uint256(o.pricePerGpuHour) * r.gpuCount * dealHours;
        d.collateral = _ceilDiv(d.escrow * ghostCollateralBps, BPS);
        ghostInternal[_idx(r.trainer)][d.token] -= d.escrow;
        _positions[_idx(o.provider)][d.token].locked += d.collateral;
    }

    function _latestStart(IComputeMarket.Offer storage o, IComputeMarket.Request storage r, uint32 dealHours)
        internal
        view
        returns (uint256 latest)
    {
        uint256 duration = uint256(dealHours) * HOUR;
        latest = o.availableUntil >= duration ? o.availableUntil - duration : 0;
        if (r.startBy < latest) latest = r.startBy;
        if (latest > type(uint32).max) latest = type(uint32).max;
    }

    function _orderRejection(bytes32 hash, address owner, uint256 counter, uint64 expiry, bool ownerSigned)
        internal
        view
        returns (string memory)
    {
        if (ghostNow > expiry) return "expired";
        if (ghostCancelled[hash]) return "cancelled";
        if (counter != ghostCounter[owner]) return "stale counter";
        if (!ownerSigned) return "bad signature";
        return "";
    }

    function _settleable(DealModel storage d) internal view returns (bool) {
        return d.status == S_COMPLETED && d.rule == 0 && ghostNow >= uint256(d.completedAt) + CHALLENGE_WINDOW;
    }

    /// @dev Completed, or disputed after completion: the states accept/attestation act on.
    function _reported(DealModel storage d) internal view returns (bool) {
        return d.status == S_COMPLETED || (d.status == S_DISPUTED && d.completedAt != 0);
    }

    function _applySettle(DealModel storage d) internal {
        d.status = S_SETTLED;
        ++d.terminalTransitions;
        _payout(d, d.usedSeconds);
        _positions[d.providerIndex][d.token].locked -= d.collateral;
        _recordDelivery(d, d.usedSeconds);
    }

    function _applyResolve(DealModel storage d, uint32 providerSeconds, bool atFault) internal {
        d.status = S_RESOLVED;
        ++d.terminalTransitions;
        d.usedSeconds = providerSeconds;
        _payout(d, providerSeconds);
        if (atFault) _slash(d, d.collateral);
        else _positions[d.providerIndex][d.token].locked -= d.collateral;
    }

    /// @dev The money rules of ComputeMarket's header, recomputed independently.
    function _payout(DealModel storage d, uint32 paidSeconds) internal {
        uint256 refund = d.escrow - _gross(d, paidSeconds);
        _payProvider(d, d.withdrawnSeconds, paidSeconds);
        d.refunded += refund;
        ghostInternal[d.buyerIndex][d.token] += refund;
    }

    function _payProvider(DealModel storage d, uint256 fromSeconds, uint256 toSeconds) internal {
        uint256 grossFrom = _gross(d, fromSeconds);
        uint256 grossTo = _gross(d, toSeconds);
        uint256 feeFrom = grossFrom * d.feeBps / BPS;
        uint256 feeTo = grossTo * d.feeBps / BPS;
        uint256 net = (grossTo - feeTo) - (grossFrom - feeFrom);
        d.paid += net;
        d.fee += feeTo - feeFrom;
        ghostInternal[d.providerIndex][d.token] += net;
        ghostInternal[TREASURY][d.token] += feeTo - feeFrom;
    }

    function _slash(DealModel storage d, uint256 amount) internal {
        if (amount == 0) return;
        uint256 a = d.providerIndex;
        Position storage p = _positions[a][d.token];
        // A slash takes only this deal's locked collateral, never more than the stake.
        if (amount > p.locked || amount > p.staked) revert ModelBroken("slash above locked/staked", amount);
        p.locked -= amount;
        p.staked -= amount;
        d.slashed += amount;
        ghostSlashedFrom[a][d.token] += amount;
        ghostWallet[d.buyerIndex][d.token] += amount;
    }

    function _recordDelivery(DealModel storage d, uint32 seconds_) internal {
        if (seconds_ == 0) return;
        uint256 gpuSeconds = uint256(d.gpuCount) * seconds_;
        uint256 weight = d.green ? gpuSeconds * GREEN_MULTIPLIER_BPS / BPS : gpuSeconds;
        uint256 epoch = _currentEpoch();
        _touchEpoch(epoch);
        _epochs[epoch].totalWeight += weight;
        _weights[epoch][d.providerIndex] += weight;
    }

    function _gross(DealModel storage d, uint256 seconds_) internal view returns (uint256) {
        return uint256(d.price) * d.gpuCount * seconds_ / HOUR;
    }

    function _elapsed(DealModel storage d) internal view returns (uint32) {
        uint256 elapsed = ghostNow - d.startedAt;
        uint256 booked = uint256(d.bookedHours) * HOUR;
        if (booked > type(uint32).max) booked = type(uint32).max;
        return uint32(elapsed < booked ? elapsed : booked);
    }

    function _currentEpoch() internal view returns (uint256) {
        return (ghostNow - genesis) / EPOCH_LENGTH;
    }

    function _hashOffer(IComputeMarket.Offer memory o) internal pure returns (bytes32) {
        return keccak256(abi.encode(OFFER_TYPEHASH, o));
    }

    function _hashRequest(IComputeMarket.Request memory r) internal pure returns (bytes32) {
        return keccak256(abi.encode(REQUEST_TYPEHASH, r));
    }

    function _digest(bytes32 structHash) internal view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR, structHash));
    }

    function _touchDeal(uint256 id) internal {
        _touchedDeals.push(id);
        if (id <= _deals.length) {
            // a refund or a lost dispute slashes the provider's stake to the buyer's wallet
            _touchAccount(_deals[id - 1].buyerIndex);
            _touchAccount(_deals[id - 1].providerIndex);
        }
    }

    function _touchAccount(uint256 a) internal {
        _callAccounts |= 1 << a;
    }

    function _touchOrders(uint256 oi, uint256 ri) internal {
        _touchedOrders.push(_offers[oi].hash);
        _touchedOrders.push(_requests[ri].hash);
    }

    /// @dev An epoch the current call may change (and, once, into the list of all epochs in play).
    function _touchEpoch(uint256 epoch) internal {
        _callEpochs.push(epoch);
        if (!_epochTouched[epoch]) {
            _epochTouched[epoch] = true;
            touchedEpochs.push(epoch);
        }
    }

    // ═════════════════════════════ picking ═════════════════════════════

    /// @dev Nine times in ten a deal in one of the wanted states (scanning from a random start),
    ///      else any deal at all, so wrong-state calls are tried too (and must be rejected).
    function _pickDeal(uint256 seed, uint256 statusMask) internal returns (bool, uint256) {
        uint256 n = _deals.length;
        if (n == 0) return (false, 0);
        seed = _mix(seed);
        uint256 id = (seed >> 8) % n + 1;
        if (seed % 10 != 0) {
            for (uint256 k = 0; k < n; ++k) {
                uint256 i = (id - 1 + k) % n;
                if ((1 << _deals[i].status) & statusMask != 0) {
                    id = i + 1;
                    break;
                }
            }
        }
        _touchDeal(id);
        return (true, id);
    }

    /// @dev A deal in a terminal state (the first one from a random start), else any deal.
    function _pickTerminalDeal(uint256 seed) internal returns (bool, uint256) {
        uint256 n = _deals.length;
        if (n == 0) return (false, 0);
        uint256 start = _mix(seed) % n;
        for (uint256 k = 0; k < n; ++k) {
            uint256 i = (start + k) % n;
            if (_deals[i].status >= S_SETTLED) {
                _touchDeal(i + 1);
                return (true, i + 1);
            }
        }
        return _pickDeal(seed, type(uint256).max);
    }

    function _liveDeals() internal view returns (uint256 live) {
        for (uint256 i = 0; i < _deals.length; ++i) {
            if (_deals[i].status < S_SETTLED) ++live;
        }
    }

    /// @dev A deal that is not in a terminal state: the first one from a random start.
    function _pickLiveDeal(uint256 seed) internal returns (bool, uint256) {
        uint256 n = _deals.length;
        if (n == 0) return (false, 0);
        uint256 start = _mix(seed) % n;
        for (uint256 k = 0; k < n; ++k) {
            uint256 i = (start + k) % n;
            if (_deals[i].status < S_SETTLED) {
                _touchDeal(i + 1);
                return (true, i + 1);
            }
        }
        return (false, 0);
    }

    /// @dev Four times in five a completed deal whose settlement is due, if any; else _pickDeal.
    function _pickSettleable(uint256 seed) internal returns (bool, uint256) {
        uint256 n = _deals.length;
        uint256 mixed = _mix(seed);
        if (n != 0 && mixed % 5 != 0) {
            uint256 start = (mixed >> 8) % n;
            for (uint256 k = 0; k < n; ++k) {
                uint256 i = (start + k) % n;
                if (_settleable(_deals[i])) {
                    _touchDeal(i + 1);
                    return (true, i + 1);
                }
            }
        }
        return _pickDeal(seed, 1 << S_COMPLETED);
    }

    /// @dev Four times in five a reported deal (completed, or disputed after completion) under
    ///      `rule` if any (buyers accept BuyerAcceptance deals, verifiers attest Attestation deals,
    ///      which leaves ChallengeWindow deals to settle); else _pickDeal.
    function _pickReported(uint256 seed, uint8 rule) internal returns (bool, uint256) {
        uint256 n = _deals.length;
        uint256 mixed = _mix(seed);
        if (n != 0 && mixed % 5 != 0) {
            uint256 start = (mixed >> 8) % n;
            for (uint256 k = 0; k < n; ++k) {
                uint256 i = (start + k) % n;
                if (_deals[i].rule == rule && _reported(_deals[i])) {
                    _touchDeal(i + 1);
                    return (true, i + 1);
                }
            }
        }
        return _pickDeal(seed, (1 << S_COMPLETED) | (1 << S_DISPUTED));
    }

    /// @dev An offer (mostly a recent one), a request and deal hours. Three times in four the
    ///      pools are searched (a few offers × a few requests) for a pairing the model says must
    ///      open, so deals keep opening; otherwise, or when none is found, a random pairing (mostly
    ///      rejected, for the right reason).
    function _pickPair(uint256 offerSeed, uint256 requestSeed, uint256 hoursSeed)
        internal
        view
        returns (uint256 oi, uint256 ri, uint32 dealHours)
    {
        (offerSeed, requestSeed, hoursSeed) = (_mix(offerSeed), _mix(requestSeed), _mix(hoursSeed));
        uint256 nOffers = _offers.length;
        uint256 nRequests = _requests.length;
        oi = _pickRecent(offerSeed, nOffers);
        ri = _pickRecent(requestSeed, nRequests);
        if (hoursSeed % 4 == 0) return (oi, ri, _pickHours(oi, ri, hoursSeed >> 8, hoursSeed % 3 == 0));
        for (uint256 j = 0; j < nOffers && j < 4; ++j) {
            uint256 o = (oi + nOffers - j) % nOffers;
            for (uint256 k = 0; k < nRequests && k < 8; ++k) {
                uint256 r = (ri + nRequests - k) % nRequests;
                uint32 h = _pickHours(o, r, hoursSeed >> 8, false);
                if (bytes(_openRejection(o, r, h)).length == 0) return (o, r, h);
            }
        }
        return (oi, ri, _pickHours(oi, ri, hoursSeed >> 8, false));
    }

    /// @dev Within both orders' bounds and remaining capacity (one time in ten exactly one hour
    ///      past the tightest upper bound, to probe off-by-one errors), or (wild) anything up to 60.
    function _pickHours(uint256 oi, uint256 ri, uint256 seed, bool wild) internal view returns (uint32) {
        if (wild) return uint32(seed % 60);
        bool pastBound = (seed >> 200) % 10 == 0;
        IComputeMarket.Offer storage o = _offers[oi].offer;
        IComputeMarket.Request storage r = _requests[ri].request;
        uint256 lo = o.minHours > r.minHours ? o.minHours : r.minHours;
        uint256 hi = o.maxHours < r.totalHours ? o.maxHours : r.totalHours;
        uint256 filledOffer = ghostFilled[_offers[oi].hash];
        if (r.gpuCount != 0 && o.capacityGpuHours > filledOffer) {
            uint256 byCapacity = (o.capacityGpuHours - filledOffer) / r.gpuCount;
            if (byCapacity < hi) hi = byCapacity;
        }
        uint256 filledRequest = ghostFilled[_requests[ri].hash];
        uint256 byRequest = r.totalHours > filledRequest ? r.totalHours - filledRequest : 0;
        if (byRequest < hi) hi = byRequest;
        if (hi < lo) return uint32(lo);
        if (pastBound) return uint32(hi + 1);
        return uint32(_bound(seed, lo, hi));
    }

    function _pickRecent(uint256 seed, uint256 n) internal pure returns (uint256) {
        if (seed % 2 == 0) return n - 1 - (seed >> 8) % (n < 6 ? n : 6);
        return (seed >> 8) % n;
    }

    /// @dev Four times in five a closed epoch with funding and an unclaimed weight, if any; else
    ///      _pickEpoch.
    function _pickClaimableEpoch(uint256 seed) internal view returns (uint256) {
        uint256 n = touchedEpochs.length;
        uint256 mixed = _mix(seed);
        uint256 current = _currentEpoch();
        if (n != 0 && mixed % 5 != 0) {
            uint256 start = (mixed >> 8) % n;
            for (uint256 k = 0; k < n; ++k) {
                uint256 epoch = touchedEpochs[(start + k) % n];
                if (epoch >= current || _epochs[epoch].funding == 0) continue;
                for (uint256 a = 0; a < N_ACTORS; ++a) {
                    if (_weights[epoch][a] != 0 && !_claimedBy[epoch][a]) return epoch;
                }
            }
        }
        return _pickEpoch(seed);
    }

    function _pickEpoch(uint256 seed) internal view returns (uint256) {
        uint256 n = touchedEpochs.length;
        seed = _mix(seed);
        if (n == 0 || seed % 5 == 0) return (seed >> 8) % (_currentEpoch() + 2);
        return touchedEpochs[(seed >> 8) % n];
    }

    function _pickToken(uint256 seed) internal pure returns (uint256) {
        return seed % 4 == 0 ? 1 : 0;
    }

    /// @dev Tiny prices stress rounding; a few are zero (must be rejected).
    function _pickPrice(uint256 seed) internal pure returns (uint96) {
        if (seed % 50 == 0) return 0;
        if (seed % 10 < 3) return uint96(1 + (seed >> 8) % 1000);
        return uint96(100_000 + (seed >> 8) % 2_000_000);
    }

    /// @dev Mostly the rightful caller; one time in eight another account (maybe the same one).
    function _caller(uint256 seed, address rightful) internal view returns (address) {
        seed = _mix(seed);
        if (seed % 8 != 0) return rightful;
        return accounts[(seed >> 8) % N_ACCOUNTS];
    }

    function _anyone(uint256 seed) internal view returns (address) {
        return accounts[_mix(seed) % N_ACCOUNTS];
    }

    // ═════════════════════════════ helpers ═════════════════════════════

    function _expectOk(bool predicted, string memory action, uint256 id) internal {
        if (!predicted) revert UnexpectedSuccess(action, id);
        _count(true, action);
    }

    function _expectRevert(bool predicted, string memory action, uint256 id, bytes memory reason) internal {
        if (predicted) revert UnexpectedRevert(action, id, reason);
        _count(false, action);
    }

    function _count(bool ok, string memory action) internal {
        if (!_named[action]) {
            _named[action] = true;
            actionNames.push(action);
        }
        if (ok) ++accepted[action];
        else ++rejected[action];
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _token(uint256 t) internal view returns (MockStablecoin) {
        return t == 0 ? usdc : dai;
    }

    function _tokenIndex(address token) internal view returns (uint256) {
        if (token == address(usdc)) return 0;
        if (token == address(dai)) return 1;
        revert ModelBroken("unknown token", uint160(token));
    }

    function _idx(address account) internal view returns (uint256) {
        for (uint256 i = 0; i < N_ACCOUNTS; ++i) {
            if (accounts[i] == account) return i;
        }
        revert ModelBroken("unknown account", uint160(account));
    }

    function _pkOf(address account) internal view returns (uint256) {
        return actorPks[_idx(account)];
    }

    /// @dev Foundry draws many inputs from a dictionary of seen values (0, 1, addresses, ...);
    ///      hashing a seed before taking choices from its bits keeps the choices uniform.
    function _mix(uint256 seed) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed)));
    }

    function _bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        if (hi <= lo) return lo;
        return lo + x % (hi - lo + 1);
    }

    function _ceilDiv(uint256 a, uint256 b) internal pure returns (uint256) {
        return a == 0 ? 0 : (a - 1) / b + 1;
    }
}
