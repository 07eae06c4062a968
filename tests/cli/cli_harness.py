"""Drive the provider and buyer CLIs against a real anvil and a running marketplace service.

    env = CliEnv(market, api_url, workdir)
    env.provider("offer", "--gpu", "H100 80GB", "--region", "us-west", "--price", "2.50", account=2)
    data = env.buyer_json("deals", account=3)

Commands run in-process through click's CliRunner on the marketplace.cli groups (what `ape run
provider|buyer` calls), with the service and node addresses in the environment, as a user's shell
would set them. Each test trades its own GPU model with its own accounts, so tests sharing the
chain and the service's order book never match each other's orders.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from click.testing import CliRunner, Result
from eth_account import Account
from web3 import Web3

from marketplace.api.app import create_app
from marketplace.cli import buyer as buyer_cli
from marketplace.cli import provider as provider_cli
from marketplace.cli.common import test_account_key
from marketplace.service import MarketService

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from devnet_market import ANVIL_KEYS, DevnetMarket, service_settings  # noqa: E402

USDC = 10**6
CCR = 10**18
HOUR = 3600
CHALLENGE_WINDOW = 60
EPOCH_LENGTH = 3600
ARBITER = 0  # the deployer holds ARBITER_ROLE on the devnet


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceThread:
    """The real app (API + background loops) under uvicorn on a free port, in a thread."""

    def __init__(self, market: DevnetMarket, workdir: Path):
        settings = service_settings(market, workdir, poll_interval_seconds=0.2)
        self.service = MarketService(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(self.service, start_loops=True), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="market-api", daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the marketplace service did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.service.stop()


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click 8.1
    except TypeError:  # click ≥ 8.2 keeps stderr apart by default
        return CliRunner()


@dataclass
class CliEnv:
    market: DevnetMarket
    api_url: str
    workdir: Path
    runner: CliRunner = field(default_factory=_runner)

    # ───────────── running commands ─────────────

    @property
    def environ(self) -> dict[str, str]:
        return {"MARKET_API_URL": self.api_url, "MARKET_RPC_URL": self.market.devnet.url,
                "MARKET_REGISTRY": str(self.market.registry_path), "MARKET_AGENT_DIR": str(self.workdir / "agent"),
                "MARKET_ACCOUNT": None, "MARKET_TOKEN": None, "MARKET_PRIVATE_KEY": None}

    def invoke(self, group: Any, *args: str, account: int | str | None = None, env: dict[str, str] | None = None) -> Result:
        argv = [str(a) for a in args] + (["--account", str(account)] if account is not None else [])
        return self.runner.invoke(group, argv, env={**self.environ, **(env or {})}, catch_exceptions=False)

    def provider(self, *args: str, account: int | str | None = None, ok: bool = True, **kwargs: Any) -> Result:
        return self._checked(self.invoke(provider_cli.cli, *args, account=account, **kwargs), args, ok)

    def buyer(self, *args: str, account: int | str | None = None, ok: bool = True, **kwargs: Any) -> Result:
        return self._checked(self.invoke(buyer_cli.cli, *args, account=account, **kwargs), args, ok)

    def provider_json(self, *args: str, account: int | str | None = None) -> Any:
        return json.loads(self.provider(*args, "--json", account=account).stdout)

    def buyer_json(self, *args: str, account: int | str | None = None) -> Any:
        return json.loads(self.buyer(*args, "--json", account=account).stdout)

    @staticmethod
    def _checked(result: Result, args: tuple[str, ...], ok: bool) -> Result:
        if ok and result.exit_code != 0:
            raise AssertionError(f"{' '.join(map(str, args))} failed ({result.exit_code}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    # ───────────── the chain ─────────────

    @property
    def w3(self) -> Web3:
        return self.market.w3

    @staticmethod
    def key(index: int) -> str:
        return "0x" + test_account_key(index).hex()

    @staticmethod
    def address(index: int) -> str:
        return Account.from_key(test_account_key(index)).address

    def fund_gas(self, index: int) -> None:
        """Accounts past anvil's ten funded ones get ETH for gas."""
        self.w3.provider.make_request("anvil_setBalance", [self.address(index), hex(100 * 10**18)])

    def nonce(self, index: int) -> int:
        return self.w3.eth.get_transaction_count(self.address(index))

    def usdc(self, index: int) -> int:
        return self.market.usdc.functions.balanceOf(self.address(index)).call()

    def vault(self, index: int) -> int:
        return self.market.market.functions.balanceOf(self.address(index), self.market.usdc.address).call()

    def deal(self, deal_id: int) -> dict[str, Any]:
        market = self.market.market
        values = market.functions.getDeal(deal_id).call()
        names = [c["name"] for c in next(i for i in market.abi if i.get("name") == "getDeal")["outputs"][0]["components"]]
        return dict(zip(names, values, strict=True))

    def warp(self, seconds: int) -> None:
        self.market.warp(seconds)

    def send_as(self, index: int, call: Any) -> dict:
        sender = self.address(index)
        tx = call.build_transaction({"from": sender, "nonce": self.w3.eth.get_transaction_count(sender, "pending")})
        key = ANVIL_KEYS[index] if index < len(ANVIL_KEYS) else self.key(index)
        signed = Account.from_key(key).sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction))
        assert receipt["status"] == 1
        return receipt

    @staticmethod
    def wait_until(predicate: Any, *, timeout: float = 60.0, interval: float = 0.2, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    # ───────────── journeys ─────────────

    def provider_ready(self, index: int, *, gpu: str, stake: str = "200", price: str = "2.50",
                       extra: tuple[str, ...] = ()) -> dict[str, Any]:
        """A provider from zero: faucet, stake, one offer. Returns the offer's JSON."""
        self.provider("faucet", "1000", account=index)
        self.provider("stake", stake, account=index)
        return self.provider_json("offer", "--gpu", gpu, "--count", "4", "--region", "us-west", "--price", price,
                                  "--max-hours", "8", *extra, account=index)

    def buyer_deal(self, index: int, *, gpu: str, job: tuple[str, ...] = ("--job", "train-logreg",
                                                                            "--job-param", "seed=7"),
                   hours: str = "2", deposit: str = "100", extra: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
        """A buyer from zero to an open deal: faucet, permit deposit, request. Returns (deal id, request JSON)."""
        self.buyer("faucet", "500", account=index)
        self.buyer("deposit", deposit, account=index)
        data = self.buyer_json("request", "--gpu", gpu, "--count", "2", "--max-price", "3.00", "--hours", hours,
                               *job, *extra, account=index)
        assert len(data["deal_ids"]) == 1, data
        return data["deal_ids"][0], data
