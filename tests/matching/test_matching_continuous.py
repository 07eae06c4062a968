"""Continuous matching: price-time priority, partial fills, the deal price rule,
and equality with the brute-force reference on random small books."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings

from marketplace.matching.catalog import region_mask
from marketplace.matching.compat import deal_is_allowed
from marketplace.matching.continuous import ContinuousMatcher
from marketplace.matching.errors import MatchingError
from marketplace.matching.orders import Offer, Side
from marketplace.matching.reference import NaiveMatcher

from matching_factories import NOW, offer, order_flows, request

PROPERTY_SETTINGS = settings(
    max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def test_incoming_request__best_price_then_time__partial_fills_across_offers() -> None:
    m = ContinuousMatcher()
    m.submit(offer("dear", price_per_gpu_hour=2_200_000, capacity_gpu_hours=40), NOW)
    m.submit(offer("cheap_early", price_per_gpu_hour=2_000_000, capacity_gpu_hours=16), NOW)
    m.submit(offer("cheap_late", price_per_gpu_hour=2_000_000, capacity_gpu_hours=16), NOW + 1)
    m.submit(offer("too_dear", price_per_gpu_hour=2_600_000), NOW + 1)
    deals = m.submit(request("r", gpu_count=4, hours=10, max_price_per_gpu_hour=2_500_000), NOW + 1)
    # equal asks: earlier arrival first; each deal takes what the pair allows (16 GPU-h // 4 GPUs = 4 h)
    assert [(d.offer_id, d.hours, d.price_per_gpu_hour) for d in deals] == [
        ("cheap_early", 4, 2_000_000),
        ("cheap_late", 4, 2_000_000),
        ("dear", 2, 2_200_000),
    ]
    assert all(d.taker is Side.REQUEST and d.gpu_count == 4 for d in deals)
    assert "r" not in m.book  # fully filled
    assert m.book.remaining("dear") == 40 - 8
    assert "cheap_late" not in m.book and "cheap_early" not in m.book  # capacity exhausted


def test_incoming_offer__highest_bid_first__pays_own_ask() -> None:
    m = ContinuousMatcher()
    m.submit(request("low", max_price_per_gpu_hour=2_100_000, hours=2), NOW)
    m.submit(request("high", max_price_per_gpu_hour=2_900_000, hours=2), NOW)
    m.submit(request("below_ask", max_price_per_gpu_hour=1_900_000, hours=2), NOW)
    deals = m.submit(offer("o", price_per_gpu_hour=2_000_000), NOW)
    assert [(d.request_id, d.price_per_gpu_hour, d.taker) for d in deals] == [
        ("high", 2_000_000, Side.OFFER),
        ("low", 2_000_000, Side.OFFER),
    ]
    assert m.book.remaining("o") == 8 * 72 - 2 * (4 * 2)
    assert "below_ask" in m.book


def test_pair_too_small__skipped__lower_priority_partner_used() -> None:
    m = ContinuousMatcher()
    m.submit(offer("cheap_short", price_per_gpu_hour=1_000_000, max_hours=3), NOW)
    m.submit(offer("dear_long", price_per_gpu_hour=2_000_000, max_hours=24), NOW)
    deals = m.submit(request("r", hours=6, min_hours=6), NOW)  # all or nothing
    assert [(d.offer_id, d.hours) for d in deals] == [("dear_long", 6)]
    assert "cheap_short" in m.book  # put back untouched


def test_one_deal_per_pair__max_hours_not_chained() -> None:
    m = ContinuousMatcher()
    m.submit(offer("o", max_hours=4, capacity_gpu_hours=1_000), NOW)
    deals = m.submit(request("r", gpu_count=1, hours=10), NOW)
    assert [(d.offer_id, d.hours) for d in deals] == [("o", 4)]
    assert m.book.remaining("r") == 6


def test_compatibility_rule__each_attribute_filters() -> None:
    m = ContinuousMatcher()
    m.submit(offer("wrong_token", token="0x" + "99" * 20, price_per_gpu_hour=1), NOW)
    m.submit(offer("too_few_gpus", gpu_count=2, capacity_gpu_hours=100, price_per_gpu_hour=2), NOW)
    m.submit(offer("wrong_region", region=0, price_per_gpu_hour=3), NOW)
    m.submit(offer("grey", green_energy=False, price_per_gpu_hour=4), NOW)
    m.submit(offer("ends_soon", available_until=NOW + 2 * 3600, price_per_gpu_hour=5), NOW)
    m.submit(offer("wrong_model", gpu_model=7, price_per_gpu_hour=6), NOW)
    m.submit(offer("sliced", vram_gb=40, price_per_gpu_hour=7), NOW)
    m.submit(offer("ok", price_per_gpu_hour=8), NOW)
    r = request("r", hours=3, min_hours=3, green_only=True, region_mask=region_mask(7), min_vram_gb=80)
    assert [d.offer_id for d in m.submit(r, NOW)] == ["ok"]
    any_model = request("any", hours=3, min_hours=3, green_only=True, region_mask=region_mask(7), gpu_model=0, min_vram_gb=80)
    assert [d.offer_id for d in m.submit(any_model, NOW)] == ["wrong_model"]  # A100 80GB qualifies


def test_deal_price__is_the_ask_whichever_side_rests() -> None:
    a = ContinuousMatcher()
    a.submit(offer("o", price_per_gpu_hour=1_000_000), NOW)
    b = ContinuousMatcher()
    b.submit(request("r", max_price_per_gpu_hour=3_000_000), NOW)
    assert a.submit(request("r", max_price_per_gpu_hour=3_000_000), NOW)[0].price_per_gpu_hour == 1_000_000
    assert b.submit(offer("o", price_per_gpu_hour=1_000_000), NOW)[0].price_per_gpu_hour == 1_000_000


def _replay_checked(flow):  # type: ignore[no-untyped-def]
    """Run both matchers; check every deal against the contract's rule and capacities."""
    fast, naive = ContinuousMatcher(), NaiveMatcher()
    orders: dict[str, object] = {}
    left: dict[str, int] = {}
    out_fast, out_naive = [], []
    for now, order in flow:
        try:
            deals = fast.submit(order, now)
        except MatchingError as exc:
            deals = type(exc)
        try:
            reference = naive.submit(order, now)
        except MatchingError as exc:
            reference = type(exc)
        out_fast.append(deals)
        out_naive.append(reference)
        if isinstance(deals, type):
            continue
        orders[order.order_id] = order
        left[order.order_id] = order.capacity_gpu_hours if isinstance(order, Offer) else order.hours
        pairs = set()
        for d in deals:
            o, r = orders[d.offer_id], orders[d.request_id]
            assert (d.offer_id, d.request_id) not in pairs
            pairs.add((d.offer_id, d.request_id))
            assert d.price_per_gpu_hour == o.price_per_gpu_hour  # type: ignore[attr-defined]
            assert deal_is_allowed(o, left[o.order_id], r, left[r.order_id], d.hours, now)  # type: ignore[arg-type,attr-defined]
            left[o.order_id] -= d.gpu_hours  # type: ignore[attr-defined]
            left[r.order_id] -= d.hours  # type: ignore[attr-defined]
            assert left[o.order_id] >= 0 and left[r.order_id] >= 0  # type: ignore[attr-defined]
    for order_id, order in orders.items():
        if order_id in fast.book:
            assert fast.book.remaining(order_id) == left[order_id]
            assert left[order_id] >= order.min_hours  # type: ignore[attr-defined]
    return fast, naive, out_fast, out_naive


