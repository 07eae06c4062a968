"""A deployed market on a real anvil, driven with plain web3.py: what service tests build on.

    market = DevnetMarket.deploy(devnet, tmp_path, challenge_window=600)
    market.fund_trainer(market.trainer, 1_000 * USDC); market.stake(market.provider, 500 * USDC)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from web3 import HTTPProvider, Web3

from marketplace.deploy import run_deploy_script
from marketplace.devnet import ANVIL_KEYS, Devnet
from marketplace.registry import Registry
from marketplace.signing import Offer, Request, SettlementRule, region_mask

REPO_ROOT = Path(__file__).resolve().parents[2]
APE = REPO_ROOT / ".venv" / "bin" / "ape"
USDC = 10**6
HOUR = 3600

# Account roles among anvil's default accounts: 0 deploys and holds admin/arbiter/verifier.
DEPLOYER, TREASURY, PROVIDER, TRAINER, MATCHER, PROVIDER_2, TRAINER_2, SPONSOR = range(8)


def deploy_to(devnet: Devnet, registry_path: Path, *extra_args: str) -> None:
    run_deploy_script(devnet.url, registry_path, *extra_args)


@dataclass
class DevnetMarket:
    devnet: Devnet
    registry_path: Path
    w3: Web3

    @classmethod
    def deploy(cls, devnet: Devnet, workdir: Path, *, challenge_window: int = 600, epoch_length: int = 3600) -> DevnetMarket:
        registry_path = workdir / "registry.json"
        deploy_to(devnet, registry_path, "--challenge-window", str(challenge_window),
                  "--epoch-length", str(epoch_length))
        return cls(devnet, registry_path, Web3(HTTPProvider(devnet.url)))

    # ───────────── handles ─────────────

    @property
    def registry(self) -> Registry:
        return Registry.load(self.registry_path)

    def contract(self, name: str):
        deployment = self.registry.get(self.w3.eth.chain_id, name)
        return self.w3.eth.contract(address=deployment.address, abi=deployment.abi)

    @property
    def market(self):
        return self.contract("ComputeMarket")

    @property
    def usdc(self):
        return self.contract("MockUSDC")

    def key(self, index: int) -> str:
        return ANVIL_KEYS[index]

    def address(self, index: int) -> str:
        return Account.from_key(ANVIL_KEYS[index]).address

    # ───────────── transactions ─────────────

    def send(self, index: int, call, *, gas: int | None = None) -> dict:
        """Sign and send `call` from anvil account `index` (web3's gas estimate unless `gas`);
        returns the receipt (reverts raise)."""
        sender = self.address(index)
        params = {"from": sender, "nonce": self.w3.eth.get_transaction_count(sender, "pending")}
        tx = call.build_transaction(params if gas is None else {**params, "gas": gas})
        signed = Account.from_key(ANVIL_KEYS[index]).sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction))
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction reverted: {receipt['transactionHash'].hex()}")
        return receipt

    def fund_vault(self, index: int, amount: int) -> None:
        market, usdc = self.market, self.usdc
        self.send(index, usdc.functions.mint(self.address(index), amount))
        self.send(index, usdc.functions.approve(market.address, amount))
        self.send(index, market.functions.deposit(usdc.address, amount))

    def stake(self, index: int, amount: int) -> None:
        staking, usdc = self.contract("ProviderStaking"), self.usdc
        self.send(index, usdc.functions.mint(self.address(index), amount))
        self.send(index, usdc.functions.approve(staking.address, amount))
        self.send(index, staking.functions.stake(usdc.address, amount))

    def warp(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self.w3.provider.make_request("evm_mine", [])

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    # ───────────── orders ─────────────

    def offer(self, index: int = PROVIDER, **overrides) -> Offer:
        now = self.now()
        fields = dict(
            provider=self.address(index), gpuModel=8, gpuCount=8, vramGb=80, region=1, greenEnergy=True,
            token=self.usdc.address, pricePerGpuHour=2 * USDC, minHours=1, maxHours=24, capacityGpuHours=192,
            availableUntil=now + 7 * 24 * HOUR, expiry=now + 24 * HOUR, salt=time.time_ns(), counter=0,
        )
        fields.update(overrides)
        return Offer(**fields)

    def request(self, index: int = TRAINER, **overrides) -> Request:
        now = self.now()
        fields = dict(
            trainer=self.address(index), gpuModel=8, gpuCount=2, minVramGb=40, regionMask=region_mask(1, 2),
            greenOnly=False, token=self.usdc.address, maxPricePerGpuHour=3 * USDC, totalHours=4, minHours=1,
            startBy=now + 24 * HOUR, expiry=now + 24 * HOUR, jobSpecHash="0x" + "ab" * 32,
            settlementRule=int(SettlementRule.CHALLENGE_WINDOW), salt=time.time_ns(), counter=0,
        )
        fields.update(overrides)
        return Request(**fields)

    def sign(self, order, index: int) -> str:
        return "0x" + order.sign(ANVIL_KEYS[index], self.w3.eth.chain_id, self.market.address).hex()


class RpcCount:
    """Records one gateway's JSON-RPC traffic, `(method, params)` per call: single calls and
    batches (one round trip each). The node still answers every call; nothing is stubbed."""

    def __init__(self, gateway):
        provider = gateway.w3.provider
        self.single: list[tuple[str, list]] = []
        self.batches: list[list[tuple[str, list]]] = []
        single, batch = provider.make_request, provider.make_batch_request

        def counting(method, params):
            self.single.append((method, params))
            return single(method, params)

        def counting_batch(requests):
            self.batches.append([(method, params) for method, params in requests])
            return batch(requests)

        # Before the gateway's first request: web3 composes its middleware around make_request.
        provider.make_request, provider.make_batch_request = counting, counting_batch

    def clear(self) -> None:
        self.single.clear()
        self.batches.clear()

    @staticmethod
    def methods(calls) -> list[str]:
        return [method for method, _ in calls]

    @staticmethod
    def views(calls, selector: bytes) -> int:
        """How many of `calls` are eth_calls of the view with this 4-byte selector."""
        prefix = "0x" + selector.hex()
        return sum(1 for method, params in calls if method == "eth_call" and params[0]["data"].startswith(prefix))


def fresh_database_url(workdir: Path, name: str = "market") -> str:
    """A new empty database: SQLite in `workdir`, or, when MARKET_TEST_POSTGRES_URL is set (e.g.
    postgresql+psycopg://postgres:postgres@127.0.0.1/postgres), a new PostgreSQL database there."""
    admin_url = os.environ.get("MARKET_TEST_POSTGRES_URL")
    if not admin_url:
        return f"sqlite:///{workdir / (name + '.db')}"
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    database = f"{name}_test_{uuid.uuid4().hex[:12]}"
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    return url.set(database=database).render_as_string(hide_password=False)


def service_settings(market: DevnetMarket, workdir: Path, **overrides):
    """Settings for a MarketService on this devnet: a fresh database, matcher and verifier keys."""
    from marketplace.config import Settings

    values = dict(
        database_url=fresh_database_url(workdir), rpc_url=market.devnet.url, registry=market.registry_path,
        matcher_private_key=ANVIL_KEYS[MATCHER], verifier_private_key=ANVIL_KEYS[DEPLOYER],
        verifier_sample_rate=0.0, confirmations=0, rate_limit_per_minute=10_000,
    )
    values.update(overrides)
    return Settings(**values)


def json_message(order) -> dict:
    """The API's wire form of an order: big ints as decimal strings."""
    return {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in order.message().items()}
