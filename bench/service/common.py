"""Shared plumbing of the service benchmarks: an anvil with the contracts deployed, many funded
signer accounts, `marketplace serve` as a child process, CPU/load readings, and the
BENCHMARKS.md splice of the `bench:service` section.

Everything started here is stopped by `Stack.close()` / `ServiceProcess.stop()`, which the entry
points call in `finally` blocks (also on Ctrl-C). Servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_utils import keccak

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(HERE.parent))  # bench/: machine.py

from machine import machine_facts  # noqa: E402,F401 - re-exported for the service bench scripts

from marketplace.devnet import ANVIL_KEYS, Devnet, free_port

USDC = 10**6
HOUR = 3600
DAY = 24 * HOUR
GWEI = 10**9
START_MARKER = "<!-- bench:service:start -->"
END_MARKER = "<!-- bench:service:end -->"
# Roles among anvil's default accounts (as in tests/service/devnet_market.py): 0 deploys and
# verifies, 4 is the matcher. Bench signers are derived keys, never these.
DEPLOYER, MATCHER = 0, 4


# ───────────────────────────── machine facts ─────────────────────────────


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "marketplace", "contracts", "bench/service"],
                               cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (+ uncommitted changes in marketplace/, contracts/ or bench/service/)" if dirty else "")


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (all its threads), from /proc; 0.0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields_[11]) + int(fields_[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class CpuMeter:
    """CPU seconds spent by the named processes (with their direct children: the service's
    signature workers) between start() and stop(); `self` is this process (the load generator),
    read with time.process_time()."""

    pids: dict[str, int | None]
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def start(self) -> CpuMeter:
        self._t0 = time.perf_counter()
        self._c0 = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}
        self._self0 = time.process_time()
        return self

    def stop(self) -> CpuMeter:
        self.wall = time.perf_counter() - self._t0
        self.cpu = {name: tree_cpu_seconds(pid) - self._c0[name] for name, pid in self.pids.items()}
        self.cpu["load generator"] = time.process_time() - self._self0
        return self


def stop_on_sigterm() -> None:
    """SIGTERM (e.g. `timeout`, a CI cancel) unwinds like Ctrl-C, so every `finally` that stops
    anvil and the servers runs."""

    def handler(_signum, _frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, handler)


# ───────────────────────────── keys ─────────────────────────────


def derived_key(label: str, index: int) -> str:
    """A deterministic private key for bench signer `index` of `label` (a local devnet only)."""
    return "0x" + keccak(text=f"bench-service/{label}/{index}").hex()


@dataclass
class Signer:
    key: str
    address: str

    @classmethod
    def derive(cls, label: str, index: int) -> Signer:
        key = derived_key(label, index)
        return cls(key, Account.from_key(key).address)


# ───────────────────────────── the chain ─────────────────────────────


class Rpc:
    """Plain JSON-RPC over one keep-alive connection, with batch calls (anvil accepts batches)."""

    def __init__(self, url: str):
        self.url = url
        self.client = httpx.Client(timeout=120)
        self._id = 0

    def call(self, method: str, params: list[Any]) -> Any:
        return self.batch([(method, params)])[0]

    def batch(self, calls: list[tuple[str, list[Any]]], *, allow_errors: bool = False) -> list[Any]:
        body = []
        for method, params in calls:
            self._id += 1
            body.append({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        answers = self.client.post(self.url, json=body).json()
        by_id = {a["id"]: a for a in answers}
        results = []
        for request in body:
            answer = by_id[request["id"]]
            if "error" in answer and not allow_errors:
                raise RuntimeError(f"{request['method']}: {answer['error']}")
            results.append(answer.get("result", answer.get("error")))
        return results

    def close(self) -> None:
        self.client.close()


class Stack:
    """One anvil on a free port (automine) with the contracts deployed by `ape run deploy`
    into a temporary registry; funding and transaction helpers for derived signer accounts."""

    def __init__(self, workdir: Path, *, challenge_window: int = 600, epoch_length: int = 3600):
        self.workdir = workdir
        self.challenge_window = challenge_window
        self.devnet = Devnet(port=free_port(), run_dir=workdir)
        self.registry_path = workdir / "registry.json"
        self.rpc: Rpc | None = None
        self._epoch_length = epoch_length
        self._gateway = None
        self._accounts: dict[str, Any] = {}  # key → eth-account LocalAccount (parsing a key costs)

    def start(self, progress=print) -> Stack:
        from web3 import HTTPProvider, Web3

        from marketplace.deploy import run_deploy_script
        from marketplace.registry import Registry

        self.devnet.start()
        progress(f"anvil at {self.devnet.url} (pid {self.devnet.running_pid()}); deploying with `ape run deploy`")
        run_deploy_script(self.devnet.url, self.registry_path, "--challenge-window", str(self.challenge_window),
                          "--epoch-length", str(self._epoch_length))
        self.w3 = Web3(HTTPProvider(self.devnet.url, request_kwargs={"timeout": 120}))
        self.rpc = Rpc(self.devnet.url)
        self.chain_id = self.w3.eth.chain_id
        registry = Registry.load(self.registry_path)

        def contract(name: str):
            deployment = registry.get(self.chain_id, name)
            return self.w3.eth.contract(address=Web3.to_checksum_address(deployment.address), abi=deployment.abi)

        self.market = contract("ComputeMarket")
        self.staking = contract("ProviderStaking")
        self.usdc = contract("MockUSDC")
        self.anvil_version = self.rpc.call("web3_clientVersion", [])
        return self

    @property
    def gateway(self):  # the service's own batched reads (ChainGateway), for the bench's lookups
        from marketplace.chain.gateway import ChainGateway
        from marketplace.registry import Registry

        if self._gateway is None:
            self._gateway = ChainGateway(self.devnet.url, Registry.load(self.registry_path))
        return self._gateway

    @property
    def anvil_pid(self) -> int | None:
        return self.devnet.running_pid()

    def close(self) -> None:
        if self.rpc is not None:
            self.rpc.close()
        self.devnet.stop()

    # ── chain time ──

    def now(self) -> int:
        return int(self.rpc.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    def warp(self, seconds: int) -> None:
        self.rpc.call("evm_increaseTime", [seconds])
        self.rpc.call("evm_mine", [])

    # ── transactions from derived accounts, many at once ──

    def raw_tx(self, key: str, nonce: int, to: str, data: str, gas: int) -> tuple[str, str]:
        tx = {"to": to, "data": data, "value": 0, "gas": gas, "nonce": nonce, "chainId": self.chain_id,
              "maxFeePerGas": 100 * GWEI, "maxPriorityFeePerGas": 1 * GWEI, "type": 2}
        account = self._accounts.get(key) or self._accounts.setdefault(key, Account.from_key(key))
        signed = account.sign_transaction(tx)
        return "0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex()

    def send_all(self, raws: list[tuple[str, str]], *, chunk: int = 200, timeout: float = 300) -> list[dict]:
        """Broadcast signed transactions in JSON-RPC batches, wait for every receipt, and fail
        loudly if any reverted. Returns the receipts (in the order given)."""
        for start in range(0, len(raws), chunk):
            self.rpc.batch([("eth_sendRawTransaction", [raw]) for raw, _ in raws[start:start + chunk]])
        hashes = [tx_hash for _, tx_hash in raws]
        receipts: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        while len(receipts) < len(hashes):
            missing = [h for h in hashes if h not in receipts]
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]
                for tx_hash, receipt in zip(part, self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in part]),
                                            strict=True):
                    if receipt is not None:
                        receipts[tx_hash] = receipt
            if len(receipts) < len(hashes):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(hashes) - len(receipts)} transactions not mined in {timeout:.0f}s")
                time.sleep(0.05)
        failed = [h for h in hashes if int(receipts[h]["status"], 16) != 1]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(hashes)} transactions reverted, e.g. {failed[0]}")
        return [receipts[h] for h in hashes]

    def fund(self, trainers: list[Signer], providers: list[Signer], *, deposit: int, stake: int) -> None:
        """ETH by anvil_setBalance; mUSDC by its public faucet `mint`; then approve + deposit into
        the market vault (trainers) or approve + stake in ProviderStaking (providers)."""
        self.rpc.batch([("anvil_setBalance", [s.address, hex(10**21)]) for s in trainers + providers])
        usdc, market, staking = self.usdc, self.market, self.staking
        raws = []
        for signer, amount, spender, call in (
            [(t, deposit, market.address, market.encode_abi("deposit", [usdc.address, deposit])) for t in trainers]
            + [(p, stake, staking.address, staking.encode_abi("stake", [usdc.address, stake])) for p in providers]
        ):
            raws.append(self.raw_tx(signer.key, 0, usdc.address, usdc.encode_abi("mint", [signer.address, amount]),
                                    120_000))
            raws.append(self.raw_tx(signer.key, 1, usdc.address, usdc.encode_abi("approve", [spender, amount]), 80_000))
            raws.append(self.raw_tx(signer.key, 2, spender, call, 250_000))
        self.send_all(raws)


# ───────────────────────────── the service ─────────────────────────────


def wait_healthy(server: Any, what: str, timeout: float) -> None:
    """Until `server.url`/health answers 200; stops the server and raises if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.process.returncode}; see {server.log_path}:\n"
                               + server.log_path.read_text(errors="replace")[-2000:])
        with contextlib.suppress(httpx.HTTPError):  # not listening yet
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    server.stop()
    raise TimeoutError(f"{what} did not answer on {server.url} within {timeout:.0f}s")


