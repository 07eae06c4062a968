"""Service tests against a real anvil with the contracts deployed by `ape run deploy`.

`deployed_devnet` (module scope) starts an anvil (the root conftest's `anvil` fixture), deploys
once with the real deploy script into a temporary registry and snapshots the chain. `devnet`
(per test) hands a test that chain and reverts it to the post-deploy snapshot afterwards, so
every test starts from the same freshly deployed state in well under a second.

`market` drives the contracts with plain web3.py (anvil's unlocked accounts send; orders are
signed with the accounts' keys from anvil's default mnemonic).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy.engine import Engine
from web3 import Web3
from web3.logs import DISCARD

from marketplace.chain.gateway import ChainGateway
from marketplace.db.models import OrderRow, OrderSide
from marketplace.db.session import make_engine, migrate, session_scope
from marketplace.devnet import Devnet
from marketplace.orderbook import message_json
from marketplace.registry import Registry
from marketplace.signing import Offer, Request, SettlementRule, region_mask

REPO_ROOT = Path(__file__).resolve().parents[2]
APE = Path(sys.executable).with_name("ape")
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
USDC = 10**6

Account.enable_unaudited_hdwallet_features()


# ───────────────────────────── chain ─────────────────────────────


@functools.cache
def _anvil_keys() -> dict[str, bytes]:
    """Address → private key of anvil's ten default accounts."""
    accounts = [Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(10)]
    return {account.address: bytes(account.key) for account in accounts}


@dataclass
class DeployedDevnet:
    devnet: Devnet
    registry_path: Path
    w3: Web3
    snapshot_id: str = ""

    @property
    def url(self) -> str:
        return self.devnet.url

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        response = self.w3.provider.make_request(method, params or [])
        if "error" in response:
            raise RuntimeError(f"{method} failed: {response['error']}")
        return response["result"]


