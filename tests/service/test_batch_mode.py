"""Batch mode: orders rest until the window closes, then one welfare-maximising allocation is
opened on chain in a single openDeals batch, at each offer's ask."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.service import MarketService

from devnet_market import (  # noqa: I001 - tests/service is on sys.path under pytest
    PROVIDER, PROVIDER_2, TRAINER, TRAINER_2, USDC, DevnetMarket, json_message, service_settings,
)

pytestmark = pytest.mark.anvil


@pytest.mark.parametrize("method", ["auto", "fast"])  # MARKET_BATCH_METHOD
def test_batch_window__two_offers_two_requests__allocation_opened_in_one_batch(anvil, tmp_path, method):
    market = DevnetMarket.deploy(anvil, tmp_path)
    for provider in (PROVIDER, PROVIDER_2):
        market.stake(provider, 500 * USDC)
    for trainer in (TRAINER, TRAINER_2):
        market.fund_vault(trainer, 1_000 * USDC)
    service = MarketService(service_settings(market, tmp_path, matching_mode="batch", batch_window_seconds=0.01,
                                            batch_method=method))
    service.book.load()
    with TestClient(create_app(service)) as client:
        # A cheap small offer and a dear large one; a high bid and a low bid.
        cheap = market.offer(PROVIDER, pricePerGpuHour=1 * USDC, capacityGpuHours=4)
        dear = market.offer(PROVIDER_2, pricePerGpuHour=2 * USDC, capacityGpuHours=16)
        high = market.request(TRAINER, gpuCount=2, totalHours=2, maxPricePerGpuHour=3 * USDC)
        low = market.request(TRAINER_2, gpuCount=2, totalHours=2, maxPricePerGpuHour=int(1.5 * USDC))
        for path, order, signer in (("/offers", cheap, PROVIDER), ("/offers", dear, PROVIDER_2),
                                    ("/requests", high, TRAINER), ("/requests", low, TRAINER_2)):
            response = client.post(path, json={"order": json_message(order), "signature": market.sign(order, signer)})
            assert response.status_code == 201 and response.json()["matches"] == [], response.text

        service.run_once()
        result = service.book.last_batch

    # Surplus (bid - ask) x GPU-hours: the high bid on the cheap offer makes (3-1) x 4 = 8 USDC;
    # giving the cheap offer to the low bid instead makes (1.5-1) x 4 + (3-2) x 4 = 6. The low bid
    # cannot afford the dear offer, so the optimum leaves it unfilled.
    assert result is not None and result.method == method and result.gap is not None and result.gap <= 1e-9
    assert result.welfare == 8 * USDC
    assert [(d.offer_id, d.request_id) for d in result.deals] == [
        ("0x" + cheap.struct_hash().hex(), "0x" + high.struct_hash().hex())]
    m = market.market.functions
    assert m.dealCount().call() == len(result.deals)
    asks = {"0x" + cheap.struct_hash().hex(): cheap.pricePerGpuHour, "0x" + dear.struct_hash().hex(): dear.pricePerGpuHour}
    for deal_id, deal in enumerate(result.deals, start=1):
        on_chain = m.getDeal(deal_id).call()
        assert on_chain[12] == asks[deal.offer_id] == deal.price_per_gpu_hour  # pay-as-ask
        assert on_chain[4] == deal.hours
    assert result.welfare == sum(
        (r.maxPricePerGpuHour - asks[d.offer_id]) * d.gpu_count * d.hours
        for d in result.deals for r in (high, low) if "0x" + r.struct_hash().hex() == d.request_id
    )
