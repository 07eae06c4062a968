"""Matching engine: pure Python, no I/O, deterministic.

Order model (``Offer``, ``Request``) mirrors the contract's EIP-712 structs;
``OrderBook`` indexes resting orders; ``ContinuousMatcher`` matches on arrival
with price-time priority.
"""

from .book import OrderBook, RestingOrder
from .catalog import ANY_GPU_MODEL, GPU_MODELS, REGIONS, GpuClass, GpuModel, Region
from .continuous import ContinuousMatcher
from .deals import Deal, total_welfare
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
from .orders import Offer, Order, Request, Side