class ServiceProcess:
    """`python -m marketplace serve` as a child process (its own session, so Ctrl-C in the
    terminal reaches only the bench, which then stops it)."""

    def __init__(self, stack: Stack, workdir: Path, name: str, **settings: Any):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = workdir / f"{name}.db"
        self.log_path = workdir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
        env.update({
            "MARKET_DATABASE_URL": f"sqlite:///{self.db_path}",
            "MARKET_RPC_URL": stack.devnet.url,
            "MARKET_REGISTRY": str(stack.registry_path),
            "MARKET_MATCHER_PRIVATE_KEY": ANVIL_KEYS[MATCHER],
            "MARKET_VERIFIER_PRIVATE_KEY": ANVIL_KEYS[DEPLOYER],
            "MARKET_VERIFIER_SAMPLE_RATE": "0",
            "MARKET_CONFIRMATIONS": "0",
            "MARKET_API_HOST": "127.0.0.1",
            # Every request comes from 127.0.0.1: the per-IP bucket would otherwise cap the run at
            # 600 writes a minute (the default) and measure 429s.
            "MARKET_RATE_LIMIT_PER_MINUTE": str(10**9),
        })
        env.update({f"MARKET_{k.upper()}": str(v) for k, v in settings.items()})
        self.env = env
        self.settings = {k: v for k, v in env.items() if k.startswith("MARKET_") and "KEY" not in k}
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 90) -> ServiceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "marketplace", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"],
            cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        wait_healthy(self, "marketplace serve", timeout)
        return self

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=30).json()

    def wait_indexed(self, timeout: float = 120) -> None:
        """Until the indexer has caught up with the chain head (old blocks are not timed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.health()
            if health["indexed_block"] is not None and health["indexed_block"] >= health["head_block"]:
                return
            time.sleep(0.2)
        raise TimeoutError(f"indexer did not catch up in {timeout:.0f}s: {self.health()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class UvicornApp:
    """Any ASGI app `module:attr` under uvicorn on 127.0.0.1 (the trivial baseline endpoint)."""

    def __init__(self, app: str, workdir: Path, *, workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.workers = workers
        self.log_path = workdir / "trivial.log"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 30) -> UvicornApp:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning", "--workers", str(self.workers)],
            cwd=HERE, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        wait_healthy(self, "the trivial app", timeout)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: workers included
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds of a process and its direct children (uvicorn --workers)."""
    if pid is None:
        return 0.0
    total = proc_cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(proc_cpu_seconds(int(c)) for c in children)