@PROPERTY_SETTINGS
@given(order_flows())
def test_property__random_flows__same_deals_as_brute_force_and_rule_holds(flow) -> None:  # type: ignore[no-untyped-def]
    fast, naive, out_fast, out_naive = _replay_checked(flow)
    assert out_fast == out_naive
    last = flow[-1][0]  # the fast book drops expired orders lazily; compare what can still trade
    assert [(o.order_id, r) for o, _, r in fast.book.snapshot() if o.deadline >= last] == [
        (e.order.order_id, e.remaining) for e in naive._resting if e.order.deadline >= last
    ]


@PROPERTY_SETTINGS
@given(order_flows(max_orders=16))
def test_property__cancels_expiry_and_reused_ids__still_equal(flow) -> None:  # type: ignore[no-untyped-def]
    fast, naive = ContinuousMatcher(), NaiveMatcher()
    for i, (now, order) in enumerate(flow):
        if i % 5 == 4:  # reuse an earlier id: a duplicate while that order can trade, else a new order
            order = dataclasses.replace(order, order_id=flow[i - 3][1].order_id)
        try:
            got = fast.submit(order, now)
        except MatchingError as exc:
            got = type(exc)
        try:
            want = naive.submit(order, now)
        except MatchingError as exc:
            want = type(exc)
        assert got == want
        if i % 3 == 2 and len(fast.book):
            victim = fast.book.snapshot()[0][0].order_id  # oldest resting order
            fast.cancel(victim)
            naive.cancel(victim)
        if i % 4 == 3:
            for order_id in fast.expire(now):  # gone, or the id was reused by a newer, live order
                assert order_id not in fast.book or fast.book.get(order_id).deadline >= now
