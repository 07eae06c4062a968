#!/usr/bin/env python3
"""Signed-order intake over HTTP (issue M4): a real `marketplace serve` against anvil.

    .venv/bin/python bench/service/intake.py [--orders 5000] [--concurrency 16,64]

Pre-signs (outside the timed part) N offers and N requests per concurrency level from many
derived signer accounts (ETH by anvil_setBalance, mUSDC from the faucet, vault deposit or stake,
so every order passes the service's balance/collateral checks), then POSTs them with async httpx
and reports accepted orders/s, latency percentiles and every non-2xx status. Side by side: the
in-process cost of EIP-712 encode + recover (coincurve vs pure-Python eth_keys) and a trivial
FastAPI endpoint under the same load. A further run of the service is profiled with py-spy.

Matching runs during intake (continuous mode, the default: each order is matched on arrival).
Offers ask 3 mUSDC/GPU-h and requests bid at most 2, so nothing crosses and no transaction is
sent: what is timed is intake + matching attempt + storage, not the chain.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (
    DAY,
    REPO_ROOT,
    USDC,
    CpuMeter,
    ServiceProcess,
    Signer,
    Stack,
    UvicornApp,
    load_average,
    stop_on_sigterm,
    tree_cpu_seconds,
)
from loadgen import PySpy, fire, summarize

TARGET_RATE = 5_000  # accepted orders/s
TARGET_P99_MS = 25.0
GPU_MODEL = 8
INPROCESS_ORDERS = 300


@dataclass
class IntakeResults:
    meta: dict[str, Any] = field(default_factory=dict)
    crypto: list[dict[str, Any]] = field(default_factory=list)
    levels: list[dict[str, Any]] = field(default_factory=list)
    trivial: list[dict[str, Any]] = field(default_factory=list)
    batch_levels: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    inprocess: dict[str, Any] | None = None
    inprocess_batch: dict[str, Any] | None = None
    stored_orders: int | None = None


def _wire(message: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in message.items()}


def make_orders(stack: Stack, providers: list[Signer], trainers: list[Signer], count: int, salt: int
                ) -> list[tuple[str, bytes, str, dict, str]]:
    """`count` signed orders, offers and requests alternating, round-robin over the signers.
    Returns (path, body, side, wire message, signature)."""
    from marketplace.signing import Offer, Request, SettlementRule, region_mask

    now = stack.now()
    market = stack.market.address
    out = []
    for i in range(count):
        if i % 2 == 0:
            signer = providers[(i // 2) % len(providers)]
            order = Offer(provider=signer.address, gpuModel=GPU_MODEL, gpuCount=8, vramGb=80, region=1,
                          greenEnergy=True, token=stack.usdc.address, pricePerGpuHour=3 * USDC, minHours=1,
                          maxHours=24, capacityGpuHours=192, availableUntil=now + 7 * DAY, expiry=now + DAY,
                          salt=salt + i, counter=0)
            path, side = "/offers", "offer"
        else:
            signer = trainers[(i // 2) % len(trainers)]
            order = Request(trainer=signer.address, gpuModel=GPU_MODEL, gpuCount=2, minVramGb=40,
                            regionMask=region_mask(1, 2), greenOnly=False, token=stack.usdc.address,
                            maxPricePerGpuHour=2 * USDC, totalHours=4, minHours=1, startBy=now + DAY,
                            expiry=now + DAY, jobSpecHash="0x" + "ab" * 32,
                            settlementRule=int(SettlementRule.CHALLENGE_WINDOW), salt=salt + i, counter=0)
            path, side = "/requests", "request"
        signature = "0x" + order.sign(signer.key, stack.chain_id, market).hex()
        message = _wire(order.message())
        out.append((path, json.dumps({"order": message, "signature": signature}).encode(), side, message, signature))
    return out


def crypto_cost(stack: Stack, orders: list[tuple], workdir: Path, backend: str | None, count: int) -> dict[str, Any]:
    path = workdir / f"crypto-{backend or 'default'}.json"
    path.write_text(json.dumps({"chain_id": stack.chain_id, "market": stack.market.address,
                                "orders": [[side, message, sig] for _, _, side, message, sig in orders[:count]]}))
    env = dict(os.environ)
    if backend:
        env["ECC_BACKEND_CLASS"] = backend
    else:
        env.pop("ECC_BACKEND_CLASS", None)
    result = subprocess.run([sys.executable, str(HERE / "crypto_cost.py"), str(path)], env=env, capture_output=True,
                            text=True, check=True, timeout=600)
    return json.loads(result.stdout.strip().splitlines()[-1])


def batch_bodies(orders: list[tuple], per_request: int) -> list[tuple[str, bytes]]:
    """POST /orders/batch bodies of `per_request` orders each."""
    return [("/orders/batch", json.dumps({"orders": [{"side": side, "order": message, "signature": signature}
                                                     for _, _, side, message, signature in orders[i:i + per_request]]
                                          }).encode())
            for i in range(0, len(orders), per_request)]


def inprocess_submit(stack: Stack, workdir: Path, orders: list[tuple], per_call: int = 1) -> dict[str, Any]:
    """The service's own `submit` called in this process, one order at a time: its cost without
    HTTP or concurrency, and how many JSON-RPC calls to the node each order makes."""
    from collections import Counter

    from common import ANVIL_KEYS, MATCHER

    from marketplace.config import Settings
    from marketplace.db.models import OrderSide
    from marketplace.service import MarketService

    settings = Settings(database_url=f"sqlite:///{workdir / f'inprocess-{per_call}.db'}", rpc_url=stack.devnet.url,
                        registry=stack.registry_path, matcher_private_key=ANVIL_KEYS[MATCHER], confirmations=0,
                        _env_file=None)
    service = MarketService(settings)
    provider = service.gateway.w3.provider
    calls: Counter = Counter()
    original = provider.make_request

    def counting(method, params):
        calls[method] += 1
        return original(method, params)

    provider.make_request = counting  # before the first request: web3 composes its middleware around it
    original_batch = provider.make_batch_request

    def counting_batch(requests):
        calls["(batched round trips)"] += 1
        for method, _ in requests:
            calls[f"{method} (in a batch)"] += 1
        return original_batch(requests)

    provider.make_batch_request = counting_batch
    service.book.load()
    # Steady state: every owner has sent an order before, so their chain state is remembered (the
    # first order of an owner reads it in one JSON-RPC batch; that read is what the HTTP levels' warm-up pays).
    for _, _, side, message, _ in orders:
        owner = message["provider"] if side == "offer" else message["trainer"]
        service.book.chain_state.intake_state(offer=side == "offer", owner=owner, token=message["token"])
    service.book.submit(OrderSide.OFFER if orders[0][2] == "offer" else OrderSide.REQUEST, orders[0][3], orders[0][4])
    calls.clear()
    started, cpu = time.perf_counter(), time.process_time()
    if per_call == 1:
        for _, _, side, message, signature in orders[1:]:
            service.book.submit(OrderSide.OFFER if side == "offer" else OrderSide.REQUEST, message, signature)
    else:
        for i in range(1, len(orders), per_call):
            results = service.book.submit_many([(OrderSide(side), message, signature, None)
                                                for _, _, side, message, signature in orders[i:i + per_call]])
            refused = [r for r in results if not hasattr(r, "order_hash")]
            if refused:
                raise RuntimeError(f"in-process submit_many refused orders: {refused[:3]}")
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    n = len(orders) - 1
    return {"orders": n, "per_call": per_call, "ms_per_order": wall / n * 1000, "cpu_ms_per_order": cpu / n * 1000,
            "rpc_calls_per_order": sum(v for k, v in calls.items() if not k.startswith("(")) / n,
            "round_trips_per_order": sum(v for k, v in calls.items() if "in a batch" not in k) / n,
            "rpc_by_method": {k: v / n for k, v in calls.most_common()}}


def level_row(label: str, result, meter: CpuMeter) -> dict[str, Any]:
    accepted = max(1, result.accepted)
    return {
        "label": label, "concurrency": result.concurrency, "requests": result.requests, "orders": result.requests,
        "accepted": result.accepted,
        "wall_s": result.wall, "rate": result.rate, "p50_ms": result.p(50), "p90_ms": result.p(90),
        "p99_ms": result.p(99), "max_ms": result.latencies_ms[-1] if result.latencies_ms else None,
        "statuses": {str(k): v for k, v in result.statuses.items()}, "errors": result.errors,
        "cpu_s": meter.cpu, "cpu_ms_per_order": {k: v / accepted * 1000 for k, v in meter.cpu.items()},
    }


def run_batch_levels(stack: Stack, service: ServiceProcess, results: IntakeResults,
                     batch_levels: tuple[tuple[int, int], ...], batch_sets: list[list[tuple]], processes: int,
                     resting: int, progress) -> None:
    """The batch levels against one running service; `resting` orders are in its book at the start."""
    workers = f", {processes} signature worker{'s' if processes > 1 else ''}" if processes else ""
    for (per_request, concurrency), orders in zip(batch_levels, batch_sets, strict=True):
        progress(f"intake: {len(orders):,} orders in POST /orders/batch of {per_request}, concurrency {concurrency}"
                 f"{workers}")
        meter = CpuMeter({"service": service.pid, "anvil": stack.anvil_pid}).start()
        result = fire(service.url, batch_bodies(orders, per_request), concurrency, batch=True)
        meter.stop()
        row = level_row(f"marketplace serve, batches of {per_request}{workers}", result, meter)
        row["per_request"], row["orders"], row["intake_processes"] = per_request, len(orders), processes
        row["book_before"] = resting
        resting += row["accepted"]
        results.batch_levels.append(row)
        progress(f"  {row['rate']:.0f} orders/s, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms (per request), "
                 f"statuses {row['statuses']}")


def run_intake(stack: Stack, workdir: Path, *, orders_per_level: int, levels: tuple[int, ...], profile_orders: int,
               signers: int, batch_levels: tuple[tuple[int, int], ...] = (), batch_orders: int = 10_000,
               intake_processes: tuple[int, ...] = (0,), progress=print) -> IntakeResults:
    """Single-order levels (POST /offers, /requests at each concurrency), then batch levels
    (POST /orders/batch with `per_request` orders, at a concurrency), each with orders of its own."""
    results = IntakeResults()
    providers = [Signer.derive("intake-provider", i) for i in range(signers)]
    trainers = [Signer.derive("intake-trainer", i) for i in range(signers)]
    progress(f"funding {2 * signers} intake signers (mint, approve, deposit/stake)")
    stack.fund(trainers, providers, deposit=10_000 * USDC, stake=10_000 * USDC)

    inprocess_orders = 2 * INPROCESS_ORDERS + 1
    total = orders_per_level * len(levels) + batch_orders * len(batch_levels) + profile_orders + 100 + inprocess_orders
    progress(f"pre-signing {total:,} orders (not timed)")
    started = time.perf_counter()
    signed = make_orders(stack, providers, trainers, total, salt=1_000_000)
    progress(f"  signed in {time.perf_counter() - started:.1f}s")
    warmup, inprocess, rest = signed[:100], signed[100:100 + inprocess_orders], signed[100 + inprocess_orders:]
    batches = [rest[i * orders_per_level:(i + 1) * orders_per_level] for i in range(len(levels))]
    rest = rest[len(levels) * orders_per_level:]
    batch_sets = [rest[i * batch_orders:(i + 1) * batch_orders] for i in range(len(batch_levels))]
    profiled = rest[len(batch_levels) * batch_orders:]

    progress("baseline: EIP-712 encode + recover in-process (coincurve, then pure-Python eth_keys)")
    results.crypto.append(crypto_cost(stack, signed, workdir, None, 2000))
    results.crypto.append(crypto_cost(stack, signed, workdir, "eth_keys.backends.NativeECCBackend", 200))

    progress(f"in-process OrderBookService.submit of {len(inprocess)} orders (no HTTP; RPC calls counted)")
    results.inprocess = inprocess_submit(stack, workdir, inprocess[:INPROCESS_ORDERS])
    progress(f"in-process OrderBookService.submit_many of {INPROCESS_ORDERS + 1} orders, 100 per call")
    results.inprocess_batch = inprocess_submit(stack, workdir, inprocess[INPROCESS_ORDERS:], per_call=100)

    service = ServiceProcess(stack, workdir, "intake", matching_mode="continuous", poll_interval_seconds=1.0)
    progress("starting marketplace serve (continuous matching, SQLite file, 1 uvicorn worker)")
    service.start()
    try:
        service.wait_indexed()
        results.meta["service_settings"] = service.settings
        warm = fire(service.url, [(p, b) for p, b, *_ in warmup], 8)
        if warm.non_2xx:
            raise RuntimeError(f"warm-up orders refused: {warm.errors}")
        for concurrency, batch in zip(levels, batches, strict=True):
            progress(f"intake: {len(batch):,} orders at concurrency {concurrency}")
            meter = CpuMeter({"service": service.pid, "anvil": stack.anvil_pid}).start()
            result = fire(service.url, [(p, b) for p, b, *_ in batch], concurrency)
            meter.stop()
            row = level_row("marketplace serve", result, meter)
            row["book_before"] = 100 + sum(r["accepted"] for r in results.levels)
            results.levels.append(row)
            progress(f"  {row['rate']:.0f} orders/s, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
                     f"statuses {row['statuses']}")
        run_batch_levels(stack, service, results, batch_levels, batch_sets, 0,
                         100 + sum(r["accepted"] for r in results.levels), progress)
        if profiled:
            progress(f"profiling the service with py-spy on {len(profiled):,} more orders (not in the table above)")
            spy = PySpy(service.pid, workdir / "intake-profile.txt")
            with spy:
                prof_result = fire(service.url, [(p, b) for p, b, *_ in profiled], max(levels))
            profile = summarize(spy.out, spy.wall, spy.rate) if spy.binary else None
            if profile is not None:
                results.profile = {
                    "orders": len(profiled), "rate": prof_result.rate, "samples": profile.samples,
                    "gil_busy": profile.gil_busy, "categories": profile.by_category, "top_self": profile.top_self,
                    "concurrency": max(levels),
                }
            else:
                results.profile = {"missing": "py-spy not found (make bench-service installs it in .run/bench-tools)"
                                   if spy.binary is None else "py-spy recorded nothing"}
        import httpx

        results.stored_orders = httpx.get(f"{service.url}/orders", params={"limit": 1}, timeout=60).json()["total"]
    finally:
        service.stop()

    for processes in intake_processes:
        if processes == 0 or not batch_levels:
            continue
        progress(f"starting marketplace serve with {processes} signature worker process(es) for the batch levels")
        service = ServiceProcess(stack, workdir, f"intake-{processes}", matching_mode="continuous",
                                 poll_interval_seconds=1.0, intake_processes=processes)
        service.start()
        try:
            service.wait_indexed()
            sets = [make_orders(stack, providers, trainers, len(s), salt=(10 + processes) * 10**8 + i * 10**7)
                    for i, s in enumerate(batch_sets)]
            warm = fire(service.url, batch_bodies(sets[0][:100], 100), 1, batch=True)  # owners' state, workers
            if warm.non_2xx:
                raise RuntimeError(f"warm-up orders refused: {warm.errors}")
            run_batch_levels(stack, service, results, batch_levels, [s[100:] if i == 0 else s for i, s in
                                                                     enumerate(sets)], processes, 100, progress)
        finally:
            service.stop()

    for workers, concurrency in [(1, c) for c in levels] + [(2, max(levels))]:
        progress(f"baseline: trivial FastAPI endpoint, {workers} uvicorn worker(s), concurrency {concurrency}")
        app = UvicornApp("trivial_app:app", workdir, workers=workers).start()
        try:
            batch = batches[0]
            fire(app.url, [(p, b) for p, b, *_ in batch[:200]], concurrency)  # warm-up
            c0 = tree_cpu_seconds(app.pid)
            meter = CpuMeter({}).start()
            result = fire(app.url, [(p, b) for p, b, *_ in batch], concurrency)
            meter.stop()
            meter.cpu["service"] = tree_cpu_seconds(app.pid) - c0
            row = level_row(f"trivial FastAPI, {workers} worker{'s' if workers > 1 else ''}", result, meter)
            row["workers"] = workers
            results.trivial.append(row)
            progress(f"  {row['rate']:.0f} req/s, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms")
        finally:
            app.stop()
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/service/intake.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=5000, help="orders per concurrency level (default %(default)s)")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated levels (default %(default)s)")
    parser.add_argument("--profile-orders", type=int, default=2000, help="orders of the py-spy run (0: none)")
    parser.add_argument("--signers", type=int, default=100, help="providers and as many trainers (default %(default)s)")
    parser.add_argument("--batch", default="100x4", help="batch levels, orders per request x concurrency, comma-separated "
                        "(default %(default)s; empty: none)")
    parser.add_argument("--batch-orders", type=int, default=10_000, help="orders per batch level (default %(default)s)")
    parser.add_argument("--intake-processes", default="0,1", help="signature worker processes for the batch levels, "
                        "one service per value (default %(default)s)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.levels = tuple(int(x) for x in args.concurrency.split(",") if x.strip())
    args.batch_levels = parse_batch_levels(args.batch)
    args.intake_processes = tuple(int(x) for x in args.intake_processes.split(",") if x.strip())
    return args


def parse_batch_levels(text: str) -> tuple[tuple[int, int], ...]:
    """"100x4,50x8" → ((100, 4), (50, 8))."""
    return tuple((int(n), int(c)) for n, c in (x.strip().split("x") for x in text.split(",") if x.strip()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO_ROOT)
    stop_on_sigterm()
    os.environ.setdefault("SOLCX_BINARY_PATH", str(REPO_ROOT / ".solcx"))
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        stack = Stack(Path(tmp))
        try:
            load_start = load_average()
            stack.start()
            results = run_intake(stack, Path(tmp), orders_per_level=args.orders, levels=args.levels,
                                 profile_orders=args.profile_orders, signers=args.signers,
                                 batch_levels=args.batch_levels, batch_orders=args.batch_orders,
                                 intake_processes=args.intake_processes)
            results.meta["load_start"], results.meta["load_end"] = load_start, load_average()
        finally:
            stack.close()
    text = json.dumps(results.__dict__, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
