"""Crash safety: the service process is SIGKILLed at random points while it matches, opens and
settles deals, and restarted, at least 20 times. Afterwards: no deal is lost, none is settled
twice, the matcher's nonces are contiguous, and the DB equals a fresh resync from the chain."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from marketplace.db.models import ChainEvent, ChainTx, DealRow, MatchRow, MatchState, TxState
from marketplace.db.session import make_engine, migrate
from marketplace.devnet import free_port
from marketplace.signing import DealStatus

from devnet_market import (  # noqa: I001 - tests/service is on sys.path under pytest
    ANVIL_KEYS, DEPLOYER, HOUR, MATCHER, PROVIDER, PROVIDER_2, TRAINER, TRAINER_2, USDC, DevnetMarket, fresh_database_url,
    json_message,
)

pytestmark = pytest.mark.anvil

KILLS = 20
CHALLENGE_WINDOW = 60
REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """`python -m marketplace serve` as a child process we can SIGKILL."""

    def __init__(self, market: DevnetMarket, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "service.log", "ab")  # noqa: SIM115 - closed in stop()
        self.env = {
            **os.environ,
            "MARKET_DATABASE_URL": fresh_database_url(workdir),
            "MARKET_RPC_URL": market.devnet.url,
            "MARKET_REGISTRY": str(market.registry_path),
            "MARKET_MATCHER_PRIVATE_KEY": ANVIL_KEYS[MATCHER],
            "MARKET_VERIFIER_PRIVATE_KEY": ANVIL_KEYS[DEPLOYER],
            "MARKET_VERIFIER_SAMPLE_RATE": "0",
            "MARKET_CONFIRMATIONS": "0",
            "MARKET_POLL_INTERVAL_SECONDS": "0.1",
            "MARKET_RATE_LIMIT_PER_MINUTE": "100000",
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "marketplace", "serve", "--port", str(self.port), "--log-level", "warning"],
            cwd=REPO_ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "service exited at start; see service.log"
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("service did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class ProviderBot(threading.Thread):
    """Plays the providers: starts every opened deal and completes it an hour later."""

    def __init__(self, market: DevnetMarket):
        super().__init__(daemon=True)
        self.market = market
        self.stop_event = threading.Event()
        self.keys = {market.address(i): i for i in (PROVIDER, PROVIDER_2)}
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a racing tx is retried next step
                pass
            self.stop_event.wait(0.2)

    def step(self) -> None:
        m = self.market.market.functions
        with self.lock:
            for deal_id in range(1, m.dealCount().call() + 1):
                deal = m.getDeal(deal_id).call()
                status, provider = deal[1], deal[6]
                if status == DealStatus.OPEN:
                    self.market.send(self.keys[provider], m.startDeal(deal_id))
                elif status == DealStatus.RUNNING and self.market.now() - deal[7] >= HOUR:
                    self.market.send(self.keys[provider], m.completeDeal(deal_id, HOUR, "0x" + "aa" * 32))

    def warp(self, seconds: int) -> None:
        with self.lock:
            self.market.warp(seconds)


def make_orders(market: DevnetMarket) -> list[tuple[str, dict]]:
    """10 offers and 20 one-hour requests, interleaved, across two providers and two trainers."""
    orders = []
    for i in range(10):
        provider = (PROVIDER, PROVIDER_2)[i % 2]
        week = market.now() + 7 * 24 * HOUR  # far beyond the time the test warps through
        offer = market.offer(provider, capacityGpuHours=4, salt=1000 + i, expiry=week, availableUntil=week + 24 * HOUR)
        orders.append(("/offers", {"order": json_message(offer), "signature": market.sign(offer, provider)}))
        for j in range(2):
            trainer = (TRAINER, TRAINER_2)[j]
            request = market.request(trainer, gpuCount=1, totalHours=1, salt=2000 + 2 * i + j, expiry=week, startBy=week)
            orders.append(("/requests", {"order": json_message(request), "signature": market.sign(request, trainer)}))
    return orders


def submit(url: str, path: str, body: dict) -> bool:
    try:
        response = httpx.post(url + path, json=body, timeout=5)
    except httpx.HTTPError:
        return False  # killed mid-request: resubmitted after the restart
    assert response.status_code in (201, 409), response.text  # 409: it was stored before the kill
    return True


def dump(engine) -> dict:
    with Session(engine) as session:
        deals = [row.model_dump() for row in session.exec(select(DealRow).order_by(DealRow.deal_id)).all()]
        events = [(e.block_number, e.log_index, e.tx_hash, e.name, e.args)
                  for e in session.exec(select(ChainEvent).order_by(ChainEvent.block_number, ChainEvent.log_index))]
    return {"deals": deals, "events": events}


def test_service__sigkilled_20_times_while_matching_and_settling__loses_and_doubles_nothing(anvil, tmp_path):
    rng = random.Random(20261122)
    market = DevnetMarket.deploy(anvil, tmp_path, challenge_window=CHALLENGE_WINDOW)
    for provider in (PROVIDER, PROVIDER_2):
        market.stake(provider, 1_000 * USDC)
    for trainer in (TRAINER, TRAINER_2):
        market.fund_vault(trainer, 1_000 * USDC)
    pending = make_orders(market)
    service = ServiceProcess(market, tmp_path)
    bot = ProviderBot(market)
    bot.start()
    started = time.monotonic()
    try:
        for _ in range(KILLS):
            service.start()
            for _ in range(rng.randint(0, 3)):
                if pending and submit(service.url, *pending[0]):
                    pending.pop(0)
            bot.warp(rng.choice([0, HOUR, CHALLENGE_WINDOW]))
            time.sleep(rng.uniform(0.05, 1.5))
            service.kill()

        print(f"\n{KILLS} kill/restart cycles took {time.monotonic() - started:.1f}s", file=sys.stderr)
        service.start()  # the last life: let everything finish
        while pending:
            assert submit(service.url, *pending[0])
            pending.pop(0)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            statuses = [market.market.functions.getDeal(i).call()[1]
                        for i in range(1, market.market.functions.dealCount().call() + 1)]
            if len(statuses) == 20 and all(s == DealStatus.SETTLED for s in statuses):
                break
            bot.warp(HOUR)  # lets running deals complete and challenge windows pass
            time.sleep(0.5)
        time.sleep(1.0)  # one more pass of the loops to index the last settlement
        service.stop()
        print(f"settled everything after {time.monotonic() - started:.1f}s", file=sys.stderr)
    finally:
        bot.stop_event.set()
        bot.join(5)
        service.kill()

    chain = market.market.functions
    engine = make_engine(service.env["MARKET_DATABASE_URL"])
    deal_count = chain.dealCount().call()
    assert deal_count == 20, "every one-hour request became exactly one deal"
    with Session(engine) as session:
        matches = session.exec(select(MatchRow)).all()
        opened = [m for m in matches if m.state == MatchState.OPENED]
        assert not [m for m in matches if m.state == MatchState.PROPOSED], "no match left hanging"
        assert sorted(m.deal_id for m in opened) == list(range(1, deal_count + 1)), "0 lost deals"
        settled_events = session.exec(select(ChainEvent).where(ChainEvent.name == "DealSettled")).all()
        settled_ids = [int(json.loads(e.args)["dealId"]) for e in settled_events]
        assert sorted(settled_ids) == list(range(1, deal_count + 1)), "each deal settled exactly once"
        txs = session.exec(select(ChainTx).where(ChainTx.nonce.is_not(None)).order_by(ChainTx.nonce)).all()
        nonces = [tx.nonce for tx in txs]
        assert nonces == list(range(len(nonces))), "matcher nonces contiguous"
        assert all(tx.state in (TxState.CONFIRMED, TxState.FAILED) for tx in txs)
        assert market.w3.eth.get_transaction_count(market.address(MATCHER)) == len(nonces)
        for row in session.exec(select(DealRow)).all():
            on_chain = chain.getDeal(row.deal_id).call()
            assert row.status == on_chain[1] == DealStatus.SETTLED

    # The DB equals a resync from the chain into an empty database.
    from marketplace.chain.gateway import ChainGateway
    from marketplace.indexer import Indexer

    fresh_url = fresh_database_url(tmp_path, "resync")
    migrate(fresh_url)
    fresh = make_engine(fresh_url)
    indexer = Indexer(ChainGateway(market.devnet.url, market.registry), fresh, confirmations=0)
    while indexer.poll():
        pass
    assert dump(fresh) == dump(engine)
