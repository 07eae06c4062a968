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
Offer buckets are grouped per (token, GPU model) under a floor, a lower bound
on every ask in the group: a request whose bid is below a model's floor skips
all of that model's buckets at once (``counter_candidates``).

The continuous matcher does not walk those groups: it finds a request's best
offer bucket with a numpy gather + argmin over ``_ask_lb``, one int64 per offer
bucket holding a lower bound of its top packed as (price, seq) (see
``packed_key``), so a wide request costs about what a narrow one does. For
incoming offers each offer signature keeps a bid ceiling over its request
buckets; most offers' asks are above it and skip the scan.

What is not indexed: per-pair hour bounds (min/max hours, remaining capacity,
``available_until``). A candidate that fails them is skipped and put back
afterwards; such skips are rare in realistic books but are the one place where
a lookup can cost more than O(buckets x log n).

Removal is lazy: a cancelled, filled or expired order is marked inactive and
its heap entry is dropped when it reaches the top, or when its bucket is
compacted -- at once on a cancel if the bucket holds more stale entries than
live ones, or by the next sweep. Expired orders are dropped when met at a
bucket top during matching, and by ``expire(now)``, which sweeps buckets
(optionally a bounded number of entries per call, resuming where it stopped,
so no single call stalls the book).

Memory per resting order (CPython 3.11, 64-bit): the order object itself
(~450-550 B with a 66-char hex id and a 256-bit salt) plus ~250 B of book
overhead: a ``RestingOrder`` (80 B), one bucket-heap entry (~70 B incl. the
list slot) and its slot in the id dict (~60-100 B). Stale entries can at most
double the heap cost between sweeps. Ids of orders that left the book are
remembered (to refuse duplicates) in a bounded FIFO, ``remember_retired``
entries at most. ``bench/matching`` and the tests measure it.
"""

from __future__ import annotations

import collections
import heapq
import math

import numpy as np
from typing import Iterable, Iterator, TypeAlias

from .catalog import ANY_GPU_MODEL, GPU_MODELS, KNOWN_REGIONS_MASK
from .errors import ClockWentBackwards, DuplicateOrder, InvalidQuantity, OrderExpired, UnknownOrder
from .orders import Offer, Order, Request, Side

OfferSignature: TypeAlias = tuple[str, int, int, bool, int, int]
RequestSignature: TypeAlias = tuple[str, int, int, bool, int, int]

_OFFER = Side.OFFER  # an Enum member lookup costs more than a global

# Offer bucket tops mirrored in one int64 array (``OrderBook._ask_lb``), so that a request finds
# its best bucket with a numpy gather + argmin over its candidate buckets instead of chasing each
# heap's list -> tuple -> int in Python objects scattered over the heap (cache misses dominate that
# scan on big books). An entry ``(price, seq)`` is packed order-preservingly into one int: price in
# the high bits, seq in the low 32, each clipped. The array holds a *lower bound* of each bucket's
# packed top: written exactly when a rest puts a new entry on top, left as is when entries leave
# (tops only rise then), corrected when a search meets a stale value. Clipped values (prices from
# 2**30 base units, seq from 2**32 - 1) may tie; a search that lands on one falls back to comparing
# the heap tops exactly.
_SEQ_BITS = 32
_SEQ_MAX = (1 << _SEQ_BITS) - 1
_PRICE_MAX = 1 << 30
_PACKED_CLIPPED = _PRICE_MAX << _SEQ_BITS
_PACKED_EMPTY = (1 << 63) - 1  # an empty bucket; above every packed key


def packed_key(price: int, seq: int) -> int:
    """Monotone (not strictly, once clipped) map of ``(price, seq)`` into int64."""
    return ((price if price < _PRICE_MAX else _PRICE_MAX) << _SEQ_BITS) | (seq if seq < _SEQ_MAX else _SEQ_MAX)

_COMPACT_MIN_STALE = 64  # don't rebuild tiny heaps; amortisation needs some slack


class RestingOrder:
    """Mutable matching state of one accepted order.

    ``remaining`` is GPU-hours of capacity for an offer and hours for a request.
    """

    __slots__ = ("order", "seq", "remaining", "deadline", "bucket", "active")

    def __init__(self, order: Order, seq: int, remaining: int, deadline: int) -> None:
        self.order = order
        self.seq = seq
        self.remaining = remaining
        self.deadline = deadline  # order.deadline, cached: checked on every visit
        self.bucket: _Bucket | None = None
        self.active = True

    def __repr__(self) -> str:
        return f"RestingOrder({self.order.order_id!r}, seq={self.seq}, remaining={self.remaining})"


_Heap: TypeAlias = "list[tuple[int, int, RestingOrder]]"


class _Bucket:
    """Heap of ``(price_key, seq, RestingOrder)``; ``stale`` counts inactive entries still inside.

    The heap list object is never replaced (compaction works in place), so the
    signature caches can hold the bare lists: one attribute lookup less per
    bucket visit on the hottest loop. ``floor`` (offer buckets) is the shared
    ask floor of the bucket's (token, GPU model) market. ``ceilings`` (request
    buckets) are the bid ceilings of the offer signatures whose candidate list
    holds this bucket: a push of a better bid must raise them.
    """

    __slots__ = ("heap", "stale", "floor", "ceilings", "idx")

    def __init__(self, floor: list[float]) -> None:
        self.heap: _Heap = []
        self.stale = 0
        self.floor = floor
        self.ceilings: list[list[float]] = []
        self.idx = -1  # offer buckets: slot in OrderBook._ask_lb


# A group of bucket heaps with a lower bound on every price key inside them: a walk skips the
# whole group when even that bound does not cross. Offer buckets are grouped per GPU model, so a
# wide "any model" request does not visit the buckets of models priced far above its bid.
# Request buckets form one group per offer signature whose bound is a *bid ceiling* in key terms
# (key = -bid): it is lowered to a bid whenever one rests in a bucket of the group and set to the
# exact best key when an offer scans the group and finds no crossing bid. Most offers do not
# cross, and the next offer of that signature then skips the scan unless a better bid arrived.
_Group: TypeAlias = "tuple[list[float], list[_Heap]]"
_NO_FLOOR: list[float] = [-math.inf]


def offer_signature(offer: Offer) -> OfferSignature:
    return (offer.token, offer.gpu_model, offer.region, offer.green_energy, offer.gpu_count, offer.vram_gb)


def request_signature(request: Request) -> RequestSignature:
    return (
        request.token,
        request.gpu_model,
        request.region_mask & KNOWN_REGIONS_MASK,  # = effective_region_mask, without the property call
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


class OrderBook:
    """Resting offers and requests with price-time priority per compatibility bucket.

    The book does not match by itself (see ``ContinuousMatcher``); it stores,
    indexes, cancels and expires orders, and walks counter-orders in priority
    order for a matcher. ``now`` arguments are unix seconds and must never
    decrease.
    """

    def __init__(self, *, remember_retired: int = 100_000) -> None:
        self._orders: dict[str, RestingOrder] = {}
        self._buckets: list[_Bucket] = []  # every bucket, in creation order: the sweep's route
        self._sweep_cursor = 0
        self._offer_buckets: dict[OfferSignature, _Bucket] = {}
        self._request_buckets: dict[RequestSignature, _Bucket] = {}
        # signature -> heaps of the counter-order buckets it is statically compatible with
        self._offer_groups_for: dict[RequestSignature, dict[int, _Group]] = {}  # by GPU model
        # The same buckets as [_ask_lb slots (ndarray, or None until rebuilt from the list),
        # heaps (list), _ask_lb slots (list)], for the matcher's search.
        self._offer_cands_for: dict[RequestSignature, list] = {}  # type: ignore[type-arg]
        self._ask_lb = np.full(256, _PACKED_EMPTY, dtype=np.int64)  # lower bound of each offer bucket's packed top
        self._offer_bucket_count = 0
        self._request_groups_for: dict[OfferSignature, tuple[_Group]] = {}
        # (token, gpu_model) -> [lower bound on every resting ask of that market]
        self._ask_floor: dict[tuple[str, int], list[float]] = {}
        # The same, grouped by (token, gpu_model) so that a new signature is compared only with
        # the few groups it could fit, not with every bucket (that scan was the slowest path).
        self._offer_buckets_by_market: dict[tuple[str, int], list[tuple[OfferSignature, _Bucket]]] = {}
        self._request_buckets_by_market: dict[tuple[str, int], list[tuple[RequestSignature, _Bucket]]] = {}
        self._cached_request_sigs_by_market: dict[tuple[str, int], list[RequestSignature]] = {}
        self._cached_offer_sigs_by_market: dict[tuple[str, int], list[OfferSignature]] = {}
        self._expired_unreported: list[str] = []
        # Ids that left the book (filled, cancelled) -> deadline: duplicates until the deadline.
        # Bounded FIFO: the service's store is the authority on older ids.
        self._retired: dict[str, int] = {}
        self._retired_fifo: collections.deque[str] = collections.deque()
        self._remember_retired_max = remember_retired
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

    def expire(self, now: int, *, max_entries: int | None = None) -> list[str]:
        """Drop orders whose deadline is before ``now`` and compact heaps; return the dropped ids.

        Sweeps every bucket, or -- with ``max_entries`` -- about that many heap
        entries, resuming at the next call where this one stopped (a service can
        call it every second without ever stalling the book). Also reports
        orders dropped lazily during matching since the last call.
        """
        self._advance(now)
        expired = self._expired_unreported
        self._expired_unreported = []
        buckets = self._buckets
        budget = math.inf if max_entries is None else max_entries
        visited = 0
        while visited < len(buckets) and budget > 0:
            if self._sweep_cursor >= len(buckets):
                self._sweep_cursor = 0
                self._refresh_ask_floors()  # one full lap: floors back to the actual lowest asks
            bucket = buckets[self._sweep_cursor]
            self._sweep_cursor += 1
            visited += 1
            budget -= len(bucket.heap) + 1
            self._sweep(bucket, now, expired)
        if max_entries is None:
            self._refresh_ask_floors()
        return expired

    # ------------------------------------------- matcher interface (package-internal)

    def accept(self, order: Order, now: int, *, remaining: int | None = None) -> RestingOrder:
        """Validate an incoming order against the book and give it a sequence number.

        Raises before any state changes; the returned order is not resting yet
        (``rest`` it, or ``retire`` it if it was fully filled).
        """
        cls = type(order)
        if cls is not Offer and cls is not Request and not isinstance(order, (Offer, Request)):
            raise TypeError(f"expected Offer or Request, got {type(order).__name__}")
        if type(now) is not int:
            raise TypeError("now must be an int (unix seconds)")
        if now < self._now:
            raise ClockWentBackwards(now, self._now)
        order_id = order.order_id
        # An id is taken while an order that used it can still trade (deadline not passed).
        previous = self._orders.get(order_id)
        if (previous is not None and previous.deadline >= now) or self._retired.get(order_id, -1) >= now:
            raise DuplicateOrder(order_id)
        deadline = order.deadline
        if deadline < now:
            raise OrderExpired("deadline", deadline, f"order can no longer trade at now={now}")
        full = order.capacity_gpu_hours if order.side is _OFFER else order.hours  # type: ignore[union-attr]
        if remaining is None:
            remaining = full
        elif type(remaining) is not int or not order.min_hours <= remaining <= full:
            raise InvalidQuantity("remaining", remaining, f"must be in [{order.min_hours}, {full}]")
        if previous is not None:  # expired but not swept yet: drop it now, the id is free again
            self._deactivate(previous, in_bucket_heap=True)
            del self._orders[order_id]
            self._expired_unreported.append(order_id)
        self._now = now
        seq = self._next_seq
        self._next_seq = seq + 1
        return RestingOrder(order, seq, remaining, deadline)

    def rest(self, resting: RestingOrder, sig: OfferSignature | RequestSignature | None = None) -> None:
        """Index an accepted order so that later orders can match it (``sig``: its signature, if known)."""
        order = resting.order
        if order.side is _OFFER:
            if sig is None:
                sig = offer_signature(order)  # type: ignore[arg-type]
            bucket = self._offer_buckets.get(sig)
            if bucket is None:
                bucket = self._new_offer_bucket(sig)
            price = order.price_per_gpu_hour  # type: ignore[union-attr]
            if price < bucket.floor[0]:
                bucket.floor[0] = price
            self._offer_count += 1
            heap = bucket.heap
            entry = (price, resting.seq, resting)
            heapq.heappush(heap, entry)
            if heap[0] is entry:  # a new top: the array's bound must come down to it
                self._ask_lb[bucket.idx] = packed_key(price, resting.seq)
        else:
            if sig is None:
                sig = request_signature(order)  # type: ignore[arg-type]
            bucket = self._request_buckets.get(sig)
            if bucket is None:
                bucket = self._new_request_bucket(sig)
            key = -order.max_price_per_gpu_hour  # type: ignore[union-attr]  # min-heap: highest bid first
            for ceiling in bucket.ceilings:
                if key < ceiling[0]:
                    ceiling[0] = key
            heapq.heappush(bucket.heap, (key, resting.seq, resting))
        resting.bucket = bucket
        self._orders[order.order_id] = resting

    def signature(self, order: Order) -> OfferSignature | RequestSignature:
        return offer_signature(order) if order.side is _OFFER else request_signature(order)  # type: ignore[arg-type]

    def retire(self, resting: RestingOrder) -> None:
        """Forget an accepted order that will not rest (fully filled on arrival)."""
        resting.active = False
        order_id = resting.order.order_id  # _remember_retired, inlined: every filled arrival comes here
        self._retired[order_id] = resting.deadline
        fifo = self._retired_fifo
        fifo.append(order_id)
        if len(fifo) > self._remember_retired_max:
            self._retired.pop(fifo.popleft(), None)

    def consume(self, resting: RestingOrder, amount: int) -> None:
        """Fill ``amount`` of a resting order that a candidate walk has taken off its heap.

        Removes it from the book if what is left cannot make another deal.
        """
        left = resting.remaining - amount
        resting.remaining = left
        if left < resting.order.min_hours:  # offer: 1 GPU x min_hours; request: min_hours
            self._remove(resting, in_bucket_heap=False)

    def counter_candidates(
        self, order: Order, now: int, sig: OfferSignature | RequestSignature | None = None
    ) -> Iterator[RestingOrder]:
        """Resting counter-orders that fit ``order`` statically, are live at ``now`` and
        whose price crosses, best price first, then earliest arrival.

        Each yielded order is taken off its heap, so the caller may ``consume``
        it; everything still active is put back when the iterator is closed.
        Always close it (``contextlib.closing``).
        """
        groups: Iterable[_Group]
        if sig is None:
            sig = self.signature(order)
        if order.side is _OFFER:
            groups = self._request_groups_for.get(sig) or self._cache_request_groups_for(sig)
            limit = -order.price_per_gpu_hour  # type: ignore[union-attr]  # bid >= ask
        else:
            by_model = self._offer_groups_for.get(sig)
            if by_model is None:
                by_model = self._cache_offer_groups_for(sig)
            groups = by_model.values()
            limit = order.max_price_per_gpu_hour  # type: ignore[union-attr]  # ask <= bid
        return self._walk(groups, limit, now)

    # ------------------------------------------------------------- internals

    def _walk(self, groups: Iterable[_Group], limit: int, now: int) -> Iterator[RestingOrder]:
        # Hot path: every compatible bucket is looked at once per incoming order, so this is
        # one comprehension (CPython's cheapest loop) per group: keep buckets whose top crosses
        # on price (if the top does not, nothing below it does). Whether that top is still live
        # is checked lazily, only for the entries that reach the front of the merge.
        merge: list[tuple[int, int, _Heap]] = []
        for floor, heaps in groups:
            if floor[0] <= limit:
                merge += [(heap[0][0], heap[0][1], heap) for heap in heaps if heap and heap[0][0] <= limit]
        if not merge:
            return
        heapq.heapify(merge)  # (price key, seq, heap): seq is unique, so heaps are never compared
        taken: list[tuple[_Heap, tuple[int, int, RestingOrder]]] = []
        try:
            while merge:
                heap = merge[0][2]
                resting = heap[0][2]
                if resting.active and resting.deadline >= now:
                    entry = heapq.heappop(heap)
                    taken.append((heap, entry))
                    yield resting
                    top = heap[0] if heap else None
                else:
                    top = self._live_top(heap, now)
                if top is not None and not (top[2].active and top[2].deadline >= now):
                    top = self._live_top(heap, now)
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

    def _sweep(self, bucket: _Bucket, now: int, expired: list[str]) -> None:
        """Rebuild one bucket's heap without stale entries, expiring what is past its deadline."""
        keep = []
        for entry in bucket.heap:
            resting = entry[2]
            if not resting.active:
                continue
            if resting.deadline < now:
                self._deactivate(resting, in_bucket_heap=False)
                del self._orders[resting.order.order_id]
                expired.append(resting.order.order_id)
                continue
            keep.append(entry)
        if len(keep) != len(bucket.heap):
            bucket.heap[:] = keep  # in place: the signature caches hold this list
            heapq.heapify(bucket.heap)
        bucket.stale = 0

    def _remove(self, resting: RestingOrder, *, in_bucket_heap: bool) -> None:
        self._deactivate(resting, in_bucket_heap=in_bucket_heap)
        del self._orders[resting.order.order_id]
        self._remember_retired(resting)

    def _deactivate(self, resting: RestingOrder, *, in_bucket_heap: bool) -> None:
        """Mark inactive. If its entry is still in the bucket heap it becomes stale; a heap with
        more stale than live entries is compacted at once. Callers walking a heap pass
        ``in_bucket_heap=False`` (they have popped the entry), so a walk never sees a compaction."""
        resting.active = False
        if resting.order.side is _OFFER:
            self._offer_count -= 1
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
        self._retired_fifo.append(order_id)
        if len(self._retired_fifo) > self._remember_retired_max:
            oldest = self._retired_fifo.popleft()
            self._retired.pop(oldest, None)

    def _advance(self, now: int) -> None:
        if type(now) is not int:
            raise TypeError("now must be an int (unix seconds)")
        if now < self._now:
            raise ClockWentBackwards(now, self._now)
        self._now = now

    def _new_offer_bucket(self, sig: OfferSignature) -> _Bucket:
        token, model = sig[0], sig[1]
        floor = self._ask_floor.setdefault((token, model), [math.inf])
        bucket = _Bucket(floor)
        bucket.idx = i = self._offer_bucket_count
        self._offer_bucket_count = i + 1
        if i == len(self._ask_lb):
            self._ask_lb = np.concatenate([self._ask_lb, np.full(i, _PACKED_EMPTY, dtype=np.int64)])
        self._offer_buckets[sig] = bucket
        self._buckets.append(bucket)
        self._offer_buckets_by_market.setdefault((token, model), []).append((sig, bucket))
        for key in ((token, model), (token, ANY_GPU_MODEL)):
            for request_sig in self._cached_request_sigs_by_market.get(key, ()):
                if signatures_compatible(sig, request_sig):
                    by_model = self._offer_groups_for[request_sig]
                    by_model.setdefault(model, (floor, []))[1].append(bucket.heap)
                    cands = self._offer_cands_for[request_sig]
                    cands[0] = None  # the matcher rebuilds the array on this signature's next search
                    cands[1].append(bucket.heap)
                    cands[2].append(i)
        return bucket

    def _new_request_bucket(self, sig: RequestSignature) -> _Bucket:
        bucket = _Bucket(_NO_FLOOR)
        self._request_buckets[sig] = bucket
        self._buckets.append(bucket)
        token, model = sig[0], sig[1]
        self._request_buckets_by_market.setdefault((token, model), []).append((sig, bucket))
        models = GPU_MODELS if model == ANY_GPU_MODEL else (model,)
        for m in models:
            for offer_sig in self._cached_offer_sigs_by_market.get((token, m), ()):
                if signatures_compatible(offer_sig, sig):
                    ceiling, heaps = self._request_groups_for[offer_sig][0]
                    heaps.append(bucket.heap)
                    bucket.ceilings.append(ceiling)  # the bucket is empty: the ceiling stays valid
        return bucket

    def _cache_offer_groups_for(self, sig: RequestSignature) -> dict[int, _Group]:
        token, model = sig[0], sig[1]
        by_model: dict[int, _Group] = {}
        slots: list[int] = []
        heaps: list[_Heap] = []
        for m in GPU_MODELS if model == ANY_GPU_MODEL else (model,):
            for osig, b in self._offer_buckets_by_market.get((token, m), ()):
                if signatures_compatible(osig, sig):
                    by_model.setdefault(m, (b.floor, []))[1].append(b.heap)
                    slots.append(b.idx)
                    heaps.append(b.heap)
        self._offer_groups_for[sig] = by_model
        self._offer_cands_for[sig] = [np.array(slots, dtype=np.intp), heaps, slots]
        self._cached_request_sigs_by_market.setdefault((token, model), []).append(sig)
        return by_model

    def _cache_request_groups_for(self, sig: OfferSignature) -> tuple[_Group]:
        token, model = sig[0], sig[1]
        buckets = [
            b
            for key in ((token, model), (token, ANY_GPU_MODEL))
            for rsig, b in self._request_buckets_by_market.get(key, ())
            if signatures_compatible(sig, rsig)
        ]
        heaps = [b.heap for b in buckets]
        ceiling = [min([h[0][0] for h in heaps if h], default=math.inf)]  # exact: lowest key now
        for b in buckets:
            b.ceilings.append(ceiling)
        groups = ((ceiling, heaps),)
        self._request_groups_for[sig] = groups
        self._cached_offer_sigs_by_market.setdefault((token, model), []).append(sig)
        return groups

    def _refresh_ask_floors(self) -> None:
        """Raise each market's ask floor to its buckets' lowest top (still a lower bound)."""
        for (token, model), buckets in self._offer_buckets_by_market.items():
            tops = [b.heap[0][0] for _, b in buckets if b.heap]
            self._ask_floor[(token, model)][0] = min(tops) if tops else math.inf
