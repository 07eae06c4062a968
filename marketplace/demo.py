"""`make demo`: a living market on a local devnet, end to end, in about two minutes.

Starts the matchmaking service, funds and registers four providers (different GPU models,
regions, prices and energy sources from the seeded market generator) and four trainers, and runs
real jobs through every path a deal can take: settled after the challenge window, settled on a
verifier's attestation, refunded after a no-show (with the provider's collateral), aborted by the
buyer (pro-rata), and disputed then resolved by the arbiter. Providers then claim their token
rewards. A live view shows the book, the deals by state and balances; the final summary is read
back from the chain. Everything the demo starts is stopped, also on Ctrl-C.

    python -m marketplace.demo --rpc-url http://127.0.0.1:8545 [--json summary.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from marketplace.chain.gateway import ChainGateway
from marketplace.chain.wallet import KeySigner, Wallet
from marketplace.cli.agent import AgentState, ProviderAgent
from marketplace.client import MarketClient
from marketplace.deploy import run_deploy_script
from marketplace.devnet import ANVIL_KEYS, PROJECT_ROOT, Devnet, free_port
from marketplace.matching.catalog import GPU_MODELS, REGIONS
from marketplace.matching.generator import MarketGenerator
from marketplace.orderbook import job_spec_hash
from marketplace.registry import Registry
from marketplace.registry import main as print_registry_main
from marketplace.signing import DealStatus, Offer, ProviderProfile, Request, SettlementRule, region_mask

USDC = 10**6
HOUR = 3600
# Roles among anvil's default accounts: 0 deployed the contracts and holds the admin, arbiter,
# verifier and treasury roles; 1 is the matcher; 2-5 provide; 6-9 train.
ADMIN, MATCHER = 0, 1
DEMO_GPU_MODELS = (8, 7, 5, 1)  # H100, A100 80GB, L40S, RTX 4090: one market per provider


class DemoError(Exception):
    """Something the demo waited for did not happen; the message says what."""


@dataclass
class Scenario:
    """One provider/trainer pair and the path its deal is meant to show."""

    path: str
    provider: int
    trainer: int
    gpu_model: int
    job: dict[str, Any]
    rule: SettlementRule = SettlementRule.CHALLENGE_WINDOW
    agent: bool = True
    deal_ids: list[int] = field(default_factory=list)


SCENARIOS = [
    Scenario("settled", 2, 6, 8, {"type": "train-logreg", "seed": 7, "samples": 4000, "features": 32, "epochs": 300}),
    Scenario("attested", 3, 7, 7, {"type": "train-logreg", "seed": 11, "samples": 3000, "features": 16, "epochs": 200},
             rule=SettlementRule.ATTESTATION),
    Scenario("refunded (no-show)", 4, 8, 5, {"type": "hash-chain", "seed": "idle", "iterations": 1000}, agent=False),
    Scenario("aborted", 5, 9, 1, {"type": "hash-chain", "seed": "long", "iterations": 40_000_000}),
    Scenario("disputed", 2, 6, 8, {"type": "hash-chain", "seed": "disputed", "iterations": 200_000}),
]


class Demo:
    def __init__(self, rpc_url: str, registry_path: Path, console: Console, workdir: Path):
        self.console = console
        self.workdir = workdir
        self.registry = Registry.load(registry_path)
        self.registry_path = registry_path
        self.gateway = ChainGateway(rpc_url, self.registry)
        self.rpc_url = rpc_url
        self.wallets = [Wallet(self.gateway, KeySigner(key)) for key in ANVIL_KEYS]
        self.usdc = self.gateway.contract("MockUSDC")
        self.market = self.gateway.market
        self.events: list[str] = []
        self.stop = threading.Event()
        self.api: MarketClient | None = None

    # ───────────── plumbing ─────────────

    def say(self, text: str) -> None:
        self.events.append(f"[{time.strftime('%H:%M:%S')}] {text}")
        del self.events[:-8]

    def send(self, who: int, call: Any, action: str) -> Any:
        return self.wallets[who].send(call, action=action)

    def warp(self, seconds: int) -> None:
        self.gateway.w3.provider.make_request("evm_increaseTime", [seconds])
        self.gateway.w3.provider.make_request("evm_mine", [])

    def now(self) -> int:
        return self.gateway.timestamp()

    def wait_for(self, what: str, predicate, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stop.is_set():
                raise KeyboardInterrupt
            value = predicate()
            if value:
                return value
            time.sleep(0.3)
        raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")

    def deal_status(self, deal_id: int) -> DealStatus:
        return DealStatus(self.gateway.get_deal(deal_id)["status"])

    def addr(self, who: int) -> str:
        return self.wallets[who].address

    # ───────────── the story ─────────────

    def start_service(self, stack: ExitStack) -> None:
        port = free_port()
        env = {
            **os.environ,
            "MARKET_DATABASE_URL": f"sqlite:///{self.workdir / 'market.db'}",
            "MARKET_RPC_URL": self.rpc_url,
            "MARKET_REGISTRY": str(self.registry_path),
            "MARKET_MATCHER_PRIVATE_KEY": ANVIL_KEYS[MATCHER],
            "MARKET_VERIFIER_PRIVATE_KEY": ANVIL_KEYS[ADMIN],
            "MARKET_VERIFIER_SAMPLE_RATE": "0",
            "MARKET_CONFIRMATIONS": "0",
            "MARKET_POLL_INTERVAL_SECONDS": "0.3",
        }
        log = stack.enter_context(open(self.workdir / "service.log", "ab"))
        process = subprocess.Popen([sys.executable, "-m", "marketplace", "serve", "--port", str(port),
                                    "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=PROJECT_ROOT)

        def stop_service() -> None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()

        stack.callback(stop_service)
        self.api = stack.enter_context(MarketClient(f"http://127.0.0.1:{port}"))
        self.wait_for("the service to answer /health", lambda: process.poll() is None and _healthy(self.api),
                      timeout=90)
        if process.poll() is not None:
            raise DemoError(f"the service exited; see {self.workdir / 'service.log'}")
        self.say(f"service up at http://127.0.0.1:{port}")

    def fund_everyone(self) -> None:
        staking = self.gateway.staking
        for scenario in SCENARIOS:
            for who, target, amount in ((scenario.provider, staking, 500 * USDC),
                                        (scenario.trainer, self.market, 1_000 * USDC)):
                if who in getattr(self, "_funded", set()):
                    continue
                self.send(who, self.usdc.functions.mint(self.addr(who), amount), "mint mUSDC")
                self.send(who, self.usdc.functions.approve(target.address, amount), "approve")
                if target is staking:
                    self.send(who, staking.functions.stake(self.usdc.address, amount), "stake")
                else:
                    self.send(who, self.market.functions.deposit(self.usdc.address, amount), "deposit")
                self._funded = getattr(self, "_funded", set()) | {who}
        # A sponsor (the admin here) funds this epoch's reward pool with Compute Credits.
        credit, pool = self.gateway.contract("ComputeCredit"), self.gateway.rewards
        epoch = pool.functions.currentEpoch().call()
        self.send(ADMIN, credit.functions.mint(self.addr(ADMIN), 10_000 * 10**18), "mint CCR")
        self.send(ADMIN, credit.functions.approve(pool.address, 10_000 * 10**18), "approve CCR")
        self.send(ADMIN, pool.functions.fund(epoch, 10_000 * 10**18), "fund rewards")
        self.reward_epoch = epoch
        self.say("providers staked 500 mUSDC, trainers deposited 1,000 mUSDC, sponsor funded 10,000 CCR")

    def post_offers(self) -> None:
        generator = MarketGenerator(seed=2026, providers=4, trainers=4)
        now = self.now()
        for profile, scenario in zip(generator.providers, SCENARIOS[:4], strict=True):
            model = GPU_MODELS[scenario.gpu_model]
            name = f"{REGIONS[profile.region].name}-{'green' if profile.green_energy else 'grid'}-{scenario.provider}"
            signer = self.wallets[scenario.provider]
            prof = ProviderProfile(provider=signer.address, name=name, endpoint="")
            self.api.register_provider(prof.message(), signer.sign_order(prof))
            price = max(100_000, int(profile.cost_per_gpu_hour * 1.2) // 10_000 * 10_000)
            offer = Offer(
                provider=signer.address, gpuModel=model.id, gpuCount=profile.gpu_count, vramGb=model.vram_gb,
                region=profile.region, greenEnergy=profile.green_energy, token=self.usdc.address,
                pricePerGpuHour=price, minHours=1, maxHours=8, capacityGpuHours=profile.gpu_count * 16,
                availableUntil=now + 3 * 24 * HOUR, expiry=now + 24 * HOUR, salt=int.from_bytes(os.urandom(8), "big"),
            )
            self.api.submit_offer(_wire(offer), signer.sign_order(offer))
            self.say(f"{name} offers {profile.gpu_count}x {model.name} at {price / USDC:.2f} mUSDC/GPU-h")

    def post_request(self, scenario: Scenario, *, start_by: int) -> int:
        signer = self.wallets[scenario.trainer]
        now = self.now()
        request = Request(
            trainer=signer.address, gpuModel=scenario.gpu_model, gpuCount=1, minVramGb=0,
            regionMask=region_mask(*REGIONS), greenOnly=False, token=self.usdc.address,
            maxPricePerGpuHour=10 * USDC, totalHours=2, minHours=2, startBy=start_by, expiry=now + 24 * HOUR,
            jobSpecHash=job_spec_hash(scenario.job), settlementRule=int(scenario.rule),
            salt=int.from_bytes(os.urandom(8), "big"),
        )
        submitted = self.api.submit_request(_wire(request), signer.sign_order(request), scenario.job)
        order_hash = submitted.order.hash
        match = self.wait_for(f"the {scenario.path} request to be matched on chain", lambda: _opened(self.api, order_hash))
        scenario.deal_ids.append(match)
        self.say(f"deal #{match} opened for the {scenario.path} path")
        return match

    def run(self, live: Live | None) -> dict[str, Any]:
        with ExitStack() as stack:
            self.start_service(stack)
            self.fund_everyone()
            self.post_offers()
            agents = [self.start_agent(stack, s.provider) for s in SCENARIOS[:4] if s.agent]
            self.say(f"{len(agents)} provider agents running; provider {SCENARIOS[2].provider} will not show up")

            far = self.now() + 24 * HOUR
            settled, attested, no_show, aborted, disputed = SCENARIOS
            for scenario in (settled, attested, aborted, disputed):
                self.post_request(scenario, start_by=far)
            refund_deal = self.post_request(no_show, start_by=self.now() + 600)

            # Aborted: the buyer stops a long job while it runs and pays for the time used.
            abort_deal = aborted.deal_ids[0]
            self.wait_for("the long job to start", lambda: self.deal_status(abort_deal) == DealStatus.RUNNING)
            time.sleep(2)
            self.send(aborted.trainer, self.market.functions.abort(abort_deal), "abort")
            self.say(f"trainer {aborted.trainer} aborted deal #{abort_deal}")

            # Disputed: the buyer disputes the result in the challenge window; the arbiter splits it.
            dispute_deal = disputed.deal_ids[0]
            self.wait_for("the disputed job to complete", lambda: self.deal_status(dispute_deal) == DealStatus.COMPLETED)
            self.send(disputed.trainer, self.market.functions.dispute(dispute_deal), "dispute")
            used = self.gateway.get_deal(dispute_deal)["usedSeconds"]
            self.send(ADMIN, self.market.functions.resolveDispute(dispute_deal, used // 2, False), "resolve")
            self.say(f"arbiter resolved deal #{dispute_deal}: half the metered time paid, no fault")

            # Settled on attestation: the verifier re-ran the deterministic training job.
            self.wait_for("the verifier's attestation", lambda: self.deal_status(attested.deal_ids[0]) == DealStatus.SETTLED,
                          timeout=120)
            self.say(f"verifier re-ran deal #{attested.deal_ids[0]}'s job: passed, settled")

            # Settled after the challenge window: the keeper settles once it has passed.
            settle_deal = settled.deal_ids[0]
            self.wait_for("the training job to complete", lambda: self.deal_status(settle_deal) == DealStatus.COMPLETED,
                          timeout=120)
            self.warp(self.gateway.read("ComputeMarket", "challengeWindow") + 1)
            self.wait_for("the keeper to settle", lambda: self.deal_status(settle_deal) == DealStatus.SETTLED)
            self.say(f"keeper settled deal #{settle_deal} after its challenge window")

            # No-show: nobody started it; after the start deadline the keeper claims the refund.
            self.warp(601)
            self.wait_for("the no-show refund", lambda: self.deal_status(refund_deal) == DealStatus.REFUNDED)
            self.say(f"deal #{refund_deal} refunded; provider {no_show.provider}'s collateral compensated the buyer")

            # Rewards: once the epoch closes, providers pull their share of the sponsor's pool.
            pool = self.gateway.rewards.functions
            self.warp(pool.epochEndsAt(self.reward_epoch).call() - self.now() + 1)
            for provider in sorted({s.provider for s in SCENARIOS}):
                if pool.claimable(self.reward_epoch, self.addr(provider)).call():
                    self.send(provider, pool.claim(self.reward_epoch), "claim rewards")
            self.say("providers claimed their epoch rewards")
            self.wait_for("the service to index every ending", self._all_indexed, timeout=30)
            if live is not None:
                live.update(self.view())
            return self.summary()

    def start_agent(self, stack: ExitStack, who: int) -> ProviderAgent:
        agent = ProviderAgent(api=self.api, wallet=self.wallets[who],
                              state=AgentState(self.workdir / f"agent-{who}.json"), work_dir=self.workdir / f"jobs-{who}",
                              log=lambda event, data, who=who: self._agent_event(who, event, data))
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, kwargs={"stop": stop, "poll_seconds": 0.5}, daemon=True)
        thread.start()
        stack.callback(lambda: (stop.set(), thread.join(10), [job.kill() for job in list(agent.jobs.values())]))
        return agent

    def _agent_event(self, who: int, event: str, data: dict[str, Any]) -> None:
        if event in ("deal_started", "job_finished", "deal_completed"):
            self.say(f"provider {who}: {event.replace('_', ' ')} (deal #{data.get('deal_id')})")

    def _all_indexed(self) -> bool:
        deals = self.api.deals(limit=200).items
        return len(deals) == sum(len(s.deal_ids) for s in SCENARIOS) and all(
            DealStatus[d.status.upper()].is_terminal for d in deals)

    # ───────────── what the user sees ─────────────

    def view(self) -> Panel:
        book = Table(title="order book", expand=True)
        for column in ("side", "owner", "GPU", "price (mUSDC/GPU-h)", "left", "status"):
            book.add_column(column)
        deals = Table(title="deals", expand=True)
        for column in ("deal", "provider", "buyer", "status", "escrow", "paid", "refund"):
            deals.add_column(column)
        if self.api is not None:
            try:
                for order in self.api.orders(limit=12).items:
                    book.add_row(order.side.value, order.owner[:10], GPU_MODELS.get(order.gpu_model).name
                                 if order.gpu_model in GPU_MODELS else "any", f"{int(order.price) / USDC:.2f}",
                                 str(order.capacity - order.filled), order.status.value)
                for deal in self.api.deals(limit=12).items:
                    deals.add_row(f"#{deal.deal_id}", deal.provider[:10], deal.buyer[:10], deal.status,
                                  f"{int(deal.escrow) / USDC:.4f}", f"{int(deal.provider_paid) / USDC:.4f}",
                                  f"{int(deal.buyer_refund) / USDC:.4f}")
            except Exception as exc:  # noqa: BLE001 - the view must never kill the demo
                book.add_row("…", str(exc)[:60], "", "", "", "")
        return Panel(Group(book, deals, "\n".join(self.events)), title="Compute Marketplace — live demo")

    def summary(self) -> dict[str, Any]:
        """Read back from the chain (events of the market and the reward pool)."""
        market_events = self.gateway.get_logs(self.registry.get(self.gateway.chain_id, "ProviderStaking").block_number,
                                              self.gateway.block_number())
        totals = {"deals_opened": 0, "deals_by_state": {}, "gpu_hours_sold": 0.0, "paid_to_providers": 0,
                  "refunded_to_buyers": 0, "collateral_slashed": 0, "protocol_fees": 0, "rewards_claimed": 0}
        gpu_count: dict[int, int] = {}
        for log in market_events:
            a, name = log.args, log.name
            if name == "DealOpened":
                totals["deals_opened"] += 1
                gpu_count[a["dealId"]] = a["gpuCount"]
            elif name == "DealCompleted":
                totals["gpu_hours_sold"] += gpu_count[a["dealId"]] * a["usedSeconds"] / HOUR
            elif name in ("DealSettled", "DealAborted", "DealResolved", "DealRefunded"):
                state = name.removeprefix("Deal").lower()
                totals["deals_by_state"][state] = totals["deals_by_state"].get(state, 0) + 1
                totals["paid_to_providers"] += a.get("providerPaid", 0)
                totals["refunded_to_buyers"] += a.get("buyerRefund", 0)
                totals["protocol_fees"] += a.get("fee", 0)
                totals["collateral_slashed"] += a.get("collateralSlashed", 0)
            elif name == "AccruedWithdrawn":
                totals["paid_to_providers"] += a["amount"]
            elif name == "RewardsClaimed":
                totals["rewards_claimed"] += a["amount"]
        totals["gpu_hours_sold"] = round(totals["gpu_hours_sold"], 6)
        totals["token"] = {"settlement": "mUSDC", "decimals": 6, "rewards": "CCR", "reward_decimals": 18}
        totals["accounts"] = {"treasury": self.gateway.read("ComputeMarket", "treasury"),
                              "providers": sorted({self.addr(s.provider) for s in SCENARIOS}),
                              "trainers": sorted({self.addr(s.trainer) for s in SCENARIOS})}
        return totals


def _wire(order: Any) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in order.message().items()}


def _healthy(api: MarketClient) -> bool:
    try:
        return api.health().status in ("ok", "degraded")
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _opened(api: MarketClient, order_hash: str) -> int | None:
    for match in api.order_matches(order_hash):
        if match.state == "opened" and match.deal_id is not None:
            return match.deal_id
    return None


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="Demo summary (read from the chain)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("deals opened", str(summary["deals_opened"]))
    for state, count in sorted(summary["deals_by_state"].items()):
        table.add_row(f"  {state}", str(count))
    table.add_row("GPU-hours sold (metered)", f"{summary['gpu_hours_sold']:.4f}")
    for key in ("paid_to_providers", "refunded_to_buyers", "collateral_slashed", "protocol_fees"):
        table.add_row(key.replace("_", " ") + " (mUSDC)", f"{summary[key] / USDC:,.6f}")
    table.add_row("rewards claimed (CCR)", f"{summary['rewards_claimed'] / 10**18:,.4f}")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketplace.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rpc-url", help="use this node and --registry instead of a fresh devnet of the demo's own")
    parser.add_argument("--registry", type=Path, help="deployment registry for --rpc-url")
    parser.add_argument("--json", dest="json_path", type=Path, help="also write the summary as JSON here")
    parser.add_argument("--no-live", action="store_true", help="plain log lines instead of the live view")
    args = parser.parse_args(argv)
    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="demo-", dir=PROJECT_ROOT / ".run" if (PROJECT_ROOT / ".run").exists() else None))
    started = time.monotonic()
    devnet: Devnet | None = None
    try:
        if args.rpc_url is None:
            # A devnet of its own on a free port, so the demo never touches one the user runs.
            devnet = Devnet(port=free_port(), run_dir=workdir)
            console.print(f"starting anvil at {devnet.url} and deploying the contracts …")
            devnet.start()
            args.rpc_url, args.registry = devnet.url, workdir / "registry.json"
            run_deploy_script(devnet.url, args.registry, "--challenge-window", "60", "--epoch-length", "600")
            print_registry(args.registry)
        elif args.registry is None:
            parser.error("--rpc-url needs --registry")
        demo = Demo(args.rpc_url, args.registry, console, workdir)
        previous = signal.signal(signal.SIGTERM, lambda *_: demo.stop.set())
        try:
            if args.no_live or not console.is_terminal:
                summary = demo.run(None)
                for line in demo.events:
                    console.print(line)
            else:
                done = threading.Event()
                with Live(demo.view(), console=console, refresh_per_second=2) as live:
                    refresher = threading.Thread(target=_refresh, args=(demo, live, done), daemon=True)
                    refresher.start()
                    try:
                        summary = demo.run(live)
                    finally:
                        done.set()
                        refresher.join(5)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except KeyboardInterrupt:
        console.print("[yellow]demo interrupted: everything it started has been stopped[/yellow]")
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line, the details are in the work dir
        console.print(f"[red]demo failed:[/red] {exc.__class__.__name__}: {exc} (logs in {workdir})")
        return 1
    finally:
        if devnet is not None:
            devnet.stop()
    print_summary(console, summary)
    console.print(f"finished in {time.monotonic() - started:.0f}s; service log and agent state in {workdir}")
    if args.json_path:
        args.json_path.write_text(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def print_registry(path: Path) -> None:
    print_registry_main([str(path)])


def _refresh(demo: Demo, live: Live, done: threading.Event) -> None:
    while not done.is_set():
        live.update(demo.view())
        done.wait(1.0)


if __name__ == "__main__":
    raise SystemExit(main())
