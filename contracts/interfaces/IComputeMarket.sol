// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ComputeMarket interface
/// @notice Types, errors and events of the GPU-hour market: a vault of internal balances,
///         EIP-712 signed offers and requests, and deals escrowed until a settlement condition holds.
interface IComputeMarket {
    // ───────────────────────────── types ─────────────────────────────

    /// @notice A provider's signed ask. Capacity is in GPU-hours across all deals it fills.
    struct Offer {
        address provider;
        uint16 gpuModel;
        uint16 gpuCount;
        uint16 vramGb;
        uint8 region;
        bool greenEnergy;
        address token;
        uint96 pricePerGpuHour;
        uint32 minHours;
        uint32 maxHours;
        uint32 capacityGpuHours;
        uint64 availableUntil;
        uint64 expiry;
        uint256 salt;
        uint256 counter;
    }

    /// @notice A trainer's signed bid. `gpuModel` 0 means any model; `regionMask` bit r allows region r.
    struct Request {
        address trainer;
        uint16 gpuModel;
        uint16 gpuCount;
        uint16 minVramGb;
        uint256 regionMask;
        bool greenOnly;
        address token;
        uint96 maxPricePerGpuHour;
        uint32 totalHours;
        uint32 minHours;
        uint64 startBy;
        uint64 expiry;
        bytes32 jobSpecHash;
        uint8 settlementRule;
        uint256 salt;
        uint256 counter;
    }

    /// @notice One pairing for `openDeals`.
    struct Match {
        Offer offer;
        bytes offerSignature;
        Request request;
        bytes requestSignature;
        uint32 dealHours;
    }

    /// @notice How a completed deal may settle (chosen by the trainer in the request).
    enum SettlementRule {
        ChallengeWindow, // anyone settles once the challenge window passed without dispute
        BuyerAcceptance, // only the buyer's acceptance (or a verifier / the arbiter) settles
        Attestation // only a verifier's attestation (or the arbiter) settles
    }

    enum DealStatus {
        None,
        Open,
        Running,
        Completed,
        Disputed,
        Settled,
        Refunded,
        Aborted,
        Resolved
    }

    /// @notice A deal as stored: four slots, fixed at open except the lifecycle fields.
    struct Deal {
        // slot 0
        address buyer;
        DealStatus status;
        uint8 flags; // bit 0: green energy; bits 1-2: SettlementRule
        uint16 gpuCount;
        uint32 bookedHours;
        uint32 startDeadline;
        // slot 1
        address provider;
        uint32 startedAt;
        uint32 completedAt;
        uint16 feeBps; // snapshot at open, so a later fee change never reprices a deal
        uint16 collateralBps;
        // slot 2
        address token;
        uint96 pricePerGpuHour;
        // slot 3 (written after open)
        uint32 usedSeconds;
        uint32 withdrawnSeconds;
        // slot 4
        bytes32 resultHash;
    }

    // ───────────────────────────── errors ─────────────────────────────

