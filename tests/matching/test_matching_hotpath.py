"""The continuous matcher's hot path on generated markets: many buckets, wide requests,
stale and expired bucket tops, cancels and bounded sweeps -- still the brute-force result."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from marketplace.matching.book import _PACKED_EMPTY, OrderBook, packed_key
from marketplace.matching.continuous import ContinuousMatcher
from marketplace.matching.deals import Deal, new_deal
from marketplace.matching.errors import MatchingError
from marketplace.matching.generator import MarketGenerator
from marketplace.matching.orders import Offer, Side
from marketplace.matching.reference import NaiveMatcher

from matching_factories import NOW, offer, request

START = 1_800_000_000


def _bucket_at(book: OrderBook, slot: int):  # type: ignore[no-untyped-def]
    (bucket,) = [b for b in book._offer_buckets.values() if b.idx == slot]
    return bucket


def check_book_invariants(book: OrderBook) -> None:
    """What the matcher's walk must leave behind: valid heaps, exact stale counts, each resting
    order in its bucket heap exactly once, ask floors below every ask of their market."""
    in_heaps: collections.Counter[int] = collections.Counter()
    for bucket in book._buckets:
        heap = bucket.heap
        assert all(heap[(i - 1) // 2] <= heap[i] for i in range(1, len(heap)))
        assert bucket.stale == sum(not entry[2].active for entry in heap)
        for key, seq, resting in heap:
            assert resting.bucket is bucket and seq == resting.seq
            if resting.active:
                in_heaps[id(resting)] += 1
                assert book._orders[resting.order.order_id] is resting
            if isinstance(resting.order, Offer):
                assert key == resting.order.price_per_gpu_hour >= bucket.floor[0]
            else:
                assert key == -resting.order.max_price_per_gpu_hour
    for bucket in book._offer_buckets.values():  # the packed-top array: a lower bound per bucket
        top = packed_key(bucket.heap[0][0], bucket.heap[0][1]) if bucket.heap else _PACKED_EMPTY
        assert book._ask_lb[bucket.idx] <= top
    for sig, (slots_or_none, heaps, slot_list) in book._offer_cands_for.items():
        slots = np.array(slot_list) if slots_or_none is None else slots_or_none
        assert slots.tolist() == slot_list
        assert sorted(map(id, heaps)) == sorted(id(h) for hs in book._offer_groups_for[sig].values() for h in hs[1])
        assert len(slots) == len(heaps)
        assert all(_bucket_at(book, slot).heap is heap for slot, heap in zip(slots.tolist(), heaps))
    for ((ceiling, heaps),) in book._request_groups_for.values():  # bid ceilings: a bound, kept up
        assert all(ceiling[0] <= entry[0] for heap in heaps for entry in heap)
        for heap in heaps:
            (bucket,) = [b for b in book._request_buckets.values() if b.heap is heap]
            assert any(c is ceiling for c in bucket.ceilings)
    assert all(r.active and in_heaps[id(r)] == 1 for r in book._orders.values())
    assert len(in_heaps) == len(book._orders)
    assert book.offer_count == sum(isinstance(r.order, Offer) for r in book._orders.values())


def test_new_deal__same_as_constructor() -> None:
    fast = new_deal("o", "r", 4, 7, 1_000, Side.REQUEST)
    slow = Deal("o", "r", 4, 7, 1_000, Side.REQUEST)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert fast.as_tuple() == slow.as_tuple()


@pytest.mark.parametrize(
    "seed, providers, trainers, per_second, target, cancel_every, expire_every",
    [
        (1, 40, 60, 2, 150, 0, 7),  # small market, time moves fast: many expired tops
        (2, 300, 500, 20, 400, 3, 0),  # many buckets, cancels leave stale tops
        (3, 120, 200, 5, 250, 2, 11),
    ],
)
def test_generated_flow__same_deals_as_brute_force(
    seed: int, providers: int, trainers: int, per_second: int, target: int, cancel_every: int, expire_every: int
) -> None:
    gen = MarketGenerator(seed, providers=providers, trainers=trainers)
    fast, naive = ContinuousMatcher(), NaiveMatcher()
    arrivals: collections.deque[str] = collections.deque()
    traded = 0
    for i, (now, order) in enumerate(gen.flow(1_500, start=START, orders_per_second=per_second)):
        try:
            got = fast.submit(order, now)
        except MatchingError as exc:
            got = type(exc)  # type: ignore[assignment]
        try:
            want = naive.submit(order, now)
        except MatchingError as exc:
            want = type(exc)  # type: ignore[assignment]
        assert got == want, i
        traded += isinstance(got, list) and len(got)
        arrivals.append(order.order_id)
        while len(fast.book) > target and arrivals:  # hold the book near its target, oldest first
            victim = arrivals.popleft()
            if victim in fast.book:
                fast.cancel(victim)
                naive.cancel(victim)
        if cancel_every and i % cancel_every == 0 and arrivals:
            victim = arrivals.pop()  # the newest: often still at a bucket top
            if victim in fast.book:
                fast.cancel(victim)
                naive.cancel(victim)
        if expire_every and i % expire_every == 0:
            fast.expire(now, max_entries=50)
        if i % 50 == 0:
            check_book_invariants(fast.book)
    assert traded > 100
    check_book_invariants(fast.book)
    last = now
    assert sorted((o.order_id, r) for o, _, r in fast.book.snapshot() if o.deadline >= last) == sorted(
        (e.order.order_id, e.remaining) for e in naive._resting if e.order.deadline >= last
    )


@pytest.mark.parametrize("base", [2**30 - 200, 2**30, 2**62, 2**70])
def test_huge_prices_and_equal_asks__clipped_keys__still_price_time_order(base: int) -> None:
    """Asks at or above 2**30 share one packed key: the search must compare the tops exactly."""
    fast, naive = ContinuousMatcher(), NaiveMatcher()
    asks = [base + 300, base + 100, base + 100, base, base + 200, base]
    for i, ask in enumerate(asks):
        o = offer(f"o{i}", price_per_gpu_hour=ask, region=[5, 6, 7][i % 3], gpu_count=[8, 4][i % 2], capacity_gpu_hours=8 * 4)
        assert fast.submit(o, NOW) == naive.submit(o, NOW) == []
    for i, bid in enumerate([base + 100, base + 250, 2**256 - 1, base - 1, 2**256 - 1]):
        r = request(f"r{i}", max_price_per_gpu_hour=bid, gpu_count=4, hours=3, min_hours=1)
        got = fast.submit(r, NOW)
        assert got == naive.submit(r, NOW)
        check_book_invariants(fast.book)


def test_rebuilt_with_add__same_deals_as_the_original_book() -> None:
    """A service restart rests the snapshot with ``book.add`` (no matching); the rebuilt book's
    indexes (packed tops, bid ceilings) must then match exactly like the original's."""
    gen = MarketGenerator(5, providers=150, trainers=250)
    flow = list(gen.flow(2_400, start=START, orders_per_second=10))
    original = ContinuousMatcher()
    for now, order in flow[:1_200]:
        original.submit(order, now)
    now = flow[1_199][0]
    rebuilt = ContinuousMatcher()
    for order, _seq, remaining in original.book.snapshot():
        if order.deadline >= now:
            rebuilt.book.add(order, now, remaining=remaining)
    live = [(o.order_id, r) for o, _, r in original.book.snapshot() if o.deadline >= now]
    assert [(o.order_id, r) for o, _, r in rebuilt.book.snapshot()] == live
    traded = 0
    for now, order in flow[1_200:]:
        got = original.submit(order, now)
        assert got == rebuilt.submit(order, now)
        traded += len(got)
    assert traded > 50
    check_book_invariants(rebuilt.book)
