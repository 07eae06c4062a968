#!/usr/bin/env python3
"""Gas benchmark of the marketplace contracts on a real anvil node (issue M2).

    make bench-gas                      # or: .venv/bin/python bench/gas/run.py
    .venv/bin/python bench/gas/run.py --no-write --json /tmp/gas.json

Starts its own anvil (marketplace.devnet, free port, stopped at the end), deploys the wired
contract set with `deploy_all` into a temporary registry, drives real deal lifecycles and reads
`gasUsed` from the receipts. Nothing is estimated: every number in the output is a receipt's
(or, in the breakdown, anvil's own step-by-step trace of that transaction).

Prints rich tables and rewrites only the `bench:gas` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # bench/: machine.py

from gas_report import (  # noqa: E402 - the script's own folder is put on sys.path above
    END_MARKER,
    START_MARKER,
    floor_gas,
    intrinsic_gas,
    ratio,
    write_section,
)
from gas_trace import CATEGORIES, Breakdown, attribute  # noqa: E402
from machine import machine_facts  # noqa: E402

# ───────────────────────────── targets and references (from the issue) ─────────────────────────────

TARGET_OPEN_PLUS_SETTLE = 130_000  # one deal, open + settle transactions together
TARGET_AMORTISED_BATCH_50 = 70_000  # per deal, openDeals + settleMany in batches of 50
SEAPORT_BASIC_ORDER = 98_700  # average gas of a Seaport basic order fill
LIVEPEER_TICKET = (190_000, 300_000)  # a Livepeer winning-ticket redemption

# ───────────────────────────── deal parameters ─────────────────────────────

USDC = 10**6
HOUR = 3600
DAY = 24 * HOUR
PRICE = 2 * USDC  # per GPU-hour
GPU_COUNT = 2
DEAL_HOURS = 4
GPU_H100 = 3
REGION = 1
TRAINER_FUNDS = 20_000 * USDC
PROVIDER_STAKE = 20_000 * USDC
DEFAULT_BATCHES = (1, 10, 50)


@dataclass
class Measurement:
    """One transaction's receipt gas, split into intrinsic (21,000 + calldata) and execution."""

    operation: str
    variant: str
    gas_used: int
    intrinsic: int
    calldata_bytes: int
    floor: int
    tx_hash: str
    items: int = 1  # deals covered by the transaction (batches)

    @property
    def execution(self) -> int:
        return self.gas_used - self.intrinsic

    @property
    def per_item(self) -> int:
        return self.gas_used // self.items

    @property
    def execution_per_item(self) -> int:
        return self.execution // self.items

    @property
    def at_floor(self) -> bool:
        """EIP-7623: the transaction paid the calldata floor, not standard pricing."""
        return self.gas_used == self.floor


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    singles: list[Measurement] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    breakdowns: dict[str, Breakdown] = field(default_factory=dict)

    def single(self, operation: str, variant: str) -> Measurement:
        return next(m for m in self.singles if m.operation == operation and m.variant == variant)


# ───────────────────────────── the benchmark ─────────────────────────────


