"""The order book: resting offers and requests, indexed so that the best compatible
counter-order is found without scanning the book.

Index
-----
Every order has a *static signature*: the attributes that decide compatibility
independently of price, time and remaining quantity.

* offer:   (token, gpu_model, region, green_energy, gpu_count, vram_gb)
* request: (token, gpu_model, region_mask, green_only, gpu_count, min_vram_gb)

Orders with the same signature share a *bucket*: a binary heap ordered by
price-time priority (offers: lowest ask first; requests: highest bid first;
then arrival sequence). Whether an offer signature fits a request signature is
computed once per pair of signatures and cached, so an incoming order visits
only the buckets that can possibly fit it -- a number that depends on how
diverse the market is (catalogue x regions x GPU counts), not on how many
orders rest. Within those buckets it walks entries in global price-time order
(a k-way merge of the bucket heaps) and stops at the first price that no longer
crosses, so it never looks at an order it could not trade with on price.

What is not indexed: per-pair hour bounds (min/max hours, remaining capacity,
``available_until``). A candidate that fails them is skipped and put back
afterwards; such skips are rare in realistic books but are the one place where
a lookup can cost more than O(buckets x log n).

Removal is lazy: a cancelled, filled or expired order is marked inactive and
its heap entries are dropped when they reach the top, or all at once when a
heap holds more stale entries than live ones (so memory stays within 2x of
the live set). Expired orders are also dropped lazily when met at a bucket top,
and in bulk by ``expire(now)``.

Memory per resting order (CPython 3.11, 64-bit): the order object itself
(~400-600 B, dominated by its ints and id string) plus ~260 B of book
overhead: a ``RestingOrder`` (72 B), one bucket-heap entry (72 B), one
expiry-heap entry (72 B), and one slot in the id dict (~40-80 B). Stale heap
entries can at most double the two heap costs. ``bench/matching`` measures it.
"""

from __future__ import annotations

import heapq
from typing import Iterator, TypeAlias

from .catalog import ANY_GPU_MODEL
from .errors import ClockWentBackwards, DuplicateOrder, InvalidQuantity, OrderExpired, UnknownOrder
from .orders import Offer, Order, Request, Side

OfferSignature: TypeAlias = tuple[str, int, int, bool, int, int]
RequestSignature: TypeAlias = tuple[str, int, int, bool, int, int]

_COMPACT_MIN_STALE = 64  # don't rebuild tiny heaps; amortisation needs some slack


class RestingOrder:
    """Mutable matching state of one accepted order.

    ``remaining`` is GPU-hours of capacity for an offer and hours for a request.
    """

    __slots__ = ("order", "seq", "remaining", "deadline", "bucket", "active")

    def __init__(self, order: Order, seq: int, remaining: int) -> None:
        self.order = order
        self.seq = seq
        self.remaining = remaining
        self.deadline = order.deadline  # cached: checked on every visit
        self.bucket: _Bucket | None = None
        self.active = True

    def __repr__(self) -> str:
        return f"RestingOrder({self.order.order_id!r}, seq={self.seq}, remaining={self.remaining})"


_Heap: TypeAlias = "list[tuple[int, int, RestingOrder]]"


class _Bucket:
    """Heap of ``(price_key, seq, RestingOrder)``; ``stale`` counts inactive entries still inside.

    The heap list object is never replaced (compaction works in place), so the
    signature caches can hold the bare lists: one attribute lookup less per
    bucket visit on the hottest loop.
    """

    __slots__ = ("heap", "stale")

    def __init__(self) -> None:
        self.heap: _Heap = []
        self.stale = 0


def offer_signature(offer: Offer) -> OfferSignature:
    return (offer.token, offer.gpu_model, offer.region, offer.green_energy, offer.gpu_count, offer.vram_gb)


def request_signature(request: Request) -> RequestSignature:
    return (
        request.token,
        request.gpu_model,
        request.effective_region_mask,
        request.green_only,
        request.gpu_count,
        request.min_vram_gb,
    )


def signatures_compatible(o: OfferSignature, r: RequestSignature) -> bool:
    """``compat.statically_compatible`` lifted to signatures (same rule, same order of terms)."""
    o_token, o_model, o_region, o_green, o_count, o_vram = o
    r_token, r_model, r_mask, r_green_only, r_count, r_min_vram = r
    return (
        o_token == r_token
        and (r_model == ANY_GPU_MODEL or r_model == o_model)
        and o_count >= r_count
        and o_vram >= r_min_vram
        and (r_mask >> o_region) & 1 == 1
        and (o_green or not r_green_only)
    )


