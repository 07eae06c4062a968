"""Batch auction: optimal on tiny instances (brute force), feasible and verifiable always."""

from __future__ import annotations

import dataclasses

import numpy as np

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.matching.batch import (
    BatchAuction,
    BatchConfig,
    BatchVerificationError,
    certified_upper_bound,
    clear_batch,
    verify_batch,
)
from marketplace.matching.compat import deal_hours_bounds, is_live, prices_cross, statically_compatible
from marketplace.matching.continuous import ContinuousMatcher
from marketplace.matching.deals import Deal, total_welfare
from marketplace.matching.errors import DuplicateOrder, InvalidQuantity, OrderExpired
from marketplace.matching.generator import MarketGenerator
from marketplace.matching.orders import Offer, Request

from matching_factories import NOW, offer, request

TINY = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def brute_force_optimum(offer_list: list[Offer], request_list: list[Request], now: int) -> int:
    """Try every allocation: per pair 0 or any allowed size, under capacity and hours."""
    pairs = []
    for o in offer_list:
        for r in request_list:
            if statically_compatible(o, r) and prices_cross(o, r) and is_live(o, now) and is_live(r, now):
                lo, hi = deal_hours_bounds(o, o.capacity_gpu_hours, r, r.hours, now)
                if lo <= hi:
                    pairs.append((o, r, lo, hi))
    capacity = {o.order_id: o.capacity_gpu_hours for o in offer_list}
    hours = {r.order_id: r.hours for r in request_list}
    best = 0

    def search(i: int, welfare: int) -> None:
        nonlocal best
        if i == len(pairs):
            best = max(best, welfare)
            return
        search(i + 1, welfare)  # no deal for this pair
        o, r, lo, hi = pairs[i]
        for h in range(lo, hi + 1):
            if capacity[o.order_id] < r.gpu_count * h or hours[r.order_id] < h:
                break
            capacity[o.order_id] -= r.gpu_count * h
            hours[r.order_id] -= h
            search(i + 1, welfare + (r.max_price_per_gpu_hour - o.price_per_gpu_hour) * r.gpu_count * h)
            capacity[o.order_id] += r.gpu_count * h
            hours[r.order_id] += h

    search(0, 0)
    return best


@st.composite
def tiny_windows(draw: st.DrawFn) -> tuple[list[Offer], list[Request]]:
    """Up to 3 x 3 orders in one crowded market, so that most windows have real trade-offs."""
    offer_list = []
    for i in range(draw(st.integers(1, 3))):
        min_hours = draw(st.integers(1, 2))
        offer_list.append(
            offer(
                f"o{i}",
                gpu_count=draw(st.sampled_from([2, 4])),
                region=draw(st.sampled_from([5, 7])),
                green_energy=draw(st.booleans()),
                price_per_gpu_hour=draw(st.integers(1, 4)) * 100,
                min_hours=min_hours,
                max_hours=draw(st.integers(min_hours, 4)),
                capacity_gpu_hours=draw(st.integers(min_hours, 12)),
                available_until=NOW + draw(st.integers(2, 6)) * 3_600,
            )
        )
    request_list = []
    for i in range(draw(st.integers(1, 3))):
        hours = draw(st.integers(1, 5))
        request_list.append(
            request(
                f"r{i}",
                gpu_model=draw(st.sampled_from([0, 8])),
                gpu_count=draw(st.sampled_from([1, 2, 4])),
                region_mask=draw(st.sampled_from([1 << 5, 1 << 7, (1 << 5) | (1 << 7)])),
                green_only=draw(st.sampled_from([False, False, True])),
                max_price_per_gpu_hour=draw(st.integers(2, 6)) * 100,
                hours=hours,
                min_hours=draw(st.integers(1, hours)),
            )
        )
    return offer_list, request_list


@TINY
@given(tiny_windows())
def test_property__tiny_windows__batch_welfare_equals_brute_force(window) -> None:  # type: ignore[no-untyped-def]
    offer_list, request_list = window
    optimum = brute_force_optimum(offer_list, request_list, NOW)
    for method in ("auto", "exact"):
        result = clear_batch(offer_list, request_list, NOW, config=BatchConfig(method=method))
        verify_batch(result, offer_list, request_list)
        assert result.welfare == optimum, method
        assert result.optimal
    for method in ("fast", "lp", "greedy"):
        result = clear_batch(offer_list, request_list, NOW, config=BatchConfig(method=method))
        verify_batch(result, offer_list, request_list)
        assert result.welfare <= optimum
        if method in ("fast", "lp"):
            assert result.upper_bound is not None and result.upper_bound >= optimum - 1e-6 * max(1, optimum)
            recomputed = certified_upper_bound(offer_list, request_list, NOW, result.request_values, result.offer_values)
            assert recomputed >= optimum - 1e-6 * max(1, optimum)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000))