class GasBench:
    """Drives the contracts through Ape on the connected anvil and records receipts."""

    def __init__(self, ape_provider: Any, registry_path: Path):
        from ape import accounts, chain, project

        from marketplace.deploy import DeployConfig, deploy_all
        from marketplace.registry import Registry

        self.provider = ape_provider
        self.chain = chain
        self.accounts = accounts
        self.w3 = ape_provider.web3
        self.admin = accounts.test_accounts[0]
        self.matcher = accounts.test_accounts[1]
        self.config = DeployConfig()  # the defaults a public deployment would use
        outcomes = deploy_all(project, chain, self.admin, Registry(registry_path), devnet=True, config=self.config)
        addresses = {o.name: o.address for o in outcomes}
        self.market = project.ComputeMarket.at(addresses["ComputeMarket"])
        self.staking = project.ProviderStaking.at(addresses["ProviderStaking"])
        self.pool = project.RewardPool.at(addresses["RewardPool"])
        self.usdc = project.MockStablecoin.at(addresses["MockUSDC"])
        self.names = {
            addresses["ComputeMarket"].lower(): "ComputeMarket",
            addresses["ProviderStaking"].lower(): "ProviderStaking",
            addresses["RewardPool"].lower(): "RewardPool",
            addresses["MockUSDC"].lower(): "MockUSDC (ERC-20)",
        }
        self._salt = 0

    # ── accounts and funds ──

    def new_account(self) -> Any:
        account = self.accounts.test_accounts.generate_test_account()
        self.provider.set_balance(account.address, 10**21)
        return account

    def fund_trainer(self, account: Any, amount: int = TRAINER_FUNDS) -> Any:
        """Mint, approve exactly, deposit; returns the deposit receipt."""
        self.usdc.mint(account, amount, sender=account)
        self.usdc.approve(self.market, amount, sender=account)
        return self.market.deposit(self.usdc, amount, sender=account)

    def fund_provider(self, account: Any, amount: int = PROVIDER_STAKE) -> None:
        self.usdc.mint(account, amount, sender=account)
        self.usdc.approve(self.staking, amount, sender=account)
        self.staking.stake(self.usdc, amount, sender=account)

    # ── orders ──

    def _next_salt(self) -> int:
        self._salt += 1
        return self._salt

    def make_offer(self, provider: Any, capacity_gpu_hours: int = GPU_COUNT * DEAL_HOURS * 4) -> Any:
        from marketplace.signing import Offer

        now = self.chain.pending_timestamp
        return Offer(
            provider=provider.address, gpuModel=GPU_H100, gpuCount=8, vramGb=80, region=REGION,
            greenEnergy=True, token=self.usdc.address, pricePerGpuHour=PRICE, minHours=1, maxHours=24,
            capacityGpuHours=capacity_gpu_hours, availableUntil=now + 7 * DAY, expiry=now + DAY,
            salt=self._next_salt(), counter=0,
        )

    def make_request(self, trainer: Any, start_within: int = DAY) -> Any:
        from marketplace.signing import Request, SettlementRule, region_mask

        now = self.chain.pending_timestamp
        return Request(
            trainer=trainer.address, gpuModel=GPU_H100, gpuCount=GPU_COUNT, minVramGb=40,
            regionMask=region_mask(REGION), greenOnly=False, token=self.usdc.address,
            maxPricePerGpuHour=3 * USDC, totalHours=DEAL_HOURS, minHours=1, startBy=now + start_within,
            expiry=now + DAY, jobSpecHash="0x" + "ab" * 32, settlementRule=int(SettlementRule.CHALLENGE_WINDOW),
            salt=self._next_salt(), counter=0,
        )

    def match(self, offer: Any, provider: Any, request: Any, trainer: Any) -> tuple:
        chain_id = self.chain.chain_id
        return (
            offer.as_tuple(), offer.sign(provider.private_key, chain_id, self.market.address),
            request.as_tuple(), request.sign(trainer.private_key, chain_id, self.market.address),
            DEAL_HOURS,
        )

    # ── measuring ──

    def measure(self, receipt: Any, operation: str, variant: str, items: int = 1) -> Measurement:
        tx_hash = receipt.txn_hash if isinstance(receipt.txn_hash, str) else receipt.txn_hash.hex()
        tx = self.w3.eth.get_transaction(tx_hash)
        data = bytes(tx["input"])
        return Measurement(
            operation=operation, variant=variant, gas_used=int(receipt.gas_used),
            intrinsic=intrinsic_gas(data, tx.get("accessList") or []),
            calldata_bytes=len(data), floor=floor_gas(data), tx_hash=tx_hash, items=items,
        )

    def breakdown(self, measurement: Measurement) -> Breakdown:
        """Attribute the execution gas of a measured transaction (anvil struct-log trace)."""
        trace = self.provider.make_request(
            "debug_traceTransaction",
            [measurement.tx_hash, {"disableMemory": True, "disableStorage": True, "enableReturnData": False}],
        )
        logs = trace["structLogs"] if isinstance(trace, dict) else trace
        return attribute(logs, self.market.address, self.names)

    # ── deal lifecycle ──

    def open_deal(self, match: tuple) -> tuple[int, Any]:
        receipt = self.market.openDeal(*match, sender=self.matcher)
        return receipt.decode_logs(self.market.DealOpened)[0].dealId, receipt

    def open_deals(self, matches: list[tuple]) -> tuple[list[int], Any]:
        receipt = self.market.openDeals(matches, sender=self.matcher)
        failed = receipt.decode_logs(self.market.DealOpenFailed)
        if failed:
            raise RuntimeError(f"openDeals: {len(failed)} of {len(matches)} pairings failed: {failed[0].reason!r}")
        ids = [log.dealId for log in receipt.decode_logs(self.market.DealOpened)]
        if len(ids) != len(matches):
            raise RuntimeError(f"openDeals opened {len(ids)} deals for {len(matches)} pairings")
        return ids, receipt

    def run_to_completion(self, deals: list[tuple[int, Any]]) -> tuple[list[Any], list[Any]]:
        """Start every (deal id, provider), let the booking elapse, complete with full usage, and
        let the challenge window pass. Returns the start and complete receipts."""
        starts = [self.market.startDeal(deal_id, sender=provider) for deal_id, provider in deals]
        self.chain.pending_timestamp += DEAL_HOURS * HOUR
        booked = DEAL_HOURS * HOUR
        completes = [
            self.market.completeDeal(deal_id, booked, "0x" + "cd" * 32, sender=provider) for deal_id, provider in deals
        ]
        self.chain.pending_timestamp += self.config.challenge_window
        return starts, completes

    def assert_status(self, deal_ids: list[int], status: int) -> None:
        for deal_id in deal_ids:
            actual = self.market.getDeal(deal_id).status
            if actual != status:
                raise RuntimeError(f"deal {deal_id} is in status {actual}, expected {status}")