def _price_key(order: Order) -> int:
    # Heaps are min-heaps: offers rank by ascending ask, requests by descending bid.
    if order.side is Side.OFFER:
        return order.price_per_gpu_hour  # type: ignore[union-attr]
    return -order.max_price_per_gpu_hour  # type: ignore[union-attr]


class OrderBook:
    """Resting offers and requests with price-time priority per compatibility bucket.

    The book does not match by itself (see ``ContinuousMatcher``); it stores,
    indexes, cancels and expires orders, and walks counter-orders in priority
    order for a matcher. ``now`` arguments are unix seconds and must never
    decrease.
    """

    def __init__(self) -> None:
        self._orders: dict[str, RestingOrder] = {}
        self._offer_buckets: dict[OfferSignature, _Bucket] = {}
        self._request_buckets: dict[RequestSignature, _Bucket] = {}
        # signature -> heaps of the counter-order buckets it is statically compatible with
        self._offer_heaps_for: dict[RequestSignature, list[_Heap]] = {}
        self._request_heaps_for: dict[OfferSignature, list[_Heap]] = {}
        self._expiry_heap: list[tuple[int, int, RestingOrder]] = []
        self._expiry_stale = 0
        self._expired_unreported: list[str] = []
        # ids that left the book before their deadline: still duplicates until then
        self._retired: dict[str, int] = {}
        self._retired_by_deadline: list[tuple[int, str]] = []  # heap, to forget ids incrementally
        self._next_seq = 0
        self._now = 0
        self._offer_count = 0

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    @property
    def offer_count(self) -> int:
        return self._offer_count

    @property
    def request_count(self) -> int:
        return len(self._orders) - self._offer_count

    @property
    def bucket_count(self) -> int:
        return len(self._offer_buckets) + len(self._request_buckets)

    @property
    def now(self) -> int:
        """Latest time the book has acted on."""
        return self._now

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def get(self, order_id: str) -> RestingOrder:
        try:
            return self._orders[order_id]
        except KeyError:
            raise UnknownOrder(order_id) from None

    def remaining(self, order_id: str) -> int:
        """Unfilled GPU-hours (offer) or hours (request) of a resting order."""
        return self.get(order_id).remaining

    def snapshot(self) -> list[tuple[Order, int, int]]:
        """``(order, seq, remaining)`` of every resting order, in arrival order."""
        return sorted(((r.order, r.seq, r.remaining) for r in self._orders.values()), key=lambda t: t[1])

    # ------------------------------------------------------------ mutations

    def add(self, order: Order, now: int, *, remaining: int | None = None) -> RestingOrder:
        """Rest ``order`` without matching it (e.g. when rebuilding after a restart).

        ``remaining`` defaults to the full quantity (capacity for an offer,
        hours for a request). All checks happen before anything changes.
        """
        resting = self.accept(order, now, remaining=remaining)
        self.rest(resting)
        return resting

    def cancel(self, order_id: str) -> Order:
        """Remove a resting order; its id stays a duplicate until the order's deadline."""
        resting = self.get(order_id)
        self._remove(resting, in_bucket_heap=True)
        return resting.order

    def expire(self, now: int) -> list[str]:
        """Drop every order whose deadline is before ``now``; return their ids.

        Includes orders already dropped lazily during matching since the last call.
        """
        self._advance(now)
        expired = self._expired_unreported
        self._expired_unreported = []
        heap = self._expiry_heap
        while heap and heap[0][0] < now:
            _, _, resting = heapq.heappop(heap)
            if resting.active:
                self._deactivate(resting, in_bucket_heap=True, in_expiry_heap=False)
                del self._orders[resting.order.order_id]
                expired.append(resting.order.order_id)
            else:
                self._expiry_stale -= 1
        self._forget_retired(now, limit=None)
        return expired

    # ------------------------------------------- matcher interface (package-internal)

    def accept(self, order: Order, now: int, *, remaining: int | None = None) -> RestingOrder:
        """Validate an incoming order against the book and give it a sequence number.

        Raises before any state changes; the returned order is not resting yet
        (``rest`` it, or ``retire`` it if it was fully filled).
        """
        if not isinstance(order, (Offer, Request)):
            raise TypeError(f"expected Offer or Request, got {type(order).__name__}")
        if type(now) is not int:
            raise TypeError("now must be an int (unix seconds)")
        if now < self._now:
            raise ClockWentBackwards(now, self._now)
        order_id = order.order_id
        if order_id in self._orders or self._retired.get(order_id, -1) >= now:
            raise DuplicateOrder(order_id)
        if order.deadline < now:
            raise OrderExpired("deadline", order.deadline, f"order can no longer trade at now={now}")
        full = order.capacity_gpu_hours if order.side is Side.OFFER else order.hours  # type: ignore[union-attr]
        if remaining is None:
            remaining = full
        elif type(remaining) is not int or not order.min_hours <= remaining <= full:
            raise InvalidQuantity("remaining", remaining, f"must be in [{order.min_hours}, {full}]")
        self._now = now
        self._forget_retired(now, limit=2)
        seq = self._next_seq
        self._next_seq = seq + 1
        return RestingOrder(order, seq, remaining)

    def rest(self, resting: RestingOrder) -> None:
        """Index an accepted order so that later orders can match it."""
        order = resting.order
        if order.side is Side.OFFER:
            sig = offer_signature(order)  # type: ignore[arg-type]
            bucket = self._offer_buckets.get(sig)
            if bucket is None:
                bucket = self._new_offer_bucket(sig)
            self._offer_count += 1
        else:
            sig = request_signature(order)  # type: ignore[arg-type]
            bucket = self._request_buckets.get(sig)
            if bucket is None:
                bucket = self._new_request_bucket(sig)
        resting.bucket = bucket
        heapq.heappush(bucket.heap, (_price_key(order), resting.seq, resting))
        heapq.heappush(self._expiry_heap, (resting.deadline, resting.seq, resting))
        self._orders[order.order_id] = resting

    def retire(self, resting: RestingOrder) -> None:
        """Forget an accepted order that will not rest (fully filled on arrival)."""
        resting.active = False
        self._remember_retired(resting)

    def consume(self, resting: RestingOrder, amount: int) -> None:
        """Fill ``amount`` of a resting order that a candidate walk has taken off its heap.

        Removes it from the book if what is left cannot make another deal.
        """
        left = resting.remaining - amount
        resting.remaining = left
        if left < resting.order.min_hours:  # offer: 1 GPU x min_hours; request: min_hours
            self._remove(resting, in_bucket_heap=False)

    def counter_candidates(self, order: Order, now: int) -> Iterator[RestingOrder]:
        """Resting counter-orders that fit ``order`` statically, are live at ``now`` and
        whose price crosses, best price first, then earliest arrival.

        Each yielded order is taken off its heap, so the caller may ``consume``
        it; everything still active is put back when the iterator is closed.
        Always close it (``contextlib.closing``).
        """
        if order.side is Side.OFFER:
            sig = offer_signature(order)  # type: ignore[arg-type]
            heaps = self._request_heaps_for.get(sig)
            if heaps is None:
                heaps = self._cache_request_heaps_for(sig)
            limit = -order.price_per_gpu_hour  # type: ignore[union-attr]  # bid >= ask
        else:
            rsig = request_signature(order)  # type: ignore[arg-type]
            heaps = self._offer_heaps_for.get(rsig)
            if heaps is None:
                heaps = self._cache_offer_heaps_for(rsig)
            limit = order.max_price_per_gpu_hour  # type: ignore[union-attr]  # ask <= bid
        return self._walk(heaps, limit, now)

    # ------------------------------------------------------------- internals

    def _walk(self, heaps: list[_Heap], limit: int, now: int) -> Iterator[RestingOrder]:
        # Hot path: every compatible bucket is looked at once per incoming order.
        # Price first (a top that does not cross means nothing below it does),
        # in a comprehension because that is CPython's cheapest loop.
        crossing = [heap for heap in heaps if heap and heap[0][0] <= limit]
        if not crossing:
            return
        merge: list[tuple[int, int, _Heap]] = []  # (price key, seq, heap): seq is unique, heaps never compared
        for heap in crossing:
            top = heap[0]
            resting = top[2]
            if not resting.active or resting.deadline < now:
                top = self._live_top(heap, now)  # type: ignore[assignment]
                if top is None or top[0] > limit:
                    continue
            merge.append((top[0], top[1], heap))
        heapq.heapify(merge)
        taken: list[tuple[_Heap, tuple[int, int, RestingOrder]]] = []
        try:
            while merge:
                heap = merge[0][2]
                entry = heapq.heappop(heap)
                taken.append((heap, entry))
                yield entry[2]
                top = self._live_top(heap, now) if heap else None
                if top is not None and top[0] <= limit:
                    heapq.heapreplace(merge, (top[0], top[1], heap))
                else:
                    heapq.heappop(merge)
        finally:
            for heap, entry in taken:
                if entry[2].active:
                    heapq.heappush(heap, entry)

    def _live_top(self, heap: _Heap, now: int) -> tuple[int, int, RestingOrder] | None:
        """Top entry of a bucket heap after dropping stale and expired entries."""
        while heap:
            top = heap[0]
            resting = top[2]
            if not resting.active:
                heapq.heappop(heap)
                resting.bucket.stale -= 1  # type: ignore[union-attr]
            elif resting.deadline < now:
                heapq.heappop(heap)
                self._deactivate(resting, in_bucket_heap=False)
                del self._orders[resting.order.order_id]
                self._expired_unreported.append(resting.order.order_id)
            else:
                return top
        return None

    def _remove(self, resting: RestingOrder, *, in_bucket_heap: bool) -> None:
        self._deactivate(resting, in_bucket_heap=in_bucket_heap)
        del self._orders[resting.order.order_id]
        self._remember_retired(resting)

    def _deactivate(self, resting: RestingOrder, *, in_bucket_heap: bool, in_expiry_heap: bool = True) -> None:
        """Mark inactive; entries still inside a heap become stale and are dropped lazily.

        Callers say which heaps still hold an entry (one may just have been
        popped), so the stale counters stay exact. Never compacts a heap that
        the caller is iterating: ``expire`` passes ``in_expiry_heap=False`` and
        candidate walks pass ``in_bucket_heap=False``.
        """
        resting.active = False
        if resting.order.side is Side.OFFER:
            self._offer_count -= 1
        if in_expiry_heap:
            self._expiry_stale += 1
            if len(self._expiry_heap) < 2 * self._expiry_stale and self._expiry_stale > _COMPACT_MIN_STALE:
                self._expiry_heap = [e for e in self._expiry_heap if e[2].active]
                heapq.heapify(self._expiry_heap)
                self._expiry_stale = 0
        if in_bucket_heap:
            bucket = resting.bucket
            assert bucket is not None
            bucket.stale += 1
            if len(bucket.heap) < 2 * bucket.stale and bucket.stale > _COMPACT_MIN_STALE:
                bucket.heap[:] = [e for e in bucket.heap if e[2].active]  # in place: caches hold this list
                heapq.heapify(bucket.heap)
                bucket.stale = 0

    def _remember_retired(self, resting: RestingOrder) -> None:
        order_id = resting.order.order_id
        self._retired[order_id] = resting.deadline
        heapq.heappush(self._retired_by_deadline, (resting.deadline, order_id))

    def _forget_retired(self, now: int, limit: int | None) -> None:
        """Forget retired ids whose deadline has passed: such an id would be refused as
        expired anyway. Every accepted order is retired at most once, so forgetting
        up to two per ``accept`` drains the backlog without a latency spike."""
        heap = self._retired_by_deadline
        retired = self._retired
        while heap and heap[0][0] < now and (limit is None or limit > 0):
            deadline, order_id = heapq.heappop(heap)
            if retired.get(order_id) == deadline:
                del retired[order_id]
            if limit is not None:
                limit -= 1

    def _advance(self, now: int) -> None:
        if type(now) is not int:
            raise TypeError("now must be an int (unix seconds)")
        if now < self._now:
            raise ClockWentBackwards(now, self._now)
        self._now = now

    def _new_offer_bucket(self, sig: OfferSignature) -> _Bucket:
        bucket = _Bucket()
        self._offer_buckets[sig] = bucket
        for request_sig, heaps in self._offer_heaps_for.items():
            if signatures_compatible(sig, request_sig):
                heaps.append(bucket.heap)
        return bucket

    def _new_request_bucket(self, sig: RequestSignature) -> _Bucket:
        bucket = _Bucket()
        self._request_buckets[sig] = bucket
        for offer_sig, heaps in self._request_heaps_for.items():
            if signatures_compatible(offer_sig, sig):
                heaps.append(bucket.heap)
        return bucket

    def _cache_offer_heaps_for(self, sig: RequestSignature) -> list[_Heap]:
        heaps = [b.heap for osig, b in self._offer_buckets.items() if signatures_compatible(osig, sig)]
        self._offer_heaps_for[sig] = heaps
        return heaps

    def _cache_request_heaps_for(self, sig: OfferSignature) -> list[_Heap]:
        heaps = [b.heap for rsig, b in self._request_buckets.items() if signatures_compatible(sig, rsig)]
        self._request_heaps_for[sig] = heaps
        return heaps
