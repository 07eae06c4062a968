"""Matching engine benchmark: continuous matching at 10k / 100k / 1M resting orders and a
10k-order batch auction, side by side with a naive linear-scan matcher and the exact solver.

    .venv/bin/python bench/matching/run.py            # full run (~15-25 min on 2 cores), rewrites BENCHMARKS.md
    .venv/bin/python bench/matching/run.py --quick    # small sizes, prints only

Each measurement runs in a fresh subprocess, so peak RSS belongs to that measurement alone.
Only this script's section of BENCHMARKS.md (between the bench:matching markers) is rewritten.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from marketplace.matching.batch import BatchConfig, clear_batch  # noqa: E402
from marketplace.matching.continuous import ContinuousMatcher  # noqa: E402
from marketplace.matching.deals import total_welfare  # noqa: E402
from marketplace.matching.errors import MatchingError  # noqa: E402
from marketplace.matching.generator import MarketGenerator  # noqa: E402
from marketplace.matching.reference import NaiveMatcher  # noqa: E402

START = 1_800_000_000
SEED = 2026
MARK_START = "<!-- bench:matching:start -->"
MARK_END = "<!-- bench:matching:end -->"


# ----------------------------------------------------------------- measurement helpers


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class SizedFlow:
    """Keeps a book near its target size: cancels the oldest resting order once it grows past it."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.arrivals: collections.deque[str] = collections.deque()

    def after_submit(self, order_id: str, books: list) -> None:  # type: ignore[type-arg]
        self.arrivals.append(order_id)
        primary = books[0]
        while len(primary.book) > self.target and self.arrivals:
            victim = self.arrivals.popleft()
            if victim in primary.book:
                for b in books:
                    b.cancel(victim)


# ----------------------------------------------------------------------------- workers


def worker_continuous(size: int, flow_orders: int, naive_orders: int, naive_budget_s: float) -> dict:
    base_rss = rss_bytes()
    gen = MarketGenerator(SEED)
    matcher = ContinuousMatcher()
    book = matcher.book
    t0 = time.perf_counter()
    i = 0
    submitted = 0
    # Build the resting book through the matcher: crossing orders trade, the rest rests.
    while len(book) < size:
        now = START + i // 1_000
        matcher.submit(gen.order(now), now)
        i += 1
        submitted += 1
    build_s = time.perf_counter() - t0
    gc.collect()
    book_rss = rss_bytes() - base_rss
    resting = len(book)
    # The measured flow is generated up front so generation is not timed.
    flow_start = START + i // 1_000 + 1
    flow = list(gen.flow(flow_orders + naive_orders, start=flow_start))
    gc.collect()
    gc.freeze()  # what a long-running service does after loading its book: full GCs skip old objects
    sized = SizedFlow(size)
    wall: list[int] = []
    cpu: list[int] = []
    deals = 0
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    gc_before = sum(s["collections"] for s in gc.get_stats())
    for now, order in flow[:flow_orders]:
        c0 = cpu_clock()
        w0 = clock()
        made = matcher.submit(order, now)
        w1 = clock()
        c1 = cpu_clock()
        wall.append(w1 - w0)
        cpu.append(c1 - c0)
        deals += len(made)
        sized.after_submit(order.order_id, [matcher])
    gc_collections = sum(s["collections"] for s in gc.get_stats()) - gc_before
    total_wall = sum(wall)
    wall.sort()
    cpu.sort()
    peak = peak_rss_bytes()

    # Side by side with the naive linear scan, from the same book, on the next orders.
    naive = NaiveMatcher.from_snapshot(book.snapshot(), next_seq=book.next_seq, now=book.now)
    naive_wall: list[int] = []
    indexed_wall: list[int] = []
    mismatches = 0
    pair = [matcher, naive]
    started = time.perf_counter()
    for now, order in flow[flow_orders : flow_orders + naive_orders]:
        w0 = clock()
        try:
            got = matcher.submit(order, now)
        except MatchingError as exc:
            got = type(exc)  # type: ignore[assignment]
        w1 = clock()
        try:
            want = naive.submit(order, now)
        except MatchingError as exc:
            want = type(exc)  # type: ignore[assignment]
        w2 = clock()
        indexed_wall.append(w1 - w0)
        naive_wall.append(w2 - w1)
        mismatches += got != want
        sized.after_submit(order.order_id, pair)
        if time.perf_counter() - started > naive_budget_s:
            break
    naive_wall.sort()
    return {
        "size": size,
        "resting": resting,
        "submitted_to_build": submitted,
        "build_s": build_s,
        "buckets": book.bucket_count,
        "flow_orders": flow_orders,
        "deals": deals,
        "orders_per_s": flow_orders / (total_wall / 1e9),
        "p50_us": percentile(wall, 0.50) / 1e3,
        "p99_us": percentile(wall, 0.99) / 1e3,
        "max_us": wall[-1] / 1e3,
        "cpu_p50_us": percentile(cpu, 0.50) / 1e3,
        "cpu_p99_us": percentile(cpu, 0.99) / 1e3,
        "mean_us": total_wall / flow_orders / 1e3,
        "gc_collections": gc_collections,
        "rss_per_order_b": book_rss / resting,
        "peak_rss_mb": peak / 2**20,
        "naive_orders": len(naive_wall),
        "naive_mean_us": sum(naive_wall) / max(1, len(naive_wall)) / 1e3,
        "naive_p99_us": percentile(naive_wall, 0.99) / 1e3,
        "naive_orders_per_s": len(naive_wall) / (sum(naive_wall) / 1e9) if naive_wall else float("nan"),
        "indexed_same_orders_mean_us": sum(indexed_wall) / max(1, len(indexed_wall)) / 1e3,
        "naive_mismatches": mismatches,
    }


