"""Matching engine for the GPU-hour marketplace: pure Python, no I/O, deterministic.

* ``Offer`` / ``Request`` -- the contract's EIP-712 orders (snake_case), validated
  and immutable; bad values raise a ``MatchingError`` subclass.
* ``OrderBook`` -- resting orders indexed by compatibility signature and price.
* ``ContinuousMatcher`` -- price-time priority matching on arrival.
* ``clear_batch`` / ``BatchAuction`` -- welfare-maximising batch auctions with a
  uniform clearing price per market and a verifiable certificate.
* ``MarketGenerator`` -- seeded providers, trainers and order flow.

Every deal settles at the offer's ask (``Deal.price_per_gpu_hour``), the rule
the contract enforces.
"""

from .batch import (
    BatchAuction,
    BatchConfig,
    BatchResult,
    BatchVerificationError,
    MarketPrice,
    certified_upper_bound,
    clear_batch,
    verify_batch,
)
from .book import OrderBook, RestingOrder
from .catalog import ANY_GPU_MODEL, GPU_MODELS, REGIONS, GpuClass, GpuModel, Region, region_mask, regions_in
from .compat import deal_hours_bounds, deal_is_allowed, max_deal_hours, statically_compatible
from .continuous import ContinuousMatcher
from .deals import Deal, deal_surplus, total_welfare
from .errors import (
    ClockWentBackwards,
    DuplicateOrder,
    InvalidAddress,
    InvalidOrder,
    InvalidPrice,
    InvalidQuantity,
    InvalidTimeWindow,
    MatchingError,
    OrderExpired,
    SolverError,
    UnknownGpuModel,
    UnknownOrder,
    UnknownRegion,
)
from .generator import MarketGenerator
from .orders import Offer, Order, Request, Side
from .reference import NaiveMatcher

__all__ = [
    "ANY_GPU_MODEL",
    "GPU_MODELS",
    "REGIONS",
    "BatchAuction",
    "BatchConfig",
    "BatchResult",
    "BatchVerificationError",
    "ClockWentBackwards",
    "ContinuousMatcher",
    "Deal",
    "DuplicateOrder",
    "GpuClass",
    "GpuModel",
    "InvalidAddress",
    "InvalidOrder",
    "InvalidPrice",
    "InvalidQuantity",
    "InvalidTimeWindow",
    "MarketGenerator",
    "MarketPrice",
    "MatchingError",
    "NaiveMatcher",
    "Offer",
    "Order",
    "OrderBook",
    "OrderExpired",
    "Region",
    "Request",
    "RestingOrder",
    "Side",
    "SolverError",
    "UnknownGpuModel",
    "UnknownOrder",
    "UnknownRegion",
    "certified_upper_bound",
    "clear_batch",
    "deal_hours_bounds",
    "deal_is_allowed",
    "deal_surplus",
    "max_deal_hours",
    "region_mask",
    "regions_in",
    "statically_compatible",
    "total_welfare",
    "verify_batch",
]
