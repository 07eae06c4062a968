"""Frequent batch auctions: allocate a window of orders to maximise gains from trade.

Problem
-------
For every compatible, crossing pair (offer o, request r) -- same rule as
continuous matching, see ``compat`` -- choose deal hours ``x[o,r]``, either 0
or within ``[lo, hi]`` with ``lo = max(o.min_hours, r.min_hours)`` and
``hi = min(o.max_hours, r.hours left, o.capacity left // r.gpu_count,
hours until o.available_until)``, to

    maximise   welfare = sum (r.max_price - o.price) * r.gpu_count * x[o,r]
    subject to sum_o x[o,r]               <= r.hours left          (each request)
               sum_r r.gpu_count * x[o,r] <= o.capacity left       (each offer)

One deal per pair, as in continuous matching. All deals of a window open at
``now`` (the window's close), so time bounds are evaluated at ``now``.

Methods
-------
* ``"auto"`` (default): (1) the LP relaxation (``0 <= x <= hi``) with column
  generation -- start from each request's and each offer's best partners,
  price every other pair with the duals, add those with positive reduced
  value, repeat until none is left; its duals certify an upper bound on the
  optimum (below). In GPU-hours (``y = gpu_count * x``) the LP is a
  transportation problem, solved as a min-cost flow (OR-Tools); its duals are
  the flow's node potentials, recomputed exactly. Prices whose differences do
  not fit int64 fall back to HiGHS (``scipy.optimize.linprog``), same LP.
  The flow is made a vertex (cycles of free arcs cancelled) and "auto" then
  takes HiGHS' simplex vertex of the optimal face (pairs with zero reduced
  value only) and its duals to guide steps (2)-(3); the certificate keeps the
  flow's duals. (2) Two quick fills -- LP-guided (pairs in order of LP hours, then reduced
  value) and greedy (by surplus) -- keep the better. If it is within
  ``target_gap`` of the bound, done. (3) Otherwise the pairs the
  LP uses, plus each split request's best alternatives, fall apart into small
  independent sub-markets; each is solved as a MILP by HiGHS
  (``scipy.optimize.milp``, binary "deal or no deal" per pair with a minimum
  above one hour), rounded down and refilled. The better of (2) and (3) wins.
  Windows with at most ``exact_below`` candidate pairs go straight to "exact".
* ``"exact"``: the whole MILP with integer hours, no gap, no node limit: the
  reference optimum. Fine for small windows; at thousands of orders HiGHS
  needs minutes to hours.
* ``"fast"``: step (1) by the flow (no simplex vertex), then a deterministic local search
  from the flow's vertex instead of MILPs (``_repair``): keep every request the LP serves
  in whole hours above its minimums, place each request it split -- largest first -- in
  pieces from spare capacity or on an offer made room for by moving its deals to spare
  capacity elsewhere (or dropping them), when that adds welfare; then the two fills; the
  LP-guided fill alone wins if better. No MILP, so about the time of ``"lp"`` plus a few
  tenths of a second at 10,000 orders; welfare between ``"lp"`` and ``"auto"``.
* ``"lp"``: steps (1) and (2) only (LP by the flow, guided by its vertex).
  ``"greedy"``: pairs by surplus per
  GPU-hour, largest first; no bound. Baselines.

Price rule and the clearing price
---------------------------------
Every deal settles at its offer's ask (pay-as-ask, what the contract
enforces). For each market (token, GPU model, region) the result reports a
uniform *clearing price*: the ask of the marginal -- most expensive -- offer
that trades in this batch. It is the market's price index; every deal in that
market pays its own ask, which is <= the clearing price, and every request
that trades there bid >= its deal price. Observers can check both from the
deals and the orders (``verify_batch``).

Certificate
-----------
For any non-negative ``w[r]`` (value of one more hour for request r) and
``u[o]`` (value of one more GPU-hour of offer o),

    B = sum_r H[r] w[r] + sum_o C[o] u[o]
        + sum_pairs hi[o,r] * max(0, g[r] (r.max_price - o.price) - w[r] - g[r] u[o])

bounds the welfare of every feasible allocation (LP weak duality; the integer
problem only has fewer solutions). The result publishes ``w`` and ``u``, so
anyone can recompute ``B`` over all pairs and check ``welfare >= (1 - gap) B``.

Determinism: candidate pairs are built and ordered canonically (request
arrival, then offer ask, then offer arrival); HiGHS and OR-Tools' min-cost
flow (single-threaded) are deterministic for a given model, and so is the
cycle cancelling (arcs in index order); rounding and refill follow an explicit order (surplus per
GPU-hour, then request arrival, then offer ask, then offer arrival). Ties
between equally good allocations are thus broken deterministically, not by a
fairness rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np

from .book import offer_signature, request_signature
from .catalog import ANY_GPU_MODEL
from .compat import deal_hours_bounds, is_live, prices_cross, statically_compatible
from .deals import Deal
from .errors import DuplicateOrder, InvalidQuantity, MatchingError, SolverError
from .orders import MAX_HOURS, SECONDS_PER_HOUR, Offer, Order, Request

Method = Literal["auto", "fast", "lp", "exact", "greedy"]


@dataclass(frozen=True, slots=True)
class BatchConfig:
    method: Method = "auto"
    # Column generation ("auto", "lp"): columns to start from per request and per offer, new
    # columns per request and round, and a cap on rounds (the bound stays valid if cut short).
    initial_partners: int = 3
    added_per_round: int = 5
    max_rounds: int = 50
    # LP relaxation solver: "flow" (min-cost flow, exact integer duals; HiGHS if prices exceed int64)
    # or "highs" (scipy linprog). Flow column generation starts from this many best partners per
    # request and per offer: enough that one or two rounds price out every other pair.
    lp_solver: Literal["flow", "highs"] = "flow"
    flow_partners: int = 20
    # "auto": guide the repair by a simplex vertex of the flow's optimal face (see _simplex_vertex).
    simplex_vertex: bool = True
    # "auto": windows with at most this many candidate pairs are solved exactly (the "exact" MILP).
    exact_below: int = 500
    # "auto": skip the MILP stage when the LP-guided allocation is already this close to the bound;
    # otherwise re-solve exactly the sub-markets the LP split, each request offered this many
    # alternatives beyond the LP's own pairs.
    target_gap: float = 1e-4
    alternatives: int = 15
    # HiGHS branch-and-bound ("auto" per sub-market, "exact" for the whole window). Node limits keep
    # results deterministic; a time limit is only a safety net (its outcome depends on machine load).
    mip_rel_gap: float = 5e-4
    node_limit: int | None = 5_000
    # "auto": integer hours inside sub-market MILPs of at most this many pairs (exact), continuous
    # hours rounded down above it (much faster on big sub-markets; the refill recovers most).
    integral_below: int = 1_000
    integral_hours: bool = False  # integer hours in every sub-market, whatever its size
    time_limit: float | None = None
    # "fast": options per split request in the local search (its LP pairs, then the best by reduced
    # value), and how many extra rounds retry requests still served less than by the LP.
    repair_options: int = 20
    repair_sweeps: int = 1


@dataclass(frozen=True, slots=True)
class MarketPrice:
    """Price index of one market in one batch."""

    token: str
    gpu_model: int
    region: int
    clearing_price: int  # ask of the most expensive offer that trades (marginal ask)
    lowest_price: int  # cheapest ask that trades
    volume_gpu_hours: int
    deal_count: int
    average_price: int  # volume-weighted, rounded down


@dataclass(frozen=True)
class BatchResult:
    now: int
    method: Method
    deals: tuple[Deal, ...]
    welfare: int
    upper_bound: float | None  # certified bound on the optimum (None for "greedy")
    gap: float | None  # (upper_bound - welfare) / upper_bound
    optimal: bool  # welfare proven optimal (within 1e-9 relative)
    prices: tuple[MarketPrice, ...]
    offer_remaining: Mapping[str, int]  # capacity (GPU-hours) left, every offer in the window
    request_remaining: Mapping[str, int]  # hours left, every request in the window
    request_values: Mapping[str, float] = field(default_factory=dict)  # w: certificate duals
    offer_values: Mapping[str, float] = field(default_factory=dict)  # u: certificate duals
    candidate_pairs: int = 0
    rounds: int = 0
    seconds: float = 0.0

    def digest(self) -> str:
        """sha256 of the allocation (deals, welfare, prices): equal iff byte-identical outcomes."""
        payload = {
            "now": self.now,
            "deals": [list(d.as_tuple()) for d in self.deals],
            "welfare": str(self.welfare),
            "prices": [
                [p.token, p.gpu_model, p.region, str(p.clearing_price), str(p.lowest_price), p.volume_gpu_hours]
                for p in self.prices
            ],
        }
        return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


class BatchVerificationError(MatchingError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems[:5]))


# ------------------------------------------------------------------ candidates


@dataclass(frozen=True, slots=True)
class Candidates:
    """Every pair that could trade in the window, in canonical order, as arrays."""

    offers: list[Offer]
    requests: list[Request]
    offer_capacity: np.ndarray  # per offer: GPU-hours left
    request_hours: np.ndarray  # per request: hours left
    request_gpus: np.ndarray  # per request: gpu_count
    ask_rank: np.ndarray  # per offer: rank of its ask among all prices (exact order, no overflow)
    r: np.ndarray  # per pair: request index
    o: np.ndarray  # per pair: offer index
    lo: np.ndarray  # per pair: minimum deal hours
    hi: np.ndarray  # per pair: maximum deal hours
    surplus: np.ndarray  # per pair: (bid - ask) per GPU-hour, float64 (exact ints are recomputed)

    def __len__(self) -> int:
        return len(self.r)


def _check_window(
    offers: Sequence[Offer], requests: Sequence[Request], remaining: Mapping[str, int] | None
) -> None:
    full: dict[str, int] = {}
    for order in offers:
        if not isinstance(order, Offer):
            raise TypeError(f"offers must be Offer objects, got {type(order).__name__}")
        if order.order_id in full:
            raise DuplicateOrder(order.order_id)
        full[order.order_id] = order.capacity_gpu_hours
    for order in requests:
        if not isinstance(order, Request):
            raise TypeError(f"requests must be Request objects, got {type(order).__name__}")
        if order.order_id in full:
            raise DuplicateOrder(order.order_id)
        full[order.order_id] = order.hours
    for order_id, left in (remaining or {}).items():
        if order_id not in full or type(left) is not int or left < 0:
            raise InvalidQuantity("remaining", (order_id, left), "must name an order of the window, >= 0")
        if left > full[order_id]:
            raise InvalidQuantity("remaining", (order_id, left), f"exceeds the order's quantity {full[order_id]}")


def build_candidates(
    offers: Sequence[Offer], requests: Sequence[Request], now: int, remaining: Mapping[str, int] | None = None
) -> Candidates:
    """All compatible, live, strictly crossing pairs with a feasible deal size.

    Zero-surplus pairs are left out: they add volume but no welfare. Pairs
    are built group by group (orders with equal static signature), so the
    work is proportional to the number of crossing pairs, not offers x requests.
    """
    remaining = remaining or {}
    offers = list(offers)
    requests = list(requests)
    n_o, n_r = len(offers), len(requests)
    cap = np.array([remaining.get(o.order_id, o.capacity_gpu_hours) for o in offers], dtype=np.int64)
    hours = np.array([remaining.get(r.order_id, r.hours) for r in requests], dtype=np.int64)
    gpus = np.array([r.gpu_count for r in requests], dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    if n_o == 0 or n_r == 0:
        return Candidates(offers, requests, cap, hours, gpus, empty, empty, empty, empty, empty, np.zeros(0))

    # Exact price order without int64 overflow: compare ranks of the (arbitrary-size) integers.
    all_prices = sorted({o.price_per_gpu_hour for o in offers} | {r.max_price_per_gpu_hour for r in requests})
    rank = {p: i for i, p in enumerate(all_prices)}
    ask_rank = np.array([rank[o.price_per_gpu_hour] for o in offers], dtype=np.int64)
    bid_rank = np.array([rank[r.max_price_per_gpu_hour] for r in requests], dtype=np.int64)
    ask = np.array([float(o.price_per_gpu_hour) for o in offers])
    bid = np.array([float(r.max_price_per_gpu_hour) for r in requests])

    offer_live = np.array([o.deadline >= now for o in offers]) & (
        cap >= np.array([o.min_hours for o in offers], dtype=np.int64)
    )
    request_live = np.array([r.deadline >= now for r in requests]) & (
        hours >= np.array([r.min_hours for r in requests], dtype=np.int64)
    )

    # Static signature groups (dict insertion order: deterministic).
    osig: dict[tuple, int] = {}
    offer_group = np.array([osig.setdefault(offer_signature(o), len(osig)) for o in offers], dtype=np.int64)
    rsig: dict[tuple, int] = {}
    request_group = np.array([rsig.setdefault(request_signature(r), len(rsig)) for r in requests], dtype=np.int64)
    tokens: dict[str, int] = {}
    og = list(osig)
    rg = list(rsig)
    o_tok = np.array([tokens.setdefault(s[0], len(tokens)) for s in og])
    r_tok = np.array([tokens.setdefault(s[0], len(tokens)) for s in rg])
    o_model, o_region, o_green, o_count, o_vram = (np.array([s[i] for s in og], dtype=np.int64) for i in range(1, 6))
    r_model, r_mask, r_green_only, r_count, r_min_vram = (
        np.array([s[i] for s in rg], dtype=np.int64) for i in range(1, 6)
    )  # effective masks only use catalogued region bits: fits int64
    compatible = (
        (r_tok[:, None] == o_tok[None, :])
        & ((r_model[:, None] == ANY_GPU_MODEL) | (r_model[:, None] == o_model[None, :]))
        & (o_count[None, :] >= r_count[:, None])
        & (o_vram[None, :] >= r_min_vram[:, None])
        & (((r_mask[:, None] >> o_region[None, :]) & 1) == 1)
        & ((o_green[None, :] == 1) | (r_green_only[:, None] == 0))
    )
    group_r, group_o = np.nonzero(compatible)  # row-major: deterministic

    # Live offers sorted by (group, ask rank, position): each group is a contiguous, price-sorted run.
    live_offers = np.flatnonzero(offer_live)
    offers_sorted = live_offers[np.lexsort((live_offers, ask_rank[live_offers], offer_group[live_offers]))]
    sorted_group = offer_group[offers_sorted]
    group_start = np.searchsorted(sorted_group, np.arange(len(og)), side="left")
    # Live requests by group.
    live_requests = np.flatnonzero(request_live)
    requests_sorted = live_requests[np.argsort(request_group[live_requests], kind="stable")]
    r_group_sorted = request_group[requests_sorted]
    r_start = np.searchsorted(r_group_sorted, np.arange(len(rg)), side="left")
    r_end = np.searchsorted(r_group_sorted, np.arange(len(rg)), side="right")

    # (request, offer group) combinations.
    per_pair = r_end[group_r] - r_start[group_r]
    combo_pair = np.repeat(np.arange(len(group_r)), per_pair)
    offset = np.arange(len(combo_pair)) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
    combo_r = requests_sorted[r_start[group_r][combo_pair] + offset]
    combo_og = group_o[combo_pair]
    # Crossing offers of a group are a prefix of its price-sorted run: ask rank < bid rank.
    key = sorted_group * (len(all_prices) + 1) + ask_rank[offers_sorted]
    first = group_start[combo_og]
    last = np.searchsorted(key, combo_og * (len(all_prices) + 1) + bid_rank[combo_r], side="left")
    n_cross = np.maximum(last - first, 0)
    pair_combo = np.repeat(np.arange(len(combo_r)), n_cross)
    pair_offset = np.arange(len(pair_combo)) - np.repeat(np.cumsum(n_cross) - n_cross, n_cross)
    pr = combo_r[pair_combo]
    po = offers_sorted[first[pair_combo] + pair_offset]

    o_min = np.array([o.min_hours for o in offers], dtype=np.int64)
    o_max = np.array([o.max_hours for o in offers], dtype=np.int64)
    o_until = np.array([min((o.available_until - now) // SECONDS_PER_HOUR, MAX_HOURS) for o in offers], dtype=np.int64)
    r_min = np.array([r.min_hours for r in requests], dtype=np.int64)
    lo = np.maximum(o_min[po], r_min[pr])
    hi = np.minimum(np.minimum(o_max[po], hours[pr]), np.minimum(cap[po] // gpus[pr], o_until[po]))
    keep = lo <= hi
    pr, po, lo, hi = pr[keep], po[keep], lo[keep], hi[keep]
    order = np.lexsort((po, ask_rank[po], pr))  # canonical: request arrival, then ask, then offer arrival
    pr, po, lo, hi = pr[order], po[order], lo[order], hi[order]
    surplus = bid[pr] - ask[po]
    if all_prices[-1] >= 2**53:  # float64 differences of huge prices lose the surplus: subtract exactly
        bid_int = np.array([r.max_price_per_gpu_hour for r in requests], dtype=object)
        ask_int = np.array([o.price_per_gpu_hour for o in offers], dtype=object)
        surplus = (bid_int[pr] - ask_int[po]).astype(np.float64)
    return Candidates(offers, requests, cap, hours, gpus, ask_rank, pr, po, lo, hi, surplus)


# -------------------------------------------------------------------- solvers


def _constraint_matrix(c: Candidates, cols: np.ndarray):  # type: ignore[no-untyped-def]
    """Rows: one per request (sum of hours), one per offer (sum of GPU-hours)."""
    from scipy.sparse import csc_array

    n_r = len(c.requests)
    m = len(cols)
    rows = np.concatenate([c.r[cols], n_r + c.o[cols]])
    idx = np.concatenate([np.arange(m), np.arange(m)])
    vals = np.concatenate([np.ones(m), c.request_gpus[c.r[cols]].astype(np.float64)])
    return csc_array((vals, (rows, idx)), shape=(n_r + len(c.offers), m))


def _first_k_per_group(group: np.ndarray, sort_key: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest ``sort_key`` within each group (ties: lower index first)."""
    order = np.lexsort((sort_key, group))  # lexsort is stable: ties keep index order
    g = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1] if len(g) else np.zeros(0, dtype=np.int64)
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return order[rank < k]


