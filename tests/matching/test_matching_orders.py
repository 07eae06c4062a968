"""Order model: validated at construction, immutable, typed errors."""

from __future__ import annotations

import dataclasses
import math

import pytest

from marketplace.matching.catalog import KNOWN_REGIONS_MASK
from marketplace.matching.errors import (
    InvalidAddress,
    InvalidOrder,
    InvalidPrice,
    InvalidQuantity,
    InvalidTimeWindow,
    MatchingError,
    UnknownGpuModel,
    UnknownRegion,
)
from marketplace.matching.orders import Offer, Request, Side

from matching_factories import JOB, NOW, offer, request


def test_valid_orders__construct__normalised_and_immutable() -> None:
    o = offer(provider="0x" + "AB" * 20, token="0X" + "Cd" * 20)
    assert o.provider == "0x" + "ab" * 20
    assert o.token == "0x" + "cd" * 20
    assert o.side is Side.OFFER
    r = request(job_spec_hash=JOB)
    assert r.job_spec_hash == bytes.fromhex("cd" * 32)
    assert r.side is Side.REQUEST
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.price_per_gpu_hour = 1  # type: ignore[misc]


def test_deadlines__offer_and_request__earliest_binding_time() -> None:
    o = offer(expiry=NOW + 10 * 3600, available_until=NOW + 5 * 3600, min_hours=2)
    assert o.deadline == NOW + 3 * 3600  # must still fit a min_hours deal
    r = request(start_by=NOW + 100, expiry=NOW + 200)
    assert r.deadline == NOW + 100


def test_request__mask_beyond_catalogue__accepted_and_restricted() -> None:
    r = request(region_mask=2**256 - 1)
    assert r.effective_region_mask == KNOWN_REGIONS_MASK


OFFER_BAD = [
    ("gpu_count", 0, InvalidQuantity),
    ("gpu_count", -1, InvalidQuantity),
    ("gpu_count", 2.0, InvalidQuantity),
    ("gpu_count", True, InvalidQuantity),
    ("capacity_gpu_hours", 0, InvalidQuantity),
    ("min_hours", 0, InvalidQuantity),
    ("max_hours", -5, InvalidQuantity),
    ("vram_gb", 81, InvalidQuantity),  # more than an H100 has
    ("price_per_gpu_hour", 0, InvalidPrice),
    ("price_per_gpu_hour", -1, InvalidPrice),
    ("price_per_gpu_hour", math.nan, InvalidPrice),
    ("price_per_gpu_hour", math.inf, InvalidPrice),
    ("price_per_gpu_hour", 2.5, InvalidPrice),
    ("price_per_gpu_hour", "100", InvalidPrice),
    ("price_per_gpu_hour", 2**256, InvalidPrice),
    ("gpu_model", 0, UnknownGpuModel),
    ("gpu_model", 999, UnknownGpuModel),
    ("region", 200, UnknownRegion),
    ("region", 256, UnknownRegion),
    ("region", -1, UnknownRegion),
    ("provider", "0x1234", InvalidAddress),
    ("token", "0x" + "zz" * 20, InvalidAddress),
    ("green_energy", 1, InvalidOrder),
    ("order_id", "", InvalidOrder),
    ("salt", -1, InvalidOrder),
    ("expiry", 0, InvalidTimeWindow),
]


@pytest.mark.parametrize(("field", "value", "error"), OFFER_BAD, ids=[f"{f}={v!r}" for f, v, _ in OFFER_BAD])
def test_offer__bad_field__typed_error(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        offer(**{field: value})
    assert isinstance(info.value, MatchingError)
    assert info.value.field == field  # type: ignore[attr-defined]


def test_offer__crossed_hour_window__rejected() -> None:
    with pytest.raises(InvalidTimeWindow):
        offer(min_hours=10, max_hours=5)
    with pytest.raises(InvalidQuantity):
        offer(min_hours=10, max_hours=20, capacity_gpu_hours=9)
    with pytest.raises(InvalidTimeWindow):
        offer(min_hours=2, available_until=3_600)


REQUEST_BAD = [
    ("gpu_count", 0, InvalidQuantity),
    ("hours", 0, InvalidQuantity),
    ("hours", -3, InvalidQuantity),
    ("min_hours", 0, InvalidQuantity),
    ("min_vram_gb", -1, InvalidQuantity),
    ("min_vram_gb", 81, InvalidQuantity),  # no H100 has more: nothing could ever match
    ("max_price_per_gpu_hour", 0, InvalidPrice),
    ("max_price_per_gpu_hour", math.nan, InvalidPrice),
    ("max_price_per_gpu_hour", -math.inf, InvalidPrice),
    ("gpu_model", 11, UnknownGpuModel),
    ("gpu_model", -1, UnknownGpuModel),
    ("region_mask", 0, UnknownRegion),
    ("region_mask", 1 << 200, UnknownRegion),  # only uncatalogued regions
    ("region_mask", 2**256, UnknownRegion),
    ("trainer", "aa" * 21, InvalidAddress),
    ("job_spec_hash", "0x1234", InvalidAddress),
    ("job_spec_hash", b"\x00" * 31, InvalidAddress),
    ("green_only", None, InvalidOrder),
    ("start_by", -1, InvalidTimeWindow),
]


@pytest.mark.parametrize(("field", "value", "error"), REQUEST_BAD, ids=[f"{f}={v!r}" for f, v, _ in REQUEST_BAD])
def test_request__bad_field__typed_error(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        request(**{field: value})
    assert info.value.field == field  # type: ignore[attr-defined]


def test_request__min_hours_above_hours__crossed_window() -> None:
    with pytest.raises(InvalidTimeWindow):
        request(hours=4, min_hours=5)


def test_any_model_request__vram_floor_up_to_largest_gpu() -> None:
    assert request(gpu_model=0, min_vram_gb=192).min_vram_gb == 192
    with pytest.raises(InvalidQuantity):
        request(gpu_model=0, min_vram_gb=193)


def test_orders__equal_fields__equal_and_hashable() -> None:
    assert offer() == offer()
    assert hash(request()) == hash(request())
    assert isinstance(offer(), Offer) and isinstance(request(), Request)
