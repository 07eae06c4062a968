#!/usr/bin/env python3
"""End-to-end deals per second on anvil (issue M4): from the first order POST to the last deal
indexed as settled, with batching (openDeals / settleMany of up to 50) and with one transaction
per deal (MARKET_MAX_BATCH_SIZE=1, the same knob for both), side by side on the same chain.

    .venv/bin/python bench/service/e2e.py [--pairs 1000]

Per variant: a fresh `marketplace serve` (batch matching, 1 s window, SQLite file, poll 0.1 s,
confirmations 0 on an automining anvil) and fresh signer accounts (funded before timing). Timed:
  1. intake   – M offers then M requests POSTed (16 in flight), spread over the 120 segments
                (GPU model x region) of the catalogue; every offer fits exactly one request
                (2 GPUs x 4 h), so the auction opens exactly M deals;
  2. open     – the service's batch auction, openDeals through its outbox, receipts, indexer:
                until GET /deals?status=open counts M;
  3. work     – the bench plays the providers (not the service): startDeal for every deal,
                4 h of chain time (evm_increaseTime), completeDeal with full usage, then the
                challenge window passes (evm_increaseTime + mine);
  4. settle   – the keeper sees the completed deals in the index, re-checks each on chain,
                settleMany through the outbox, indexer: until GET /deals?status=settled counts M.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (
    DAY,
    HOUR,
    REPO_ROOT,
    USDC,
    CpuMeter,
    ServiceProcess,
    Signer,
    Stack,
    load_average,
    stop_on_sigterm,
)
from loadgen import fire

from marketplace.chain.gateway import MARKET

TARGET_DEALS_PER_S = 500
DEAL_HOURS = 4
GPU_COUNT = 2
PRICE = 2 * USDC
BATCH_WINDOW_S = 1.0
POLL_S = 0.1


def make_pairs(stack: Stack, providers: list[Signer], trainers: list[Signer], pairs: int, salt: int
               ) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    from marketplace.matching.catalog import GPU_MODELS, REGIONS
    from marketplace.signing import Offer, Request, SettlementRule, region_mask

    SEGMENTS = [(model, region) for region in sorted(REGIONS) for model in sorted(GPU_MODELS)]

    now = stack.now()
    market = stack.market.address
    offers, requests = [], []
    for i in range(pairs):
        provider, trainer = providers[i % len(providers)], trainers[i % len(trainers)]
        # 120 segments (GPU model x region): each order crosses only the few of its segment.
        model, region = SEGMENTS[i % len(SEGMENTS)]
        offer = Offer(provider=provider.address, gpuModel=model, gpuCount=8, vramGb=GPU_MODELS[model].vram_gb,
                      region=region, greenEnergy=True,
                      token=stack.usdc.address, pricePerGpuHour=PRICE, minHours=1, maxHours=24,
                      capacityGpuHours=GPU_COUNT * DEAL_HOURS, availableUntil=now + 7 * DAY, expiry=now + DAY,
                      salt=salt + i, counter=0)
        request = Request(trainer=trainer.address, gpuModel=model, gpuCount=GPU_COUNT, minVramGb=24,
                          regionMask=region_mask(region), greenOnly=False, token=stack.usdc.address,
                          maxPricePerGpuHour=3 * USDC, totalHours=DEAL_HOURS, minHours=1, startBy=now + DAY,
                          expiry=now + DAY, jobSpecHash="0x" + "ab" * 32,
                          settlementRule=int(SettlementRule.CHALLENGE_WINDOW), salt=salt + i, counter=0)
        for order, signer, path, out in ((offer, provider, "/offers", offers), (request, trainer, "/requests", requests)):
            message = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
                       for k, v in order.message().items()}
            signature = "0x" + order.sign(signer.key, stack.chain_id, market).hex()
            out.append((path, json.dumps({"order": message, "signature": signature}).encode()))
    return offers, requests


def count_deals(client: httpx.Client, status: str) -> int:
    return client.get("/deals", params={"status": status, "limit": 1}).json()["total"]


def wait_count(client: httpx.Client, status: str, target: int, service: ServiceProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if count_deals(client, status) >= target:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {count_deals(client, status)} of {target} deals {status} after {timeout:.0f}s; "
                               f"health {service.health()}")
        time.sleep(POLL_S)


def provider_work(stack: Stack, deals: list[tuple[int, Signer]], nonces: dict[str, int]) -> int:
    """startDeal for every deal, 4 h of chain time, completeDeal with full usage, then the
    challenge window. Returns the gas the providers spent."""
    market = stack.market
    gas = 0
    for function, args in (("startDeal", lambda d: [d]),
                           ("completeDeal", lambda d: [d, DEAL_HOURS * HOUR, bytes.fromhex("cd" * 32)])):
        raws = []
        for deal_id, provider in deals:
            nonce = nonces.get(provider.address, 3)  # 0-2 were the funding transactions
            nonces[provider.address] = nonce + 1
            raws.append(stack.raw_tx(provider.key, nonce, market.address,
                                     stack.gateway.call_data(MARKET, function, *args(deal_id)), 150_000))
        gas += sum(int(r["gasUsed"], 16) for r in stack.send_all(raws))
        stack.warp(DEAL_HOURS * HOUR if function == "startDeal" else stack.challenge_window + 1)
    return gas


def service_txs(service: ServiceProcess, stack: Stack) -> dict[str, dict[str, int]]:
    """The service's own transactions (its outbox), with their receipts' gas."""
    with sqlite3.connect(f"file:{service.db_path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT kind, state, tx_hash, payload FROM chain_txs").fetchall()
        failed_matches = db.execute("SELECT count(*) FROM matches WHERE state != 'OPENED' AND state != 'opened'"
                                    ).fetchone()[0]
    out: dict[str, dict[str, int]] = {}
    receipts = stack.rpc.batch([("eth_getTransactionReceipt", [h]) for _, _, h, _ in rows if h])
    by_hash = {r["transactionHash"]: r for r in receipts if r}
    for kind, state, tx_hash, payload in rows:
        entry = out.setdefault(kind, {"txs": 0, "gas": 0, "items": 0, "not_confirmed": 0})
        entry["txs"] += 1
        data = json.loads(payload)
        entry["items"] += len(data.get("matches", data.get("deal_ids", [1])))
        if str(state).lower() != "confirmed":
            entry["not_confirmed"] += 1
        receipt = by_hash.get(tx_hash)
        if receipt:
            entry["gas"] += int(receipt["gasUsed"], 16)
    out["_failed_matches"] = {"count": failed_matches}
    return out


def _batch_bodies(items: list[tuple[str, bytes]], per_request: int) -> list[tuple[str, bytes]]:
    """POST /offers and /requests bodies regrouped as POST /orders/batch bodies."""
    orders = [{"side": "offer" if path == "/offers" else "request", **json.loads(body)} for path, body in items]
    return [("/orders/batch", json.dumps({"orders": orders[i:i + per_request]}).encode())
            for i in range(0, len(orders), per_request)]


def run_variant(stack: Stack, workdir: Path, name: str, batch_size: int, pairs: int, signers: int,
                progress=print, intake_batch: int = 100) -> dict[str, Any]:
    providers = [Signer.derive(f"e2e-{name}-provider", i) for i in range(signers)]
    trainers = [Signer.derive(f"e2e-{name}-trainer", i) for i in range(signers)]
    progress(f"[{name}] funding {2 * signers} signers; pre-signing {2 * pairs} orders (not timed)")
    stack.fund(trainers, providers, deposit=10_000 * USDC, stake=10_000 * USDC)
    offers, requests = make_pairs(stack, providers, trainers, pairs, salt=(7 if batch_size > 1 else 9) * 10**9)
    service = ServiceProcess(stack, workdir, f"e2e-{name}", matching_mode="batch", batch_window_seconds=BATCH_WINDOW_S,
                             poll_interval_seconds=POLL_S, max_batch_size=batch_size)
    service.start()
    try:
        service.wait_indexed()
        deals_before = stack.market.functions.dealCount().call()
        client = httpx.Client(base_url=service.url, timeout=60)
        # The index starts at the deploy block: deals of earlier variants are in it too.
        open_before, settled_before = count_deals(client, "open"), count_deals(client, "settled")
        meter = CpuMeter({"service": service.pid, "anvil": stack.anvil_pid}).start()
        progress(f"[{name}] timed: intake of {2 * pairs} orders, batch size {batch_size}")
        t0 = time.perf_counter()
        if intake_batch > 1:  # what a client with many orders does: POST /orders/batch, 2 requests in flight
            results = [fire(service.url, _batch_bodies(offers + requests, intake_batch), 2, batch=True)]
        else:
            results = [fire(service.url, offers, 16), fire(service.url, requests, 16)]
        t_intake = time.perf_counter()
        refused = sum(r.non_2xx for r in results)
        if refused:
            raise RuntimeError(f"{refused} orders refused: {results[0].errors + results[1].errors}")
        wait_count(client, "open", open_before + pairs, service, timeout=600)
        t_open = time.perf_counter()
        deal_ids = list(range(deals_before + 1, deals_before + pairs + 1))
        # Which provider runs which deal: one JSON-RPC batch (as a provider's agent learns it from
        # the index), not a web3 call per deal (those took 2 s of the stage for 200 deals).
        owner_of = {deal_id: deal["provider"] for deal_id, deal in zip(deal_ids, stack.gateway.get_deals(deal_ids),
                                                                         strict=True)}
        by_address = {p.address: p for p in providers}
        progress(f"[{name}]   open after {t_open - t0:.1f}s; providers start and complete (bench)")
        provider_gas = provider_work(stack, [(d, by_address[owner_of[d]]) for d in deal_ids], {})
        t_work = time.perf_counter()
        wait_count(client, "settled", settled_before + pairs, service, timeout=600)
        t_settled = time.perf_counter()
        meter.stop()
        client.close()
        progress(f"[{name}]   settled after {t_settled - t0:.1f}s")
        txs = service_txs(service, stack)
        health = service.health()
    finally:
        service.stop()
    total = t_settled - t0
    service_time = (t_open - t0) + (t_settled - t_work)
    open_ = txs.get("open_deals", {"txs": 0, "gas": 0, "items": 0, "not_confirmed": 0})
    settle = txs.get("settle_many", {"txs": 0, "gas": 0, "items": 0, "not_confirmed": 0})
    return {
        "name": name, "batch_size": batch_size, "pairs": pairs, "signers": signers, "intake_batch": intake_batch,
        "stages_s": {"intake": t_intake - t0, "open": t_open - t_intake, "work (bench)": t_work - t_open,
                     "settle": t_settled - t_work},
        "total_s": total, "deals_per_s": pairs / total, "service_only_s": service_time,
        "service_deals_per_s": pairs / service_time,
        "intake_orders_per_s": 2 * pairs / (t_intake - t0),
        "open_deals_per_s": pairs / (t_open - t_intake), "settle_deals_per_s": pairs / (t_settled - t_work),
        "open_txs": open_["txs"], "settle_txs": settle["txs"],
        "open_gas_per_deal": open_["gas"] / pairs, "settle_gas_per_deal": settle["gas"] / pairs,
        "provider_gas_per_deal": provider_gas / pairs,
        "unconfirmed_txs": open_["not_confirmed"] + settle["not_confirmed"],
        "failed_matches": txs["_failed_matches"]["count"], "other_txs": {k: v for k, v in txs.items()
                                                                          if k not in ("open_deals", "settle_many",
                                                                                       "_failed_matches")},
        "cpu_s": meter.cpu, "loop_errors": health["loop_errors"], "last_error": health["last_error"],
        "service_settings": service.settings,
    }


def run_e2e(stack: Stack, workdir: Path, *, pairs: int, signers: int, progress=print) -> list[dict[str, Any]]:
    return [run_variant(stack, workdir, "batched", 50, pairs, signers, progress),
            run_variant(stack, workdir, "one-per-tx", 1, pairs, signers, progress)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/service/e2e.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000, help="offer/request pairs per variant (default %(default)s)")
    parser.add_argument("--signers", type=int, default=50, help="providers and as many trainers per variant")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.chdir(REPO_ROOT)
    stop_on_sigterm()
    os.environ.setdefault("SOLCX_BINARY_PATH", str(REPO_ROOT / ".solcx"))
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        stack = Stack(Path(tmp))
        try:
            load_start = load_average()
            stack.start()
            variants = run_e2e(stack, Path(tmp), pairs=args.pairs, signers=args.signers)
        finally:
            stack.close()
    text = json.dumps({"load_start": load_start, "load_end": load_average(), "variants": variants}, indent=2,
                      default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