def test_property__generated_windows__feasible_bounded_deterministic(seed: int) -> None:
    gen = MarketGenerator(seed, providers=40, trainers=80)
    offer_list, request_list = gen.window(160, now=NOW, offer_share=0.35)
    result = clear_batch(offer_list, request_list, NOW)
    verify_batch(result, offer_list, request_list)
    assert result.upper_bound is not None and result.welfare <= result.upper_bound * (1 + 1e-9)
    greedy = clear_batch(offer_list, request_list, NOW, config=BatchConfig(method="greedy"))
    assert result.welfare >= greedy.welfare or result.optimal
    again = clear_batch(offer_list, request_list, NOW)
    assert again.digest() == result.digest()


def test_auto__window_above_exact_size__certified_and_close() -> None:
    gen = MarketGenerator(11, providers=300, trainers=600)
    offer_list, request_list = gen.window(1_500, now=NOW, offer_share=0.3)
    result = clear_batch(offer_list, request_list, NOW)
    assert result.candidate_pairs > BatchConfig().exact_below  # the LP + sub-market path ran
    verify_batch(result, offer_list, request_list)
    assert result.gap is not None and result.gap < 2e-3
    bound = certified_upper_bound(offer_list, request_list, NOW, result.request_values, result.offer_values)
    assert bound == pytest.approx(result.upper_bound, rel=1e-9)
    greedy = clear_batch(offer_list, request_list, NOW, config=BatchConfig(method="greedy"))
    assert result.welfare > greedy.welfare


def test_clearing_price__marginal_ask_per_market__pay_as_ask_below_it() -> None:
    o_cheap = offer("cheap", price_per_gpu_hour=1_000_000, capacity_gpu_hours=8)
    o_dear = offer("dear", price_per_gpu_hour=1_500_000, capacity_gpu_hours=8)
    o_other = offer("other_region", region=5, price_per_gpu_hour=900_000, capacity_gpu_hours=8)
    r1 = request("r1", gpu_count=8, hours=1, max_price_per_gpu_hour=2_000_000)
    r2 = request("r2", gpu_count=8, hours=1, max_price_per_gpu_hour=1_800_000)
    r3 = request("r3", gpu_count=8, hours=1, max_price_per_gpu_hour=1_600_000)
    result = clear_batch([o_cheap, o_dear, o_other], [r1, r2, r3], NOW)
    verify_batch(result, [o_cheap, o_dear, o_other], [r1, r2, r3])
    assert len(result.deals) == 3 and result.optimal
    by_region = {p.region: p for p in result.prices}
    assert by_region[7].clearing_price == 1_500_000 and by_region[7].lowest_price == 1_000_000
    assert by_region[7].average_price == 1_250_000 and by_region[7].volume_gpu_hours == 16
    assert by_region[5].clearing_price == 900_000
    assert all(d.price_per_gpu_hour == {"cheap": 1_000_000, "dear": 1_500_000, "other_region": 900_000}[d.offer_id] for d in result.deals)
    assert result.welfare == (2_000_000 + 1_800_000 + 1_600_000 - 1_000_000 - 1_500_000 - 900_000) * 8


def test_verify__tampered_results__rejected() -> None:
    o, r = offer("o"), request("r")
    result = clear_batch([o], [r], NOW)
    verify_batch(result, [o], [r])
    deal = result.deals[0]
    tampered = [
        dataclasses.replace(result, deals=(dataclasses.replace(deal, price_per_gpu_hour=deal.price_per_gpu_hour + 1),)),
        dataclasses.replace(result, deals=(dataclasses.replace(deal, hours=r.hours + 1),)),
        dataclasses.replace(result, deals=(deal, deal)),
        dataclasses.replace(result, welfare=result.welfare + 1),
        dataclasses.replace(result, offer_remaining={"o": 0}),
        dataclasses.replace(result, deals=(Deal("o", "ghost", 4, 1, deal.price_per_gpu_hour),)),
    ]
    for bad in tampered:
        with pytest.raises(BatchVerificationError):
            verify_batch(bad, [o], [r])


def test_bad_window__typed_errors() -> None:
    with pytest.raises(DuplicateOrder):
        clear_batch([offer("x")], [request("x")], NOW)
    with pytest.raises(InvalidQuantity):
        clear_batch([offer("o")], [request("r")], NOW, remaining={"r": 11})
    with pytest.raises(InvalidQuantity):
        clear_batch([offer("o")], [request("r")], NOW, remaining={"nobody": 1})
    with pytest.raises(TypeError):
        clear_batch([request("r")], [], NOW)  # type: ignore[list-item]