def run_benchmark(ape_provider: Any, registry_path: Path, batch_sizes: tuple[int, ...], progress: Any) -> Results:
    from marketplace.signing import DealStatus

    bench = GasBench(ape_provider, registry_path)
    results = Results()
    record = results.singles.append

    # Warm-up deal between other parties: the protocol-wide slots (deal counter, treasury's fee
    # balance, this epoch's total reward weight) are non-zero from here on, as on a live market.
    progress("warm-up deal")
    p0, t0 = bench.new_account(), bench.new_account()
    bench.fund_provider(p0)
    bench.fund_trainer(t0)
    deal0, _ = bench.open_deal(bench.match(bench.make_offer(p0), p0, bench.make_request(t0), t0))
    bench.run_to_completion([(deal0, p0)])
    bench.market.settle(deal0, sender=bench.matcher)

    progress("vault deposits")
    trainer, provider = bench.new_account(), bench.new_account()
    record(bench.measure(bench.fund_trainer(trainer), "deposit", "first deposit of an account"))
    record(bench.measure(bench.fund_trainer(trainer), "deposit", "repeat deposit"))
    bench.fund_provider(provider)

    progress("single deal, cold (provider's first deal)")
    offer = bench.make_offer(provider)
    deal1, receipt = bench.open_deal(bench.match(offer, provider, bench.make_request(trainer), trainer))
    cold_open = bench.measure(receipt, "openDeal", "cold: provider's first deal, new orders")
    record(cold_open)
    (start,), (complete,) = bench.run_to_completion([(deal1, provider)])
    record(bench.measure(start, "startDeal", "any"))
    record(bench.measure(complete, "completeDeal", "full usage, result hash"))
    cold_settle = bench.measure(bench.market.settle(deal1, sender=bench.matcher), "settle",
                                "cold: provider's first settlement this epoch")
    record(cold_settle)
    bench.assert_status([deal1], DealStatus.SETTLED)

    progress("single deal, warm (provider seen before)")
    offer2 = bench.make_offer(provider)
    deal2, receipt = bench.open_deal(bench.match(offer2, provider, bench.make_request(trainer), trainer))
    warm_open = bench.measure(receipt, "openDeal", "warm: known provider, new orders")
    record(warm_open)
    bench.run_to_completion([(deal2, provider)])
    warm_settle = bench.measure(bench.market.settle(deal2, sender=bench.matcher), "settle",
                                "warm: provider settled before this epoch")
    record(warm_settle)
    bench.assert_status([deal2], DealStatus.SETTLED)

    progress("partial refill of a resting offer, then a refund")
    deal3, receipt = bench.open_deal(
        bench.match(offer2, provider, bench.make_request(trainer, start_within=HOUR), trainer)
    )
    record(bench.measure(receipt, "openDeal", "refill: offer already partly filled"))
    bench.chain.pending_timestamp += HOUR + 1
    record(bench.measure(bench.market.claimRefund(deal3, sender=bench.matcher), "claimRefund",
                         "no-show: refund + collateral slashed to buyer"))
    bench.assert_status([deal3], DealStatus.REFUNDED)

    results.breakdowns["openDeal (cold)"] = bench.breakdown(cold_open)
    results.breakdowns["settle (cold)"] = bench.breakdown(cold_settle)
    results.breakdowns["settle (warm)"] = bench.breakdown(warm_settle)

    for n in batch_sizes:
        # Distinct parties: every pairing has its own provider and trainer. Round 1 is each
        # party's first deal (cold); round 2 repeats with the same parties (steady state).
        progress(f"batch of {n}: funding {2 * n} distinct parties")
        providers = [bench.new_account() for _ in range(n)]
        trainers = [bench.new_account() for _ in range(n)]
        for p, t in zip(providers, trainers, strict=True):
            bench.fund_provider(p)
            bench.fund_trainer(t)
        rounds = [
            ("distinct parties, cold (each party's first deal)", list(zip(providers, trainers, strict=True))),
            ("distinct parties, warm (parties seen this epoch)", list(zip(providers, trainers, strict=True))),
            ("one provider and one trainer for all", [(provider, trainer)] * n),
        ]
        for variant, pairs in rounds:
            progress(f"batch of {n}: {variant}")
            matches = [bench.match(bench.make_offer(p), p, bench.make_request(t), t) for p, t in pairs]
            ids, open_receipt = bench.open_deals(matches)
            opened = bench.measure(open_receipt, "openDeals", variant, items=n)
            bench.run_to_completion([(deal_id, p) for deal_id, (p, _) in zip(ids, pairs, strict=True)])
            settle_receipt = bench.market.settleMany(ids, sender=bench.matcher)
            settled_logs = settle_receipt.decode_logs(bench.market.DealSettled)
            if len(settled_logs) != n:
                raise RuntimeError(f"settleMany settled {len(settled_logs)} of {n} deals")
            bench.assert_status(ids, DealStatus.SETTLED)
            settled = bench.measure(settle_receipt, "settleMany", variant, items=n)
            results.batches.append({"n": n, "variant": variant, "open": opened, "settle": settled})
            if n == 10 and variant.startswith("distinct parties, warm"):
                results.breakdowns["openDeals, per deal (N=10, warm)"] = bench.breakdown(opened).scaled(n)
                results.breakdowns["settleMany, per deal (N=10, warm)"] = bench.breakdown(settled).scaled(n)
    return results


