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

from heapq import heapify, heappop, heappush, heapreplace
from operator import itemgetter

from .book import OrderBook, RestingOrder
from .deals import Deal
from .orders import SECONDS_PER_HOUR, Offer, Order, Request, Side

_top = itemgetter(0)  # a bucket heap's best entry


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
        # The candidate walk of ``OrderBook.counter_candidates``, inlined: same entries visited in
        # the same order, same heap operations (so the same lazy drops), without a generator.
        # Tops of the compatible offer buckets are gathered and compared in C (map/filter/min);
        # most requests take the best one and stop, so the merge heap is only built if they go on.
        book = self.book
        by_model = book._offer_groups_for.get(sig)  # type: ignore[call-overload]
        if by_model is None:
            by_model = book._cache_offer_groups_for(sig)  # type: ignore[arg-type]
        limit = request.max_price_per_gpu_hour
        tops: list[tuple[int, int, RestingOrder]] = []
        for floor, heaps in by_model.values():
            if floor[0] <= limit:
                tops += map(_top, filter(None, heaps))
        if not tops:
            return []
        best = min(tops)
        if best[0] > limit:
            return []
        deals: list[Deal] = []
        left = incoming.remaining
        gpus = request.gpu_count
        request_min = request.min_hours
        request_id = request.order_id
        taken: list[tuple[list, tuple[int, int, RestingOrder]]] = []
        merging = False
        try:
            while True:
                resting = best[2]
                heap = resting.bucket.heap  # type: ignore[union-attr]
                if resting.active and resting.deadline >= now:
                    heappop(heap)  # best is its heap's top
                    taken.append((heap, best))
                    offer: Offer = resting.order  # type: ignore[assignment]
                    lo = offer.min_hours if offer.min_hours > request_min else request_min
                    hi = min(
                        offer.max_hours,
                        left,
                        resting.remaining // gpus,
                        (offer.available_until - now) // SECONDS_PER_HOUR,
                    )
                    if hi >= lo:  # else this pair cannot fit a deal; lower-priority offers still may
                        deals.append(Deal(offer.order_id, request_id, gpus, hi, offer.price_per_gpu_hour, Side.REQUEST))
                        book.consume(resting, gpus * hi)
                        left -= hi
                        if left < request_min:
                            break
                    if heap:
                        top = heap[0]
                        if not (top[2].active and top[2].deadline >= now):
                            top = book._live_top(heap, now)
                    else:
                        top = None
                else:
                    top = book._live_top(heap, now)
                if not merging:
                    heapify(tops)  # best is tops[0]
                    merging = True
                if top is not None and top[0] <= limit:
                    heapreplace(tops, top)
                elif len(tops) > 1:
                    heappop(tops)
                else:
                    break
                best = tops[0]
                if best[0] > limit:
                    break
        finally:
            for heap, entry in taken:
                if entry[2].active:
                    heappush(heap, entry)
        incoming.remaining = left
        return deals

    def _match_offer(self, offer: Offer, incoming: RestingOrder, now: int, sig: object) -> list[Deal]:
        # Mirror of ``_match_request``: request buckets hold ``(-bid, seq, resting)``.
        book = self.book
        groups = book._request_groups_for.get(sig) or book._cache_request_groups_for(sig)  # type: ignore[call-overload,arg-type]
        price = offer.price_per_gpu_hour
        limit = -price  # bid >= ask
        tops: list[tuple[int, int, RestingOrder]] = []
        for _floor, heaps in groups:
            tops += map(_top, filter(None, heaps))
        if not tops:
            return []
        best = min(tops)
        if best[0] > limit:
            return []
        deals: list[Deal] = []
        capacity = incoming.remaining
        offer_min = offer.min_hours
        offer_max = offer.max_hours
        hours_until_end = (offer.available_until - now) // SECONDS_PER_HOUR
        offer_id = offer.order_id
        taken: list[tuple[list, tuple[int, int, RestingOrder]]] = []
        merging = False
        try:
            while True:
                resting = best[2]
                heap = resting.bucket.heap  # type: ignore[union-attr]
                if resting.active and resting.deadline >= now:
                    heappop(heap)
                    taken.append((heap, best))
                    request: Request = resting.order  # type: ignore[assignment]
                    gpus = request.gpu_count
                    lo = offer_min if offer_min > request.min_hours else request.min_hours
                    hi = min(offer_max, resting.remaining, capacity // gpus, hours_until_end)
                    if hi >= lo:
                        deals.append(Deal(offer_id, request.order_id, gpus, hi, price, Side.OFFER))
                        book.consume(resting, hi)
                        capacity -= gpus * hi
                        if capacity < offer_min:
                            break
                    if heap:
                        top = heap[0]
                        if not (top[2].active and top[2].deadline >= now):
                            top = book._live_top(heap, now)
                    else:
                        top = None
                else:
                    top = book._live_top(heap, now)
                if not merging:
                    heapify(tops)
                    merging = True
                if top is not None and top[0] <= limit:
                    heapreplace(tops, top)
                elif len(tops) > 1:
                    heappop(tops)
                else:
                    break
                best = tops[0]
                if best[0] > limit:
                    break
        finally:
            for heap, entry in taken:
                if entry[2].active:
                    heappush(heap, entry)
        incoming.remaining = capacity
        return deals
