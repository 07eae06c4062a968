"""Every end of a deal's life, with the money checked to the unit."""

import pytest

from marketplace.signing import Attestation, DealStatus, SettlementRule

from strict_reverts import reverts
from market_constants import CHALLENGE_WINDOW, COLLATERAL_BPS, FEE_BPS, HOUR, USDC

PRICE = 2 * USDC  # the offer's ask per GPU-hour (factory default)
GPUS = 2
HOURS = 4
ESCROW = PRICE * GPUS * HOURS  # 16 mUSDC
COLLATERAL = ESCROW * COLLATERAL_BPS // 10_000
RESULT = "0x" + "cd" * 32


def fee_of(gross):
    return gross * FEE_BPS // 10_000


def test_open_deal__compatible_signed_orders__escrows_at_the_offer_ask(
    market, staking, usdc, open_deal, trainer, provider
):
    deal_id, offer, request, receipt = open_deal()

    deal = market.getDeal(deal_id)
    assert deal.status == DealStatus.OPEN
    assert deal.buyer == trainer.address and deal.provider == provider.address
    # Price rule: the offer's ask (2 mUSDC), not the bid ceiling (3 mUSDC).
    assert deal.pricePerGpuHour == PRICE
    assert market.balanceOf(trainer, usdc) == 1_000 * USDC - ESCROW
    assert market.escrowOf(deal_id) == ESCROW
    staked, locked, _, _ = staking.positionOf(provider, usdc)
    assert (staked, locked) == (1_000 * USDC, COLLATERAL)
    assert market.orderState(offer.struct_hash()) == (GPUS * HOURS, False)
    assert market.orderState(request.struct_hash()) == (HOURS, False)
    event = receipt.decode_logs(market.DealOpened)[0]
    assert (event.escrow, event.collateral, event.dealHours) == (ESCROW, COLLATERAL, HOURS)


def test_settle__challenge_window_passed__pays_provider_fee_and_refunds_unused(
    market, usdc, completed_deal, chain, stranger, trainer, provider, treasury, staking
):
    used = 3 * HOUR  # booked 4h, used 3h: one hour of escrow returns to the buyer
    deal_id, _, _ = completed_deal(used_seconds=used)
    chain.pending_timestamp += CHALLENGE_WINDOW

    receipt = market.settle(deal_id, sender=stranger)

    gross = PRICE * GPUS * 3
    fee = fee_of(gross)
    assert market.getDeal(deal_id).status == DealStatus.SETTLED
    assert market.balanceOf(provider, usdc) == gross - fee
    assert market.balanceOf(treasury, usdc) == fee
    assert market.balanceOf(trainer, usdc) == 1_000 * USDC - gross
    assert staking.positionOf(provider, usdc)[1] == 0  # collateral unlocked
    event = receipt.decode_logs(market.DealSettled)[0]
    assert (event.providerPaid, event.buyerRefund, event.fee) == (gross - fee, ESCROW - gross, fee)


def test_settle__usage_above_booking__cannot_be_reported(market, started_deal, chain, provider):
    deal_id, _, _ = started_deal()
    chain.pending_timestamp += 10 * HOUR
    with reverts(market.ComputeMarketInvalidUsage):
        market.completeDeal(deal_id, 5 * HOUR, RESULT, sender=provider)


def test_complete_deal__usage_beyond_elapsed_time__reverts(market, started_deal, chain, provider):
    deal_id, _, _ = started_deal()
    chain.pending_timestamp += HOUR
    with reverts(market.ComputeMarketInvalidUsage):
        market.completeDeal(deal_id, 2 * HOUR, RESULT, sender=provider)


def test_settle__inside_challenge_window__reverts(market, completed_deal, stranger):
    deal_id, _, _ = completed_deal()
    with reverts(market.ComputeMarketChallengeWindowActive):
        market.settle(deal_id, sender=stranger)


def test_accept__buyer_accepts_early__settles_immediately(market, usdc, completed_deal, trainer, provider):
    deal_id, _, _ = completed_deal(settlementRule=int(SettlementRule.BUYER_ACCEPTANCE))
    market.accept(deal_id, sender=trainer)
    assert market.getDeal(deal_id).status == DealStatus.SETTLED
    assert market.balanceOf(provider, usdc) == ESCROW - fee_of(ESCROW)


def test_settle__buyer_acceptance_rule__window_alone_does_not_settle(market, completed_deal, chain, stranger):
    deal_id, _, _ = completed_deal(settlementRule=int(SettlementRule.BUYER_ACCEPTANCE))
    chain.pending_timestamp += CHALLENGE_WINDOW
    with reverts(market.ComputeMarketSettlementRuleForbids):
        market.settle(deal_id, sender=stranger)