def test_batch_auction__collects_clears_and_carries_over() -> None:
    auction = BatchAuction()
    auction.add(offer("o", capacity_gpu_hours=40), NOW)
    auction.add(request("r1", gpu_count=4, hours=5), NOW)
    with pytest.raises(DuplicateOrder):
        auction.add(request("r1"), NOW)
    with pytest.raises(OrderExpired):
        auction.add(request("late", start_by=NOW - 1), NOW)
    first = auction.clear(NOW)
    assert [(d.offer_id, d.request_id, d.hours) for d in first.deals] == [("o", "r1", 5)]
    assert len(auction) == 1  # the offer keeps 20 GPU-hours for the next window
    auction.add(request("r2", gpu_count=4, hours=10), NOW + 60)
    second = auction.clear(NOW + 60)
    assert [(d.offer_id, d.request_id, d.hours) for d in second.deals] == [("o", "r2", 5)]
    assert second.offer_remaining["o"] == 0
    assert auction.cancel("r2").order_id == "r2"


def test_batch_vs_continuous__same_window__batch_welfare_not_lower() -> None:
    gen = MarketGenerator(5, providers=60, trainers=120)
    offer_list, request_list = gen.window(300, now=NOW, offer_share=0.35)
    batch = clear_batch(offer_list, request_list, NOW)
    matcher = ContinuousMatcher()
    deals = []
    for order in [*offer_list, *request_list]:
        deals += matcher.submit(order, NOW)
    continuous = total_welfare(deals, {o.order_id: o for o in offer_list}, {r.order_id: r for r in request_list})
    assert batch.welfare >= continuous


def _lp_optimum_both_ways(offer_list: list[Offer], request_list: list[Request]) -> None:
    from marketplace.matching.batch import _dual_bound, _integer_surplus, _pair_values, _solve_flow_lp, _solve_lp, build_candidates

    c = build_candidates(offer_list, request_list, NOW)
    if len(c) == 0:
        return
    config = BatchConfig(flow_partners=1, added_per_round=1)  # few starting columns: pricing must find the rest
    surplus = _integer_surplus(c)
    assert surplus is not None
    solved = _solve_flow_lp(c, config, *surplus)
    assert solved is not None
    x, w, u, _ = solved
    hx, hw, hu, _ = _solve_lp(c, config)
    highs = float(_pair_values(c) @ hx)
    flow_value = float(_pair_values(c) @ x)
    # Same LP: equal optima, and the flow's integer potentials certify it exactly (strong duality).
    assert flow_value == pytest.approx(highs, rel=1e-9, abs=1e-6)
    assert _dual_bound(c, w, u) == pytest.approx(flow_value, rel=1e-9, abs=1e-6)
    assert (w >= 0).all() and (u >= 0).all()
    # The flow solution is LP-feasible.
    g = c.request_gpus[c.r]
    assert (x >= -1e-9).all() and (x <= c.hi + 1e-9).all()
    assert (np.bincount(c.r, weights=x, minlength=len(c.requests)) <= c.request_hours + 1e-9).all()
    assert (np.bincount(c.o, weights=x * g, minlength=len(c.offers)) <= c.offer_capacity + 1e-9).all()


@TINY
@given(tiny_windows())
def test_property__tiny_windows__flow_lp_equals_highs_lp(window) -> None:  # type: ignore[no-untyped-def]
    _lp_optimum_both_ways(*window)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000))
def test_property__generated_windows__flow_lp_equals_highs_lp(seed: int) -> None:
    offer_list, request_list = MarketGenerator(seed, providers=40, trainers=80).window(300, now=NOW, offer_share=0.35)
    _lp_optimum_both_ways(offer_list, request_list)