# ───────────────────────────── environment facts ─────────────────────────────


def source_facts() -> str:
    """Which contracts were measured: the commit, and whether contracts/ had local changes."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "contracts"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "contracts/ of an unknown revision (no git)"
    return f"contracts/ at commit {head}" + (" plus uncommitted changes" if dirty else "")


def compiler_facts() -> str:
    """The compiler and settings of the artifacts actually deployed (Ape's build manifest)."""
    try:
        manifest = json.loads((REPO_ROOT / ".build" / "__local__.json").read_text())
        for compiler in manifest.get("compilers", []):
            if "ComputeMarket" in compiler.get("contractTypes", []):
                settings = compiler.get("settings", {})
                optimizer = settings.get("optimizer", {})
                opt = f"optimizer {'on' if optimizer.get('enabled') else 'off'}"
                if optimizer.get("enabled"):
                    opt += f", runs {optimizer.get('runs')}"
                via_ir = ", via-IR" if settings.get("viaIR") else ""
                return (f"solc {compiler.get('version')} (solc-js through toolchain/solc-bridge.cjs), {opt}{via_ir}, "
                        f"evmVersion {settings.get('evmVersion')}")
    except (OSError, ValueError):
        pass
    return "solc (settings unknown: no .build/__local__.json)"


# ───────────────────────────── output ─────────────────────────────


def _n(value: int) -> str:
    return f"{value:,}"


def _verdict(value: int, limit: int) -> str:
    return "meets" if value <= limit else f"misses by {_n(value - limit)} ({(value - limit) / limit:+.0%})"


def target_rows(results: Results) -> list[tuple[str, int, int]]:
    """(what, measured gas, limit) for each target, from measured receipts only."""
    rows = []
    for label, open_variant, settle_variant in (
        ("cold", "cold: provider's first deal, new orders", "cold: provider's first settlement this epoch"),
        ("warm", "warm: known provider, new orders", "warm: provider settled before this epoch"),
    ):
        total = results.single("openDeal", open_variant).gas_used + results.single("settle", settle_variant).gas_used
        rows.append((f"openDeal + settle, one deal ({label})", total, TARGET_OPEN_PLUS_SETTLE))
    for batch in results.batches:
        if batch["n"] == 50:
            per_deal = batch["open"].per_item + batch["settle"].per_item
            rows.append((f"openDeals + settleMany per deal, N=50 ({batch['variant']})", per_deal,
                         TARGET_AMORTISED_BATCH_50))
    return rows


def floor_note(results: Results) -> str:
    paid_floor = [m for m in results.singles if m.at_floor] + [
        m for b in results.batches for m in (b["open"], b["settle"]) if m.at_floor]
    if not paid_floor:
        return "No transaction here paid the EIP-7623 calldata floor (every one is priced by execution)."
    return ("These paid the EIP-7623 calldata floor, so their execution column is an upper bound: "
            + ", ".join(f"`{m.operation}` ({m.variant})" for m in paid_floor) + ".")


def render_markdown(results: Results) -> str:
    meta = results.meta
    lines = [
        START_MARKER,
        "## Gas (`bench/gas`)",
        "",
        f"Measured {meta['date']} with `make bench-gas` (`.venv/bin/python bench/gas/run.py`): a fresh "
        f"{meta['node']} (hardfork {meta['hardfork']}), contracts deployed by `deploy_all` with the default "
        f"`DeployConfig` (fee {meta['fee_bps']} bps, collateral {meta['collateral_bps']} bps, challenge window "
        f"{meta['challenge_window']} s), gas read from each transaction's receipt.",
        "",
        f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, {meta['machine']['memory']} RAM "
        f"({meta['machine']['os']}); gas does not depend on the machine.",
        f"- Compiler: {meta['compiler']}; {meta['source']}.",
        f"- Deal shape: {GPU_COUNT} GPUs × {DEAL_HOURS} h at {PRICE // USDC} mUSDC/GPU-h (6-decimal token), "
        "settlement rule ChallengeWindow, full usage, collateral locked in ProviderStaking, "
        "green-energy offer (reward weight recorded in RewardPool at settlement).",
        "- *Total* is the receipt's `gasUsed`; *intrinsic* is 21,000 + calldata (4/16 gas per zero/non-zero byte); "
        "*execution* = total − intrinsic. *Cold* means the provider's storage (vault balance, this epoch's reward "
        "weight) is still zero, so the first writes cost 20,000 more each; *warm* means those slots are already "
        "non-zero. " + floor_note(results),
        "",
        "### Targets",
        "",
        "| Target | Measured | Limit | Measured / limit | Verdict | vs Seaport basic order (98,700) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for what, measured, limit in target_rows(results):
        lines.append(f"| {what} | {_n(measured)} | {_n(limit)} | {ratio(measured, limit)} | {_verdict(measured, limit)} "
                     f"| {ratio(measured, SEAPORT_BASIC_ORDER)} |")
    lines += [
        "",
        "### One transaction at a time",
        "",
        "| Operation | Variant | Total gas | Intrinsic | Execution | Calldata bytes | vs Seaport (98,700) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in results.singles:
        lines.append(f"| `{m.operation}` | {m.variant} | {_n(m.gas_used)} | {_n(m.intrinsic)} | {_n(m.execution)} "
                     f"| {_n(m.calldata_bytes)} | {ratio(m.gas_used, SEAPORT_BASIC_ORDER)} |")
    lines += [
        "",
        "### Batches (`openDeals` with N distinct offer/request pairs, `settleMany` with N completed deals)",
        "",
        "Per deal = transaction `gasUsed` / N.",
        "",
        "| N | Parties | openDeals total | open / deal | open exec / deal | settleMany total | settle / deal "
        "| open + settle / deal | vs 70,000 target | vs Seaport (98,700) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch in results.batches:
        o, s = batch["open"], batch["settle"]
        both = o.per_item + s.per_item
        lines.append(
            f"| {batch['n']} | {batch['variant']} | {_n(o.gas_used)} | {_n(o.per_item)} | {_n(o.execution_per_item)} "
            f"| {_n(s.gas_used)} | {_n(s.per_item)} | {_n(both)} | {ratio(both, TARGET_AMORTISED_BATCH_50)} "
            f"| {ratio(both, SEAPORT_BASIC_ORDER)} |"
        )
    lines += [
        "",
        "### Where the execution gas goes",
        "",
        "Self gas per opcode class from anvil's `debug_traceTransaction` of the transactions above (a CALL's own "
        "cost excludes what the callee spent; the callee's steps are counted in their own rows). Counts in "
        "parentheses. A new slot costs 22,100 in all: 20,000 in the SSTORE row plus 2,100 in *SLOAD cold*, "
        "because Solidity reads a packed slot before writing it; an update likewise costs 2,900 + 2,100. "
        "Only the gas of the 10-deal batches is divided by 10 (counts rounded down).",
        "",
    ]
    names = list(results.breakdowns)
    lines.append("| Class | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for category in CATEGORIES:
        cells = []
        for name in names:
            b = results.breakdowns[name]
            gas, count = b.by_category.get(category, 0), b.count_by_category.get(category, 0)
            cells.append(f"{_n(gas)} ({count})" if gas or count else "–")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    lines.append("| **execution total** | " + " | ".join(f"**{_n(results.breakdowns[n].total)}**" for n in names) + " |")
    contracts = sorted({c for b in results.breakdowns.values() for c in b.by_contract}, key=str)
    for contract in contracts:
        lines.append(f"| in {contract} | " + " | ".join(
            _n(results.breakdowns[n].by_contract.get(contract, 0)) for n in names) + " |")
    lines += [
        "",
        f"For scale: a Seaport basic order fill averages about {_n(SEAPORT_BASIC_ORDER)} gas; a Livepeer "
        f"winning-ticket redemption costs {_n(LIVEPEER_TICKET[0])}–{_n(LIVEPEER_TICKET[1])}.",
        END_MARKER,
    ]
    return "\n".join(lines) + "\n"


def print_tables(results: Results) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 190))
    targets = Table(title="Targets (measured)")
    for col in ("Target", "Measured", "Limit", "Ratio", "Verdict", "vs Seaport"):
        targets.add_column(col, justify="left" if col in ("Target", "Verdict") else "right")
    for what, measured, limit in target_rows(results):
        style = "green" if measured <= limit else "red"
        targets.add_row(what, _n(measured), _n(limit), ratio(measured, limit),
                        f"[{style}]{_verdict(measured, limit)}[/{style}]", ratio(measured, SEAPORT_BASIC_ORDER))

    singles = Table(title="Gas per transaction")
    for col in ("Operation", "Variant", "Total", "Intrinsic", "Execution", "Calldata B", "vs Seaport"):
        singles.add_column(col, justify="left" if col in ("Operation", "Variant") else "right")
    for m in results.singles:
        singles.add_row(m.operation, m.variant, _n(m.gas_used), _n(m.intrinsic), _n(m.execution),
                        _n(m.calldata_bytes), ratio(m.gas_used, SEAPORT_BASIC_ORDER))

    batches = Table(title="Batches (per deal = gasUsed / N)")
    for col in ("N", "Parties", "openDeals", "open/deal", "open exec/deal", "settleMany", "settle/deal",
                "open+settle/deal", "vs 70k"):
        batches.add_column(col, justify="left" if col == "Parties" else "right")
    for batch in results.batches:
        o, s = batch["open"], batch["settle"]
        both = o.per_item + s.per_item
        batches.add_row(str(batch["n"]), batch["variant"], _n(o.gas_used), _n(o.per_item), _n(o.execution_per_item),
                        _n(s.gas_used), _n(s.per_item), _n(both), ratio(both, TARGET_AMORTISED_BATCH_50))

    breakdown = Table(title="Execution gas by opcode class (anvil trace)")
    breakdown.add_column("Class")
    for name in results.breakdowns:
        breakdown.add_column(name, justify="right")
    for category in CATEGORIES:
        breakdown.add_row(category, *[
            _n(b.by_category.get(category, 0)) for b in results.breakdowns.values()])
    breakdown.add_row("total", *[_n(b.total) for b in results.breakdowns.values()], style="bold")

    for table in (targets, singles, batches, breakdown):
        console.print(table)


def results_json(results: Results) -> dict[str, Any]:
    def m(x: Measurement) -> dict[str, Any]:
        return {**asdict(x), "execution": x.execution, "per_item": x.per_item}

    return {
        "meta": results.meta,
        "singles": [m(x) for x in results.singles],
        "batches": [{"n": b["n"], "variant": b["variant"], "open": m(b["open"]), "settle": m(b["settle"])}
                    for b in results.batches],
        "targets": [{"what": w, "measured": v, "limit": lim} for w, v, lim in target_rows(results)],
        "breakdowns": {k: {"total": b.total, "by_category": dict(b.by_category), "by_contract": dict(b.by_contract)}
                       for k, b in results.breakdowns.items()},
    }


# ───────────────────────────── entry point ─────────────────────────────


@contextlib.contextmanager
def steps_tracing_anvil(tmp: Path) -> Iterator[None]:
    """Make `Devnet.start()` run anvil with `--steps-tracing`, without which anvil answers
    `debug_traceTransaction` with empty struct logs (the breakdown needs them; gas is the same).

    Devnet has no hook for extra flags, so while starting, `find_anvil` returns a wrapper named
    `anvil` that execs the real binary with the flag (same pid, so stop() still finds it).
    """
    import marketplace.devnet as devnet_module

    real = devnet_module.find_anvil()
    wrapper = tmp / "bin" / "anvil"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nexec "{real}" --steps-tracing "$@"\n')
    wrapper.chmod(0o755)
    original = devnet_module.find_anvil
    devnet_module.find_anvil = lambda: wrapper
    try:
        yield
    finally:
        devnet_module.find_anvil = original


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gas/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)),
                        help="comma-separated batch sizes (default: %(default)s); 50 is needed for the target row")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--benchmarks-file", type=Path, default=REPO_ROOT / "BENCHMARKS.md",
                        help="file whose bench:gas section is rewritten (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON here")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = tuple(int(x) for x in args.batches.split(",") if x.strip())
        if not args.batch_sizes or min(args.batch_sizes) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--batches must be positive integers separated by commas, got {args.batches!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO_ROOT)  # Ape's project is the current directory
    os.environ.setdefault("SOLCX_BINARY_PATH", str(REPO_ROOT / ".solcx"))

    from rich.console import Console

    from marketplace.devnet import Devnet, DevnetError, free_port

    console = Console(stderr=True)
    started = time.monotonic()

    def progress(message: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.1f}s[/dim] {message}")

    with tempfile.TemporaryDirectory(prefix="bench-gas-") as tmp:
        devnet = Devnet(port=free_port(), run_dir=Path(tmp))
        try:
            with steps_tracing_anvil(Path(tmp)):
                devnet.start()
        except DevnetError as exc:
            console.print(f"[red]bench-gas: {exc}[/red]")
            return 1
        try:
            os.environ["APE_FOUNDRY_HOST"] = devnet.url  # ape-foundry connects to our anvil, never starts one
            from ape import networks
            from ape.logging import logger

            logger.set_level("ERROR")
            progress(f"anvil at {devnet.url}; compiling and deploying")
            with networks.parse_network_choice("ethereum:local:foundry") as ape_provider:
                node_info = ape_provider.make_request("anvil_nodeInfo", [])
                client = ape_provider.make_request("web3_clientVersion", [])
                results = run_benchmark(ape_provider, Path(tmp) / "registry.json", args.batch_sizes, progress)
                from marketplace.deploy import DeployConfig

                defaults = DeployConfig()
                results.meta = {
                    "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    "node": client,
                    "hardfork": node_info.get("hardFork", "?"),
                    "machine": machine_facts(),
                    "compiler": compiler_facts(),
                    "source": source_facts(),
                    "fee_bps": defaults.protocol_fee_bps,
                    "collateral_bps": defaults.collateral_bps,
                    "challenge_window": defaults.challenge_window,
                }
        finally:
            devnet.stop()

    progress("done")
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results_json(results), indent=2, default=str) + "\n")
    if not args.no_write:
        if 50 not in args.batch_sizes:
            console.print("[yellow]BENCHMARKS.md not written: the published table needs the batch of 50[/yellow]")
        else:
            write_section(args.benchmarks_file, render_markdown(results))
            console.print(f"wrote the bench:gas section of {args.benchmarks_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