def test_accept__not_the_buyer__reverts(market, completed_deal, stranger):
    deal_id, _, _ = completed_deal()
    with reverts(market.ComputeMarketUnauthorizedCaller):
        market.accept(deal_id, sender=stranger)


def test_settle_with_attestation__verifier_passes__anyone_submits_and_it_settles(
    market, usdc, completed_deal, verifier, sign, stranger, provider
):
    deal_id, _, _ = completed_deal(settlementRule=int(SettlementRule.ATTESTATION))
    signature = sign(Attestation(deal_id, RESULT, True), verifier)
    market.settleWithAttestation(deal_id, RESULT, True, signature, sender=stranger)
    assert market.getDeal(deal_id).status == DealStatus.SETTLED
    assert market.balanceOf(provider, usdc) == ESCROW - fee_of(ESCROW)


def test_settle_with_attestation__verifier_fails_result__buyer_refunded_and_provider_slashed(
    market, usdc, staking, completed_deal, verifier, sign, stranger, trainer, provider
):
    deal_id, _, _ = completed_deal(settlementRule=int(SettlementRule.ATTESTATION))
    wallet_before = usdc.balanceOf(trainer)
    signature = sign(Attestation(deal_id, RESULT, False), verifier)
    receipt = market.settleWithAttestation(deal_id, RESULT, False, signature, sender=stranger)

    assert market.getDeal(deal_id).status == DealStatus.RESOLVED
    assert market.balanceOf(trainer, usdc) == 1_000 * USDC  # whole escrow back
    assert usdc.balanceOf(trainer) - wallet_before == COLLATERAL  # compensation, slashed to the buyer
    assert staking.positionOf(provider, usdc)[:2] == (1_000 * USDC - COLLATERAL, 0)
    assert receipt.decode_logs(market.DealResolved)[0].collateralSlashed == COLLATERAL


def test_settle_with_attestation__signed_by_non_verifier__reverts(market, completed_deal, stranger, sign):
    deal_id, _, _ = completed_deal()
    signature = sign(Attestation(deal_id, RESULT, True), stranger)
    with reverts(market.ComputeMarketInvalidAttestation):
        market.settleWithAttestation(deal_id, RESULT, True, signature, sender=stranger)


def test_settle_with_attestation__other_result_hash__reverts(market, completed_deal, verifier, sign, stranger):
    deal_id, _, _ = completed_deal()
    other = "0x" + "ee" * 32
    signature = sign(Attestation(deal_id, other, True), verifier)
    with reverts(market.ComputeMarketResultHashMismatch):
        market.settleWithAttestation(deal_id, other, True, signature, sender=stranger)


def test_settle_with_attestation__attestation_for_another_deal__reverts(
    market, completed_deal, verifier, sign, stranger
):
    deal_id, _, _ = completed_deal()
    signature = sign(Attestation(deal_id + 1, RESULT, True), verifier)
    with reverts(market.ComputeMarketInvalidAttestation):
        market.settleWithAttestation(deal_id, RESULT, True, signature, sender=stranger)


def test_claim_refund__provider_never_started__buyer_refunded_and_compensated(
    market, usdc, staking, open_deal, chain, stranger, trainer, provider
):
    deal_id, _, request, _ = open_deal()
    wallet_before = usdc.balanceOf(trainer)
    chain.pending_timestamp = request.startBy + 1

    market.claimRefund(deal_id, sender=stranger)

    assert market.getDeal(deal_id).status == DealStatus.REFUNDED
    assert market.balanceOf(trainer, usdc) == 1_000 * USDC
    assert usdc.balanceOf(trainer) - wallet_before == COLLATERAL
    assert staking.positionOf(provider, usdc)[:2] == (1_000 * USDC - COLLATERAL, 0)


def test_claim_refund__before_start_deadline__reverts(market, open_deal, stranger):
    deal_id, _, _, _ = open_deal()
    with reverts(market.ComputeMarketStartDeadlineNotPassed):
        market.claimRefund(deal_id, sender=stranger)


def test_start_deal__after_start_deadline__reverts(market, open_deal, chain, provider):
    deal_id, _, request, _ = open_deal()
    chain.pending_timestamp = request.startBy + 1
    with reverts(market.ComputeMarketStartDeadlinePassed):
        market.startDeal(deal_id, sender=provider)


def test_start_deal__not_the_provider__reverts(market, open_deal, trainer):
    deal_id, _, _, _ = open_deal()
    with reverts(market.ComputeMarketUnauthorizedCaller):
        market.startDeal(deal_id, sender=trainer)


