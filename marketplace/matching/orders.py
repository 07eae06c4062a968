"""Order model: the Offer and Request that providers and trainers sign (EIP-712).

Field names are the contract's, in snake_case. Objects are immutable and fully
validated at construction, so the book never sees a malformed order. Mutable
matching state (remaining capacity / hours) lives in the book, not here,
because a signed order never changes.
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import Any, TypeAlias

from .catalog import ANY_GPU_MODEL, GPU_MODELS, KNOWN_REGIONS_MASK, MAX_REGION_ID, REGIONS
from .errors import (
    InvalidAddress,
    InvalidOrder,
    InvalidPrice,
    InvalidQuantity,
    InvalidTimeWindow,
    UnknownGpuModel,
    UnknownRegion,
)

SECONDS_PER_HOUR = 3600

# Widths we accept. They are never wider than the contract's types (uint256 for
# money and salts, uint64 for times); counts and hours are capped lower so that
# a typo cannot create an absurd order (1024 GPUs in one offer, ~10 years).
UINT256_MAX = 2**256 - 1
UINT64_MAX = 2**64 - 1
MAX_GPU_COUNT = 1024
MAX_HOURS = 87_600
MAX_ORDER_ID_LEN = 128
MAX_VRAM_GB = max(m.vram_gb for m in GPU_MODELS.values())


class Side(enum.IntEnum):
    OFFER = 0
    REQUEST = 1


# --------------------------------------------------------------------- checks


def _check_int(field: str, value: Any, lo: int, hi: int, error: type[InvalidOrder]) -> None:
    # bool is an int subclass and float('nan') is not an int: both are refused here.
    if type(value) is not int:
        raise error(field, value, f"must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise error(field, value, f"must be in [{lo}, {hi}]")


def _check_bool(field: str, value: Any) -> None:
    if type(value) is not bool:
        raise InvalidOrder(field, value, "must be a bool")


def _check_order_id(value: Any) -> None:
    if type(value) is not str or not 0 < len(value) <= MAX_ORDER_ID_LEN:
        raise InvalidOrder("order_id", value, f"must be a non-empty str of at most {MAX_ORDER_ID_LEN} chars")


_HEX = frozenset("0123456789abcdef")


def _canonical_address(field: str, value: Any) -> str:
    """Lower-case ``0x`` + 40 hex; interned so that orders share one copy per account."""
    if type(value) is not str or len(value) != 42 or value[:2] not in ("0x", "0X"):
        raise InvalidAddress(field, value, "must be a 0x-prefixed 20-byte hex address")
    lowered = "0x" + value[2:].lower()
    if not _HEX.issuperset(lowered[2:]):
        raise InvalidAddress(field, value, "must be a 0x-prefixed 20-byte hex address")
    return sys.intern(lowered)


def _bytes32(field: str, value: Any) -> bytes:
    if type(value) is bytes:
        if len(value) != 32:
            raise InvalidAddress(field, value, "must be 32 bytes")
        return value
    if type(value) is str and len(value) == 66 and value[:2] in ("0x", "0X"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise InvalidAddress(field, value, "must be 32 bytes or 0x-prefixed 64-digit hex")


def _set(obj: object, field: str, value: object) -> None:
    object.__setattr__(obj, field, value)  # frozen dataclass: normalise during __post_init__ only


# --------------------------------------------------------------------- orders


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """A provider's signed ask for GPU-hours on one machine (or homogeneous pool)."""

    order_id: str
    provider: str
    gpu_model: int
    gpu_count: int
    vram_gb: int
    region: int
    green_energy: bool
    token: str
    price_per_gpu_hour: int
    min_hours: int
    max_hours: int
    capacity_gpu_hours: int
    available_until: int
    expiry: int
    salt: int

    side = Side.OFFER  # class attribute, not a field

    def __post_init__(self) -> None:
        _check_order_id(self.order_id)
        _set(self, "provider", _canonical_address("provider", self.provider))
        _set(self, "token", _canonical_address("token", self.token))
        if type(self.gpu_model) is not int or self.gpu_model not in GPU_MODELS:
            raise UnknownGpuModel("gpu_model", self.gpu_model, "not in the GPU catalogue")
        _check_int("gpu_count", self.gpu_count, 1, MAX_GPU_COUNT, InvalidQuantity)
        catalogue_vram = GPU_MODELS[self.gpu_model].vram_gb
        # Less than the catalogue VRAM is allowed (MIG slices, capped cards); more is a lie.
        _check_int("vram_gb", self.vram_gb, 1, catalogue_vram, InvalidQuantity)
        _check_int("region", self.region, 0, MAX_REGION_ID, UnknownRegion)
        if self.region not in REGIONS:
            raise UnknownRegion("region", self.region, "not in the region catalogue")
        _check_bool("green_energy", self.green_energy)
        _check_int("price_per_gpu_hour", self.price_per_gpu_hour, 1, UINT256_MAX, InvalidPrice)
        _check_int("min_hours", self.min_hours, 1, MAX_HOURS, InvalidQuantity)
        _check_int("max_hours", self.max_hours, 1, MAX_HOURS, InvalidQuantity)
        if self.min_hours > self.max_hours:
            raise InvalidTimeWindow("min_hours", self.min_hours, f"exceeds max_hours={self.max_hours}")
        _check_int("capacity_gpu_hours", self.capacity_gpu_hours, 1, UINT64_MAX, InvalidQuantity)
        if self.capacity_gpu_hours < self.min_hours:
            raise InvalidQuantity(
                "capacity_gpu_hours", self.capacity_gpu_hours, f"cannot fit one deal of min_hours={self.min_hours}"
            )
        _check_int("available_until", self.available_until, 1, UINT64_MAX, InvalidTimeWindow)
        _check_int("expiry", self.expiry, 1, UINT64_MAX, InvalidTimeWindow)
        if self.available_until < self.min_hours * SECONDS_PER_HOUR:
            raise InvalidTimeWindow("available_until", self.available_until, "ends before any deal could finish")
        _check_int("salt", self.salt, 0, UINT256_MAX, InvalidOrder)

    @property
    def deadline(self) -> int:
        """Last second at which this offer can still open a deal (of min_hours)."""
        last_start = self.available_until - self.min_hours * SECONDS_PER_HOUR
        return self.expiry if self.expiry < last_start else last_start


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A trainer's signed bid for GPU-hours; may be filled by several deals."""

    order_id: str
    trainer: str
    gpu_model: int  # ANY_GPU_MODEL (0) = any model with enough VRAM
    gpu_count: int
    min_vram_gb: int
    region_mask: int
    green_only: bool
    token: str
    max_price_per_gpu_hour: int
    hours: int
    min_hours: int
    start_by: int
    expiry: int
    job_spec_hash: bytes
    salt: int

    side = Side.REQUEST

    def __post_init__(self) -> None:
        _check_order_id(self.order_id)
        _set(self, "trainer", _canonical_address("trainer", self.trainer))
        _set(self, "token", _canonical_address("token", self.token))
        if type(self.gpu_model) is not int or (self.gpu_model != ANY_GPU_MODEL and self.gpu_model not in GPU_MODELS):
            raise UnknownGpuModel("gpu_model", self.gpu_model, "not in the GPU catalogue (0 = any)")
        _check_int("gpu_count", self.gpu_count, 1, MAX_GPU_COUNT, InvalidQuantity)
        ceiling = MAX_VRAM_GB if self.gpu_model == ANY_GPU_MODEL else GPU_MODELS[self.gpu_model].vram_gb
        _check_int("min_vram_gb", self.min_vram_gb, 0, ceiling, InvalidQuantity)  # above: nothing could match
        _check_int("region_mask", self.region_mask, 1, 2 ** (MAX_REGION_ID + 1) - 1, UnknownRegion)
        if not self.region_mask & KNOWN_REGIONS_MASK:
            raise UnknownRegion("region_mask", self.region_mask, "selects no region in the catalogue")
        _check_bool("green_only", self.green_only)
        _check_int("max_price_per_gpu_hour", self.max_price_per_gpu_hour, 1, UINT256_MAX, InvalidPrice)
        _check_int("hours", self.hours, 1, MAX_HOURS, InvalidQuantity)
        _check_int("min_hours", self.min_hours, 1, MAX_HOURS, InvalidQuantity)
        if self.min_hours > self.hours:
            raise InvalidTimeWindow("min_hours", self.min_hours, f"exceeds hours={self.hours}")
        _check_int("start_by", self.start_by, 1, UINT64_MAX, InvalidTimeWindow)
        _check_int("expiry", self.expiry, 1, UINT64_MAX, InvalidTimeWindow)
        _set(self, "job_spec_hash", _bytes32("job_spec_hash", self.job_spec_hash))
        _check_int("salt", self.salt, 0, UINT256_MAX, InvalidOrder)

    @property
    def deadline(self) -> int:
        """Last second at which this request can still open a deal."""
        return self.expiry if self.expiry < self.start_by else self.start_by

    @property
    def effective_region_mask(self) -> int:
        """Mask restricted to catalogued regions (offers only exist there)."""
        return self.region_mask & KNOWN_REGIONS_MASK


Order: TypeAlias = Offer | Request
