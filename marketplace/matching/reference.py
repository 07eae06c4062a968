"""Naive reference matcher: the continuous matching rules by linear scan.

It keeps resting orders in one list and, for every deal, scans all of them
with ``compat.max_deal_hours`` -- the direct transcription of the contract's
rule. It is the benchmark's baseline and the property tests' oracle for
``ContinuousMatcher`` (same inputs must give the same deals).
"""

from __future__ import annotations

from .compat import max_deal_hours
from .deals import Deal
from .errors import ClockWentBackwards, DuplicateOrder, OrderExpired
from .orders import Offer, Order, Request


class _Entry:
    __slots__ = ("order", "seq", "remaining")

    def __init__(self, order: Order, seq: int, remaining: int) -> None:
        self.order = order
        self.seq = seq
        self.remaining = remaining


class NaiveMatcher:
    """Linear-scan continuous matcher with the same rules as ``ContinuousMatcher``."""

    def __init__(self) -> None:
        self._resting: list[_Entry] = []
        self._seen: dict[str, int] = {}  # id -> deadline: duplicates until the deadline
        self._next_seq = 0
        self._now = 0

    @classmethod
    def from_snapshot(cls, snapshot: list[tuple[Order, int, int]], *, next_seq: int, now: int) -> NaiveMatcher:
        """Start from an ``OrderBook.snapshot()`` so both matchers see the same book."""
        matcher = cls()
        matcher._resting = [_Entry(o, seq, rem) for o, seq, rem in snapshot]
        matcher._seen = {o.order_id: o.deadline for o, _, _ in snapshot}
        matcher._next_seq = next_seq
        matcher._now = now
        return matcher

    def __len__(self) -> int:
        return len(self._resting)

    def remaining(self, order_id: str) -> int | None:
        for e in self._resting:
            if e.order.order_id == order_id:
                return e.remaining
        return None

    def cancel(self, order_id: str) -> None:
        self._resting = [e for e in self._resting if e.order.order_id != order_id]

    def submit(self, order: Order, now: int) -> list[Deal]:
        if now < self._now:
            raise ClockWentBackwards(now, self._now)
        seen = self._seen.get(order.order_id)
        if seen is not None and seen >= now:
            raise DuplicateOrder(order.order_id)
        if order.deadline < now:
            raise OrderExpired("deadline", order.deadline, f"order can no longer trade at now={now}")
        self._now = now
        self._seen[order.order_id] = order.deadline
        incoming = _Entry(order, self._next_seq, order.capacity_gpu_hours if isinstance(order, Offer) else order.hours)
        self._next_seq += 1
        deals: list[Deal] = []
        paired: set[int] = set()
        while incoming.remaining >= order.min_hours:
            best: _Entry | None = None
            best_key: tuple[int, int] | None = None
            best_hours = 0
            for e in self._resting:
                if e.order.side is order.side or e.seq in paired or e.remaining < e.order.min_hours:
                    continue
                if isinstance(order, Request):
                    hours = max_deal_hours(e.order, e.remaining, order, incoming.remaining, now)  # type: ignore[arg-type]
                    key = (e.order.price_per_gpu_hour, e.seq)  # type: ignore[union-attr]
                else:
                    hours = max_deal_hours(order, incoming.remaining, e.order, e.remaining, now)  # type: ignore[arg-type]
                    key = (-e.order.max_price_per_gpu_hour, e.seq)  # type: ignore[union-attr]
                if hours and (best_key is None or key < best_key):
                    best, best_key, best_hours = e, key, hours
            if best is None:
                break
            paired.add(best.seq)
            if isinstance(order, Request):
                offer, request, gpus = best.order, order, order.gpu_count
                best.remaining -= gpus * best_hours
                incoming.remaining -= best_hours
            else:
                offer, request, gpus = order, best.order, best.order.gpu_count  # type: ignore[union-attr]
                best.remaining -= best_hours
                incoming.remaining -= gpus * best_hours
            deals.append(
                Deal(offer.order_id, request.order_id, gpus, best_hours, offer.price_per_gpu_hour, order.side)  # type: ignore[union-attr]
            )
        # drop exhausted and expired orders (they can never trade again)
        self._resting = [e for e in self._resting if e.remaining >= e.order.min_hours and e.order.deadline >= now]
        if incoming.remaining >= order.min_hours:
            self._resting.append(incoming)
        return deals