def test_abort__buyer_stops_after_90_minutes__pays_pro_rata(
    market, usdc, staking, started_deal, chain, trainer, provider, treasury
):
    deal_id, _, _ = started_deal()
    started_at = market.getDeal(deal_id).startedAt
    chain.pending_timestamp = started_at + 90 * 60

    market.abort(deal_id, sender=trainer)

    gross = PRICE * GPUS * 90 * 60 // HOUR
    assert market.getDeal(deal_id).status == DealStatus.ABORTED
    assert market.balanceOf(provider, usdc) == gross - fee_of(gross)
    assert market.balanceOf(treasury, usdc) == fee_of(gross)
    assert market.balanceOf(trainer, usdc) == 1_000 * USDC - gross
    assert staking.positionOf(provider, usdc)[1] == 0


def test_abort__not_the_buyer__reverts(market, started_deal, provider):
    deal_id, _, _ = started_deal()
    with reverts(market.ComputeMarketUnauthorizedCaller):
        market.abort(deal_id, sender=provider)


def test_withdraw_accrued__running_deal__provider_draws_rate_times_elapsed_and_settlement_adds_up(
    market, usdc, started_deal, chain, provider, trainer, treasury
):
    deal_id, _, _ = started_deal()
    started_at = market.getDeal(deal_id).startedAt
    chain.pending_timestamp = started_at + 1234  # an awkward number of seconds, to exercise rounding
    market.withdrawAccrued(deal_id, sender=provider)
    first_gross = PRICE * GPUS * 1234 // HOUR
    assert market.balanceOf(provider, usdc) == first_gross - fee_of(first_gross)

    chain.pending_timestamp = started_at + 4 * HOUR
    market.completeDeal(deal_id, 4 * HOUR - 7, RESULT, sender=provider)
    market.accept(deal_id, sender=trainer)

    gross = PRICE * GPUS * (4 * HOUR - 7) // HOUR
    # Cumulative accounting: identical to a single settlement of the same usage.
    assert market.balanceOf(provider, usdc) == gross - fee_of(gross)
    assert market.balanceOf(treasury, usdc) == fee_of(gross)
    assert market.balanceOf(trainer, usdc) == 1_000 * USDC - gross


def test_withdraw_accrued__booking_fully_drawn__second_withdrawal_reverts(market, started_deal, chain, provider):
    deal_id, _, _ = started_deal()
    chain.pending_timestamp += HOURS * HOUR + 600  # accrual stops at the booked time
    market.withdrawAccrued(deal_id, sender=provider)
    chain.pending_timestamp += 600
    with reverts(market.ComputeMarketNothingAccrued):
        market.withdrawAccrued(deal_id, sender=provider)


def test_complete_deal__usage_below_withdrawn__reverts(market, started_deal, chain, provider):
    deal_id, _, _ = started_deal()
    chain.pending_timestamp += 1800
    market.withdrawAccrued(deal_id, sender=provider)
    with reverts(market.ComputeMarketInvalidUsage):
        market.completeDeal(deal_id, 60, RESULT, sender=provider)


def test_dispute__arbiter_finds_provider_at_fault__buyer_refunded_and_compensated(
    market, usdc, staking, completed_deal, trainer, arbiter, provider
):
    deal_id, _, _ = completed_deal()
    wallet_before = usdc.balanceOf(trainer)
    market.dispute(deal_id, sender=trainer)
    assert market.getDeal(deal_id).status == DealStatus.DISPUTED

    market.resolveDispute(deal_id, 1 * HOUR, True, sender=arbiter)

    gross = PRICE * GPUS * 1
    assert market.getDeal(deal_id).status == DealStatus.RESOLVED
    assert market.balanceOf(provider, usdc) == gross - fee_of(gross)
    assert market.balanceOf(trainer, usdc) == 1_000 * USDC - gross
    assert usdc.balanceOf(trainer) - wallet_before == COLLATERAL
    assert staking.positionOf(provider, usdc)[:2] == (1_000 * USDC - COLLATERAL, 0)


def test_dispute__arbiter_sides_with_provider__paid_in_full_collateral_unlocked(
    market, usdc, staking, completed_deal, trainer, arbiter, provider
):
    deal_id, _, _ = completed_deal()
    market.dispute(deal_id, sender=trainer)
    market.resolveDispute(deal_id, HOURS * HOUR, False, sender=arbiter)
    assert market.balanceOf(provider, usdc) == ESCROW - fee_of(ESCROW)
    assert staking.positionOf(provider, usdc)[:2] == (1_000 * USDC, 0)


