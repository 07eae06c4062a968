"""Intake under concurrency: `submit` reads chain time before it waits for the book's lock, so an
order submitted meanwhile (in a later block) can move the book's clock past it. The late order
must still be accepted, not refused with "now=... is before the last time seen".

Found by bench/service (concurrent HTTP intake while blocks were mined); reproduced here without
threads: the second order is submitted from inside the first one's chain checks."""

from __future__ import annotations

import pytest

from marketplace.db.models import OrderSide
from marketplace.service import MarketService

from devnet_market import (  # noqa: I001 - tests/service is on sys.path under pytest
    PROVIDER, TRAINER, USDC, DevnetMarket, json_message, service_settings,
)

pytestmark = pytest.mark.anvil


def test_submit__later_order_moves_the_clock_while_waiting__both_accepted(anvil, tmp_path):
    market = DevnetMarket.deploy(anvil, tmp_path)
    market.stake(PROVIDER, 500 * USDC)
    market.fund_vault(TRAINER, 1_000 * USDC)
    service = MarketService(service_settings(market, tmp_path))
    book = service.book
    book.load()

    # Non-crossing, so the matcher only rests them (and checks their time).
    first = market.offer(PROVIDER, pricePerGpuHour=5 * USDC)
    second = market.request(TRAINER, maxPricePerGpuHour=1 * USDC)
    checks = book._check_against_chain
    interleaved = []

    def check_then_let_another_order_in(order, owner):
        now = checks(order, owner)
        if not interleaved:  # the first order has read its `now`; a block later, another order lands
            interleaved.append(True)
            market.warp(60)
            book.submit(OrderSide.REQUEST, json_message(second), market.sign(second, TRAINER))
        return now

    book._check_against_chain = check_then_let_another_order_in
    submitted = book.submit(OrderSide.OFFER, json_message(first), market.sign(first, PROVIDER))

    assert interleaved
    assert submitted.order_hash == "0x" + first.struct_hash().hex()
    resting = {order.order_id for order, _, _ in book._matcher.book.snapshot()}
    assert resting == {"0x" + first.struct_hash().hex(), "0x" + second.struct_hash().hex()}