def run_deploy(url: str, registry_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`ape run deploy` against the node at `url` (ape-foundry is pointed there by APE_FOUNDRY_HOST)."""
    shutil.rmtree(REPO_ROOT / "contracts" / ".cache", ignore_errors=True)  # see tests/conftest.py
    env = {k: v for k, v in os.environ.items() if k != "MARKET_REGISTRY"}
    env["APE_FOUNDRY_HOST"] = url
    return subprocess.run(
        [str(APE), "run", "deploy", "--network", "ethereum:local:foundry", "--registry", str(registry_path), *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env,
    )


@pytest.fixture(scope="module")
def deployed_devnet(anvil: Devnet, tmp_path_factory: pytest.TempPathFactory) -> DeployedDevnet:
    """A module's anvil with every contract deployed and wired (default deploy parameters)."""
    registry_path = tmp_path_factory.mktemp("registry") / "registry.json"
    result = run_deploy(anvil.url, registry_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Cached eth_chainId and explicit gas/fees (MarketDriver.send) save ~6 RPC round trips a transaction.
    deployed = DeployedDevnet(anvil, registry_path, Web3(Web3.HTTPProvider(anvil.url, cache_allowed_requests=True)))
    deployed.snapshot_id = deployed.rpc("evm_snapshot")
    return deployed


@pytest.fixture
def devnet(deployed_devnet: DeployedDevnet) -> Iterator[DeployedDevnet]:
    """The deployed devnet, put back to its post-deploy state after the test."""
    yield deployed_devnet
    assert deployed_devnet.rpc("evm_revert", [deployed_devnet.snapshot_id]) is True
    deployed_devnet.snapshot_id = deployed_devnet.rpc("evm_snapshot")  # a revert consumes the snapshot


@pytest.fixture
def gateway(devnet: DeployedDevnet) -> ChainGateway:
    return ChainGateway(devnet.url, Registry.load(devnet.registry_path))


# ───────────────────────────── database ─────────────────────────────


@pytest.fixture(scope="session")
def migrated_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database at the latest migration, copied by `make_db` (migrating is slow)."""
    path = tmp_path_factory.mktemp("db-template") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def make_db(tmp_path: Path, migrated_db_template: Path) -> Callable[[], Engine]:
    """Factory: a new, migrated SQLite database per call."""
    made = count()

    def make() -> Engine:
        path = tmp_path / f"market-{next(made)}.db"
        shutil.copyfile(migrated_db_template, path)
        return make_engine(f"sqlite:///{path}")

    return make


@pytest.fixture
def engine(make_db: Callable[[], Engine]) -> Engine:
    return make_db()


# ───────────────────────────── driving the market ─────────────────────────────


@dataclass(frozen=True)
class Signed:
    order: Offer | Request
    signature: bytes
    hash: str  # EIP-712 struct hash, 0x-prefixed lower-case hex

    @property
    def side(self) -> OrderSide:
        return OrderSide.OFFER if isinstance(self.order, Offer) else OrderSide.REQUEST

    def row(self, seq: int = 1) -> OrderRow:
        """The service's order-book row for this order (as the API would store it)."""
        order = self.order
        is_offer = isinstance(order, Offer)
        return OrderRow(
            hash=self.hash, side=self.side, owner=order.provider if is_offer else order.trainer,
            token=order.token, gpu_model=order.gpuModel,
            price=str(order.pricePerGpuHour if is_offer else order.maxPricePerGpuHour),
            capacity=order.capacityGpuHours if is_offer else order.totalHours,
            expiry=order.expiry, seq=seq, payload=message_json(order), signature="0x" + self.signature.hex(),
        )


@dataclass
class MarketDriver:
    """Roles are anvil's accounts: 0 deployer (admin, arbiter, verifier, treasury), 1 provider,
    2 trainer, 3 matcher, 4 a second provider, 5 a second trainer."""

    w3: Web3
    registry: Registry
    chain_id: int = 31337
    _salts: Iterator[int] = field(default_factory=lambda: count(1))

    def __post_init__(self) -> None:
        accounts = self.w3.eth.accounts
        self.deployer, self.provider, self.trainer, self.matcher, self.provider2, self.trainer2 = accounts[:6]
        self.market = self._contract("ComputeMarket")
        self.staking = self._contract("ProviderStaking")
        self.usdc = self._contract("MockUSDC")

    def _contract(self, name: str) -> Any:
        deployment = self.registry.get(self.chain_id, name)
        return self.w3.eth.contract(address=Web3.to_checksum_address(deployment.address), abi=deployment.abi)

    @staticmethod
    def key(address: str) -> bytes:
        return _anvil_keys()[address]

    # ── plumbing ──

    def send(self, call: Any, sender: str) -> Any:
        tx_hash = call.transact({"from": sender, "gas": 3_000_000, "gasPrice": 10**10})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, receipt
        return receipt

    def tx(self, call: Any, sender: str) -> dict[str, Any]:
        """A transaction request (for anvil_reorg): anvil fills in nonce, gas and fees."""
        return {"from": sender, "to": call.address, "data": call._encode_transaction_data(), "gas": hex(2_000_000)}

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def head(self) -> int:
        return self.w3.eth.block_number

    def mine(self, blocks: int = 1) -> None:
        self.w3.provider.make_request("anvil_mine", [hex(blocks)])

    def increase_time(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])

    def reorg(self, depth: int, txs: list[tuple[dict[str, Any], int]] = ()) -> None:
        """Replace the last `depth` blocks by as many new ones holding `txs` ((tx, block offset))."""
        response = self.w3.provider.make_request("anvil_reorg", [depth, [[tx, offset] for tx, offset in txs]])
        assert "error" not in response, response

    # ── money ──

    def fund(self, trainer: str, amount: int) -> None:
        self.send(self.usdc.functions.mint(trainer, amount), trainer)
        self.send(self.usdc.functions.approve(self.market.address, amount), trainer)
        self.send(self.market.functions.deposit(self.usdc.address, amount), trainer)

    def stake(self, provider: str, amount: int) -> None:
        self.send(self.usdc.functions.mint(provider, amount), provider)
        self.send(self.usdc.functions.approve(self.staking.address, amount), provider)
        self.send(self.staking.functions.stake(self.usdc.address, amount), provider)

    # ── orders ──

    def offer(self, provider: str | None = None, **overrides: Any) -> Signed:
        now = self.now()
        order = Offer(
            provider=provider or self.provider, gpuModel=1, gpuCount=8, vramGb=80, region=0, greenEnergy=False,
            token=self.usdc.address, pricePerGpuHour=2 * USDC, minHours=1, maxHours=10, capacityGpuHours=100,
            availableUntil=now + 30 * 86400, expiry=now + 86400, salt=next(self._salts), counter=0,
        )
        return self._sign(replace(order, **overrides))

    def request(self, trainer: str | None = None, **overrides: Any) -> Signed:
        now = self.now()
        order = Request(
            trainer=trainer or self.trainer, gpuModel=1, gpuCount=2, minVramGb=40, regionMask=region_mask(0),
            greenOnly=False, token=self.usdc.address, maxPricePerGpuHour=3 * USDC, totalHours=4, minHours=1,
            startBy=now + 2 * 3600, expiry=now + 86400, jobSpecHash="0x" + "11" * 32,
            settlementRule=int(SettlementRule.CHALLENGE_WINDOW), salt=next(self._salts), counter=0,
        )
        return self._sign(replace(order, **overrides))

    def _sign(self, order: Offer | Request) -> Signed:
        owner = order.provider if isinstance(order, Offer) else order.trainer
        signature = order.sign(self.key(owner), self.chain_id, self.market.address)
        return Signed(order, signature, "0x" + order.struct_hash().hex())

    # ── deals ──

    def open_call(self, offer: Signed, request: Signed, hours: int) -> Any:
        return self.market.functions.openDeal(
            offer.order.as_tuple(), offer.signature, request.order.as_tuple(), request.signature, hours
        )

    def open_deal(self, offer: Signed, request: Signed, hours: int = 2) -> int:
        receipt = self.send(self.open_call(offer, request, hours), self.matcher)
        (event,) = self.market.events.DealOpened().process_receipt(receipt, errors=DISCARD)
        return event["args"]["dealId"]

    def start(self, deal_id: int, provider: str | None = None) -> Any:
        return self.send(self.market.functions.startDeal(deal_id), provider or self.provider)

    def complete(self, deal_id: int, used_seconds: int, result: str = "0x" + "ab" * 32,
                 provider: str | None = None) -> Any:
        return self.send(self.market.functions.completeDeal(deal_id, used_seconds, result), provider or self.provider)

    def withdraw_accrued(self, deal_id: int, provider: str | None = None) -> Any:
        return self.send(self.market.functions.withdrawAccrued(deal_id), provider or self.provider)

    def settle(self, deal_id: int) -> Any:
        return self.send(self.market.functions.settle(deal_id), self.matcher)

    def claim_refund(self, deal_id: int) -> Any:
        return self.send(self.market.functions.claimRefund(deal_id), self.matcher)

    def abort(self, deal_id: int, trainer: str | None = None) -> Any:
        return self.send(self.market.functions.abort(deal_id), trainer or self.trainer)

    def dispute(self, deal_id: int, trainer: str | None = None) -> Any:
        return self.send(self.market.functions.dispute(deal_id), trainer or self.trainer)

    def resolve(self, deal_id: int, provider_seconds: int, provider_at_fault: bool) -> Any:
        return self.send(self.market.functions.resolveDispute(deal_id, provider_seconds, provider_at_fault),
                         self.deployer)

    def cancel(self, signed: Signed) -> Any:
        if isinstance(signed.order, Offer):
            return self.send(self.market.functions.cancelOffer(signed.order.as_tuple()), signed.order.provider)
        return self.send(self.market.functions.cancelRequest(signed.order.as_tuple()), signed.order.trainer)

    def increment_counter(self, owner: str) -> Any:
        return self.send(self.market.functions.incrementCounter(), owner)

    def deal(self, deal_id: int) -> dict[str, Any]:
        names = [c["name"] for c in self.market.get_function_by_name("getDeal").abi["outputs"][0]["components"]]
        return dict(zip(names, self.market.functions.getDeal(deal_id).call(), strict=True))


@pytest.fixture
def market(devnet: DeployedDevnet) -> MarketDriver:
    return MarketDriver(devnet.w3, Registry.load(devnet.registry_path))


@pytest.fixture
def add_orders(engine: Engine) -> Callable[..., None]:
    """Store signed orders in the service's book (as the API would)."""

    def add(*orders: Signed, engine: Engine = engine) -> None:
        with session_scope(engine) as session:
            for signed in orders:
                if session.get(OrderRow, signed.hash) is None:
                    session.add(signed.row(seq=signed.order.salt))

    return add
