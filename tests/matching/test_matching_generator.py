"""The seeded market generator: reproducible, valid, realistic mixes."""

from __future__ import annotations

from collections import Counter

from marketplace.matching.catalog import ANY_GPU_MODEL, GPU_MODELS
from marketplace.matching.generator import REFERENCE_PRICE, MarketGenerator
from marketplace.matching.orders import Offer, Request

NOW = 1_800_000_000


def test_same_seed__same_orders() -> None:
    a = [o for _, o in MarketGenerator(1).flow(500, start=NOW)]
    b = [o for _, o in MarketGenerator(1).flow(500, start=NOW)]
    c = [o for _, o in MarketGenerator(2).flow(500, start=NOW)]
    assert a == b
    assert a != c


def test_mix__both_sides_models_regions_and_prices_plausible() -> None:
    gen = MarketGenerator(3)
    orders = [o for _, o in gen.flow(4_000, start=NOW, offer_share=0.4)]
    offers = [o for o in orders if isinstance(o, Offer)]
    requests = [o for o in orders if isinstance(o, Request)]
    assert 0.3 < len(offers) / len(orders) < 0.5
    assert set(Counter(o.gpu_model for o in offers)) == set(GPU_MODELS)
    assert sum(r.gpu_model == ANY_GPU_MODEL for r in requests) / len(requests) > 0.1
    assert len({o.region for o in offers}) >= 10
    assert any(r.min_hours == r.hours for r in requests) and any(r.min_hours < r.hours for r in requests)
    for o in offers:  # asks within a plausible band of the model's reference price
        assert 0.4 * REFERENCE_PRICE[o.gpu_model] < o.price_per_gpu_hour < 1.6 * REFERENCE_PRICE[o.gpu_model]
        assert o.deadline >= NOW
    assert all(r.deadline >= NOW for r in requests)
    assert len({o.order_id for o in orders}) == len(orders)
    assert all(p.cost_per_gpu_hour > 0 for p in gen.providers)
    assert all(t.budget_per_gpu_hour > 0 for t in gen.trainers)
