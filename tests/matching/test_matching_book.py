"""Order book: insert, cancel, expire, partial fill; rejections leave it untouched."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from marketplace.matching.book import OrderBook
from marketplace.matching.continuous import ContinuousMatcher
from marketplace.matching.errors import (
    ClockWentBackwards,
    DuplicateOrder,
    InvalidQuantity,
    OrderExpired,
    UnknownOrder,
)
from marketplace.matching.generator import MarketGenerator

from matching_factories import NOW, offer, request


def book_state(book: OrderBook) -> tuple:
    return (tuple((o.order_id, seq, rem) for o, seq, rem in book.snapshot()), book.next_seq, book.now, len(book))


def test_add_and_cancel__resting_orders__counted_and_removed() -> None:
    book = OrderBook()
    book.add(offer("o1"), NOW)
    book.add(request("r1", max_price_per_gpu_hour=1), NOW)  # does not cross: add never matches anyway
    assert len(book) == 2 and book.offer_count == 1 and book.request_count == 1
    assert book.remaining("o1") == 8 * 72
    assert book.cancel("o1").order_id == "o1"
    assert "o1" not in book and len(book) == 1
    with pytest.raises(UnknownOrder):
        book.cancel("o1")
    with pytest.raises(UnknownOrder):
        book.remaining("nope")


def test_add__remaining_override__validated() -> None:
    book = OrderBook()
    book.add(offer("o1", min_hours=2), NOW, remaining=10)
    assert book.remaining("o1") == 10
    for bad in (1, 8 * 72 + 1, 0, "3"):
        with pytest.raises(InvalidQuantity):
            book.add(offer("o2", min_hours=2), NOW, remaining=bad)  # type: ignore[arg-type]
    assert len(book) == 1


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: offer("o1"), DuplicateOrder),  # resting
        (lambda: request("gone"), DuplicateOrder),  # cancelled, deadline not passed
        (lambda: offer("late", expiry=NOW - 1), OrderExpired),
        (lambda: request("late", start_by=NOW - 1), OrderExpired),
        (lambda: offer("short", available_until=NOW + 3_599), OrderExpired),  # cannot fit min_hours=1
    ],
)
def test_submit__bad_input__typed_error_and_book_untouched(make, error) -> None:  # type: ignore[no-untyped-def]
    matcher = ContinuousMatcher()
    matcher.submit(offer("o1", price_per_gpu_hour=3_000_000), NOW)
    matcher.submit(request("gone", max_price_per_gpu_hour=1), NOW)
    matcher.cancel("gone")
    before = book_state(matcher.book)
    with pytest.raises(error):
        matcher.submit(make(), NOW)
    assert book_state(matcher.book) == before


def test_submit__clock_backwards__rejected_untouched() -> None:
    matcher = ContinuousMatcher()
    matcher.submit(offer("o1"), NOW + 10)
    before = book_state(matcher.book)
    with pytest.raises(ClockWentBackwards):
        matcher.submit(request("r1"), NOW)
    with pytest.raises(ClockWentBackwards):
        matcher.expire(NOW)
    assert book_state(matcher.book) == before


def test_submit__not_an_order__type_error() -> None:
    with pytest.raises(TypeError):
        ContinuousMatcher().submit("offer", NOW)  # type: ignore[arg-type]


def test_expire__past_deadlines__removed_and_reported_once() -> None:
    book = OrderBook()
    book.add(offer("o1", expiry=NOW + 100), NOW)
    book.add(offer("o2", expiry=NOW + 5_000), NOW)
    book.add(request("r1", max_price_per_gpu_hour=1, start_by=NOW + 50), NOW)
    assert book.expire(NOW + 100) == ["r1"]  # deadline NOW+50 < NOW+100; o1 still valid at NOW+100
    assert book.expire(NOW + 101) == ["o1"]
    assert book.expire(NOW + 102) == []
    assert [o.order_id for o, _, _ in book.snapshot()] == ["o2"]


def test_expired_at_top__dropped_lazily_during_matching__reported_by_expire() -> None:
    matcher = ContinuousMatcher()
    matcher.submit(offer("cheap", price_per_gpu_hour=1_000_000, expiry=NOW + 10), NOW)
    matcher.submit(offer("dear", price_per_gpu_hour=2_000_000), NOW)
    deals = matcher.submit(request("r1"), NOW + 11)
    assert [d.offer_id for d in deals] == ["dear"]
    assert "cheap" not in matcher.book
    assert matcher.expire(NOW + 11) == ["cheap"]


def test_expired_id__resubmitted_after_deadline__refused_as_expired() -> None:
    matcher = ContinuousMatcher()
    matcher.submit(request("r1", max_price_per_gpu_hour=1, start_by=NOW + 10), NOW)
    matcher.cancel("r1")
    with pytest.raises(DuplicateOrder):
        matcher.submit(request("r1", max_price_per_gpu_hour=1, start_by=NOW + 10), NOW + 5)
    with pytest.raises(OrderExpired):
        matcher.submit(request("r1", max_price_per_gpu_hour=1, start_by=NOW + 10), NOW + 11)


def test_many_cancels__heaps_compacted__book_consistent() -> None:
    matcher = ContinuousMatcher()
    for i in range(600):
        matcher.submit(offer(f"o{i}", price_per_gpu_hour=3_000_000 + i), NOW)
    for i in range(0, 600, 3):
        matcher.cancel(f"o{i}")
    for i in range(1, 600, 3):
        matcher.cancel(f"o{i}")
    assert len(matcher.book) == 200
    deals = matcher.submit(request("r1", max_price_per_gpu_hour=4_000_000, gpu_count=8, hours=72 * 3, min_hours=72), NOW)
    assert [d.offer_id for d in deals] == ["o2", "o5", "o8"]  # cheapest survivors, in price order
    bucket = next(iter(matcher.book._offer_buckets.values()))
    assert len(bucket.heap) <= 2 * len(matcher.book) + 64  # stale entries bounded


def test_memory_per_resting_order__under_one_kilobyte() -> None:
    """Order object + book index, measured by tracemalloc (shared address strings count once)."""
    gen = MarketGenerator(3)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        orders = [gen.order(NOW) for _ in range(6_000)]
        after_orders = tracemalloc.get_traced_memory()[0]
        book = OrderBook()
        for o in orders:
            book.add(o, NOW)
        after_book = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    per_order = (after_orders - before) / len(orders) - 8  # minus the test's own list slot
    per_index = (after_book - after_orders) / len(book)
    assert per_index < 450, per_index
    assert per_order + per_index < 1024, (per_order, per_index)


def test_expire__bounded_sweeps__resume_and_cover_every_bucket() -> None:
    book = OrderBook()
    for i in range(300):  # 3 buckets of 100 (different regions), half of them short-lived
        book.add(offer(f"o{i}", region=(0, 5, 7)[i % 3], expiry=NOW + (10 if i % 2 else 10_000)), NOW)
    first = book.expire(NOW + 11, max_entries=100)  # about one bucket per call
    assert 0 < len(first) <= 60
    rest: list[str] = []
    for _ in range(3):
        rest += book.expire(NOW + 11, max_entries=100)
    assert sorted(first + rest) == sorted(f"o{i}" for i in range(1, 300, 2))
    assert len(book) == 150
    assert all(len(b.heap) == 50 for b in book._buckets)  # swept buckets hold live entries only


def test_retired_ids__remembered_up_to_the_bound() -> None:
    matcher = ContinuousMatcher(OrderBook(remember_retired=2))
    for i in range(3):
        matcher.submit(request(f"r{i}", max_price_per_gpu_hour=1), NOW)
        matcher.cancel(f"r{i}")
    with pytest.raises(DuplicateOrder):
        matcher.submit(request("r2", max_price_per_gpu_hour=1), NOW)
    matcher.submit(request("r0", max_price_per_gpu_hour=1), NOW)  # forgotten: the service's store decides