def test_lp_solver__huge_prices__exact_surplus_and_certified() -> None:
    from marketplace.matching.batch import _integer_surplus, build_candidates

    big = 2**70  # beyond int64 and float64 precision; surpluses are small, so the flow still applies
    offer_list = [offer("o1", price_per_gpu_hour=big, capacity_gpu_hours=16), offer("o2", price_per_gpu_hour=big + 300, capacity_gpu_hours=16)]
    request_list = [request(f"r{i}", gpu_count=4, hours=3, max_price_per_gpu_hour=big + 1_000 * (i + 1)) for i in range(4)]
    assert _integer_surplus(build_candidates(offer_list, request_list, NOW)) is not None
    # Surpluses of 2**70 do not fit the flow solver: HiGHS takes over.
    huge_offers = [offer("h1", price_per_gpu_hour=100, capacity_gpu_hours=16)]
    huge_requests = [request("hr", gpu_count=4, hours=3, max_price_per_gpu_hour=big)]
    assert _integer_surplus(build_candidates(huge_offers, huge_requests, NOW)) is None
    optimum = brute_force_optimum(offer_list, request_list, NOW)
    for offers_, requests_ in ((offer_list, request_list), (huge_offers, huge_requests)):
        for solver in ("flow", "highs"):
            result = clear_batch(offers_, requests_, NOW, config=BatchConfig(method="lp", lp_solver=solver))
            verify_batch(result, offers_, requests_)
            assert result.upper_bound is not None and result.welfare <= result.upper_bound * (1 + 1e-9)
            if offers_ is offer_list:
                assert result.welfare == optimum and result.upper_bound == pytest.approx(optimum, rel=1e-9)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1))