def test_dispute__after_challenge_window__reverts(market, completed_deal, chain, trainer):
    deal_id, _, _ = completed_deal()
    chain.pending_timestamp += CHALLENGE_WINDOW
    with reverts(market.ComputeMarketChallengeWindowOver):
        market.dispute(deal_id, sender=trainer)


def test_dispute__running_deal_abandoned_past_booking__buyer_may_dispute(
    market, started_deal, chain, trainer, arbiter
):
    deal_id, _, _ = started_deal()
    deal = market.getDeal(deal_id)
    chain.pending_timestamp = deal.startedAt + HOURS * HOUR + CHALLENGE_WINDOW
    market.dispute(deal_id, sender=trainer)
    market.resolveDispute(deal_id, 0, True, sender=arbiter)
    assert market.getDeal(deal_id).status == DealStatus.RESOLVED


def test_dispute__running_deal_within_booking__reverts(market, started_deal, trainer):
    deal_id, _, _ = started_deal()
    with reverts(market.ComputeMarketChallengeWindowActive):
        market.dispute(deal_id, sender=trainer)


def test_resolve_dispute__not_arbiter__reverts(market, completed_deal, trainer, stranger):
    deal_id, _, _ = completed_deal()
    market.dispute(deal_id, sender=trainer)
    with reverts(market.AccessControlUnauthorizedAccount):
        market.resolveDispute(deal_id, 0, True, sender=stranger)


def test_settle_many__mixed_batch__settles_only_ready_deals(market, completed_deal, open_deal, chain, stranger):
    ready = [completed_deal()[0] for _ in range(3)]
    not_ready, _, _, _ = open_deal()
    chain.pending_timestamp += CHALLENGE_WINDOW
    receipt = market.settleMany([*ready, not_ready, 999], sender=stranger)
    assert len(receipt.decode_logs(market.DealSettled)) == 3
    assert [market.getDeal(i).status for i in ready] == [DealStatus.SETTLED] * 3
    assert market.getDeal(not_ready).status == DealStatus.OPEN


@pytest.mark.parametrize("terminal", ["settle", "refund", "abort", "resolve"])
def test_terminal_states__any_further_action__reverts(
    terminal, market, completed_deal, open_deal, started_deal, chain, stranger, trainer, provider, arbiter
):
    if terminal == "settle":
        deal_id, _, _ = completed_deal()
        chain.pending_timestamp += CHALLENGE_WINDOW
        market.settle(deal_id, sender=stranger)
    elif terminal == "refund":
        deal_id, _, request, _ = open_deal()
        chain.pending_timestamp = request.startBy + 1
        market.claimRefund(deal_id, sender=stranger)
    elif terminal == "abort":
        deal_id, _, _ = started_deal()
        market.abort(deal_id, sender=trainer)
    else:
        deal_id, _, _ = completed_deal()
        market.dispute(deal_id, sender=trainer)
        market.resolveDispute(deal_id, 0, True, sender=arbiter)
    status = market.getDeal(deal_id).status
    chain.pending_timestamp += 30 * 24 * HOUR
    for call, sender in [
        (lambda s: market.settle(deal_id, sender=s), stranger),
        (lambda s: market.claimRefund(deal_id, sender=s), stranger),
        (lambda s: market.startDeal(deal_id, sender=s), provider),
        (lambda s: market.completeDeal(deal_id, 0, RESULT, sender=s), provider),
        (lambda s: market.abort(deal_id, sender=s), trainer),
        (lambda s: market.accept(deal_id, sender=s), trainer),
        (lambda s: market.dispute(deal_id, sender=s), trainer),
        (lambda s: market.withdrawAccrued(deal_id, sender=s), provider),
        (lambda s: market.resolveDispute(deal_id, 0, True, sender=s), arbiter),
    ]:
        with reverts(market.ComputeMarketInvalidDealStatus):
            call(sender)
    assert market.getDeal(deal_id).status == status
    assert market.escrowOf(deal_id) == 0


def test_settle__reward_pool_refuses_to_record__deal_still_settles_and_miss_is_logged(
    market, reward_pool, admin, usdc, completed_deal, chain, stranger, provider
):
    reward_pool.revokeRole(reward_pool.RECORDER_ROLE(), market, sender=admin)
    deal_id, _, _ = completed_deal()
    chain.pending_timestamp += CHALLENGE_WINDOW

    receipt = market.settle(deal_id, sender=stranger)

    assert market.getDeal(deal_id).status == DealStatus.SETTLED
    assert market.balanceOf(provider, usdc) == ESCROW - fee_of(ESCROW)
    [missed] = receipt.decode_logs(market.DeliveryNotRecorded)
    assert (missed.event_arguments["provider"], missed.gpuSeconds) == (provider.address, GPUS * HOURS * HOUR)
