"""Order factories and Hypothesis strategies shared by the matching tests.

(Named uniquely: tests/ has no __init__.py, so helper modules share one namespace.)
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from marketplace.matching.catalog import region_mask
from marketplace.matching.orders import Offer, Request

NOW = 1_800_000_000
TOKEN = "0x" + "11" * 20
OTHER_TOKEN = "0x" + "22" * 20
PROVIDER = "0x" + "aa" * 20
TRAINER = "0x" + "bb" * 20
JOB = "0x" + "cd" * 32


def offer(order_id: str = "o1", **overrides: Any) -> Offer:
    fields: dict[str, Any] = dict(
        order_id=order_id,
        provider=PROVIDER,
        gpu_model=8,  # H100 80GB
        gpu_count=8,
        vram_gb=80,
        region=7,  # eu-north
        green_energy=True,
        token=TOKEN,
        price_per_gpu_hour=2_000_000,
        min_hours=1,
        max_hours=72,
        capacity_gpu_hours=8 * 72,
        available_until=NOW + 7 * 86_400,
        expiry=NOW + 86_400,
        salt=1,
    )
    fields.update(overrides)
    return Offer(**fields)


def request(order_id: str = "r1", **overrides: Any) -> Request:
    fields: dict[str, Any] = dict(
        order_id=order_id,
        trainer=TRAINER,
        gpu_model=8,
        gpu_count=4,
        min_vram_gb=0,
        region_mask=region_mask(5, 6, 7),
        green_only=False,
        token=TOKEN,
        max_price_per_gpu_hour=2_500_000,
        hours=10,
        min_hours=1,
        start_by=NOW + 3_600,
        expiry=NOW + 3_600,
        job_spec_hash=JOB,
        salt=2,
    )
    fields.update(overrides)
    return Request(**fields)


# ------------------------------------------------------------------ strategies
# Small attribute domains on purpose: collisions (equal prices, equal
# signatures, tight capacities) are where matching rules can go wrong.

_MODELS = st.sampled_from([1, 5, 8])  # 24 GB, 48 GB, 80 GB
_VRAM = {1: 24, 5: 48, 8: 80}
_REGIONS = st.sampled_from([0, 5, 7])
_PRICES = st.integers(min_value=1, max_value=6).map(lambda p: p * 100)


@st.composite
def offers(draw: st.DrawFn, order_id: str, now: int = NOW, tokens: bool = False) -> Offer:
    model = draw(_MODELS)
    min_hours = draw(st.integers(1, 3))
    return Offer(
        order_id=order_id,
        provider=PROVIDER,
        gpu_model=model,
        gpu_count=draw(st.sampled_from([1, 2, 4])),
        vram_gb=_VRAM[model],
        region=draw(_REGIONS),
        green_energy=draw(st.booleans()),
        token=draw(st.sampled_from([TOKEN, OTHER_TOKEN])) if tokens else TOKEN,
        price_per_gpu_hour=draw(_PRICES),
        min_hours=min_hours,
        max_hours=draw(st.integers(min_hours, 6)),
        capacity_gpu_hours=draw(st.integers(min_hours, 24)),
        available_until=now + (min_hours + draw(st.integers(0, 5))) * 3_600 + draw(st.sampled_from([0, 1_800])),
        expiry=now + draw(st.integers(0, 4)) * 600,
        salt=0,
    )


@st.composite
def requests(draw: st.DrawFn, order_id: str, now: int = NOW, tokens: bool = False) -> Request:
    model = draw(st.sampled_from([0, 1, 5, 8]))
    hours = draw(st.integers(1, 8))
    start_by = now + draw(st.integers(0, 4)) * 600
    return Request(
        order_id=order_id,
        trainer=TRAINER,
        gpu_model=model,
        gpu_count=draw(st.sampled_from([1, 2, 4])),
        min_vram_gb=draw(st.sampled_from([0, 24, 48, 80])) if model == 0 else 0,
        region_mask=draw(st.sampled_from([region_mask(0), region_mask(5, 7), region_mask(0, 5, 7), 2**256 - 1])),
        green_only=draw(st.booleans()),
        token=draw(st.sampled_from([TOKEN, OTHER_TOKEN])) if tokens else TOKEN,
        max_price_per_gpu_hour=draw(_PRICES),
        hours=hours,
        min_hours=draw(st.integers(1, hours)),
        start_by=start_by,
        expiry=draw(st.sampled_from([start_by, start_by + 600])),
        job_spec_hash=JOB,
        salt=0,
    )


@st.composite
def order_flows(draw: st.DrawFn, max_orders: int = 24) -> list[tuple[int, Offer | Request]]:
    """A timed sequence of offers and requests; time moves forward in 0-20 minute steps."""
    n = draw(st.integers(1, max_orders))
    flow: list[tuple[int, Offer | Request]] = []
    now = NOW
    for i in range(n):
        now += draw(st.sampled_from([0, 0, 60, 600, 1_200]))
        if draw(st.booleans()):
            flow.append((now, draw(offers(f"o{i}", now=now, tokens=True))))
        else:
            flow.append((now, draw(requests(f"r{i}", now=now, tokens=True))))
    return flow