def _pair_values(c: Candidates) -> np.ndarray:
    """Objective per deal-hour: gpu_count x surplus per GPU-hour."""
    return c.request_gpus[c.r] * c.surplus


def _dual_bound(c: Candidates, w: np.ndarray, u: np.ndarray) -> float:
    """Weak-duality bound on the welfare of any feasible allocation, for any w, u >= 0."""
    g = c.request_gpus[c.r]
    slack = np.maximum(0.0, g * c.surplus - w[c.r] - g * u[c.o])
    return float(c.request_hours @ w + c.offer_capacity @ u + c.hi @ slack)


def _solve_lp(c: Candidates, config: BatchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Column generation on the LP relaxation; returns (x, w, u, rounds)."""
    from scipy.optimize import linprog

    n = len(c)
    n_r = len(c.requests)
    g = c.request_gpus[c.r].astype(np.float64)
    value = _pair_values(c)
    scale = float(value.max())
    cost = -value / scale  # linprog minimises; scaled to keep HiGHS well conditioned
    bid = np.array([float(r.max_price_per_gpu_hour) for r in c.requests])
    ask = np.array([float(o.price_per_gpu_hour) for o in c.offers])
    selected = np.zeros(n, dtype=bool)
    selected[_first_k_per_group(c.r, ask[c.o], config.initial_partners)] = True
    selected[_first_k_per_group(c.o, -bid[c.r], config.initial_partners)] = True
    b_ub = np.concatenate([c.request_hours, c.offer_capacity]).astype(np.float64)
    x_full = np.zeros(n)
    y = np.zeros(n_r + len(c.offers))
    rounds = 0
    while rounds < config.max_rounds:
        rounds += 1
        cols = np.flatnonzero(selected)
        res = linprog(
            cost[cols],
            A_ub=_constraint_matrix(c, cols),
            b_ub=b_ub,
            bounds=np.stack([np.zeros(len(cols)), c.hi[cols].astype(np.float64)], axis=1),
            method="highs-ds",
        )
        if res.status != 0 or res.x is None:
            raise SolverError(f"LP relaxation failed: {res.message}")
        x_full[:] = 0.0
        x_full[cols] = res.x
        y = res.ineqlin.marginals  # <= 0: d(cost)/d(b_ub)
        reduced = cost - (y[c.r] + g * y[n_r + c.o])
        attractive = np.flatnonzero(~selected & (reduced < -1e-9))
        if len(attractive) == 0:
            break
        best = _first_k_per_group(c.r[attractive], reduced[attractive], config.added_per_round)
        selected[attractive[best]] = True
    w = np.maximum(0.0, -y[:n_r]) * scale
    u = np.maximum(0.0, -y[n_r:]) * scale
    return x_full, w, u, rounds


def _exact_surplus(c: Candidates) -> np.ndarray | None:
    """(bid - ask) per pair as exact int64 -- prices may exceed int64, their differences rarely do."""
    bids = [r.max_price_per_gpu_hour for r in c.requests]
    asks = [o.price_per_gpu_hour for o in c.offers]
    if max(bids) < 2**62 and max(asks) < 2**62:
        return np.array(bids, dtype=np.int64)[c.r] - np.array(asks, dtype=np.int64)[c.o]
    s = np.array(bids, dtype=object)[c.r] - np.array(asks, dtype=object)[c.o]  # Python ints: exact
    return s.astype(np.int64) if int(s.max()) < 2**62 else None


def _integer_surplus(c: Candidates) -> tuple[np.ndarray, int] | None:
    """Per pair: (bid - ask) per GPU-hour as int64, divided by the pairs' common divisor; and that divisor.

    None when prices are too large for exact int64 arithmetic in the flow solver and
    the potentials (then the HiGHS LP is used instead).
    """
    s = _exact_surplus(c)
    if s is None:
        return None
    divisor = int(np.gcd.reduce(s))
    s //= divisor  # exact; smaller costs make cost scaling take fewer phases
    nodes = len(c.requests) + len(c.offers) + 2
    if int(s.max()) * nodes >= 2**60:  # path lengths in the potentials must not overflow
        return None
    return s, divisor


def _flow_potentials(c: Candidates, cols: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Optimal duals of the flow on the pairs ``cols``: shortest distances from the root.

    Complementary slackness in GPU-hours with p[o] = -u[o], p[r] = w[r] / g[r] reads
    p[o] <= p[r] - s (pair below its capacity), p[r] <= p[o] + s (pair used),
    p[o] <= 0, p[r] >= 0, and p = 0 at offers and requests left unsaturated: difference
    constraints, solved exactly by Bellman-Ford from the root (node ``n_o + n_r``, p = 0).
    The residual graph of an optimal flow has no negative cycle, so it converges; on
    these markets in ~10 vectorised sweeps.
    """
    n_o, n_r = len(c.offers), len(c.requests)
    root = n_o + n_r
    g = c.request_gpus[c.r[cols]]
    yc = y[cols]
    offer_open = np.flatnonzero(np.bincount(c.o[cols], weights=yc, minlength=n_o) < c.offer_capacity)
    request_open = np.flatnonzero(
        np.bincount(c.r[cols], weights=yc, minlength=n_r) < c.request_gpus * c.request_hours
    )
    below = yc < g * c.hi[cols]
    used = yc > 0
    tail = np.concatenate(
        [np.full(n_o, root), offer_open, np.full(len(request_open), root), n_o + np.arange(n_r),
         n_o + c.r[cols][below], c.o[cols][used]]
    )
    head = np.concatenate(
        [np.arange(n_o), np.full(len(offer_open), root), n_o + request_open, np.full(n_r, root),
         c.o[cols][below], n_o + c.r[cols][used]]
    )
    weight = np.concatenate(
        [np.zeros(n_o + len(offer_open) + len(request_open) + n_r, dtype=np.int64), -s[cols][below], s[cols][used]]
    )
    order = np.argsort(head, kind="stable")
    tail, head, weight = tail[order], head[order], weight[order]
    starts = np.r_[0, np.flatnonzero(np.diff(head)) + 1]
    heads = head[starts]
    unreached = np.int64(2**62)
    d = np.full(root + 1, unreached, dtype=np.int64)
    d[root] = 0
    for _ in range(root + 2):
        dt = d[tail]
        best = np.minimum.reduceat(np.where(dt < unreached, dt + weight, unreached), starts)
        new = d.copy()
        new[heads] = np.minimum(d[heads], best)
        if np.array_equal(new, d):
            return d
        d = new
    raise SolverError("flow potentials did not converge (flow not optimal)")


def _cancel_free_cycles(tails: list[int], heads: list[int], caps: list[int], flows: list[int]) -> list[int]:
    """Make an optimal flow basic: push flow around cycles of free arcs until they form a forest.

    A cost-scaling solver returns an optimal flow, not a vertex: its free arcs
    (0 < flow < capacity) may close cycles, each of which splits some order more than a
    vertex would (a vertex of the transportation LP has its free arcs on a forest). Every
    such cycle costs zero -- both directions are residual in an optimal flow -- so pushing
    flow around it until an arc reaches a bound keeps the optimum and frees one arc less.
    Arcs are taken in index order and flow is pushed along the new arc: deterministic.
    """
    flows = list(flows)
    adjacent: dict[int, dict[int, int]] = {}  # node -> {arc: neighbour} over the current forest

    def link(a: int) -> None:
        adjacent.setdefault(tails[a], {})[a] = heads[a]
        adjacent.setdefault(heads[a], {})[a] = tails[a]

    def unlink(a: int) -> None:
        del adjacent[tails[a]][a]
        del adjacent[heads[a]][a]

    def path(start: int, goal: int) -> list[int] | None:
        """Arcs of the forest path start -> goal (breadth first), or None if not connected."""
        if start not in adjacent or goal not in adjacent:
            return None
        parent: dict[int, tuple[int, int]] = {start: (-1, -1)}
        frontier = [start]
        while frontier:
            nxt = []
            for node in frontier:
                for arc, other in adjacent[node].items():
                    if other not in parent:
                        parent[other] = (node, arc)
                        if other == goal:
                            arcs = []
                            while other != start:
                                other, arc = parent[other]
                                arcs.append(arc)
                            return arcs[::-1]
                        nxt.append(other)
            frontier = nxt
        return None

    for a in range(len(tails)):
        if not 0 < flows[a] < caps[a]:
            continue
        arcs = path(heads[a], tails[a])
        if arcs is None:
            link(a)
            continue
        # Cycle: a forward, then the path from a's head back to its tail.
        cycle = [(a, 1)]
        node = heads[a]
        for arc in arcs:
            forward = tails[arc] == node
            cycle.append((arc, 1 if forward else -1))
            node = heads[arc] if forward else tails[arc]
        push = min(caps[arc] - flows[arc] if sign > 0 else flows[arc] for arc, sign in cycle)
        for arc, sign in cycle:
            flows[arc] += sign * push
        for arc, _ in cycle[1:]:
            if not 0 < flows[arc] < caps[arc]:
                unlink(arc)
        if 0 < flows[a] < caps[a]:
            link(a)
    return flows


def _solve_flow_lp(
    c: Candidates, config: BatchConfig, s: np.ndarray, divisor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """The LP relaxation as a min-cost flow, with column generation; (x, w, u, rounds).

    In GPU-hours y = g[r] * x the LP is a transportation problem: source -> offer
    (capacity left), offer -> request (g * hi, cost -surplus), request -> sink (g * hours
    left), plus a source -> sink bypass so nothing has to trade. Same optimum as the
    HiGHS LP; OR-Tools' cost-scaling solver takes a fraction of the time. Its duals are
    recomputed exactly (integers) by ``_flow_potentials``. None if the solver rejects
    the magnitudes (the caller falls back to HiGHS).
    """
    from ortools.graph.python import min_cost_flow

    n_o, n_r = len(c.offers), len(c.requests)
    source, sink = n_o + n_r, n_o + n_r + 1
    g = c.request_gpus[c.r]
    request_cap = c.request_gpus * c.request_hours
    total = int(min(c.offer_capacity.sum(), request_cap.sum()))
    selected = np.zeros(len(c), dtype=bool)
    selected[_first_k_per_group(c.r, -s, config.flow_partners)] = True
    selected[_first_k_per_group(c.o, -s, config.flow_partners)] = True
    fixed_tails = np.concatenate([np.full(n_o, source), n_o + np.arange(n_r), [source]])
    fixed_heads = np.concatenate([np.arange(n_o), np.full(n_r, sink), [sink]])
    fixed_caps = np.concatenate([c.offer_capacity, request_cap, [total]])
    supplies = np.zeros(n_o + n_r + 2, dtype=np.int64)
    supplies[source], supplies[sink] = total, -total
    y = np.zeros(len(c), dtype=np.int64)
    rounds = 0
    while True:
        rounds += 1
        cols = np.flatnonzero(selected)
        mcf = min_cost_flow.SimpleMinCostFlow()
        tails = np.concatenate([c.o[cols], fixed_tails])
        heads = np.concatenate([n_o + c.r[cols], fixed_heads])
        caps = np.concatenate([g[cols] * c.hi[cols], fixed_caps])
        mcf.add_arcs_with_capacity_and_unit_cost(
            tails, heads, caps, np.concatenate([-s[cols], np.zeros(len(fixed_caps), dtype=np.int64)])
        )
        mcf.set_nodes_supplies(np.arange(len(supplies)), supplies)
        if mcf.solve() != mcf.OPTIMAL:
            return None
        y[:] = 0
        y[cols] = mcf.flows(np.arange(len(cols)))
        d = _flow_potentials(c, cols, y, s)
        reduced = s - d[n_o + c.r] + d[c.o]  # per GPU-hour: s - w/g - u
        attractive = np.flatnonzero(~selected & (reduced > 0))
        if len(attractive) == 0 or rounds >= config.max_rounds:
            break  # the potentials are non-negative duals either way: the bound stays valid
        best = _first_k_per_group(c.r[attractive], -reduced[attractive], config.added_per_round)
        selected[attractive[best]] = True
    # A vertex splits fewer orders than the solver's flow: fewer sub-markets to repair. The
    # potentials stay optimal duals (only zero-reduced-cost arcs changed).
    flows = mcf.flows(np.arange(len(caps)))
    free = np.flatnonzero((flows > 0) & (flows < caps))
    flows[free] = _cancel_free_cycles(
        tails[free].tolist(), heads[free].tolist(), caps[free].tolist(), flows[free].tolist()
    )
    y[cols] = flows[: len(cols)]
    w = d[n_o : n_o + n_r].astype(np.float64) * c.request_gpus * divisor
    u = -d[:n_o].astype(np.float64) * divisor
    return y / g, w, u, rounds


def _simplex_vertex(
    c: Candidates, x: np.ndarray, w: np.ndarray, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Another optimal vertex of the same LP and its duals, from HiGHS' dual simplex, to guide the repair.

    Only pairs the flow uses or whose reduced value is zero (within float tolerance) can be
    in an optimal solution, so the simplex runs on those alone (~10 % of the pairs). Which
    optimal vertex guides the sub-market MILPs changes how much they recover -- on the
    benchmark windows the simplex's vertex did better than the flow's. So do the duals: the
    flow's potentials are an extreme dual solution (smallest offer values), which ranks a split
    request's alternatives differently. The simplex duals only guide (they need not price the
    pairs left out); the certificate keeps the flow's. Falls back to ``(x, w, u)``.
    """
    from scipy.optimize import linprog

    value = _pair_values(c)
    scale = float(value.max())
    reduced = value - w[c.r] - c.request_gpus[c.r] * u[c.o]
    cols = np.flatnonzero((x > 0) | (reduced >= -1e-9 * scale))
    res = linprog(
        -value[cols] / scale,
        A_ub=_constraint_matrix(c, cols),
        b_ub=np.concatenate([c.request_hours, c.offer_capacity]).astype(np.float64),
        bounds=np.stack([np.zeros(len(cols)), c.hi[cols].astype(np.float64)], axis=1),
        method="highs-ds",
    )
    if res.status != 0 or res.x is None or value[cols] @ res.x < value @ x * (1 - 1e-9):
        return x, w, u
    vertex = np.zeros(len(c))
    vertex[cols] = res.x
    n_r = len(c.requests)
    y = res.ineqlin.marginals  # <= 0: d(cost)/d(b_ub)
    return vertex, np.maximum(0.0, -y[:n_r]) * scale, np.maximum(0.0, -y[n_r:]) * scale


def _relaxation(c: Candidates, config: BatchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The LP relaxation: min-cost flow when prices fit int64 (and ``config.lp_solver`` allows), else HiGHS."""
    if config.lp_solver == "flow":
        surplus = _integer_surplus(c)
        if surplus is not None:
            solved = _solve_flow_lp(c, config, *surplus)
            if solved is not None:
                return solved
    return _solve_lp(c, config)


def _milp(
    c: Candidates, cols: np.ndarray, *, integral_hours: bool, node_limit: int | None, time_limit: float | None,
    gap: float, left: np.ndarray | None = None,
) -> tuple[np.ndarray, bool, float]:
    """Welfare-maximising deal hours on the pairs ``cols`` (others stay at 0).

    Formulation: hours ``x`` per pair, and for pairs whose minimum deal is
    more than one hour a binary ``y`` with ``lo*y <= x <= hi*y`` -- HiGHS
    handles this far better than semi-integer variables. With
    ``integral_hours=False`` hours are continuous and rounded down afterwards
    (much faster; the caller refills). Returns (hours, proven optimal, dual bound).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csc_array, diags, hstack, vstack

    n = len(cols)
    lo, hi = c.lo[cols], c.hi[cols]
    value = _pair_values(c)[cols]
    scale = float(value.max())
    a = _constraint_matrix(c, cols)
    used = np.unique(np.concatenate([c.r[cols], len(c.requests) + c.o[cols]]))
    a = a[used]  # only the rows these pairs touch
    if left is None:  # hours left per request, then GPU-hours left per offer
        left = np.concatenate([c.request_hours, c.offer_capacity])
    capacity = left.astype(np.float64)[used]
    chunky = np.flatnonzero(lo >= 2)
    m = len(chunky)
    pick = csc_array((np.ones(m), (np.arange(m), chunky)), shape=(m, n))
    matrix = vstack(
        [
            hstack([a, csc_array((a.shape[0], m))]),
            hstack([pick, -diags(hi[chunky].astype(np.float64))]),  # x <= hi*y
            hstack([pick, -diags(lo[chunky].astype(np.float64))]),  # x >= lo*y
        ]
    ).tocsc()
    lower = np.concatenate([np.full(a.shape[0], -np.inf), np.full(m, -np.inf), np.zeros(m)])
    upper = np.concatenate([capacity, np.zeros(m), np.full(m, np.inf)])
    options: dict[str, object] = {"mip_rel_gap": gap}
    if node_limit is not None:
        options["node_limit"] = node_limit
    if time_limit is not None:
        options["time_limit"] = time_limit
    res = milp(
        np.concatenate([-value / scale, np.zeros(m)]),
        integrality=np.concatenate([np.full(n, 1 if integral_hours else 0), np.ones(m)]),
        bounds=Bounds(np.zeros(n + m), np.concatenate([hi.astype(np.float64), np.ones(m)])),
        constraints=LinearConstraint(matrix, lower, upper),
        options=options,
    )
    if res.x is None:
        raise SolverError(f"MILP returned no solution: {res.message}")
    hours = np.floor(res.x[:n] + 1e-6).astype(np.int64)
    hours = np.minimum(hours, hi)
    hours[hours < lo] = 0
    bound = getattr(res, "mip_dual_bound", None)
    return hours, res.status == 0, (-float(bound) * scale if bound is not None else math.inf)


def _components(c: Candidates, cols: np.ndarray) -> list[np.ndarray]:
    """Split pairs into independent sub-markets (connected components of the pair graph)."""
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    n_r = len(c.requests)
    size = n_r + len(c.offers)
    graph = coo_array((np.ones(len(cols)), (c.r[cols], n_r + c.o[cols])), shape=(size, size))
    _, label = connected_components(graph, directed=False)
    comp = label[c.r[cols]]
    order = np.argsort(comp, kind="stable")  # keeps canonical pair order inside a component
    bounds = np.r_[0, np.flatnonzero(np.diff(comp[order])) + 1, len(order)]
    parts = [cols[order[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]
    parts.sort(key=lambda p: int(p[0]))  # deterministic: by first pair in canonical order
    return parts


_FILL_CHUNK = 4_096  # pairs per vectorised filter in _fill
_LANDING = 20  # _repair: pairs per request where a moved deal may land (cheapest asks with room)


def _fill(c: Candidates, hours: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Grow deals pair by pair in ``order`` as far as capacities allow (one deal per pair)."""
    hours = hours.copy()
    g = c.request_gpus[c.r]
    request_left = (c.request_hours - np.bincount(c.r, weights=hours, minlength=len(c.requests))).astype(np.int64)
    offer_left = (c.offer_capacity - np.bincount(c.o, weights=hours * g, minlength=len(c.offers))).astype(np.int64)
    # A pair is skipped unless it can grow by ``step`` (1, or up to its minimum if it has no deal yet).
    step = np.where(hours > 0, 1, c.lo)
    can_grow = (hours < c.hi) & (request_left[c.r] >= step) & (offer_left[c.o] >= g * step)
    order = order[can_grow[order]]
    r_list, o_list, lo_list, hi_list, g_list = c.r.tolist(), c.o.tolist(), c.lo.tolist(), c.hi.tolist(), g.tolist()
    # Capacities only shrink and each pair appears once, so a pair that cannot grow at the start of
    # a chunk cannot grow later either: filtering chunk by chunk (vectorised) skips exactly the
    # pairs the loop would skip, and the Python loop only sees pairs that may still trade.
    for start in range(0, len(order), _FILL_CHUNK):
        part = order[start : start + _FILL_CHUNK]
        part = part[(request_left[c.r[part]] >= step[part]) & (offer_left[c.o[part]] >= g[part] * step[part])]
        if len(part) == 0:
            continue
        req_left = request_left.tolist()
        off_left = offer_left.tolist()
        for i in part.tolist():
            r, o, gpu = r_list[i], o_list[i], g_list[i]
            current = int(hours[i])
            extra = min(hi_list[i] - current, req_left[r], off_left[o] // gpu)
            if extra <= 0 or current + extra < lo_list[i]:
                continue
            hours[i] = current + extra
            req_left[r] -= extra
            off_left[o] -= gpu * extra
            request_left[r] = req_left[r]
            offer_left[o] = off_left[o]
    return hours


def _surplus_order(c: Candidates) -> np.ndarray:
    """Explicit tie-breaking: surplus per GPU-hour, then request arrival, then ask, then offer arrival.

    Candidates are already in (request, ask, offer) order, so a stable sort by surplus alone is that order.
    """
    return np.argsort(-c.surplus, kind="stable")


def _guided_order(c: Candidates, x: np.ndarray, reduced: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """LP-guided: largest LP deals first, then by reduced value, then the surplus order."""
    base = _surplus_order(c) if base is None else base
    rank = np.empty(len(c), dtype=np.int64)
    rank[base] = np.arange(len(c))
    return np.lexsort((rank, -reduced, -np.round(x, 6)))


def _welfare_of(c: Candidates, hours: np.ndarray) -> float:
    return float(_pair_values(c) @ hours)


def _repair(c: Candidates, x: np.ndarray, reduced: np.ndarray, options: int, sweeps: int = 1) -> np.ndarray:
    """Local search from the LP: keep what it settles, place the orders it splits whole (``"fast"``).

    Start from the LP's pairs of every request it serves integrally (whole hours, each at
    least the pair's minimum): feasible, and usually ~85 % of the welfare. Then each request
    the LP split or left fractional ("dirty"), largest (GPU-hours) first, gets the best of
    (A) pieces from spare capacity, cheapest ask first, each piece at least its pair's minimum;
    (B) one piece on an offer made room for by moving its deals elsewhere (into spare
    capacity, cheapest ask first, in pieces) or, if they fit nowhere, dropping them -- the
    victims cheapest to move per GPU-hour first -- plus (A) for the rest. A plan is applied
    only if it adds welfare. Options per request: its LP pairs, then the ``options`` best by
    reduced value. ``sweeps`` more rounds retry requests still served less than by the LP.
    Every step keeps capacities, hours and minimums: the result is feasible. Deterministic:
    fixed orders, ties by pair index.
    """
    n_r, n_o = len(c.requests), len(c.offers)
    g = c.request_gpus[c.r]
    used = x > 1e-9
    dirty = used & ((x < c.lo - 1e-6) | (np.abs(x - np.round(x)) > 1e-6))
    dirty_request = np.zeros(n_r, dtype=bool)
    dirty_request[c.r[dirty]] = True
    hours = np.where(used & ~dirty_request[c.r], np.round(x), 0).astype(np.int64)
    hours = np.minimum(hours, c.hi)
    rs, os_, lo_, hi_, gs, ss = (a.tolist() for a in (c.r, c.o, c.lo, c.hi, g, c.surplus))
    h_ = hours.tolist()
    req_left = (c.request_hours - np.bincount(c.r, weights=hours, minlength=n_r)).astype(np.int64).tolist()
    off_left = (c.offer_capacity - np.bincount(c.o, weights=hours * g, minlength=n_o)).astype(np.int64).tolist()
    on_offer: list[set[int]] = [set() for _ in range(n_o)]
    for p in np.flatnonzero(hours > 0).tolist():
        on_offer[os_[p]].add(p)
    starts = np.searchsorted(c.r, np.arange(n_r + 1)).tolist()
    spare_at_start = np.asarray(off_left)[c.o] >= g * c.lo  # where moved deals may land
    choices: dict[int, list[int]] = {}
    landing: dict[int, list[int]] = {}

    def options_of(r: int) -> list[int]:
        """r's LP pairs, then its ``options`` best by reduced value; in canonical (ask) order."""
        if r not in choices:
            a, b = starts[r], starts[r + 1]
            key = np.where(used[a:b], -np.inf, -reduced[a:b])
            choices[r] = sorted((a + np.argsort(key, kind="stable")[:options]).tolist())
        return choices[r]

    def landing_of(r: int) -> list[int]:
        """r's pairs on offers that had spare room for them at the start, cheapest ask first."""
        if r not in landing:
            a, b = starts[r], starts[r + 1]
            landing[r] = (a + np.flatnonzero(spare_at_start[a:b])[:_LANDING]).tolist()
        return landing[r]

    def relocation(q: int, o_from: int, reserved: dict[int, int]) -> tuple[float, list[tuple[int, int]]] | None:
        """Move deal q off ``o_from`` into spare capacity, in pieces: (welfare lost, pieces) or None."""
        rq, hq, gq = rs[q], h_[q], gs[q]
        left, pieces, gained = hq, [], 0.0
        for p2 in landing_of(rq):  # ask ascending
            o2 = os_[p2]
            if o2 == o_from or h_[p2] > 0:
                continue
            h = min(hi_[p2], left, (off_left[o2] - reserved.get(o2, 0)) // gq)
            if h < lo_[p2]:
                continue
            pieces.append((p2, h))
            gained += ss[p2] * gq * h
            left -= h
            if left == 0:
                break
        if left == hq:
            return None
        return ss[q] * gq * hq - gained, pieces

    def plan(r: int, want: int) -> tuple[float, list[tuple[int, int]], list[tuple[int, list[tuple[int, int]]]]]:
        """Best way to give request r up to ``want`` more hours: (welfare gained, pieces, evictions)."""
        opts = options_of(r)
        own = [p for p in range(starts[r], starts[r + 1]) if h_[p] > 0 and p not in opts]
        if own:
            opts = sorted(opts + own)
        best: tuple[float, list, list] = (0.0, [], [])
        relocations: dict[tuple[int, int], tuple[float, list[tuple[int, int]]] | None] = {}
        left, pieces, gain = want, [], 0.0  # (A)
        for p in opts:
            h = min(hi_[p] - h_[p], left, off_left[os_[p]] // gs[p])
            if h <= 0 or h_[p] + h < lo_[p]:
                continue
            pieces.append((p, h))
            gain += ss[p] * gs[p] * h
            left -= h
            if left == 0:
                break
        if gain > best[0]:
            best = (gain, pieces, [])
        for p in opts:  # (B)
            o, gp = os_[p], gs[p]
            h = min(hi_[p] - h_[p], want)
            if h <= 0 or h_[p] + h < lo_[p]:
                continue
            short = gp * h - off_left[o]
            if short <= 0:
                continue  # fits without moving anything: (A) covers it
            victims = []
            for q in on_offer[o]:
                if rs[q] != r:
                    moved = relocations.get((q, o), False)
                    if moved is False:
                        moved = relocations[q, o] = relocation(q, o, {})
                    cost = moved[0] if moved is not None else ss[q] * gs[q] * h_[q]
                    victims.append((cost / (gs[q] * h_[q]), q, moved))
            victims.sort()
            loss, evict, reserved = 0.0, [], {}
            for _, q, moved in victims:
                if short <= 0:
                    break
                if reserved:
                    moved = relocation(q, o, reserved)
                moves = [] if moved is None else moved[1]
                loss += ss[q] * gs[q] * h_[q] if moved is None else moved[0]
                for p2, h2 in moves:
                    reserved[os_[p2]] = reserved.get(os_[p2], 0) + gs[q] * h2
                evict.append((q, moves))
                short -= gs[q] * h_[q]
            if short > 0:
                continue
            gain = ss[p] * gp * h - loss
            left, pieces = want - h, [(p, h)]
            for p3 in opts:
                if left == 0:
                    break
                o3 = os_[p3]
                hh = min(hi_[p3] - h_[p3], left, (off_left[o3] - reserved.get(o3, 0)) // gs[p3])
                if p3 == p or hh <= 0 or h_[p3] + hh < lo_[p3]:
                    continue
                pieces.append((p3, hh))
                gain += ss[p3] * gs[p3] * hh
                left -= hh
                reserved[o3] = reserved.get(o3, 0) + gs[p3] * hh
            if gain > best[0]:
                best = (gain, pieces, evict)
        return best

    def apply(r: int, pieces: list[tuple[int, int]], evict: list[tuple[int, list[tuple[int, int]]]]) -> None:
        for q, moves in evict:
            o, hq, gq = os_[q], h_[q], gs[q]
            h_[q] = 0
            off_left[o] += gq * hq
            on_offer[o].discard(q)
            for p2, h2 in moves:
                h_[p2] = h2
                off_left[os_[p2]] -= gq * h2
                on_offer[os_[p2]].add(p2)
                hq -= h2
            req_left[rs[q]] += hq
        for p, h in pieces:
            h_[p] += h
            req_left[r] -= h
            off_left[os_[p]] -= gs[p] * h
            on_offer[os_[p]].add(p)

    size = c.request_gpus * c.request_hours
    todo = np.flatnonzero(dirty_request)
    lp_hours = np.bincount(c.r, weights=x, minlength=n_r)
    for sweep in range(sweeps + 1):
        for r in todo[np.argsort(-size[todo], kind="stable")].tolist():
            if req_left[r] > 0:
                gain, pieces, evict = plan(r, req_left[r])
                if gain > 0:
                    apply(r, pieces, evict)
        left = np.array(req_left, dtype=np.int64)
        todo = np.flatnonzero((c.request_hours - left < lp_hours - 0.5) & (left > 0))
    return np.array(h_, dtype=np.int64)


def _solve_fast(c: Candidates, config: BatchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """LP bound, then the local search from the LP's vertex (``_repair``) and fills; no MILP."""
    x, w, u, rounds = _relaxation(c, config)
    reduced = _pair_values(c) - w[c.r] - c.request_gpus[c.r] * u[c.o]
    by_surplus = _surplus_order(c)
    by_guide = _guided_order(c, x, reduced, by_surplus)
    repaired = _fill(c, _fill(c, _repair(c, x, reduced, config.repair_options, config.repair_sweeps), by_guide), by_surplus)
    guided = _fill(c, np.zeros(len(c), dtype=np.int64), by_guide)  # the "lp" answer: never do worse
    return (repaired if _welfare_of(c, repaired) >= _welfare_of(c, guided) else guided), w, u, rounds


def _solve_auto(c: Candidates, config: BatchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """LP bound and guidance, then exact MILPs on the sub-markets the LP could not settle."""
    x, w, u, rounds = _relaxation(c, config)
    guide_w, guide_u = w, u
    if config.lp_solver == "flow" and config.simplex_vertex:
        x, guide_w, guide_u = _simplex_vertex(c, x, w, u)
    value = _pair_values(c)
    reduced = value - guide_w[c.r] - c.request_gpus[c.r] * guide_u[c.o]
    empty = np.zeros(len(c), dtype=np.int64)
    by_surplus = _surplus_order(c)  # sorted once: every fill below reuses it
    by_guide = _guided_order(c, x, reduced, by_surplus)
    guided = _fill(c, empty, by_guide)
    greedy = _fill(c, empty, by_surplus)
    best = guided if _welfare_of(c, guided) >= _welfare_of(c, greedy) else greedy
    bound = _dual_bound(c, w, u)
    if bound - _welfare_of(c, best) <= config.target_gap * bound:
        return best, w, u, rounds
    # Pairs the LP uses, plus the best alternatives of requests it split or left fractional.
    dirty = (x > 1e-9) & ((x < c.lo - 1e-6) | (np.abs(x - np.round(x)) > 1e-6))
    dirty_request = np.zeros(len(c.requests), dtype=bool)
    dirty_request[c.r[dirty]] = True
    keep = x > 1e-9
    options = np.flatnonzero(dirty_request[c.r])
    keep[options[_first_k_per_group(c.r[options], -reduced[options], config.alternatives)]] = True
    hours = np.zeros(len(c), dtype=np.int64)
    for part in _components(c, np.flatnonzero(keep)):
        if not dirty[part].any():
            # The LP already settled this sub-market with whole hours above every minimum.
            hours[part] = np.round(x[part]).astype(np.int64)
            continue
        part_hours, _, _ = _milp(
            c, part, integral_hours=config.integral_hours or len(part) <= config.integral_below,
            node_limit=config.node_limit, time_limit=config.time_limit,
            gap=config.mip_rel_gap,
        )
        hours[part] = part_hours
    hours = _fill(c, hours, by_guide)
    hours = _fill(c, hours, by_surplus)
    return (hours if _welfare_of(c, hours) > _welfare_of(c, best) else best), w, u, rounds


# ------------------------------------------------------------------- assembly


def _market_prices(deals: Sequence[Deal], offers: Mapping[str, Offer]) -> tuple[MarketPrice, ...]:
    markets: dict[tuple[str, int, int], list[Deal]] = {}
    for d in deals:
        o = offers[d.offer_id]
        markets.setdefault((o.token, o.gpu_model, o.region), []).append(d)
    prices = []
    for (token, model, region), ds in sorted(markets.items()):
        volume = sum(d.gpu_hours for d in ds)
        prices.append(
            MarketPrice(
                token=token,
                gpu_model=model,
                region=region,
                clearing_price=max(d.price_per_gpu_hour for d in ds),
                lowest_price=min(d.price_per_gpu_hour for d in ds),
                volume_gpu_hours=volume,
                deal_count=len(ds),
                average_price=sum(d.cost for d in ds) // volume,
            )
        )
    return tuple(prices)


def clear_batch(
    offers: Sequence[Offer],
    requests: Sequence[Request],
    now: int,
    *,
    remaining: Mapping[str, int] | None = None,
    config: BatchConfig = BatchConfig(),
) -> BatchResult:
    """Allocate one window. ``remaining`` overrides quantities of orders carried over
    from earlier windows (offer: GPU-hours, request: hours). Pure: inputs are not changed."""
    started = time.perf_counter()
    _check_window(offers, requests, remaining)
    c = build_candidates(offers, requests, now, remaining)
    bound: float | None = None
    optimal = False
    w = np.zeros(len(c.requests))
    u = np.zeros(len(c.offers))
    rounds = 0
    if len(c) == 0:
        hours = np.zeros(0, dtype=np.int64)
        bound, optimal = 0.0, True
    elif config.method == "greedy":
        hours = _fill(c, np.zeros(len(c), dtype=np.int64), _surplus_order(c))
    elif config.method == "exact" or (config.method == "auto" and len(c) <= config.exact_below):
        # The reference: no gap, no node limit; only the optional safety time limit.
        hours, optimal, bound = _milp(
            c, np.arange(len(c)), integral_hours=True, node_limit=None, time_limit=config.time_limit, gap=0.0
        )
    elif config.method == "lp":
        x, w, u, rounds = _relaxation(c, config)
        reduced = _pair_values(c) - w[c.r] - c.request_gpus[c.r] * u[c.o]
        hours = _fill(c, np.zeros(len(c), dtype=np.int64), _guided_order(c, x, reduced))
        bound = _dual_bound(c, w, u)
    elif config.method == "fast":
        hours, w, u, rounds = _solve_fast(c, config)
        bound = _dual_bound(c, w, u)
    elif config.method == "auto":
        hours, w, u, rounds = _solve_auto(c, config)
        bound = _dual_bound(c, w, u)
    else:
        raise ValueError(f"unknown method {config.method!r}")

    deals: list[Deal] = []
    offer_left = {o.order_id: int(c.offer_capacity[i]) for i, o in enumerate(c.offers)}
    request_left = {r.order_id: int(c.request_hours[i]) for i, r in enumerate(c.requests)}
    welfare = 0
    for i in np.flatnonzero(hours > 0).tolist():  # canonical pair order
        offer, request, h = c.offers[c.o[i]], c.requests[c.r[i]], int(hours[i])
        deal = Deal(offer.order_id, request.order_id, request.gpu_count, h, offer.price_per_gpu_hour)
        deals.append(deal)
        welfare += (request.max_price_per_gpu_hour - offer.price_per_gpu_hour) * deal.gpu_hours
        offer_left[offer.order_id] -= deal.gpu_hours
        request_left[request.order_id] -= h
    if bound is not None and math.isfinite(bound):
        bound = max(bound, float(welfare))  # float rounding must not make the bound look violated
        gap = (bound - welfare) / bound if bound > 0 else 0.0
        optimal = optimal or gap <= 1e-9
    else:
        gap = None
    return BatchResult(
        now=now,
        method=config.method,
        deals=tuple(deals),
        welfare=welfare,
        upper_bound=bound,
        gap=gap,
        optimal=optimal,
        prices=_market_prices(deals, {o.order_id: o for o in c.offers}),
        offer_remaining=offer_left,
        request_remaining=request_left,
        request_values={r.order_id: float(w[i]) for i, r in enumerate(c.requests)} if rounds else {},
        offer_values={o.order_id: float(u[i]) for i, o in enumerate(c.offers)} if rounds else {},
        candidate_pairs=len(c),
        rounds=rounds,
        seconds=time.perf_counter() - started,
    )


def certified_upper_bound(
    offers: Sequence[Offer],
    requests: Sequence[Request],
    now: int,
    request_values: Mapping[str, float],
    offer_values: Mapping[str, float],
    *,
    remaining: Mapping[str, int] | None = None,
) -> float:
    """Recompute the certificate bound ``B`` from published duals, over every candidate pair."""
    c = build_candidates(offers, requests, now, remaining)
    w = np.array([max(0.0, request_values.get(r.order_id, 0.0)) for r in c.requests])
    u = np.array([max(0.0, offer_values.get(o.order_id, 0.0)) for o in c.offers])
    return _dual_bound(c, w, u) if len(c) else 0.0


def verify_batch(
    result: BatchResult,
    offers: Sequence[Offer],
    requests: Sequence[Request],
    *,
    remaining: Mapping[str, int] | None = None,
) -> None:
    """Check an allocation the way an observer would, from the orders alone.

    Feasibility (every deal obeys the contract's rule at ``result.now``, one deal
    per pair, capacities and hours not exceeded), the price rule (deal price =
    offer ask; ask <= the market's clearing price = its highest traded ask),
    and the reported welfare. Raises ``BatchVerificationError`` listing problems.
    """
    remaining = remaining or {}
    now = result.now
    offer_by_id = {o.order_id: o for o in offers}
    request_by_id = {r.order_id: r for r in requests}
    problems: list[str] = []
    used_capacity: dict[str, int] = {}
    used_hours: dict[str, int] = {}
    pairs: set[tuple[str, str]] = set()
    welfare = 0
    for d in result.deals:
        o = offer_by_id.get(d.offer_id)
        r = request_by_id.get(d.request_id)
        if o is None or r is None:
            problems.append(f"deal {d.offer_id}/{d.request_id} names an order not in the window")
            continue
        if (d.offer_id, d.request_id) in pairs:
            problems.append(f"pair {d.offer_id}/{d.request_id} has more than one deal")
        pairs.add((d.offer_id, d.request_id))
        if d.price_per_gpu_hour != o.price_per_gpu_hour:
            problems.append(f"deal {d.offer_id}/{d.request_id} price {d.price_per_gpu_hour} != ask")
        if d.gpu_count != r.gpu_count:
            problems.append(f"deal {d.offer_id}/{d.request_id} gpu_count != request's")
        cap = remaining.get(o.order_id, o.capacity_gpu_hours)
        hours = remaining.get(r.order_id, r.hours)
        lo, hi = deal_hours_bounds(o, cap, r, hours, now)
        if not (
            statically_compatible(o, r) and prices_cross(o, r) and is_live(o, now) and is_live(r, now) and lo <= d.hours <= hi
        ):
            problems.append(f"deal {d.offer_id}/{d.request_id} breaks the compatibility rule")
        used_capacity[o.order_id] = used_capacity.get(o.order_id, 0) + d.gpu_hours
        used_hours[r.order_id] = used_hours.get(r.order_id, 0) + d.hours
        welfare += (r.max_price_per_gpu_hour - o.price_per_gpu_hour) * d.gpu_hours
    for oid, used in used_capacity.items():
        if used > remaining.get(oid, offer_by_id[oid].capacity_gpu_hours):
            problems.append(f"offer {oid} over-filled: {used} GPU-hours")
    for rid, used in used_hours.items():
        if used > remaining.get(rid, request_by_id[rid].hours):
            problems.append(f"request {rid} over-filled: {used} hours")
    if welfare != result.welfare:
        problems.append(f"welfare {result.welfare} != recomputed {welfare}")
    for oid, o in offer_by_id.items():
        left = remaining.get(oid, o.capacity_gpu_hours) - used_capacity.get(oid, 0)
        if result.offer_remaining.get(oid) != left:
            problems.append(f"offer {oid} remaining {result.offer_remaining.get(oid)} != {left}")
    for rid, r in request_by_id.items():
        left = remaining.get(rid, r.hours) - used_hours.get(rid, 0)
        if result.request_remaining.get(rid) != left:
            problems.append(f"request {rid} remaining {result.request_remaining.get(rid)} != {left}")
    expected_prices = _market_prices(result.deals, offer_by_id) if not problems else result.prices
    if expected_prices != result.prices:
        problems.append("market prices do not match the deals")
    for p in result.prices:
        for d in result.deals:
            o = offer_by_id[d.offer_id]
            if (o.token, o.gpu_model, o.region) == (p.token, p.gpu_model, p.region) and d.price_per_gpu_hour > p.clearing_price:
                problems.append(f"deal {d.offer_id}/{d.request_id} pays above its market's clearing price")
    if problems:
        raise BatchVerificationError(problems)


class BatchAuction:
    """Collects orders over a window and clears them together.

    Orders that still have quantity after a clearing stay for the next window
    (with their remaining quantity) unless they expire.
    """

    def __init__(self, config: BatchConfig = BatchConfig()) -> None:
        self.config = config
        self._orders: dict[str, Order] = {}
        self._remaining: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._orders)

    def add(self, order: Order, now: int) -> None:
        """Queue an order for the next clearing; checked before anything changes."""
        from .errors import OrderExpired

        if not isinstance(order, (Offer, Request)):
            raise TypeError(f"expected Offer or Request, got {type(order).__name__}")
        if order.order_id in self._orders:
            raise DuplicateOrder(order.order_id)
        if order.deadline < now:
            raise OrderExpired("deadline", order.deadline, f"order can no longer trade at now={now}")
        self._orders[order.order_id] = order

    def cancel(self, order_id: str) -> Order:
        from .errors import UnknownOrder

        if order_id not in self._orders:
            raise UnknownOrder(order_id)
        self._remaining.pop(order_id, None)
        return self._orders.pop(order_id)

    def clear(self, now: int) -> BatchResult:
        offers = [o for o in self._orders.values() if isinstance(o, Offer)]
        requests = [r for r in self._orders.values() if isinstance(r, Request)]
        result = clear_batch(offers, requests, now, remaining=self._remaining, config=self.config)
        left = {**result.offer_remaining, **result.request_remaining}
        self._orders = {
            oid: o for oid, o in self._orders.items() if o.deadline > now and left[oid] >= o.min_hours
        }
        self._remaining = {oid: left[oid] for oid in self._orders}
        return result