def test_property__cancel_free_cycles__forest_same_cost_feasible(seed: int) -> None:
    from marketplace.matching.batch import _cancel_free_cycles

    rng = np.random.default_rng(seed)
    n_nodes = int(rng.integers(2, 8))
    n_arcs = int(rng.integers(1, 16))
    tails = rng.integers(0, n_nodes, n_arcs)
    heads = (tails + rng.integers(1, n_nodes, n_arcs)) % n_nodes  # no self-loops
    caps = rng.integers(1, 10, n_arcs)
    # A circulation plus noise is not needed: any flow works, since only cycles of free arcs are
    # pushed; the costs are zero on them by construction below.
    flows = rng.integers(0, caps + 1)
    out = np.array(_cancel_free_cycles(tails.tolist(), heads.tolist(), caps.tolist(), flows.tolist()))
    assert ((out >= 0) & (out <= caps)).all()
    # Node balances are unchanged (flow pushed around cycles only).
    balance = lambda f: np.bincount(tails, weights=f, minlength=n_nodes) - np.bincount(heads, weights=f, minlength=n_nodes)  # noqa: E731
    assert np.array_equal(balance(out), balance(flows))
    # Arcs already at a bound stay untouched.
    fixed = (flows == 0) | (flows == caps)
    assert np.array_equal(out[fixed], flows[fixed])
    # The free arcs form a forest: no cycle (union-find).
    parent = list(range(n_nodes))

    def find(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    for a in np.flatnonzero((out > 0) & (out < caps)).tolist():
        ra, rb = find(int(tails[a])), find(int(heads[a]))
        assert ra != rb, "free arcs close a cycle"
        parent[ra] = rb


def test_flow_lp__generated_window__basic_solution_splits_few_orders() -> None:
    from marketplace.matching.batch import _integer_surplus, _solve_flow_lp, build_candidates

    offer_list, request_list = MarketGenerator(3, providers=60, trainers=120).window(600, now=NOW, offer_share=0.3)
    c = build_candidates(offer_list, request_list, NOW)
    solved = _solve_flow_lp(c, BatchConfig(), *_integer_surplus(c))
    assert solved is not None
    x = solved[0]
    # A vertex of the transportation LP: the pairs strictly between their bounds form a forest
    # over orders, so there are fewer of them than orders touched.
    free = np.flatnonzero((x > 1e-9) & (x < c.hi - 1e-9))
    nodes = len(np.unique(c.r[free])) + len(np.unique(c.o[free]))
    assert len(free) < max(nodes, 1)


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000))
def test_property__fill__same_as_plain_pair_by_pair_loop(seed: int) -> None:
    from marketplace.matching.batch import _fill, build_candidates

    offer_list, request_list = MarketGenerator(seed, providers=40, trainers=80).window(400, now=NOW, offer_share=0.35)
    c = build_candidates(offer_list, request_list, NOW)
    rng = np.random.default_rng(seed)
    start = _fill(c, np.zeros(len(c), dtype=np.int64), rng.permutation(len(c))[: len(c) // 4])
    order = rng.permutation(len(c))
    # Reference: the plain loop the chunked filter must reproduce exactly.
    want = start.copy()
    g = c.request_gpus[c.r]
    req_left = (c.request_hours - np.bincount(c.r, weights=want, minlength=len(c.requests))).astype(np.int64)
    off_left = (c.offer_capacity - np.bincount(c.o, weights=want * g, minlength=len(c.offers))).astype(np.int64)
    for i in order.tolist():
        extra = min(int(c.hi[i] - want[i]), int(req_left[c.r[i]]), int(off_left[c.o[i]] // g[i]))
        if extra <= 0 or want[i] + extra < c.lo[i]:
            continue
        want[i] += extra
        req_left[c.r[i]] -= extra
        off_left[c.o[i]] -= g[i] * extra
    assert np.array_equal(_fill(c, start, order), want)
    import marketplace.matching.batch as batch_module

    default_chunk = batch_module._FILL_CHUNK
    try:
        batch_module._FILL_CHUNK = 7  # many chunk boundaries
        assert np.array_equal(_fill(c, start, order), want)
    finally:
        batch_module._FILL_CHUNK = default_chunk


def test_simplex_vertex__same_lp_optimum__feasible__duals_non_negative() -> None:
    from marketplace.matching.batch import _integer_surplus, _pair_values, _simplex_vertex, _solve_flow_lp, build_candidates

    offer_list, request_list = MarketGenerator(4, providers=80, trainers=160).window(900, now=NOW, offer_share=0.3)
    c = build_candidates(offer_list, request_list, NOW)
    solved = _solve_flow_lp(c, BatchConfig(), *_integer_surplus(c))
    assert solved is not None
    x, w, u, _ = solved
    vertex, gw, gu = _simplex_vertex(c, x, w, u)
    value = _pair_values(c)
    assert value @ vertex == pytest.approx(value @ x, rel=1e-9)
    g = c.request_gpus[c.r]
    assert (vertex >= -1e-9).all() and (vertex <= c.hi + 1e-9).all()
    assert (np.bincount(c.r, weights=vertex, minlength=len(c.requests)) <= c.request_hours + 1e-6).all()
    assert (np.bincount(c.o, weights=vertex * g, minlength=len(c.offers)) <= c.offer_capacity + 1e-6).all()
    assert (gw >= 0).all() and (gu >= 0).all()


def _check_feasible(c, hours) -> None:  # type: ignore[no-untyped-def]
    g = c.request_gpus[c.r]
    assert ((hours == 0) | ((hours >= c.lo) & (hours <= c.hi))).all()
    assert (np.bincount(c.r, weights=hours, minlength=len(c.requests)) <= c.request_hours).all()
    assert (np.bincount(c.o, weights=hours * g, minlength=len(c.offers)) <= c.offer_capacity).all()


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.integers(1, 20), st.integers(0, 2))
def test_property__repair__feasible__not_below_its_start__deterministic(seed: int, options: int, sweeps: int) -> None:
    from marketplace.matching.batch import _pair_values, _relaxation, _repair, build_candidates

    offer_list, request_list = MarketGenerator(seed, providers=40, trainers=80).window(400, now=NOW, offer_share=0.35)
    c = build_candidates(offer_list, request_list, NOW)
    if len(c) == 0:
        return
    x, w, u, _ = _relaxation(c, BatchConfig())
    reduced = _pair_values(c) - w[c.r] - c.request_gpus[c.r] * u[c.o]
    hours = _repair(c, x, reduced, options, sweeps)
    _check_feasible(c, hours)
    # It starts from the LP's whole-hour pairs of the requests the LP does not split, and only
    # applies plans that add welfare: never below that start.
    used = x > 1e-9
    dirty = used & ((x < c.lo - 1e-6) | (np.abs(x - np.round(x)) > 1e-6))
    split = np.zeros(len(c.requests), dtype=bool)
    split[c.r[dirty]] = True
    start = np.where(used & ~split[c.r], np.round(x), 0).astype(np.int64)
    _check_feasible(c, start)
    value = _pair_values(c)
    assert value @ hours >= value @ start - 1e-6 * max(1.0, float(value @ start))
    assert np.array_equal(_repair(c, x, reduced, options, sweeps), hours)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000))
def test_property__fast__verified__certified__not_below_lp__deterministic(seed: int) -> None:
    offer_list, request_list = MarketGenerator(seed, providers=60, trainers=120).window(600, now=NOW, offer_share=0.3)
    fast = clear_batch(offer_list, request_list, NOW, config=BatchConfig(method="fast"))
    verify_batch(fast, offer_list, request_list)
    lp = clear_batch(offer_list, request_list, NOW, config=BatchConfig(method="lp"))
    assert fast.welfare >= lp.welfare  # the LP-guided fill is one of its candidates
    assert fast.upper_bound == pytest.approx(lp.upper_bound, rel=1e-12)
    if fast.rounds:
        bound = certified_upper_bound(offer_list, request_list, NOW, fast.request_values, fast.offer_values)
        assert bound == pytest.approx(fast.upper_bound, rel=1e-9)
    assert fast.welfare <= fast.upper_bound * (1 + 1e-9)
    again = clear_batch(offer_list, request_list, NOW, config=BatchConfig(method="fast"))
    assert again.digest() == fast.digest()