def worker_memory(size: int) -> dict:
    """Bytes per resting order, order objects included: N generated orders rested with ``add``."""
    from marketplace.matching.book import OrderBook

    gen = MarketGenerator(SEED)
    gc.collect()
    before = rss_bytes()
    orders = [gen.order(START + i // 1_000) for i in range(size)]
    gc.collect()
    after_orders = rss_bytes()
    book = OrderBook()
    for order in orders:
        book.add(order, START)  # every generated order is live at START (made at START or later)
    del orders  # the book holds them now
    gc.collect()
    after_book = rss_bytes()
    return {
        "size": size,
        "order_b": (after_orders - before) / size,
        "index_b": (after_book - after_orders) / len(book),
        "total_b": (after_book - before) / len(book),
    }


def _welfare_share(w: int, ref: float) -> float:
    return 100.0 * w / ref if ref else float("nan")


def worker_batch(window: int, exact_time_limit: float, seed: int) -> dict:
    gen = MarketGenerator(seed)
    offers, requests = gen.window(window, now=START, offer_share=0.3)
    offers_by_id = {o.order_id: o for o in offers}
    requests_by_id = {r.order_id: r for r in requests}
    out: dict = {"window": window, "offers": len(offers), "requests": len(requests)}
    clear_batch(offers[:5], requests[:5], START)  # import scipy/HiGHS outside the timings
    import ortools.graph.python.min_cost_flow  # noqa: F401  -- and OR-Tools (the LP's flow solver)

    for method in ("auto", "fast", "lp", "greedy"):
        c0 = time.process_time()
        result = clear_batch(offers, requests, START, config=BatchConfig(method=method))
        out[method] = {
            "welfare": result.welfare,
            "bound": result.upper_bound,
            "wall_s": result.seconds,
            "cpu_s": time.process_time() - c0,
            "deals": len(result.deals),
            "pairs": result.candidate_pairs,
            "rounds": result.rounds,
        }
        if method == "auto":
            out["markets"] = len(result.prices)
            out["digest"] = result.digest()

    # Continuous matching on the same orders, in arrival order, all at the window's time.
    matcher = ContinuousMatcher()
    arrival = sorted([*offers, *requests], key=lambda o: int(o.order_id, 16))
    t0 = time.perf_counter()
    deals = []
    for order in arrival:
        deals += matcher.submit(order, START)
    out["continuous"] = {
        "welfare": total_welfare(deals, offers_by_id, requests_by_id),
        "wall_s": time.perf_counter() - t0,
        "deals": len(deals),
    }

    # The exact solver: the whole MILP with HiGHS, no gap; reported even if it does not finish.
    c0 = time.process_time()
    w0 = time.perf_counter()
    try:
        exact = clear_batch(
            offers, requests, START, config=BatchConfig(method="exact", time_limit=exact_time_limit)
        )
        out["exact"] = {
            "welfare": exact.welfare,
            "bound": exact.upper_bound,
            "optimal": exact.optimal,
            "wall_s": exact.seconds,
            "cpu_s": time.process_time() - c0,
            "time_limit_s": exact_time_limit,
        }
    except MatchingError:  # a short time limit can end before HiGHS finds any feasible allocation
        out["exact"] = {
            "welfare": 0,
            "bound": None,
            "optimal": False,
            "wall_s": time.perf_counter() - w0,
            "cpu_s": time.process_time() - c0,
            "time_limit_s": exact_time_limit,
        }
    bounds = [b for b in (out["auto"]["bound"], out["exact"]["bound"]) if b is not None]
    out["reference"] = out["exact"]["welfare"] if out["exact"]["optimal"] else min(bounds)
    out["reference_kind"] = "exact optimum" if out["exact"]["optimal"] else "best upper bound (LP duals / HiGHS)"
    return out


# ---------------------------------------------------------------------------- reporting


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def check(ok: bool) -> str:
    return "✅" if ok else "❌"


def render(info: dict, continuous: list[dict], batches: list[dict], args: argparse.Namespace, load_end: str) -> str:
    lines = [
        "## Matching engine (`bench/matching`)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['mem_gib']} GiB RAM; Python {info['python']}; "
        f"{info['date']}; commit `{info['commit']}`. Load average (1/5/15 min) at start {info['load']}, "
        f"at end {load_end} -- the machine is shared, so wall-clock numbers include time the "
        "scheduler gave to other processes; the CPU-time columns exclude it.",
        "",
        f"Reproduce: `.venv/bin/python bench/matching/run.py` (seed {SEED}; flow of {args.flow:,} orders per size).",
        "",
        "### Continuous matching",
        "",
        "Resting book built by submitting generated orders through the matcher until N rest; then a flow "
        "of fresh orders is timed one `submit` at a time (the book is held near N by cancelling its "
        "oldest order after each arrival, not timed). `gc.freeze()` after loading, as a service would. "
        "Memory per resting order = RSS growth while resting N generated orders with `OrderBook.add` "
        "(order objects included), divided by N; peak RSS is that of the matching run. "
        "Naive = linear scan over every resting order (`reference.NaiveMatcher`), on the next orders "
        "from the same book; its deals are compared with the indexed matcher's.",
        "",
        "| resting orders | orders/s | p50 µs | p99 µs | p99 CPU µs | max µs | memory / resting order | peak RSS | naive: orders/s | naive p99 µs | speed-up | deals equal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in continuous:
        speedup = c["naive_mean_us"] / c["indexed_same_orders_mean_us"] if c["naive_orders"] else float("nan")
        lines.append(
            f"| {c['resting']:,} | {c['orders_per_s']:,.0f} | {c['p50_us']:.1f} | {c['p99_us']:.1f} | "
            f"{c['cpu_p99_us']:.1f} | {c['max_us']:,.0f} | {c['mem_total_b']:,.0f} B ({c['mem_index_b']:,.0f} B index) | {c['peak_rss_mb']:,.0f} MiB | "
            f"{c['naive_orders_per_s']:,.1f} | {c['naive_p99_us']:,.0f} | {speedup:,.0f}× | "
            f"{'yes' if c['naive_mismatches'] == 0 else 'NO (' + str(c['naive_mismatches']) + ')'} "
            f"({c['naive_orders']} orders) |"
        )
    if continuous:
        big, small = continuous[-1], continuous[0]
        ratio = big["mean_us"] / small["mean_us"]
        lines += [
            "",
            f"Targets at {big['resting']:,} resting orders: ≥ 100,000 orders/s {check(big['orders_per_s'] >= 1e5)} "
            f"({big['orders_per_s']:,.0f}); p99 ≤ 50 µs {check(big['p99_us'] <= 50)} ({big['p99_us']:.1f} µs wall, "
            f"{big['cpu_p99_us']:.1f} µs CPU); time per order within 2× of {small['resting']:,} "
            f"{check(ratio <= 2)} ({ratio:.2f}× mean time per order); ≤ 1 KB per resting order "
            f"{check(big['mem_total_b'] <= 1024)} ({big['mem_total_b']:,.0f} B, order object included).",
            "",
            "What limits the missed targets: CPython's per-operation cost and memory latency. Each `submit` "
            "checks the order against the book (clock, duplicate id, expiry), finds the best counter-order "
            "(a request: one numpy gather + argmin over the packed tops of the 10-600 offer buckets its "
            "signature fits; an offer: usually skipped by its signature's bid ceiling), makes the deal(s) "
            "and rests or retires the remainder: ~12-15 µs at the median on this CPU, of which the fixed "
            "part (dicts of ids, heap push, `Deal`) is most. The p99 (measured at 100k, top 1 %): about "
            "two thirds are ordinary one-deal requests doing the median's work with cold caches (no "
            "context switch around them; this 2-core machine is shared), about one fifth drop cancelled "
            "orders that reached a bucket top (lazy deletion: pops on large heaps), the rest take a second "
            "candidate or are the first order of a never-seen signature (building its candidate lists in "
            "Python costs up to ~1 ms); the max is garbage collection and the scheduler. None of it grows "
            "with the book: "
            f"time per order at 1M is within {ratio:.2f}× of 10k (the growth is cache misses and heap "
            "depth). Reaching 100k orders/s and 50 µs p99 would need the per-order bookkeeping and heaps "
            "in compiled code (e.g. a C/Rust extension).",
        ]
    for b in batches:
        ref = b["reference"]
        auto, lp, greedy, cont, exact = b["auto"], b["lp"], b["greedy"], b["continuous"], b["exact"]
        exact_note = (
            "optimal" if exact["optimal"] else f"stopped at its {exact['time_limit_s']:.0f} s limit, not optimal"
        )
        lines += [
            "",
            f"### Batch auction: {b['window']:,} orders in one window ({b['offers']:,} offers, {b['requests']:,} requests)",
            "",
            f"{auto['pairs']:,} candidate pairs. Share = welfare / {b['reference_kind']} = {ref:,.0f}"
            + (" (so shares are lower bounds on the share of the true optimum)." if "bound" in b["reference_kind"] else "."),
            "",
            "| method | welfare share | wall s | CPU s | deals |",
            "|---|---:|---:|---:|---:|",
            f"| batch `auto` (LP bound + sub-market MILPs) | {_welfare_share(auto['welfare'], ref):.3f} % | {auto['wall_s']:.2f} | {auto['cpu_s']:.2f} | {auto['deals']:,} |",
            *(
                [f"| batch `fast` (LP bound + local search, no MILP) | "
                 f"{_welfare_share(b['fast']['welfare'], ref):.3f} % | "
                 f"{b['fast']['wall_s']:.2f} | {b['fast']['cpu_s']:.2f} | {b['fast']['deals']:,} |"]
                if "fast" in b else []
            ),
            f"| batch `lp` (LP-guided fill only) | {_welfare_share(lp['welfare'], ref):.3f} % | {lp['wall_s']:.2f} | {lp['cpu_s']:.2f} | {lp['deals']:,} |",
            f"| greedy by surplus | {_welfare_share(greedy['welfare'], ref):.3f} % | {greedy['wall_s']:.2f} | {greedy['cpu_s']:.2f} | {greedy['deals']:,} |",
            f"| continuous matching, same orders in arrival order | {_welfare_share(cont['welfare'], ref):.3f} % | {cont['wall_s']:.2f} | – | {cont['deals']:,} |",
            f"| exact MILP (HiGHS, whole window; {exact_note}) | {_welfare_share(exact['welfare'], ref):.3f} % | {exact['wall_s']:.2f} | {exact['cpu_s']:.2f} | – |",
            "",
            f"Gain of the batch auction over continuous matching: {_welfare_share(auto['welfare'] - cont['welfare'], cont['welfare']):+.2f} % welfare. "
            f"Targets: welfare ≥ 99.9 % of the optimum {check(100 * auto['welfare'] / ref >= 99.9)}; time ≤ 1 s "
            f"{check(auto['wall_s'] <= 1.0)}.",
        ]
        if auto["wall_s"] > 1.0:
            lines += [
                "",
                f"What limits the time: HiGHS branch-and-bound. The LP relaxation over {auto['pairs']:,} "
                f"candidate pairs is a min-cost flow (OR-Tools, column generation, {auto['rounds']} round(s)), "
                f"a part of the whole `lp` row ({lp['cpu_s']:.1f} s CPU); nearly all the rest of `auto` is "
                "the sub-market MILPs where the LP splits requests with a minimum deal size -- packing "
                "them whole into offers' capacity is knapsack-like. Greedy alone is fast but leaves "
                f"{100 - _welfare_share(greedy['welfare'], ref):.1f} % of the welfare on the table. The exact "
                "MILP on the whole window does not get near the optimum in 10 minutes, which is why "
                "`auto` decomposes.",
            ]
            if "fast" in b:
                fast = b["fast"]
                meets = _welfare_share(fast["welfare"], ref) >= 99.9 and fast["cpu_s"] <= 1.0
                lines[-1] += (
                    f" `fast` replaces the MILPs by a local search from the LP's vertex (split requests placed "
                    f"whole, deals moved into spare capacity to make room): "
                    f"{_welfare_share(fast['welfare'], ref):.3f} % in {fast['cpu_s']:.2f} s CPU, "
                    f"{auto['cpu_s'] / max(fast['cpu_s'], 1e-9):.1f}× faster than `auto` -- "
                    + ("both targets met." if meets else
                       "between `lp` and `auto`; no method here meets both targets on this window.")
                )
    return "\n".join(lines) + "\n"


def write_section(text: str) -> Path:
    path = REPO / "BENCHMARKS.md"
    body = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{MARK_START}\n{text}{MARK_END}"
    if MARK_START in body and MARK_END in body:
        head, rest = body.split(MARK_START, 1)
        _, tail = rest.split(MARK_END, 1)
        body = head + section + tail
    else:
        body = body.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(body)
    return path


def spawn(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--flow", type=int, default=100_000, help="timed orders per size")
    parser.add_argument("--naive-orders", type=int, default=2_000)
    parser.add_argument("--naive-budget", type=float, default=60.0, help="seconds of naive scanning per size")
    parser.add_argument("--windows", default="1000,10000", help="batch window sizes")
    parser.add_argument("--exact-time-limit", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="small sizes, print only")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--render-from", metavar="LOG", help="re-render the table from a saved run's output")
    parser.add_argument("--worker", choices=["continuous", "batch", "memory"])
    parser.add_argument("--size", type=int)
    args = parser.parse_args()

    if args.worker == "continuous":
        print(json.dumps(worker_continuous(args.size, args.flow, args.naive_orders, args.naive_budget)))
        return
    if args.worker == "memory":
        print(json.dumps(worker_memory(args.size)))
        return
    if args.worker == "batch":
        print(json.dumps(worker_batch(args.size, args.exact_time_limit, SEED)))
        return

    if args.render_from:
        # Re-render a saved run (its "RESULTS" line) without measuring again.
        line = next(x for x in Path(args.render_from).read_text().splitlines() if x.startswith("RESULTS "))
        record = json.loads(line[len("RESULTS "):])
        args.flow = record["flow"]
        text = render(record["info"], record["continuous"], record["batches"], args, record["load_end"])
        print(text)
        if not args.no_write:
            print(f"wrote {write_section(text)}")
        return
    if args.quick:
        args.sizes, args.flow, args.naive_orders, args.windows = "2000,20000", 5_000, 200, "500,2000"
        args.exact_time_limit, args.no_write = 60.0, True
    info = machine()
    print(f"machine: {info}", flush=True)
    continuous = []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        print(f"continuous: {size:,} resting orders ...", flush=True)
        res = spawn(
            [
                "--worker", "continuous", "--size", str(size), "--flow", str(args.flow),
                "--naive-orders", str(args.naive_orders), "--naive-budget", str(args.naive_budget),
            ]
        )
        print(json.dumps(res), flush=True)
        mem = spawn(["--worker", "memory", "--size", str(size)])
        res.update({f"mem_{k}": v for k, v in mem.items() if k != "size"})
        print(json.dumps(res), flush=True)
        continuous.append(res)
    batches = []
    for window in [int(w) for w in args.windows.split(",") if w]:
        print(f"batch: window of {window:,} orders ...", flush=True)
        res = spawn(["--worker", "batch", "--size", str(window), "--exact-time-limit", str(args.exact_time_limit)])
        print(json.dumps(res), flush=True)
        batches.append(res)
    load_end = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    record = {"info": info, "continuous": continuous, "batches": batches, "load_end": load_end, "flow": args.flow}
    print("RESULTS " + json.dumps(record), flush=True)
    text = render(info, continuous, batches, args, load_end)
    print()
    print(text)
    if not args.no_write:
        print(f"wrote {write_section(text)}")


if __name__ == "__main__":
    main()
