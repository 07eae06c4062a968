// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {LowLevelCall} from "@openzeppelin/contracts/utils/LowLevelCall.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IComputeMarket} from "./interfaces/IComputeMarket.sol";
import {IProviderStaking} from "./interfaces/IProviderStaking.sol";
import {IRewardPool} from "./interfaces/IRewardPool.sol";

/// @title ComputeMarket
/// @notice Escrow and conditional settlement for GPU-hours.
///
/// Money rules, in one place:
/// - Deal price rule: a deal always pays the offer's ask (`pricePerGpuHour`), whoever submits it
///   and whichever order rested; the request's bid is only a ceiling. So a front-runner who
///   replays a signed pair produces exactly the deal both signers agreed to.
/// - Escrow at open: price × gpuCount × dealHours, moved from the buyer's vault balance.
///   Collateral: ceil(escrow × collateralBps / 10 000), locked in ProviderStaking.
/// - Metering: payment = price × gpuCount × min(used, booked) seconds / 3600 (rounded down, in
///   the buyer's favour); fee = payment × feeBps / 10 000 (rounded down); the rest of the escrow
///   returns to the buyer. Amounts are computed cumulatively, so accrued withdrawals followed by a
///   final settlement never round differently from one settlement.
/// - Fee-on-transfer tokens: deposits are credited with the balance change actually measured.
contract ComputeMarket is IComputeMarket, AccessControl, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // ───────────────────────────── constants ─────────────────────────────

    bytes32 public constant ARBITER_ROLE = keccak256("ARBITER_ROLE");
    bytes32 public constant VERIFIER_ROLE = keccak256("VERIFIER_ROLE");

    bytes32 public constant OFFER_TYPEHASH = keccak256(
        "Offer(address provider,uint16 gpuModel,uint16 gpuCount,uint16 vramGb,uint8 region,bool greenEnergy,"
        "address token,uint96 pricePerGpuHour,uint32 minHours,uint32 maxHours,uint32 capacityGpuHours,"
        "uint64 availableUntil,uint64 expiry,uint256 salt,uint256 counter)"
    );
    bytes32 public constant REQUEST_TYPEHASH = keccak256(
        "Request(address trainer,uint16 gpuModel,uint16 gpuCount,uint16 minVramGb,uint256 regionMask,bool greenOnly,"
        "address token,uint96 maxPricePerGpuHour,uint32 totalHours,uint32 minHours,uint64 startBy,uint64 expiry,"
        "bytes32 jobSpecHash,uint8 settlementRule,uint256 salt,uint256 counter)"
    );
    bytes32 public constant ATTESTATION_TYPEHASH =
        keccak256("Attestation(uint256 dealId,bytes32 resultHash,bool passed)");

    uint256 public constant BPS = 10_000;
    uint256 public constant MAX_FEE_BPS = 1_000; // 10 %
    uint256 public constant MAX_CHALLENGE_WINDOW = 30 days;
    uint256 private constant SECONDS_PER_HOUR = 3600;
    uint8 private constant FLAG_GREEN = 1;
    /// @dev Gas given to each pairing of openDeals: an honest openDeal (cold storage, ERC-1271
    ///      signers) stays well below it, and a pairing whose contract signer burns gas can burn
    ///      only this much, so it fails alone instead of starving the rest of the batch.
    uint256 private constant OPEN_GAS_LIMIT = 400_000;
    /// @dev What must be left to forward OPEN_GAS_LIMIT (the 63/64 rule) and record the outcome.
    ///      Checking it makes an under-funded batch revert instead of reporting out-of-gas as
    ///      refused pairings, so gas estimation finds a limit that lets every pairing run.
    uint256 private constant MIN_GAS_PER_OPEN = OPEN_GAS_LIMIT + OPEN_GAS_LIMIT / 63 + 20_000;
    /// @dev Head of an ABI-encoded Match: Offer (15 words) and Request (16 words) inline, the two
    ///      signatures' offsets and dealHours.
    uint256 private constant MATCH_HEAD_BYTES = 1088; // (15 + 1 + 16 + 1 + 1) words

    // ───────────────────────────── storage ─────────────────────────────

    IProviderStaking public immutable staking;
    IRewardPool public immutable rewardPool;
    uint256 public immutable challengeWindow;

    address public treasury;
    uint16 public protocolFeeBps;
    uint16 public collateralBps;
    uint256 public dealCount;

    mapping(address token => bool allowed) private _settlementTokens;
    mapping(address account => mapping(address token => uint256 amount)) private _balances;
    /// @dev Offers: GPU-hours filled; requests: hours filled.
    mapping(bytes32 orderHash => OrderState) private _orderStates;
    mapping(address owner => uint256 counter) private _counters;
    // Written through storage pointers (`Deal storage deal = _deals[id]`), which Slither misses.
    // slither-disable-next-line uninitialized-state
    mapping(uint256 dealId => Deal) private _deals;

    struct OrderState {
        uint32 filled;
        bool cancelled;
    }

    // ───────────────────────────── constructor ─────────────────────────────

    constructor(
        address admin,
        address treasury_,
        IProviderStaking staking_,
        IRewardPool rewardPool_,
        uint256 challengeWindow_,
        uint16 protocolFeeBps_,
        uint16 collateralBps_
    ) EIP712("ComputeMarket", "1") {
        if (admin == address(0) || treasury_ == address(0) || address(staking_) == address(0)) {
            revert ComputeMarketZeroAddress();
        }
        if (challengeWindow_ > MAX_CHALLENGE_WINDOW) {
            revert ComputeMarketParameterOutOfRange(challengeWindow_, MAX_CHALLENGE_WINDOW);
        }
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        staking = staking_;
        rewardPool = rewardPool_;
        challengeWindow = challengeWindow_;
        _setTreasury(treasury_);
        _setProtocolFee(protocolFeeBps_);
        _setCollateralRatio(collateralBps_);
    }

    // ───────────────────────────── vault ─────────────────────────────

    /// @notice Deposits `amount` of a settlement token into the caller's vault balance.
    function deposit(address token, uint256 amount) external nonReentrant {
        _deposit(token, amount);
    }

    /// @notice Deposits with an EIP-2612 permit instead of a prior approval. A permit that fails
    ///         (e.g. already used by someone who front-ran it) is ignored when the allowance exists.
    function depositWithPermit(address token, uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        nonReentrant
    {
        try IERC20Permit(token).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        _deposit(token, amount);
    }

    /// @notice Withdraws from the caller's vault balance (also for tokens no longer whitelisted).
    function withdraw(address token, uint256 amount) external nonReentrant {
        if (amount == 0) revert ComputeMarketZeroAmount();
        uint256 available = _balances[msg.sender][token];
        if (available < amount) revert ComputeMarketInsufficientBalance(msg.sender, token, available, amount);
        unchecked {
            // available >= amount was checked just above
            _balances[msg.sender][token] = available - amount;
        }
        emit Withdrawn(msg.sender, token, amount);
        IERC20(token).safeTransfer(msg.sender, amount);
    }

    // ───────────────────────────── orders ─────────────────────────────

    /// @notice Cancels one of the caller's offers for good.
    function cancelOffer(Offer calldata offer) external {
        bytes32 orderHash = hashOffer(offer);
        if (offer.provider != msg.sender) revert ComputeMarketNotOrderOwner(orderHash, offer.provider, msg.sender);
        _cancel(orderHash);
    }

    /// @notice Cancels one of the caller's requests for good.
    function cancelRequest(Request calldata request) external {
        bytes32 orderHash = hashRequest(request);
        if (request.trainer != msg.sender) {
            revert ComputeMarketNotOrderOwner(orderHash, request.trainer, msg.sender);
        }
        _cancel(orderHash);
    }

    /// @notice Invalidates every order the caller signed under the current counter (Seaport style).
    function incrementCounter() external returns (uint256 newCounter) {
        unchecked {
            // a counter cannot realistically reach 2^256 one transaction at a time
            newCounter = ++_counters[msg.sender];
        }
        emit CounterIncremented(msg.sender, newCounter);
    }

    // ───────────────────────────── deals: opening ─────────────────────────────

    /// @notice Opens a deal between a signed offer and a signed request; anyone may submit.
    /// @return dealId the new deal's id
    function openDeal(
        Offer calldata offer,
        bytes calldata offerSignature,
        Request calldata request,
        bytes calldata requestSignature,
        uint32 dealHours
    ) public returns (uint256 dealId) {
        bytes32 offerHash = hashOffer(offer);
        bytes32 requestHash = hashRequest(request);
        _checkPair(offer, request);
        _checkOrder(offerHash, offer.provider, offer.counter, offer.expiry, offerSignature);
        _checkOrder(requestHash, request.trainer, request.counter, request.expiry, requestSignature);
        uint32 startDeadline = _fill(offer, offerHash, request, requestHash, dealHours);
        uint256 escrow;
        uint256 collateral;
        (dealId, escrow, collateral) = _createDeal(offer, request, dealHours, startDeadline);
        _emitDealOpened(dealId, offer, request, offerHash, requestHash, dealHours, startDeadline, escrow, collateral);
    }

    /// @notice Opens many deals; a pairing that fails emits DealOpenFailed and the batch goes on,
    ///         so one trainer emptying their vault cannot grief everyone else's matches.
    function openDeals(Match[] calldata matches) external returns (uint256[] memory dealIds) {
        dealIds = new uint256[](matches.length);
        for (uint256 i = 0; i < matches.length; ++i) {
            if (gasleft() < MIN_GAS_PER_OPEN) revert ComputeMarketInsufficientGas(gasleft(), MIN_GAS_PER_OPEN);
            (bool opened, uint256 dealId) = _openForwarded(matches[i]);
            if (opened) dealIds[i] = dealId;
            else emit DealOpenFailed(i, LowLevelCall.returnData());
        }
    }

    // ───────────────────────────── deals: lifecycle ─────────────────────────────

    /// @notice The provider starts the job before the start deadline.
    function startDeal(uint256 dealId) external {
        Deal storage deal = _dealIn(dealId, DealStatus.Open);
        _onlyProvider(deal, dealId);
        if (block.timestamp > deal.startDeadline) revert ComputeMarketStartDeadlinePassed(dealId, deal.startDeadline);
        deal.status = DealStatus.Running;
        deal.startedAt = uint32(block.timestamp);
        emit DealStarted(dealId, block.timestamp);
    }

    /// @notice The provider withdraws what a running deal has accrued (rate × elapsed, net of fee).
    function withdrawAccrued(uint256 dealId) external nonReentrant {
        Deal storage deal = _dealIn(dealId, DealStatus.Running);
        _onlyProvider(deal, dealId);
        uint32 elapsed = _elapsedSeconds(deal);
        uint32 already = deal.withdrawnSeconds;
        if (elapsed <= already) revert ComputeMarketNothingAccrued(dealId);
        deal.withdrawnSeconds = elapsed;
        address token = deal.token;
        // The gross total is not needed here: nothing returns to the buyer before the deal ends.
        (uint256 providerNet, uint256 fee,) = _payProvider(deal, _hourlyRate(deal), token, already, elapsed);
        _credit(treasury, token, fee);
        emit AccruedWithdrawn(dealId, deal.provider, providerNet, elapsed);
    }

    /// @notice The provider reports the job done: seconds actually used and the result's hash.
    function completeDeal(uint256 dealId, uint32 usedSeconds, bytes32 resultHash) external {
        Deal storage deal = _dealIn(dealId, DealStatus.Running);
        _onlyProvider(deal, dealId);
        uint32 maxSeconds = _elapsedSeconds(deal);
        if (usedSeconds > maxSeconds || usedSeconds < deal.withdrawnSeconds) {
            revert ComputeMarketInvalidUsage(dealId, usedSeconds, deal.withdrawnSeconds, maxSeconds);
        }
        deal.status = DealStatus.Completed;
        deal.completedAt = uint32(block.timestamp);
        deal.usedSeconds = usedSeconds;
        deal.resultHash = resultHash;
        emit DealCompleted(dealId, usedSeconds, resultHash);
    }

    /// @notice Settles a completed deal once its challenge window passed without dispute; anyone may call.
    function settle(uint256 dealId) external nonReentrant {
        Deal storage deal = _dealIn(dealId, DealStatus.Completed);
        SettlementRule rule = _rule(deal);
        if (rule != SettlementRule.ChallengeWindow) revert ComputeMarketSettlementRuleForbids(dealId, rule);
        uint256 endsAt = uint256(deal.completedAt) + challengeWindow;
        if (block.timestamp < endsAt) revert ComputeMarketChallengeWindowActive(dealId, endsAt);
        _settle(deal, dealId);
    }

    /// @notice Settles every listed deal that is ready; others are skipped (keepers batch freely).
    /// @return settled how many deals this call settled
    function settleMany(uint256[] calldata dealIds) external nonReentrant returns (uint256 settled) {
        for (uint256 i = 0; i < dealIds.length; ++i) {
            Deal storage deal = _deals[dealIds[i]];
            if (
                deal.status == DealStatus.Completed && _rule(deal) == SettlementRule.ChallengeWindow
                    && block.timestamp >= uint256(deal.completedAt) + challengeWindow
            ) {
                _settle(deal, dealIds[i]);
                ++settled;
            }
        }
    }

    /// @notice The buyer accepts the result early (also withdraws their own dispute).
    function accept(uint256 dealId) external nonReentrant {
        Deal storage deal = _reportedDeal(dealId);
        if (msg.sender != deal.buyer) revert ComputeMarketUnauthorizedCaller(dealId, msg.sender);
        _settle(deal, dealId);
    }

    /// @notice Settles (passed) or resolves against the provider (failed) on a verifier's EIP-712
    ///         attestation over (dealId, resultHash, passed); anyone may submit it.
    function settleWithAttestation(uint256 dealId, bytes32 resultHash, bool passed, bytes calldata signature)
        external
        nonReentrant
    {
        Deal storage deal = _reportedDeal(dealId);
        if (resultHash != deal.resultHash) revert ComputeMarketResultHashMismatch(dealId, deal.resultHash, resultHash);
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(ATTESTATION_TYPEHASH, dealId, resultHash, passed)));
        // Only the error's detail (the third value) is ignored; the error itself is checked below.
        // slither-disable-next-line unused-return
        (address signer, ECDSA.RecoverError recoverError,) = ECDSA.tryRecover(digest, signature);
        if (recoverError != ECDSA.RecoverError.NoError || !hasRole(VERIFIER_ROLE, signer)) {
            revert ComputeMarketInvalidAttestation(dealId, signer);
        }
        if (passed) {
            _settle(deal, dealId);
        } else {
            // The work failed verification: the buyer gets back all that was not already paid out,
            // and the provider's collateral compensates them.
            _resolve(deal, dealId, deal.withdrawnSeconds, true);
        }
    }

    /// @notice The buyer disputes a completed deal within its challenge window, or a running deal
    ///         the provider abandoned (booked time plus the challenge window passed, no completion).
    function dispute(uint256 dealId) external {
        Deal storage deal = _deals[dealId];
        if (msg.sender != deal.buyer) revert ComputeMarketUnauthorizedCaller(dealId, msg.sender);
        if (deal.status == DealStatus.Completed) {
            uint256 endsAt = uint256(deal.completedAt) + challengeWindow;
            if (block.timestamp >= endsAt) revert ComputeMarketChallengeWindowOver(dealId, endsAt);
        } else if (deal.status == DealStatus.Running) {
            uint256 overdueAt =
                uint256(deal.startedAt) + uint256(deal.bookedHours) * SECONDS_PER_HOUR + challengeWindow;
            if (block.timestamp < overdueAt) revert ComputeMarketChallengeWindowActive(dealId, overdueAt);
        } else {
            revert ComputeMarketInvalidDealStatus(dealId, deal.status);
        }
        deal.status = DealStatus.Disputed;
        emit DealDisputed(dealId, msg.sender);
    }

    /// @notice The arbiter splits a disputed deal: the provider is paid for `providerSeconds`, the
    ///         buyer gets the rest, and a provider at fault loses the deal's collateral to the buyer.
    function resolveDispute(uint256 dealId, uint32 providerSeconds, bool providerAtFault)
        external
        nonReentrant
        onlyRole(ARBITER_ROLE)
    {
        Deal storage deal = _dealIn(dealId, DealStatus.Disputed);
        uint256 booked = uint256(deal.bookedHours) * SECONDS_PER_HOUR;
        if (providerSeconds < deal.withdrawnSeconds || providerSeconds > booked) {
            revert ComputeMarketInvalidUsage(dealId, providerSeconds, deal.withdrawnSeconds, booked);
        }
        _resolve(deal, dealId, providerSeconds, providerAtFault);
    }

    /// @notice Refunds a deal the provider never started; the collateral compensates the buyer.
    ///         Anyone may call once the start deadline has passed.
    function claimRefund(uint256 dealId) external nonReentrant {
        Deal storage deal = _dealIn(dealId, DealStatus.Open);
        if (block.timestamp <= deal.startDeadline) {
            revert ComputeMarketStartDeadlineNotPassed(dealId, deal.startDeadline);
        }
        deal.status = DealStatus.Refunded;
        uint256 escrow = _escrow(deal);
        uint256 collateral = _collateral(escrow, deal.collateralBps);
        _credit(deal.buyer, deal.token, escrow);
        emit DealRefunded(dealId, escrow, collateral);
        if (collateral != 0) staking.slash(deal.provider, deal.token, collateral, deal.buyer);
    }

    /// @notice The buyer stops a running deal and pays pro-rata for the time elapsed.
    function abort(uint256 dealId) external nonReentrant {
        Deal storage deal = _dealIn(dealId, DealStatus.Running);
        if (msg.sender != deal.buyer) revert ComputeMarketUnauthorizedCaller(dealId, msg.sender);
        deal.status = DealStatus.Aborted;
        uint32 elapsed = _elapsedSeconds(deal);
        deal.usedSeconds = elapsed;
        (uint256 providerPaid, uint256 buyerRefund, uint256 fee, uint256 escrow) = _payout(deal, elapsed);
        emit DealAborted(dealId, providerPaid, buyerRefund, fee);
        _releaseCollateral(deal, escrow);
        _recordDelivery(deal, elapsed);
    }

    // ───────────────────────────── admin ─────────────────────────────

    function setSettlementToken(address token, bool allowed) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (token == address(0)) revert ComputeMarketZeroAddress();
        _settlementTokens[token] = allowed;
        emit SettlementTokenSet(token, allowed);
    }

    function setProtocolFee(uint16 feeBps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setProtocolFee(feeBps);
    }

    function setCollateralRatio(uint16 ratioBps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setCollateralRatio(ratioBps);
    }

    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setTreasury(treasury_);
    }

    // ───────────────────────────── views ─────────────────────────────

    /// @dev keccak256(abi.encode(OFFER_TYPEHASH, offer)), hashed from the calldata words as they are
    ///      (abi.encode's field-by-field copy into memory cost ~1.5k gas more per order), once checked
    ///      to be the canonical encoding: a malformed field reverts without data, as when decoded.
    function hashOffer(Offer calldata offer) public pure returns (bytes32 structHash) {
        _requireCanonical(offer);
        bytes32 typeHash = OFFER_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            calldatacopy(add(ptr, 0x20), offer, 0x1e0)
            structHash := keccak256(ptr, 0x200)
        }
    }

    /// @dev keccak256(abi.encode(REQUEST_TYPEHASH, request)); see hashOffer.
    function hashRequest(Request calldata request) public pure returns (bytes32 structHash) {
        _requireCanonical(request);
        bytes32 typeHash = REQUEST_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            calldatacopy(add(ptr, 0x20), request, 0x200)
            structHash := keccak256(ptr, 0x220)
        }
    }

    /// @notice The EIP-712 digest a signer signs for an order's struct hash.
    function typedDataDigest(bytes32 structHash) external view returns (bytes32) {
        return _hashTypedDataV4(structHash);
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function getDeal(uint256 dealId) external view returns (Deal memory) {
        return _deals[dealId];
    }

    function balanceOf(address account, address token) external view returns (uint256) {
        return _balances[account][token];
    }

    function orderState(bytes32 orderHash) external view returns (uint32 filled, bool cancelled) {
        OrderState storage state = _orderStates[orderHash];
        return (state.filled, state.cancelled);
    }

    function counterOf(address owner) external view returns (uint256) {
        return _counters[owner];
    }

    function isSettlementToken(address token) external view returns (bool) {
        return _settlementTokens[token];
    }

    /// @notice Escrow still held for a deal (zero once it reached a terminal state).
    function escrowOf(uint256 dealId) external view returns (uint256) {
        Deal storage deal = _deals[dealId];
        DealStatus status = deal.status;
        if (status == DealStatus.None || uint8(status) >= uint8(DealStatus.Settled)) return 0;
        return _escrow(deal) - _gross(deal, deal.withdrawnSeconds);
    }

    // ───────────────────────────── internal: batch opening ─────────────────────────────

    /// @dev Calls `this.openDeal` with OPEN_GAS_LIMIT on one pairing of openDeals, so that its
    ///      failure (or a signer burning gas) is isolated. openDeal's arguments are encoded exactly
    ///      as a Match tuple (same fields in the same order, offsets relative to the tuple's start),
    ///      so the pairing's calldata is forwarded as it came instead of being decoded and re-encoded
    ///      in memory; the callee decodes and validates it as for any direct call.
    /// @return opened whether openDeal succeeded (if not, the return data is its revert data)
    function _openForwarded(Match calldata m) private returns (bool opened, uint256 dealId) {
        // Malformed calldata is the submitter's mistake, not a refused pairing: it reverts the
        // batch, as decoding the Match to re-encode it did.
        _requireCanonical(m.offer);
        _requireCanonical(m.request);
        // The head (static Offer and Request inline, two offsets, dealHours) and both signatures'
        // bytes, wherever the encoding put them; Solidity checked both lie within the calldata.
        bytes calldata offerSignature = m.offerSignature;
        bytes calldata requestSignature = m.requestSignature;
        uint256 start;
        uint256 offerSignatureEnd;
        uint256 requestSignatureEnd;
        assembly ("memory-safe") {
            start := m
            // dealHours, the head's last word, is a uint32
            if shr(32, calldataload(add(m, sub(MATCH_HEAD_BYTES, 0x20)))) { revert(0, 0) }
            offerSignatureEnd := add(offerSignature.offset, offerSignature.length)
            requestSignatureEnd := add(requestSignature.offset, requestSignature.length)
        }
        uint256 end = Math.max(start + MATCH_HEAD_BYTES, Math.max(offerSignatureEnd, requestSignatureEnd));
        bytes4 selector = this.openDeal.selector;
        assembly ("memory-safe") {
            // Built past the free memory pointer and not kept, so a batch does not grow memory.
            let ptr := mload(0x40)
            mstore(ptr, selector)
            let size := sub(end, start)
            calldatacopy(add(ptr, 4), start, size)
            opened := call(OPEN_GAS_LIMIT, address(), 0, ptr, add(size, 4), 0x00, 0x20)
            dealId := mload(0x00)
        }
    }

    // ───────────────────────────── internal: calldata ─────────────────────────────

    /// @dev Reverts without data, as the ABI decoder does, if a field of the offer has bits set
    ///      beyond its type (an encoding no standard encoder produces). Fields in declaration
    ///      order, one word each; salt and counter are full words.
    function _requireCanonical(Offer calldata offer) private pure {
        assembly ("memory-safe") {
            let dirty := shr(160, calldataload(offer)) // provider
            dirty := or(dirty, shr(16, calldataload(add(offer, 0x20)))) // gpuModel
            dirty := or(dirty, shr(16, calldataload(add(offer, 0x40)))) // gpuCount
            dirty := or(dirty, shr(16, calldataload(add(offer, 0x60)))) // vramGb
            dirty := or(dirty, shr(8, calldataload(add(offer, 0x80)))) // region
            dirty := or(dirty, shr(1, calldataload(add(offer, 0xa0)))) // greenEnergy
            dirty := or(dirty, shr(160, calldataload(add(offer, 0xc0)))) // token
            dirty := or(dirty, shr(96, calldataload(add(offer, 0xe0)))) // pricePerGpuHour
            dirty := or(dirty, shr(32, calldataload(add(offer, 0x100)))) // minHours
            dirty := or(dirty, shr(32, calldataload(add(offer, 0x120)))) // maxHours
            dirty := or(dirty, shr(32, calldataload(add(offer, 0x140)))) // capacityGpuHours
            dirty := or(dirty, shr(64, calldataload(add(offer, 0x160)))) // availableUntil
            dirty := or(dirty, shr(64, calldataload(add(offer, 0x180)))) // expiry
            if dirty { revert(0, 0) }
        }
    }

    /// @dev As for offers; regionMask, jobSpecHash, salt and counter are full words.
    function _requireCanonical(Request calldata request) private pure {
        assembly ("memory-safe") {
            let dirty := shr(160, calldataload(request)) // trainer
            dirty := or(dirty, shr(16, calldataload(add(request, 0x20)))) // gpuModel
            dirty := or(dirty, shr(16, calldataload(add(request, 0x40)))) // gpuCount
            dirty := or(dirty, shr(16, calldataload(add(request, 0x60)))) // minVramGb
            dirty := or(dirty, shr(1, calldataload(add(request, 0xa0)))) // greenOnly
            dirty := or(dirty, shr(160, calldataload(add(request, 0xc0)))) // token
            dirty := or(dirty, shr(96, calldataload(add(request, 0xe0)))) // maxPricePerGpuHour
            dirty := or(dirty, shr(32, calldataload(add(request, 0x100)))) // totalHours
            dirty := or(dirty, shr(32, calldataload(add(request, 0x120)))) // minHours
            dirty := or(dirty, shr(64, calldataload(add(request, 0x140)))) // startBy
            dirty := or(dirty, shr(64, calldataload(add(request, 0x160)))) // expiry
            dirty := or(dirty, shr(8, calldataload(add(request, 0x1a0)))) // settlementRule
            if dirty { revert(0, 0) }
        }
    }

    // ───────────────────────────── internal: vault ─────────────────────────────

    function _deposit(address token, uint256 amount) private {
        if (amount == 0) revert ComputeMarketZeroAmount();
        if (!_settlementTokens[token]) revert ComputeMarketTokenNotAllowed(token);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        // Credit what actually arrived, so fee-on-transfer tokens cannot inflate balances.
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        if (received == 0) revert ComputeMarketZeroAmount();
        _balances[msg.sender][token] += received;
        emit Deposited(msg.sender, token, received);
    }

    function _credit(address account, address token, uint256 amount) private {
        if (amount != 0) _balances[account][token] += amount;
    }

    // ───────────────────────────── internal: orders ─────────────────────────────

    function _cancel(bytes32 orderHash) private {
        _orderStates[orderHash].cancelled = true;
        emit OrderCancelled(orderHash, msg.sender);
    }

    function _checkOrder(bytes32 orderHash, address owner, uint256 counter, uint64 expiry, bytes calldata signature)
        private
        view
    {
        if (block.timestamp > expiry) revert ComputeMarketOrderExpired(orderHash, expiry);
        if (_orderStates[orderHash].cancelled) revert ComputeMarketOrderCancelled(orderHash);
        uint256 current = _counters[owner];
        if (counter != current) revert ComputeMarketStaleCounter(orderHash, counter, current);
        bytes32 digest = _hashTypedDataV4(orderHash);
        // ECDSA first (low-s only, so no malleable twins): an EOA's order then costs no EXTCODESIZE
        // on its owner (a cold account access). Anything that does not recover to the owner is
        // asked of the owner as an ERC-1271 wallet; an EOA answers nothing, which is a refusal.
        // Only the error's detail (the third value) is ignored; the error itself is checked.
        // slither-disable-next-line unused-return
        (address recovered, ECDSA.RecoverError recoverError,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (recoverError == ECDSA.RecoverError.NoError && recovered == owner) return;
        if (!SignatureChecker.isValidERC1271SignatureNowCalldata(owner, digest, signature)) {
            revert ComputeMarketInvalidSignature(orderHash, owner);
        }
    }

    function _checkPair(Offer calldata offer, Request calldata request) private view {
        if (offer.token != request.token) revert ComputeMarketTokenMismatch(offer.token, request.token);
        if (!_settlementTokens[offer.token]) revert ComputeMarketTokenNotAllowed(offer.token);
        if (offer.provider == request.trainer) revert ComputeMarketSelfDeal(offer.provider);
        if (offer.pricePerGpuHour == 0 || request.gpuCount == 0) revert ComputeMarketZeroAmount();
        if (request.gpuModel != 0 && request.gpuModel != offer.gpuModel) {
            revert ComputeMarketGpuModelMismatch(offer.gpuModel, request.gpuModel);
        }
        if (offer.gpuCount < request.gpuCount) revert ComputeMarketGpuCountTooLow(offer.gpuCount, request.gpuCount);
        if (offer.vramGb < request.minVramGb) revert ComputeMarketVramTooLow(offer.vramGb, request.minVramGb);
        if ((request.regionMask >> offer.region) & 1 == 0) {
            revert ComputeMarketRegionNotAllowed(offer.region, request.regionMask);
        }
        if (request.greenOnly && !offer.greenEnergy) revert ComputeMarketGreenEnergyRequired();
        if (offer.pricePerGpuHour > request.maxPricePerGpuHour) {
            revert ComputeMarketPriceNotCrossed(offer.pricePerGpuHour, request.maxPricePerGpuHour);
        }
        if (request.settlementRule > uint8(type(SettlementRule).max)) {
            revert ComputeMarketInvalidSettlementRule(request.settlementRule);
        }
    }

    /// @dev Books the fill against both orders and returns the deal's start deadline.
    function _fill(
        Offer calldata offer,
        bytes32 offerHash,
        Request calldata request,
        bytes32 requestHash,
        uint32 dealHours
    ) private returns (uint32 startDeadline) {
        uint32 minHours = offer.minHours > request.minHours ? offer.minHours : request.minHours;
        uint32 maxHours = offer.maxHours < request.totalHours ? offer.maxHours : request.totalHours;
        if (dealHours == 0 || dealHours < minHours || dealHours > maxHours) {
            revert ComputeMarketInvalidDealHours(dealHours, minHours, maxHours);
        }

        OrderState storage offerState = _orderStates[offerHash];
        uint256 gpuHours = uint256(request.gpuCount) * dealHours;
        uint256 offerRemaining = offer.capacityGpuHours > offerState.filled
            ? offer.capacityGpuHours - offerState.filled
            : 0;
        if (gpuHours > offerRemaining) revert ComputeMarketOfferCapacityExceeded(offerHash, gpuHours, offerRemaining);

        OrderState storage requestState = _orderStates[requestHash];
        uint256 requestRemaining = request.totalHours > requestState.filled
            ? request.totalHours - requestState.filled
            : 0;
        if (dealHours > requestRemaining) {
            revert ComputeMarketRequestOverfilled(requestHash, dealHours, requestRemaining);
        }
        // Both fit in uint32: they are bounded by the orders' uint32 capacity and totalHours.
        offerState.filled += uint32(gpuHours);
        requestState.filled += dealHours;

        // The job must be able to start by the request's start-by and finish within the offer's availability.
        uint256 duration = uint256(dealHours) * SECONDS_PER_HOUR;
        uint256 latestStart = offer.availableUntil >= duration ? offer.availableUntil - duration : 0;
        latestStart = Math.min(Math.min(latestStart, request.startBy), type(uint32).max);
        if (latestStart < block.timestamp) revert ComputeMarketStartWindowClosed(latestStart, block.timestamp);
        startDeadline = uint32(latestStart);
    }

    /// @dev Stores the deal, takes its escrow from the buyer and locks the collateral. Amounts come
    ///      from the orders and the current ratios, not read back from the deal just written.
    function _createDeal(Offer calldata offer, Request calldata request, uint32 dealHours, uint32 startDeadline)
        private
        returns (uint256 dealId, uint256 escrow, uint256 collateral)
    {
        unchecked {
            // one id per transaction-level call; cannot reach 2^256
            dealId = ++dealCount;
        }
        address buyer = request.trainer;
        address provider = offer.provider;
        address token = offer.token;
        uint16 ratioBps = collateralBps;
        Deal storage deal = _deals[dealId];
        deal.buyer = buyer;
        deal.status = DealStatus.Open;
        deal.flags = (offer.greenEnergy ? FLAG_GREEN : 0) | (request.settlementRule << 1);
        deal.gpuCount = request.gpuCount;
        deal.bookedHours = dealHours;
        deal.startDeadline = startDeadline;
        deal.provider = provider;
        deal.feeBps = protocolFeeBps;
        deal.collateralBps = ratioBps;
        deal.token = token;
        deal.pricePerGpuHour = offer.pricePerGpuHour;

        escrow = uint256(offer.pricePerGpuHour) * request.gpuCount * dealHours;
        uint256 available = _balances[buyer][token];
        if (available < escrow) revert ComputeMarketInsufficientBalance(buyer, token, available, escrow);
        unchecked {
            // available >= escrow was checked just above
            _balances[buyer][token] = available - escrow;
        }
        collateral = _collateral(escrow, ratioBps);
        if (collateral != 0) staking.lock(provider, token, collateral);
    }

    function _emitDealOpened(
        uint256 dealId,
        Offer calldata offer,
        Request calldata request,
        bytes32 offerHash,
        bytes32 requestHash,
        uint32 dealHours,
        uint32 startDeadline,
        uint256 escrow,
        uint256 collateral
    ) private {
        emit DealOpened(
            dealId,
            offer.provider,
            request.trainer,
            offerHash,
            requestHash,
            request.jobSpecHash,
            offer.token,
            offer.pricePerGpuHour,
            request.gpuCount,
            dealHours,
            escrow,
            collateral,
            startDeadline
        );
    }

    // ───────────────────────────── internal: settlement ─────────────────────────────

    function _dealIn(uint256 dealId, DealStatus expected) private view returns (Deal storage deal) {
        deal = _deals[dealId];
        if (deal.status != expected) revert ComputeMarketInvalidDealStatus(dealId, deal.status);
    }

    /// @dev A deal whose provider reported completion: Completed, or Disputed after completion
    ///      (a dispute over an abandoned running deal has no result to accept or attest).
    function _reportedDeal(uint256 dealId) private view returns (Deal storage deal) {
        deal = _deals[dealId];
        DealStatus status = deal.status;
        if (status != DealStatus.Completed && !(status == DealStatus.Disputed && deal.completedAt != 0)) {
            revert ComputeMarketInvalidDealStatus(dealId, status);
        }
    }

    function _onlyProvider(Deal storage deal, uint256 dealId) private view {
        if (msg.sender != deal.provider) revert ComputeMarketUnauthorizedCaller(dealId, msg.sender);
    }

    function _rule(Deal storage deal) private view returns (SettlementRule) {
        return SettlementRule((deal.flags >> 1) & 3);
    }

    function _settle(Deal storage deal, uint256 dealId) private {
        deal.status = DealStatus.Settled;
        uint32 used = deal.usedSeconds;
        (uint256 providerPaid, uint256 buyerRefund, uint256 fee, uint256 escrow) = _payout(deal, used);
        emit DealSettled(dealId, providerPaid, buyerRefund, fee);
        _releaseCollateral(deal, escrow);
        _recordDelivery(deal, used);
    }

    function _resolve(Deal storage deal, uint256 dealId, uint32 providerSeconds, bool providerAtFault) private {
        deal.status = DealStatus.Resolved;
        deal.usedSeconds = providerSeconds;
        (uint256 providerPaid, uint256 buyerRefund, uint256 fee, uint256 escrow) = _payout(deal, providerSeconds);
        uint256 collateral = _collateral(escrow, deal.collateralBps);
        uint256 slashed = providerAtFault ? collateral : 0;
        emit DealResolved(dealId, providerPaid, buyerRefund, fee, slashed);
        if (collateral == 0) return;
        if (providerAtFault) staking.slash(deal.provider, deal.token, collateral, deal.buyer);
        else staking.unlock(deal.provider, deal.token, collateral);
    }

    /// @dev Final split for `paidSeconds` of service: pays the provider what was not yet withdrawn,
    ///      the fee to the treasury, and the unused escrow back to the buyer; also returns the escrow.
    function _payout(Deal storage deal, uint32 paidSeconds)
        private
        returns (uint256 providerPaid, uint256 buyerRefund, uint256 fee, uint256 escrow)
    {
        uint256 hourlyRate = _hourlyRate(deal);
        escrow = hourlyRate * deal.bookedHours;
        address token = deal.token;
        uint256 gross;
        (providerPaid, fee, gross) = _payProvider(deal, hourlyRate, token, deal.withdrawnSeconds, paidSeconds);
        buyerRefund = escrow - gross;
        _credit(deal.buyer, token, buyerRefund);
        _credit(treasury, token, fee);
    }

    /// @dev Credits the provider for service between two cumulative marks, net of the fee;
    ///      returns (net paid, fee, gross up to `toSeconds`). Cumulative so that rounding never
    ///      depends on how it was split. The deal's rate and token are passed in by callers that
    ///      already read them.
    function _payProvider(Deal storage deal, uint256 hourlyRate, address token, uint32 fromSeconds, uint32 toSeconds)
        private
        returns (uint256 net, uint256 fee, uint256 grossTo)
    {
        uint256 grossFrom = hourlyRate * fromSeconds / SECONDS_PER_HOUR;
        grossTo = hourlyRate * toSeconds / SECONDS_PER_HOUR;
        uint256 feeBps = deal.feeBps;
        // The fee is taken from the rounded-down gross amounts, as the money rules say.
        // slither-disable-next-line divide-before-multiply
        uint256 feeFrom = grossFrom * feeBps / BPS;
        // slither-disable-next-line divide-before-multiply
        uint256 feeTo = grossTo * feeBps / BPS;
        fee = feeTo - feeFrom;
        net = (grossTo - feeTo) - (grossFrom - feeFrom);
        _credit(deal.provider, token, net);
    }

    function _releaseCollateral(Deal storage deal, uint256 escrow) private {
        uint256 collateral = _collateral(escrow, deal.collateralBps);
        if (collateral != 0) staking.unlock(deal.provider, deal.token, collateral);
    }

    function _recordDelivery(Deal storage deal, uint32 seconds_) private {
        if (address(rewardPool) == address(0) || seconds_ == 0) return;
        uint256 gpuSeconds = uint256(deal.gpuCount) * seconds_;
        // Rewards are a bonus, never a condition of payment: if the pool refuses (e.g. its role
        // was revoked), the deal still settles and the miss is on record.
        try rewardPool.recordDelivery(deal.provider, gpuSeconds, deal.flags & FLAG_GREEN != 0) {}
        catch {
            emit DeliveryNotRecorded(deal.provider, gpuSeconds);
        }
    }

    function _elapsedSeconds(Deal storage deal) private view returns (uint32) {
        uint256 elapsed = block.timestamp - deal.startedAt;
        uint256 booked = uint256(deal.bookedHours) * SECONDS_PER_HOUR;
        // bookedHours * 3600 can exceed uint32; usage is tracked in uint32 seconds (136 years).
        return uint32(Math.min(elapsed, Math.min(booked, type(uint32).max)));
    }

    /// @dev Price of one hour of the whole deal (all its GPUs).
    function _hourlyRate(Deal storage deal) private view returns (uint256) {
        return uint256(deal.pricePerGpuHour) * deal.gpuCount;
    }

    function _escrow(Deal storage deal) private view returns (uint256) {
        return uint256(deal.pricePerGpuHour) * deal.gpuCount * deal.bookedHours;
    }

    function _gross(Deal storage deal, uint32 seconds_) private view returns (uint256) {
        return uint256(deal.pricePerGpuHour) * deal.gpuCount * seconds_ / SECONDS_PER_HOUR;
    }

    function _collateral(uint256 escrow, uint256 ratioBps) private pure returns (uint256) {
        return Math.mulDiv(escrow, ratioBps, BPS, Math.Rounding.Ceil);
    }

    function _setProtocolFee(uint16 feeBps) private {
        if (feeBps > MAX_FEE_BPS) revert ComputeMarketParameterOutOfRange(feeBps, MAX_FEE_BPS);
        protocolFeeBps = feeBps;
        emit ProtocolFeeSet(feeBps);
    }

    function _setCollateralRatio(uint16 ratioBps) private {
        if (ratioBps > BPS) revert ComputeMarketParameterOutOfRange(ratioBps, BPS);
        collateralBps = ratioBps;
        emit CollateralRatioSet(ratioBps);
    }

    function _setTreasury(address treasury_) private {
        if (treasury_ == address(0)) revert ComputeMarketZeroAddress();
        treasury = treasury_;
        emit TreasurySet(treasury_);
    }
}