    /// @notice Thrown when an amount is zero.
    error ComputeMarketZeroAmount();
    /// @notice Thrown when a token is not whitelisted for settlement.
    error ComputeMarketTokenNotAllowed(address token);
    /// @notice Thrown when a vault balance does not cover `needed`.
    error ComputeMarketInsufficientBalance(address account, address token, uint256 available, uint256 needed);
    /// @notice Thrown when the offer's and the request's settlement tokens differ.
    error ComputeMarketTokenMismatch(address offerToken, address requestToken);
    /// @notice Thrown when a signature is not the order owner's (EOA or ERC-1271 wallet).
    error ComputeMarketInvalidSignature(bytes32 orderHash, address signer);
    /// @notice Thrown when an order is past its expiry.
    error ComputeMarketOrderExpired(bytes32 orderHash, uint256 expiry);
    /// @notice Thrown when an order was cancelled.
    error ComputeMarketOrderCancelled(bytes32 orderHash);
    /// @notice Thrown when an order was signed under a counter its owner has since moved past.
    error ComputeMarketStaleCounter(bytes32 orderHash, uint256 signedCounter, uint256 currentCounter);
    /// @notice Thrown when a caller cancels an order that is not theirs.
    error ComputeMarketNotOrderOwner(bytes32 orderHash, address owner, address caller);
    /// @notice Thrown when provider and buyer are the same account.
    error ComputeMarketSelfDeal(address account);
    /// @notice Thrown when the request names a GPU model the offer does not have.
    error ComputeMarketGpuModelMismatch(uint16 offered, uint16 requested);
    /// @notice Thrown when the offer has fewer GPUs than requested.
    error ComputeMarketGpuCountTooLow(uint16 offered, uint16 requested);
    /// @notice Thrown when the offer's VRAM is below the request's minimum.
    error ComputeMarketVramTooLow(uint16 offered, uint16 required);
    /// @notice Thrown when the offer's region is not in the request's allowed set.
    error ComputeMarketRegionNotAllowed(uint8 region, uint256 regionMask);
    /// @notice Thrown when the request requires green energy and the offer is not.
    error ComputeMarketGreenEnergyRequired();
    /// @notice Thrown when the ask exceeds the bid.
    error ComputeMarketPriceNotCrossed(uint256 ask, uint256 maxBid);
    /// @notice Thrown when the deal's hours are outside both orders' bounds.
    error ComputeMarketInvalidDealHours(uint32 dealHours, uint32 minHours, uint32 maxHours);
    /// @notice Thrown when a fill exceeds the offer's remaining GPU-hour capacity.
    error ComputeMarketOfferCapacityExceeded(bytes32 offerHash, uint256 requested, uint256 remaining);
    /// @notice Thrown when a fill exceeds the request's remaining hours.
    error ComputeMarketRequestOverfilled(bytes32 requestHash, uint256 requested, uint256 remaining);
    /// @notice Thrown when the job could no longer start in time (start-by or availability passed).
    error ComputeMarketStartWindowClosed(uint256 startDeadline, uint256 nowTime);
    /// @notice Thrown when the settlement rule is unknown.
    error ComputeMarketInvalidSettlementRule(uint8 rule);
    /// @notice Thrown when an action needs a deal in another state.
    error ComputeMarketInvalidDealStatus(uint256 dealId, DealStatus current);
    /// @notice Thrown when the caller is not the party the action belongs to.
    error ComputeMarketUnauthorizedCaller(uint256 dealId, address caller);
    /// @notice Thrown when a provider starts after the start deadline.
    error ComputeMarketStartDeadlinePassed(uint256 dealId, uint256 startDeadline);
    /// @notice Thrown when a refund is claimed before the start deadline passed.
    error ComputeMarketStartDeadlineNotPassed(uint256 dealId, uint256 startDeadline);
    /// @notice Thrown when reported usage exceeds wall time since start, or is below what was already withdrawn.
    error ComputeMarketInvalidUsage(uint256 dealId, uint256 usedSeconds, uint256 minSeconds, uint256 maxSeconds);
    /// @notice Thrown when a deal is settled before its challenge window ends.
    error ComputeMarketChallengeWindowActive(uint256 dealId, uint256 endsAt);
    /// @notice Thrown when a dispute is raised after the challenge window ended.
    error ComputeMarketChallengeWindowOver(uint256 dealId, uint256 endedAt);
    /// @notice Thrown when the deal's settlement rule does not allow this way of settling.
    error ComputeMarketSettlementRuleForbids(uint256 dealId, SettlementRule rule);
    /// @notice Thrown when an attestation is not signed by a registered verifier.
    error ComputeMarketInvalidAttestation(uint256 dealId, address signer);
    /// @notice Thrown when an attestation names another result than the provider reported.
    error ComputeMarketResultHashMismatch(uint256 dealId, bytes32 reported, bytes32 attested);
    /// @notice Thrown when nothing has accrued since the last withdrawal.
    error ComputeMarketNothingAccrued(uint256 dealId);
    /// @notice Thrown when a fee, collateral ratio or window is outside its bounds.
    error ComputeMarketParameterOutOfRange(uint256 value, uint256 maximum);
    /// @notice Thrown when a batch runs too low on gas to attempt its next pairing, so an
    ///         under-funded transaction reverts instead of recording out-of-gas as refused pairings.
    error ComputeMarketInsufficientGas(uint256 available, uint256 required);
    /// @notice Thrown when a zero address is given where an account is required.
    error ComputeMarketZeroAddress();

    // ───────────────────────────── events ─────────────────────────────

    event Deposited(address indexed account, address indexed token, uint256 amount);
    event Withdrawn(address indexed account, address indexed token, uint256 amount);
    event SettlementTokenSet(address indexed token, bool allowed);
    event OrderCancelled(bytes32 indexed orderHash, address indexed owner);
    event CounterIncremented(address indexed owner, uint256 newCounter);
    /// @notice Emitted when a deal opens; carries everything an indexer needs to rebuild it.
    event DealOpened(
        uint256 indexed dealId,
        address indexed provider,
        address indexed buyer,
        bytes32 offerHash,
        bytes32 requestHash,
        bytes32 jobSpecHash,
        address token,
        uint256 pricePerGpuHour,
        uint16 gpuCount,
        uint32 dealHours,
        uint256 escrow,
        uint256 collateral,
        uint32 startDeadline
    );
    /// @notice Emitted by openDeals for a pairing that could not open (the batch goes on).
    event DealOpenFailed(uint256 indexed index, bytes reason);
    event DealStarted(uint256 indexed dealId, uint256 startedAt);
    event DealCompleted(uint256 indexed dealId, uint256 usedSeconds, bytes32 resultHash);
    event AccruedWithdrawn(uint256 indexed dealId, address indexed provider, uint256 amount, uint256 paidSeconds);
    event DealDisputed(uint256 indexed dealId, address indexed buyer);
    /// @notice Emitted when a deal pays out: provider share (net of fee and earlier withdrawals), buyer refund, fee.
    event DealSettled(uint256 indexed dealId, uint256 providerPaid, uint256 buyerRefund, uint256 fee);
    event DealRefunded(uint256 indexed dealId, uint256 buyerRefund, uint256 collateralSlashed);
    event DealAborted(uint256 indexed dealId, uint256 providerPaid, uint256 buyerRefund, uint256 fee);
    event DealResolved(
        uint256 indexed dealId, uint256 providerPaid, uint256 buyerRefund, uint256 fee, uint256 collateralSlashed
    );
    /// @notice Emitted when the RewardPool refused to record a settled deal's delivered work.
    event DeliveryNotRecorded(address indexed provider, uint256 gpuSeconds);
    event ProtocolFeeSet(uint256 feeBps);
    event CollateralRatioSet(uint256 collateralBps);
    event TreasurySet(address indexed treasury);
}
