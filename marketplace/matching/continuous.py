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

import math
from heapq import heapify, heappop, heappush, heapreplace
from operator import itemgetter

import numpy as np

from .book import (
    _PACKED_CLIPPED,
    _PACKED_EMPTY,
    _PRICE_MAX,
    _SEQ_BITS,
    _SEQ_MAX,
    OrderBook,
    RestingOrder,
    offer_signature,
    request_signature,
)
from .deals import Deal, new_deal
from .orders import SECONDS_PER_HOUR, Offer, Order, Request, Side

_top = itemgetter(0)  # a bucket heap's best entry
_OFFER, _REQUEST = Side.OFFER, Side.REQUEST  # an Enum member lookup costs more than a global


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
        # The signature once: both the lookup and the resting use it.
        if order.side is _REQUEST:
            sig = request_signature(order)  # type: ignore[arg-type]
            deals = self._match_request(order, incoming, now, sig)  # type: ignore[arg-type]
        else:
            sig = offer_signature(order)  # type: ignore[arg-type]
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

    # The two walks below are ``OrderBook.counter_candidates`` inlined: they visit the same
    # entries in the same order (best price, then earliest arrival) and drop the same stale or
    # expired entries, without a generator. The bucket tops are compared in C (map/filter/min).
    # Most orders stop at the first candidate; that one is only read, not popped and pushed back
    # (its key does not change), and the merge heap over all tops is only built for a second one.

    def _match_request(self, request: Request, incoming: RestingOrder, now: int, sig: object) -> list[Deal]:
        book = self.book
        cands = book._offer_cands_for.get(sig)  # type: ignore[call-overload]
        if cands is None:
            book._cache_offer_groups_for(sig)  # type: ignore[arg-type]
            cands = book._offer_cands_for[sig]  # type: ignore[index]
        slots, heaps, slot_list = cands
        if not heaps:
            return []
        if slots is None:  # buckets were added since the last search
            slots = cands[0] = np.array(slot_list, dtype=np.intp)
        limit = request.max_price_per_gpu_hour
        # The best bucket top by its packed key (see ``book._ask_lb``): gather + argmin in numpy.
        packed_limit = ((limit if limit < _PRICE_MAX else _PRICE_MAX) << _SEQ_BITS) | _SEQ_MAX
        lower = book._ask_lb
        bounds = lower.take(slots)
        while True:
            j = bounds.argmin()
            bound = bounds.item(j)
            if bound > packed_limit:
                return []  # even the lowest bound does not cross: no top does
            heap = heaps[j]
            if heap:
                best = heap[0]
                price, seq = best[0], best[1]
                actual = ((price if price < _PRICE_MAX else _PRICE_MAX) << _SEQ_BITS) | (seq if seq < _SEQ_MAX else _SEQ_MAX)
            else:
                actual = _PACKED_EMPTY
            if actual == bound:
                break
            bounds[j] = actual  # the bound was stale (entries left that bucket): correct it, look again
            lower[slots.item(j)] = actual
        if bound >= _PACKED_CLIPPED or bound & _SEQ_MAX == _SEQ_MAX:
            best = min(map(_top, filter(None, heaps)))  # clipped keys may tie: compare the tops exactly
        if best[0] > limit:
            return []
        deals: list[Deal] = []
        left = incoming.remaining
        gpus = request.gpu_count
        request_min = request.min_hours
        request_id = request.order_id
        taken: list[tuple[list, tuple[int, int, RestingOrder]]] = []
        tops: list[tuple[int, int, RestingOrder]] | None = None
        try:
            while True:
                resting = best[2]
                heap = resting.bucket.heap  # type: ignore[union-attr]  # best is its top
                if resting.active and resting.deadline >= now:
                    offer: Offer = resting.order  # type: ignore[assignment]
                    lo = offer.min_hours
                    if lo < request_min:
                        lo = request_min
                    hi = resting.remaining // gpus
                    if offer.max_hours < hi:
                        hi = offer.max_hours
                    if left < hi:
                        hi = left
                    until_end = (offer.available_until - now) // SECONDS_PER_HOUR
                    if until_end < hi:
                        hi = until_end
                    if hi >= lo:  # else this pair cannot fit a deal; lower-priority offers still may
                        deals.append(new_deal(offer.order_id, request_id, gpus, hi, offer.price_per_gpu_hour, _REQUEST))
                        book.consume(resting, gpus * hi)
                        left -= hi
                        if left < request_min:
                            if not resting.active:
                                heappop(heap)
                            break
                    heappop(heap)
                    taken.append((heap, best))
                    if heap:
                        top = heap[0]
                        if not (top[2].active and top[2].deadline >= now):
                            top = book._live_top(heap, now)
                    else:
                        top = None
                else:
                    top = book._live_top(heap, now)
                if tops is None:  # second candidate: merge heap over the tops that can still cross
                    # (a bucket whose bound does not cross has no top that does: leave it out)
                    tops = [heaps[k][0] for k in np.flatnonzero(bounds <= packed_limit).tolist() if heaps[k]]
                    if not tops:
                        break
                    heapify(tops)
                elif top is not None and top[0] <= limit:
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
        ((ceiling, heaps),) = groups
        if ceiling[0] > limit:  # no resting bid this high (see ``book._Group``): nothing to scan
            return []
        best = min(map(_top, filter(None, heaps)), default=None)
        if best is None:
            ceiling[0] = math.inf
            return []
        if best[0] > limit:
            ceiling[0] = best[0]  # the exact best key over the group right now
            return []
        deals: list[Deal] = []
        capacity = incoming.remaining
        offer_min = offer.min_hours
        offer_max = offer.max_hours
        hours_until_end = (offer.available_until - now) // SECONDS_PER_HOUR
        offer_id = offer.order_id
        taken: list[tuple[list, tuple[int, int, RestingOrder]]] = []
        tops: list[tuple[int, int, RestingOrder]] | None = None
        try:
            while True:
                resting = best[2]
                heap = resting.bucket.heap  # type: ignore[union-attr]
                if resting.active and resting.deadline >= now:
                    request: Request = resting.order  # type: ignore[assignment]
                    gpus = request.gpu_count
                    lo = request.min_hours
                    if lo < offer_min:
                        lo = offer_min
                    hi = capacity // gpus
                    if offer_max < hi:
                        hi = offer_max
                    if resting.remaining < hi:
                        hi = resting.remaining
                    if hours_until_end < hi:
                        hi = hours_until_end
                    if hi >= lo:
                        deals.append(new_deal(offer_id, request.order_id, gpus, hi, price, _OFFER))
                        book.consume(resting, hi)
                        capacity -= gpus * hi
                        if capacity < offer_min:
                            if not resting.active:
                                heappop(heap)
                            break
                    heappop(heap)
                    taken.append((heap, best))
                    if heap:
                        top = heap[0]
                        if not (top[2].active and top[2].deadline >= now):
                            top = book._live_top(heap, now)
                    else:
                        top = None
                else:
                    top = book._live_top(heap, now)
                if tops is None:
                    tops = list(map(_top, filter(None, heaps)))
                    if not tops:
                        break
                    heapify(tops)
                elif top is not None and top[0] <= limit:
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
