"""Continuous matching: every incoming order trades immediately against the book.

Rules (the brute-force reference in ``reference.py`` implements the same ones
by linear scan, and the property tests hold the two equal):

1. Priority: among resting counter-orders that are compatible, live and whose
   price crosses, the best price wins (lowest ask for an incoming request,
   highest bid for an incoming offer), then the earliest arrival.
2. Size: each deal takes as many hours as the pair allows,
   ``min(offer.max_hours, request hours left, offer capacity left // request.gpu_count,
   hours until offer.available_until)``, and at least
   ``max(offer.min_hours, request.min_hours)``; a pair that cannot fit that
   minimum is skipped, not blocking lower-priority counter-orders.
3. One deal per (offer, request) pair: ``offer.max_hours`` bounds what a
   provider commits to one job, so a request never chains deals on the same
   offer to exceed it.
4. Price: every deal settles at the offer's ask (``price_per_gpu_hour``),
   whichever side was resting -- the rule the contract enforces.
5. What is left of the incoming order rests if it can still make a deal
   (request: ``hours left >= min_hours``; offer: ``capacity left >= min_hours``).
"""

from __future__ import annotations

from contextlib import closing

from .book import OrderBook, RestingOrder
from .deals import Deal
from .orders import SECONDS_PER_HOUR, Offer, Order, Request, Side


class ContinuousMatcher:
    """Price-time priority matching on an ``OrderBook``. Deterministic, no I/O."""

    def __init__(self, book: OrderBook | None = None) -> None:
        self.book = book if book is not None else OrderBook()

    def submit(self, order: Order, now: int) -> list[Deal]:
        """Match ``order`` at time ``now``; rest what is left; return the deals in order made.

        Raises a ``MatchingError`` (before touching the book) for duplicate ids,
        expired orders or a clock going backwards.
        """
        book = self.book
        incoming = book.accept(order, now)
        sig = book.signature(order)  # once: both the lookup and the resting use it
        if order.side is Side.REQUEST:
            deals = self._match_request(order, incoming, now, sig)  # type: ignore[arg-type]
        else:
            deals = self._match_offer(order, incoming, now, sig)  # type: ignore[arg-type]
        if incoming.remaining >= order.min_hours:
            book.rest(incoming, sig)
        else:
            book.retire(incoming)
        return deals

    def cancel(self, order_id: str) -> Order:
        return self.book.cancel(order_id)

    def expire(self, now: int, *, max_entries: int | None = None) -> list[str]:
        """Drop expired orders (see ``OrderBook.expire``); returns their ids."""
        return self.book.expire(now, max_entries=max_entries)

    def _match_request(self, request: Request, incoming: RestingOrder, now: int, sig: object) -> list[Deal]:
        deals: list[Deal] = []
        left = incoming.remaining
        gpus = request.gpu_count
        request_min = request.min_hours
        request_id = request.order_id
        book = self.book
        with closing(book.counter_candidates(request, now, sig)) as candidates:  # type: ignore[arg-type]
            for resting in candidates:
                offer: Offer = resting.order  # type: ignore[assignment]
                lo = offer.min_hours if offer.min_hours > request_min else request_min
                hi = min(
                    offer.max_hours,
                    left,
                    resting.remaining // gpus,
                    (offer.available_until - now) // SECONDS_PER_HOUR,
                )
                if hi < lo:
                    continue  # this pair cannot fit a deal; lower-priority offers still may
                deals.append(Deal(offer.order_id, request_id, gpus, hi, offer.price_per_gpu_hour, Side.REQUEST))
                book.consume(resting, gpus * hi)
                left -= hi
                if left < request_min:
                    break
        incoming.remaining = left
        return deals

    def _match_offer(self, offer: Offer, incoming: RestingOrder, now: int, sig: object) -> list[Deal]:
        deals: list[Deal] = []
        capacity = incoming.remaining
        offer_min = offer.min_hours
        offer_max = offer.max_hours
        hours_until_end = (offer.available_until - now) // SECONDS_PER_HOUR
        offer_id = offer.order_id
        price = offer.price_per_gpu_hour
        book = self.book
        with closing(book.counter_candidates(offer, now, sig)) as candidates:  # type: ignore[arg-type]
            for resting in candidates:
                request: Request = resting.order  # type: ignore[assignment]
                gpus = request.gpu_count
                lo = offer_min if offer_min > request.min_hours else request.min_hours
                hi = min(offer_max, resting.remaining, capacity // gpus, hours_until_end)
                if hi < lo:
                    continue
                deals.append(Deal(offer_id, request.order_id, gpus, hi, price, Side.OFFER))
                book.consume(resting, hi)
                capacity -= gpus * hi
                if capacity < offer_min:
                    break
        incoming.remaining = capacity
        return deals