# ───────────────────────────── BENCHMARKS.md ─────────────────────────────


def splice_section(document: str, section: str) -> str:
    """Replace the bench:service section (markers included) with `section`; when absent, insert it
    right before the matching section (after the gas section), else append. Everything outside
    the markers is kept byte for byte."""
    section = section.rstrip("\n")
    if not (section.startswith(START_MARKER) and section.endswith(END_MARKER)):
        raise ValueError("the section must be wrapped in the bench:service markers")
    start = document.find(START_MARKER)
    if start != -1:
        end = document.find(END_MARKER, start)
        if end == -1:
            raise ValueError(f"BENCHMARKS.md has {START_MARKER} but no {END_MARKER}; fix it by hand")
        return document[:start] + section + document[end + len(END_MARKER):]
    for anchor in ("<!-- bench:matching:start -->", "## Matching engine"):
        at = document.find(anchor)
        if at != -1:
            return document[:at] + section + "\n\n" + document[at:]
    if document and not document.endswith("\n"):
        document += "\n"
    return f"{document}\n{section}\n"


def write_section(path: Path, section: str) -> None:
    document = path.read_bytes().decode("utf-8") if path.exists() else "# Benchmarks\n"
    updated = splice_section(document, section)
    tmp = path.with_name(f".{path.name}.service.tmp")
    tmp.write_bytes(updated.encode("utf-8"))
    tmp.replace(path)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]
