"""Orders and deal opening: every way openDeal refuses a pairing (its custom error, its values, and
nothing moved), partial fills, openDeals batches, cancellation and counters, front-running.

The lifecycle after opening is test_market_lifecycle.py's; signatures and EIP-712 hashing are
test_eip712_parity.py's.
"""

from __future__ import annotations


import pytest

from marketplace.signing import DealStatus, SettlementRule, region_mask

from market_constants import COLLATERAL_BPS, DAY, GPU_H100, HOUR, USDC
from strict_reverts import encoded, reverts, revert_data, selector  # noqa: F401

# Factory defaults (conftest make_offer / make_request): 2 H100 for 4 hours at the offer's 2 mUSDC ask.
PRICE = 2 * USDC
GPUS = 2
HOURS = 4
ESCROW = PRICE * GPUS * HOURS  # 16 mUSDC
COLLATERAL = -(-ESCROW * COLLATERAL_BPS // 10_000)  # rounded up, as the contract does
VAULT = 1_000 * USDC
STAKE = 1_000 * USDC


# Every session/module fixture, requested from the first test on, so Ape's snapshot isolation
# never has to rebase (which is slow and replays the module's funding).
pytestmark = pytest.mark.usefixtures(
    "market", "staking", "usdc", "dai", "credit", "admin", "provider", "trainer", "matcher", "stranger",
    "treasury", "newcomer", "signer_of", "now", "make_offer", "make_request", "sign", "fund_vault",
    "fund_stake", "funded_parties",
)


# ───────────────────────────── helpers ─────────────────────────────


# ───────────────────────────── fixtures ─────────────────────────────


@pytest.fixture(scope="module", autouse=True)
def funded_parties(fund_vault, fund_stake, trainer, provider, usdc):
    """Trainer: 1,000 mUSDC in the vault; provider: 1,000 mUSDC staked. Module-scoped, so Ape
    snapshots it once and every test starts from it."""
    fund_vault(trainer, usdc, VAULT)
    fund_stake(provider, usdc, STAKE)


@pytest.fixture(scope="module")
def newcomer(accounts):
    """An account with nothing in the vault and nothing staked (accounts[9], no fixture role)."""
    return accounts[9]


@pytest.fixture(scope="module")
def signer_of(accounts):
    owners = {a.address: a for a in accounts}
    return lambda address: owners[address]


@pytest.fixture
def pairing(sign, signer_of):
    """A `Match` tuple for openDeals, each order signed by its owner."""

    def make(offer, request, hours=HOURS):
        return (
            offer.as_tuple(),
            sign(offer, signer_of(offer.provider)),
            request.as_tuple(),
            sign(request, signer_of(request.trainer)),
            hours,
        )

    return make


@pytest.fixture
def submit(market, pairing, matcher):
    """openDeal for an offer and a request signed by their owners (the matcher submits by default)."""

    def do(offer, request, hours=HOURS, *, by=None):
        return market.openDeal(*pairing(offer, request, hours), sender=by or matcher)

    return do


@pytest.fixture
def ledger(market, staking, usdc):
    """Everything opening a deal could move, to show a refused pairing moved nothing."""

    def read(offer, request):
        return dict(
            buyer_vault=market.balanceOf(request.trainer, usdc),
            provider_stake=tuple(staking.positionOf(offer.provider, usdc)),
            offer_state=tuple(market.orderState(offer.struct_hash())),
            request_state=tuple(market.orderState(request.struct_hash())),
            deals=market.dealCount(),
            market_usdc=usdc.balanceOf(market),
            staking_usdc=usdc.balanceOf(staking),
        )

    return read


@pytest.fixture
def assert_rejected(submit, ledger):
    """Submit the pair, expect `error` with `error_inputs`, and check nothing moved."""

    def check(offer, request, error, *, hours=HOURS, by=None, **error_inputs):
        before = ledger(offer, request)
        with reverts(error, **error_inputs):
            submit(offer, request, hours, by=by)
        assert ledger(offer, request) == before

    return check


def opened(market, receipt):
    return receipt.decode_logs(market.DealOpened)


# ───────────────────────────── pair compatibility ─────────────────────────────


def test_open_deal__orders_in_different_tokens__reverts_token_mismatch(
    market, usdc, dai, make_offer, make_request, assert_rejected
):
    assert_rejected(
        make_offer(), make_request(token=dai.address),
        market.ComputeMarketTokenMismatch, offerToken=usdc.address, requestToken=dai.address,
    )


def test_open_deal__token_never_whitelisted__reverts_token_not_allowed(
    market, credit, make_offer, make_request, assert_rejected
):
    assert_rejected(
        make_offer(token=credit.address), make_request(token=credit.address),
        market.ComputeMarketTokenNotAllowed, token=credit.address,
    )


def test_open_deal__token_delisted_after_signing__reverts_token_not_allowed(
    market, usdc, admin, make_offer, make_request, assert_rejected
):
    offer, request = make_offer(), make_request()
    market.setSettlementToken(usdc, False, sender=admin)
    assert_rejected(offer, request, market.ComputeMarketTokenNotAllowed, token=usdc.address)


def test_open_deal__provider_buys_own_offer__reverts_self_deal(
    market, provider, make_offer, make_request, assert_rejected
):
    assert_rejected(
        make_offer(), make_request(trainer=provider.address),
        market.ComputeMarketSelfDeal, account=provider.address,
    )


@pytest.mark.parametrize("zeroed", ["offer_price", "request_gpu_count"])
def test_open_deal__zero_price_or_zero_gpus__reverts_zero_amount(
    zeroed, market, make_offer, make_request, assert_rejected
):
    offer = make_offer(pricePerGpuHour=0) if zeroed == "offer_price" else make_offer()
    request = make_request(gpuCount=0) if zeroed == "request_gpu_count" else make_request()
    assert_rejected(offer, request, market.ComputeMarketZeroAmount)


def test_open_deal__request_names_another_gpu_model__reverts_gpu_model_mismatch(
    market, make_offer, make_request, assert_rejected
):
    assert_rejected(
        make_offer(gpuModel=GPU_H100), make_request(gpuModel=GPU_H100 + 1),
        market.ComputeMarketGpuModelMismatch, offered=GPU_H100, requested=GPU_H100 + 1,
    )


def test_open_deal__more_gpus_requested_than_offered__reverts_gpu_count_too_low(
    market, make_offer, make_request, assert_rejected
):
    assert_rejected(
        make_offer(gpuCount=8), make_request(gpuCount=9),
        market.ComputeMarketGpuCountTooLow, offered=8, requested=9,
    )


def test_open_deal__offer_vram_below_minimum__reverts_vram_too_low(
    market, make_offer, make_request, assert_rejected
):
    assert_rejected(
        make_offer(vramGb=80), make_request(minVramGb=81),
        market.ComputeMarketVramTooLow, offered=80, required=81,
    )


def test_open_deal__green_only_request_and_grey_offer__reverts_green_energy_required(
    market, make_offer, make_request, assert_rejected
):
    assert_rejected(
        make_offer(greenEnergy=False), make_request(greenOnly=True), market.ComputeMarketGreenEnergyRequired
    )


def test_open_deal__ask_one_unit_above_bid__reverts_price_not_crossed(
    market, make_offer, make_request, assert_rejected
):
    assert_rejected(
        make_offer(pricePerGpuHour=PRICE), make_request(maxPricePerGpuHour=PRICE - 1),
        market.ComputeMarketPriceNotCrossed, ask=PRICE, maxBid=PRICE - 1,
    )


def test_open_deal__unknown_settlement_rule__reverts_invalid_settlement_rule(
    market, make_offer, make_request, assert_rejected
):
    rule = max(SettlementRule) + 1
    assert_rejected(
        make_offer(), make_request(settlementRule=rule), market.ComputeMarketInvalidSettlementRule, rule=rule
    )


def test_open_deal__every_requirement_met_exactly__opens_at_the_ask(
    market, make_offer, make_request, submit, usdc, trainer
):
    # Each bound inclusive: GPUs, VRAM, price, green, and hours = both orders' min = max.
    offer = make_offer(gpuCount=GPUS, vramGb=40, pricePerGpuHour=PRICE, greenEnergy=True, minHours=HOURS)
    request = make_request(gpuCount=GPUS, minVramGb=40, maxPricePerGpuHour=PRICE, greenOnly=True, minHours=HOURS)

    event = opened(market, submit(offer, request, HOURS))[0]

    assert (event.pricePerGpuHour, event.gpuCount, event.dealHours, event.escrow) == (PRICE, GPUS, HOURS, ESCROW)
    assert market.balanceOf(trainer, usdc) == VAULT - ESCROW


def test_open_deal__request_gpu_model_zero__matches_offers_of_any_model(
    market, make_offer, make_request, submit
):
    request = make_request(gpuModel=0, totalHours=4)
    h100, other = make_offer(gpuModel=GPU_H100), make_offer(gpuModel=GPU_H100 + 4)

    first = opened(market, submit(h100, request, 2))[0]
    second = opened(market, submit(other, request, 2))[0]

    assert [first.offerHash, second.offerHash] == [h100.struct_hash(), other.struct_hash()]
    assert market.orderState(request.struct_hash()) == (4, False)


@pytest.mark.parametrize(
    "region, allowed, opens",
    [
        (0, [0], True),  # lowest bit
        (255, [255], True),  # highest bit of the uint256 mask
        (200, [3, 17, 200], True),  # one of several
        (1, [0, 2], False),  # both neighbours allowed, the region itself not
        (255, list(range(255)), False),  # every bit but the region's
    ],
)
def test_open_deal__region_against_request_mask__opens_only_when_the_regions_bit_is_set(
    region, allowed, opens, market, make_offer, make_request, submit, assert_rejected
):
    mask = region_mask(*allowed)
    offer, request = make_offer(region=region), make_request(regionMask=mask)
    if opens:
        assert opened(market, submit(offer, request))[0].offerHash == offer.struct_hash()
    else:
        assert_rejected(offer, request, market.ComputeMarketRegionNotAllowed, region=region, regionMask=mask)


# ───────────────────────────── hours, time windows, expiry ─────────────────────────────


@pytest.mark.parametrize(
    "offer_bounds, request_bounds, hours, deal_bounds",
    [
        ((2, 24), (1, 4), 0, (2, 4)),  # zero hours
        ((2, 24), (1, 4), 1, (2, 4)),  # below the offer's minimum
        ((2, 24), (3, 4), 2, (3, 4)),  # below the request's minimum
        ((2, 24), (1, 4), 5, (2, 4)),  # above the request's total
        ((2, 3), (1, 4), 4, (2, 3)),  # above the offer's maximum
    ],
)
def test_open_deal__front_runner_picks_hours_outside_both_orders_bounds__reverts_invalid_deal_hours(
    offer_bounds, request_bounds, hours, deal_bounds, market, make_offer, make_request, assert_rejected, stranger
):
    offer = make_offer(minHours=offer_bounds[0], maxHours=offer_bounds[1])
    request = make_request(minHours=request_bounds[0], totalHours=request_bounds[1])
    assert_rejected(
        offer, request, market.ComputeMarketInvalidDealHours, hours=hours, by=stranger,
        dealHours=hours, minHours=deal_bounds[0], maxHours=deal_bounds[1],
    )


def test_open_deal__hours_inside_both_bounds__books_those_hours_and_leaves_the_rest_fillable(
    market, make_offer, make_request, submit, stranger, usdc, trainer
):
    offer, request = make_offer(minHours=2), make_request(minHours=1, totalHours=4)

    event = opened(market, submit(offer, request, 2, by=stranger))[0]

    assert (event.dealHours, event.escrow) == (2, PRICE * GPUS * 2)
    assert market.orderState(request.struct_hash()) == (2, False)
    assert market.balanceOf(trainer, usdc) == VAULT - PRICE * GPUS * 2


def test_open_deal__start_deadline__is_the_earlier_of_start_by_and_availability_minus_duration(
    market, make_offer, make_request, submit, now
):
    t = now()
    short_availability = make_offer(availableUntil=t + 10 * HOUR)
    late_start = make_request(startBy=t + DAY)
    early_start = make_request(startBy=t + 2 * HOUR)

    bounded_by_offer = opened(market, submit(short_availability, late_start))[0]
    bounded_by_request = opened(market, submit(make_offer(availableUntil=t + 7 * DAY), early_start))[0]

    assert bounded_by_offer.startDeadline == t + 10 * HOUR - HOURS * HOUR
    assert bounded_by_request.startDeadline == t + 2 * HOUR
    assert market.getDeal(bounded_by_offer.dealId).startDeadline == bounded_by_offer.startDeadline


def test_open_deal__request_start_by_passed__reverts_start_window_closed(
    market, make_offer, make_request, assert_rejected, chain, now
):
    request = make_request(startBy=now() + HOUR, expiry=now() + DAY)
    offer = make_offer()
    chain.pending_timestamp += 2 * HOUR
    assert_rejected(offer, request, market.ComputeMarketStartWindowClosed, startDeadline=request.startBy)


def test_open_deal__offer_availability_ends_before_the_job_could__reverts_start_window_closed_unless_shorter(
    market, make_offer, make_request, assert_rejected, submit, now
):
    offer = make_offer(availableUntil=now() + 3 * HOUR)
    request = make_request(totalHours=4)
    assert_rejected(
        offer, request, market.ComputeMarketStartWindowClosed, hours=4, startDeadline=offer.availableUntil - 4 * HOUR
    )
    # Two hours still fit before the box goes away.
    assert opened(market, submit(offer, request, 2))[0].startDeadline == offer.availableUntil - 2 * HOUR


@pytest.mark.parametrize("expired", ["offer", "request"])
def test_open_deal__order_past_expiry__reverts_order_expired(
    expired, market, make_offer, make_request, assert_rejected, chain, now
):
    offer = make_offer(expiry=now() + (HOUR if expired == "offer" else DAY))
    request = make_request(expiry=now() + (HOUR if expired == "request" else DAY))
    order = offer if expired == "offer" else request
    chain.pending_timestamp = order.expiry + 1
    assert_rejected(
        offer, request, market.ComputeMarketOrderExpired, orderHash=order.struct_hash(), expiry=order.expiry
    )


def test_open_deal__at_the_expiry_second__still_opens(market, make_offer, make_request, submit, chain, now):
    offer = make_offer(expiry=now() + HOUR)
    chain.pending_timestamp = offer.expiry
    receipt = submit(offer, make_request())
    assert chain.blocks.head.timestamp == offer.expiry
    assert len(opened(market, receipt)) == 1


# ───────────────────────────── vault and collateral ─────────────────────────────


def test_open_deal__buyer_vault_one_unit_short__reverts_insufficient_balance(
    market, usdc, newcomer, fund_vault, make_offer, make_request, assert_rejected
):
    fund_vault(newcomer, usdc, ESCROW - 1)
    assert_rejected(
        make_offer(), make_request(trainer=newcomer.address), market.ComputeMarketInsufficientBalance,
        account=newcomer.address, token=usdc.address, available=ESCROW - 1, needed=ESCROW,
    )


def test_open_deal__provider_free_stake_below_collateral__reverts_in_staking(
    market, staking, usdc, newcomer, fund_stake, make_offer, make_request, assert_rejected
):
    fund_stake(newcomer, usdc, COLLATERAL - 1)
    assert_rejected(
        make_offer(provider=newcomer.address), make_request(), staking.ProviderStakingInsufficientFreeStake,
        provider=newcomer.address, token=usdc.address, free=COLLATERAL - 1, needed=COLLATERAL,
    )


@pytest.mark.parametrize("exact", ["buyer_vault", "provider_stake"])
def test_open_deal__exactly_enough_vault_or_free_stake__opens_and_uses_all_of_it(
    exact, market, staking, usdc, newcomer, fund_vault, fund_stake, make_offer, make_request, submit
):
    # An odd ask makes the collateral a fraction of a unit: it is rounded up, against the provider.
    price = PRICE + 1
    escrow = price * GPUS * HOURS
    collateral = -(-escrow * COLLATERAL_BPS // 10_000)
    assert collateral * 10_000 != escrow * COLLATERAL_BPS
    offer, request = make_offer(pricePerGpuHour=price), make_request()
    if exact == "buyer_vault":
        fund_vault(newcomer, usdc, escrow)
        request = make_request(trainer=newcomer.address)
    else:
        fund_stake(newcomer, usdc, collateral)
        offer = make_offer(provider=newcomer.address, pricePerGpuHour=price)

    event = opened(market, submit(offer, request))[0]

    assert (event.escrow, event.collateral) == (escrow, collateral)
    if exact == "buyer_vault":
        assert market.balanceOf(newcomer, usdc) == 0
    else:
        assert staking.freeStake(newcomer, usdc) == 0


# ───────────────────────────── partial fills ─────────────────────────────


def test_open_deal__offer_capacity_shared_by_requests__fills_up_to_capacity_and_no_further(
    market, make_offer, make_request, submit, assert_rejected
):
    offer = make_offer(gpuCount=8, capacityGpuHours=12)
    offer_hash = offer.struct_hash()
    first, second, third = make_request(), make_request(), make_request(gpuCount=1)

    submit(offer, first, 4)  # 2 GPUs × 4 h = 8 of 12
    assert market.orderState(offer_hash) == (8, False)
    assert_rejected(
        offer, second, market.ComputeMarketOfferCapacityExceeded, hours=4,
        offerHash=offer_hash, requested=8, remaining=4,
    )
    submit(offer, second, 2)  # the 4 GPU-hours left
    assert market.orderState(offer_hash) == (12, False)
    assert market.orderState(second.struct_hash()) == (2, False)  # the request keeps 2 hours for another offer
    assert_rejected(
        offer, third, market.ComputeMarketOfferCapacityExceeded, hours=1,
        offerHash=offer_hash, requested=1, remaining=0,
    )


def test_open_deal__request_filled_across_offers__each_deal_at_its_own_ask_and_overfill_reverts(
    market, usdc, trainer, make_offer, make_request, submit, assert_rejected
):
    request = make_request(totalHours=4, maxPricePerGpuHour=3 * USDC)
    request_hash = request.struct_hash()
    cheap, dearer, spare = make_offer(pricePerGpuHour=2 * USDC), make_offer(pricePerGpuHour=3 * USDC), make_offer()

    submit(cheap, request, 3)
    assert_rejected(
        dearer, request, market.ComputeMarketRequestOverfilled, hours=2,
        requestHash=request_hash, requested=2, remaining=1,
    )
    submit(dearer, request, 1)

    assert market.orderState(request_hash) == (4, False)
    assert market.balanceOf(trainer, usdc) == VAULT - (2 * USDC * GPUS * 3 + 3 * USDC * GPUS * 1)
    assert_rejected(
        spare, request, market.ComputeMarketRequestOverfilled, hours=1,
        requestHash=request_hash, requested=1, remaining=0,
    )


def test_open_deals__more_demand_than_capacity__filled_never_exceeds_capacity(
    market, make_offer, make_request, pairing, matcher
):
    offer = make_offer(gpuCount=8, capacityGpuHours=20)
    requests = [make_request(gpuCount=2, totalHours=3) for _ in range(6)]  # 6 GPU-hours each, 36 in all

    batch = [pairing(offer, r, 3) for r in requests]
    assert market.openDeals.call(batch, sender=matcher) == [1, 2, 3, 0, 0, 0]
    receipt = market.openDeals(batch, sender=matcher)

    filled = sum(e.gpuCount * e.dealHours for e in opened(market, receipt))
    assert market.orderState(offer.struct_hash()) == (filled, False) == (18, False)
    capacity_left = encoded(market.ComputeMarketOfferCapacityExceeded, offer.struct_hash(), 6, 2)
    assert [(f.index, f.reason) for f in receipt.decode_logs(market.DealOpenFailed)] == [
        (i, capacity_left) for i in (3, 4, 5)
    ]
    # The last two GPU-hours still sell, to a request that fits them exactly.
    market.openDeals([pairing(offer, make_request(gpuCount=1, totalHours=2), 2)], sender=matcher)
    assert market.orderState(offer.struct_hash()) == (20, False)


# ───────────────────────────── openDeals batches ─────────────────────────────


def test_open_deals__one_pairing_not_crossed__opens_the_others_and_reports_it(
    market, usdc, trainer, make_offer, make_request, pairing, matcher
):
    offer = make_offer()
    good_1, bad, good_2 = make_request(), make_request(maxPricePerGpuHour=PRICE - 1), make_request()

    batch = [pairing(offer, good_1), pairing(offer, bad), pairing(offer, good_2)]
    assert market.openDeals.call(batch, sender=matcher) == [1, 0, 2]  # the ids, 0 for the failure
    receipt = market.openDeals(batch, sender=matcher)

    assert [e.requestHash for e in opened(market, receipt)] == [good_1.struct_hash(), good_2.struct_hash()]
    [failure] = receipt.decode_logs(market.DealOpenFailed)
    assert failure.index == 1
    assert failure.reason[:4] == selector(market.ComputeMarketPriceNotCrossed)
    assert failure.reason == encoded(market.ComputeMarketPriceNotCrossed, PRICE, PRICE - 1)
    assert market.orderState(bad.struct_hash()) == (0, False)
    assert market.balanceOf(trainer, usdc) == VAULT - 2 * ESCROW


def test_open_deals__replay_unstaked_provider_and_emptied_vault__each_failure_carries_its_error(
    market, staking, usdc, trainer, newcomer, make_offer, make_request, pairing, matcher
):
    # The trainer keeps enough for exactly two deals (and one unit short of a third).
    market.withdraw(usdc, VAULT - (3 * ESCROW - 1), sender=trainer)
    offer, unstaked_offer = make_offer(), make_offer(provider=newcomer.address)
    first, second, third, fourth = (make_request() for _ in range(4))

    batch = [
        pairing(offer, first),  # opens
        pairing(offer, first),  # the same signed pair again: the request is full
        pairing(unstaked_offer, second),  # provider has no stake for the collateral
        pairing(offer, third),  # opens
        pairing(offer, fourth),  # the vault is down to ESCROW - 1
    ]
    assert market.openDeals.call(batch, sender=matcher) == [1, 0, 0, 2, 0]
    receipt = market.openDeals(batch, sender=matcher)

    assert [e.dealId for e in opened(market, receipt)] == [1, 2]
    assert [(f.index, f.reason) for f in receipt.decode_logs(market.DealOpenFailed)] == [
        (1, encoded(market.ComputeMarketRequestOverfilled, first.struct_hash(), HOURS, 0)),
        (2, encoded(staking.ProviderStakingInsufficientFreeStake, newcomer.address, usdc.address, 0, COLLATERAL)),
        (4, encoded(market.ComputeMarketInsufficientBalance, trainer.address, usdc.address, ESCROW - 1, ESCROW)),
    ]
    assert market.balanceOf(trainer, usdc) == ESCROW - 1
    assert [market.orderState(r.struct_hash()).filled for r in (first, second, third, fourth)] == [HOURS, 0, HOURS, 0]
    assert market.orderState(offer.struct_hash()) == (2 * GPUS * HOURS, False)


def test_open_deals__too_little_gas_for_the_next_pairing__whole_batch_reverts_insufficient_gas(
    market, usdc, trainer, make_offer, make_request, pairing, matcher
):
    # Out-of-gas must not be recorded as refused pairings: the batch reverts, the first deal too.
    offer, first, second = make_offer(), make_request(), make_request()
    with reverts(market.ComputeMarketInsufficientGas) as info:
        market.openDeals([pairing(offer, first), pairing(offer, second)], sender=matcher, gas=600_000)
    assert info.inputs["available"] < info.inputs["required"]
    assert market.dealCount() == 0
    assert market.orderState(first.struct_hash()) == (0, False)
    assert market.balanceOf(trainer, usdc) == VAULT


# ───────────────────────────── cancel and counter ─────────────────────────────


@pytest.mark.parametrize("side", ["offer", "request"])
def test_cancel__owner_cancels__order_can_no_longer_open_a_deal(
    side, market, make_offer, make_request, assert_rejected, provider, trainer
):
    offer, request = make_offer(), make_request()
    if side == "offer":
        order, receipt = offer, market.cancelOffer(offer.as_tuple(), sender=provider)
    else:
        order, receipt = request, market.cancelRequest(request.as_tuple(), sender=trainer)
    owner = provider if side == "offer" else trainer

    [event] = receipt.decode_logs(market.OrderCancelled)
    assert (event.orderHash, event.owner) == (order.struct_hash(), owner.address)
    assert market.orderState(order.struct_hash()) == (0, True)
    assert_rejected(offer, request, market.ComputeMarketOrderCancelled, orderHash=order.struct_hash())


def test_cancel_offer__after_a_partial_fill__existing_deal_stands_and_the_rest_is_dead(
    market, make_offer, make_request, submit, assert_rejected, provider
):
    offer = make_offer()
    deal_id = opened(market, submit(offer, make_request()))[0].dealId

    market.cancelOffer(offer.as_tuple(), sender=provider)

    assert market.orderState(offer.struct_hash()) == (GPUS * HOURS, True)
    assert market.getDeal(deal_id).status == DealStatus.OPEN
    assert_rejected(offer, make_request(), market.ComputeMarketOrderCancelled, orderHash=offer.struct_hash())


@pytest.mark.parametrize("side", ["offer", "request"])
def test_cancel__by_someone_else__reverts_not_order_owner_and_order_stays_usable(
    side, market, make_offer, make_request, submit, provider, trainer, stranger
):
    offer, request = make_offer(), make_request()
    order, owner = (offer, provider) if side == "offer" else (request, trainer)
    cancel = market.cancelOffer if side == "offer" else market.cancelRequest

    with reverts(
        market.ComputeMarketNotOrderOwner, orderHash=order.struct_hash(), owner=owner.address, caller=stranger.address
    ):
        cancel(order.as_tuple(), sender=stranger)

    assert market.orderState(order.struct_hash()) == (0, False)
    assert len(opened(market, submit(offer, request))) == 1


@pytest.mark.parametrize("side", ["offer", "request"])
def test_increment_counter__owner_moves_on__old_orders_dead_new_ones_live_other_party_unaffected(
    side, market, make_offer, make_request, submit, assert_rejected, provider, trainer
):
    owner = provider if side == "offer" else trainer
    old_offer, old_request = make_offer(), make_request()

    assert market.incrementCounter.call(sender=owner) == 1
    receipt = market.incrementCounter(sender=owner)

    [event] = receipt.decode_logs(market.CounterIncremented)
    assert (event.owner, event.newCounter) == (owner.address, 1)
    assert (market.counterOf(provider), market.counterOf(trainer)) == ((1, 0) if side == "offer" else (0, 1))
    stale = old_offer if side == "offer" else old_request
    assert_rejected(
        old_offer, old_request, market.ComputeMarketStaleCounter,
        orderHash=stale.struct_hash(), signedCounter=0, currentCounter=1,
    )
    # Re-signed under the new counter, paired with the other party's untouched order.
    if side == "offer":
        new_offer, new_request = make_offer(counter=1), old_request
    else:
        new_offer, new_request = old_offer, make_request(counter=1)
    assert len(opened(market, submit(new_offer, new_request))) == 1


def test_open_deal__order_signed_under_a_future_counter__reverts_stale_counter(
    market, make_offer, make_request, assert_rejected
):
    offer = make_offer(counter=1)
    assert_rejected(
        offer, make_request(), market.ComputeMarketStaleCounter,
        orderHash=offer.struct_hash(), signedCounter=1, currentCounter=0,
    )


# ───────────────────────────── front-running ─────────────────────────────


def test_open_deal__stranger_submits_a_signed_pair__opens_the_same_deal_the_matcher_would(
    market, staking, usdc, now, make_offer, make_request, pairing, matcher, stranger, trainer, provider, treasury
):
    # Two identical pairs (only the salts differ): one submitted by the matcher, one by a stranger.
    t = now()
    times = dict(offer=dict(availableUntil=t + 7 * DAY, expiry=t + DAY), request=dict(startBy=t + DAY, expiry=t + DAY))
    parties = (trainer, provider, matcher, stranger, treasury)

    def books():
        return (
            [market.balanceOf(p, usdc) for p in parties],
            [usdc.balanceOf(p) for p in parties],
            list(staking.positionOf(provider, usdc)),
        )

    def open_as(submitter):
        offer = make_offer(**times["offer"])
        request = make_request(maxPricePerGpuHour=3 * USDC, **times["request"])
        before, eth_before = books(), submitter.balance
        receipt = market.openDeal(*pairing(offer, request), sender=submitter)
        after = books()
        assert eth_before - submitter.balance == receipt.total_fees_paid  # the submitter pays gas, nothing else
        event = dict(opened(market, receipt)[0].event_arguments)
        for per_order in ("dealId", "offerHash", "requestHash"):
            del event[per_order]
        moved = [[a - b for a, b in zip(x, y, strict=True)] for x, y in zip(after, before, strict=True)]
        return dict(market.getDeal(receipt.decode_logs(market.DealOpened)[0].dealId).items()), event, moved

    by_matcher, by_stranger = open_as(matcher), open_as(stranger)

    assert by_stranger == by_matcher
    deal, event, (vaults, wallets, stake) = by_stranger
    assert (deal["buyer"], deal["provider"]) == (trainer.address, provider.address)
    assert deal["pricePerGpuHour"] == event["pricePerGpuHour"] == PRICE  # the ask, not the 3 mUSDC bid
    assert vaults == [-ESCROW, 0, 0, 0, 0] and wallets == [0, 0, 0, 0, 0]  # nothing to or from the submitter
    assert stake[:2] == [0, COLLATERAL]


@pytest.mark.parametrize("binding", ["request_hours", "offer_capacity"])
def test_open_deal__matcher_resubmits_after_a_front_runner__fails_only_on_capacity(
    binding, market, make_offer, make_request, pairing, matcher, stranger
):
    offer = make_offer(capacityGpuHours=GPUS * HOURS) if binding == "offer_capacity" else make_offer()
    request = make_request()
    pair = pairing(offer, request)
    market.openDeal(*pair, sender=stranger)

    if binding == "offer_capacity":
        expected = dict(error=market.ComputeMarketOfferCapacityExceeded,
                        offerHash=offer.struct_hash(), requested=GPUS * HOURS, remaining=0)
    else:
        expected = dict(error=market.ComputeMarketRequestOverfilled,
                        requestHash=request.struct_hash(), requested=HOURS, remaining=0)
    with reverts(**expected):
        market.openDeal(*pair, sender=matcher)

    assert market.dealCount() == 1
    assert market.orderState(offer.struct_hash()) == (GPUS * HOURS, False)
    assert market.orderState(request.struct_hash()) == (HOURS, False)


# ───────────────────────────── the strict `reverts` helper itself ─────────────────────────────


def test_reverts_helper__revert_raised_in_staking_under_the_market__only_its_own_error_passes(
    market, staking, usdc, newcomer, make_offer, make_request, submit
):
    # Plain `ape.reverts(market.ComputeMarketZeroAmount)` would pass here: Ape cannot decode the
    # ProviderStaking error with the market's ABI and then checks nothing.
    offer, request = make_offer(provider=newcomer.address), make_request()
    with pytest.raises(AssertionError, match="expected ComputeMarketZeroAmount"):
        with reverts(market.ComputeMarketZeroAmount):
            submit(offer, request)
    with pytest.raises(AssertionError, match="free"):
        with reverts(staking.ProviderStakingInsufficientFreeStake, free=1):
            submit(offer, request)
    with reverts(staking.ProviderStakingInsufficientFreeStake, provider=newcomer.address, free=0, needed=COLLATERAL):
        submit(offer, request)
