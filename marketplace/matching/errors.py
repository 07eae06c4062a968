"""One exception hierarchy for the matching engine.

Every rejection is raised *before* the book is touched, so catching any
``MatchingError`` leaves the engine exactly as it was. The service maps these
to HTTP 4xx at its edge; CLIs map them to exit codes.
"""

from __future__ import annotations

from typing import Any


class MatchingError(Exception):
    """Base class of every error the matching engine raises on purpose."""


class InvalidOrder(MatchingError, ValueError):
    """An order is malformed; ``field`` names the offending attribute."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")


class InvalidQuantity(InvalidOrder):
    """A count, hour or capacity is not a positive integer in range."""


class InvalidPrice(InvalidOrder):
    """A price is not a positive integer (floats, NaN and inf are refused)."""


class InvalidAddress(InvalidOrder):
    """An address or hash is not well-formed hex of the right length."""


class InvalidTimeWindow(InvalidOrder):
    """Hour bounds or time stamps contradict each other."""


class UnknownGpuModel(InvalidOrder):
    """The GPU model id is not in the catalogue."""


class UnknownRegion(InvalidOrder):
    """The region id (or every bit of a region mask) is outside the catalogue."""


class OrderExpired(InvalidOrder):
    """The order can no longer trade at the given time (expired, or its window closed)."""


class DuplicateOrder(MatchingError):
    """An order id is already resting, or was seen before and has not expired yet."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"duplicate order id {order_id!r}")


class UnknownOrder(MatchingError, KeyError):
    """No resting order has this id (never seen, filled, cancelled or expired)."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(order_id)

    def __str__(self) -> str:  # KeyError would repr() the message
        return f"unknown order id {self.order_id!r}"


class ClockWentBackwards(MatchingError):
    """``now`` is earlier than a time the engine has already acted on.

    Time only moves forward: an order dropped as expired must never become
    matchable again, or replays would not be deterministic.
    """

    def __init__(self, now: int, last: int) -> None:
        self.now = now
        self.last = last
        super().__init__(f"now={now} is before the last time seen ({last})")


class SolverError(MatchingError):
    """The batch solver failed to return a usable allocation."""
