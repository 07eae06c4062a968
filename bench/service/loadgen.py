"""HTTP load generator (async httpx, N concurrent connections) and the py-spy profile summary."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import REPO_ROOT, percentile

JSON = {"content-type": "application/json"}


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    wall: float
    latencies_ms: list[float]  # of accepted (2xx) requests, sorted
    statuses: Counter
    errors: list[str] = field(default_factory=list)  # first few non-2xx bodies / exceptions
    batch_accepted: int | None = None  # POST /orders/batch: orders accepted, from the bodies

    @property
    def accepted(self) -> int:
        """Orders accepted: 2xx responses, or for batches the orders the bodies say were accepted."""
        if self.batch_accepted is not None:
            return self.batch_accepted
        return sum(n for status, n in self.statuses.items() if isinstance(status, int) and 200 <= status < 300)

    @property
    def rate(self) -> float:
        return self.accepted / self.wall if self.wall else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    @property
    def non_2xx(self) -> int:
        """Requests not answered 2xx, plus orders a batch answer refused."""
        return sum(n for status, n in self.statuses.items() if not (isinstance(status, int) and 200 <= status < 300))


async def _fire(base_url: str, items: list[tuple[str, bytes]], concurrency: int, batch: bool) -> LoadResult:
    accepted = [0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    statuses: Counter = Counter()
    errors: list[str] = []
    queue = iter(items)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for path, body in queue:  # one shared iterator: each item is sent once
                started = time.perf_counter()
                try:
                    response = await client.post(path, content=body, headers=JSON)
                except httpx.HTTPError as exc:
                    statuses[exc.__class__.__name__] += 1
                    if len(errors) < 5:
                        errors.append(f"{exc.__class__.__name__}: {exc}")
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                statuses[response.status_code] += 1
                if 200 <= response.status_code < 300:
                    latencies.append(elapsed)
                    if batch:
                        answer = response.json()
                        accepted[0] += answer["accepted"]
                        for item in answer["results"]:
                            if item["status"] != 201:
                                statuses[f"order {item['status']}"] += 1
                                if len(errors) < 5:
                                    errors.append(f"order {item['status']}: {item['message']}")
                elif len(errors) < 5:
                    errors.append(f"{response.status_code}: {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return LoadResult(len(items), concurrency, wall, latencies, statuses, errors, accepted[0] if batch else None)


def fire(base_url: str, items: list[tuple[str, bytes]], concurrency: int, *, batch: bool = False) -> LoadResult:
    """POST every (path, JSON body) once, `concurrency` requests in flight; time the whole. With
    `batch`, bodies are POST /orders/batch bodies and orders accepted are counted from the answers."""
    return asyncio.run(_fire(base_url, items, concurrency, batch))


# ───────────────────────────── profiling ─────────────────────────────


def find_py_spy() -> str | None:
    for candidate in (os.environ.get("PY_SPY"), REPO_ROOT / ".run" / "bench-tools" / "bin" / "py-spy",
                      REPO_ROOT / ".venv" / "bin" / "py-spy", shutil.which("py-spy")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class PySpy:
    """`py-spy record --gil --nonblocking` on a pid while a block runs; raw (collapsed) stacks.
    --gil samples only the thread holding the GIL, i.e. where the Python CPU time goes."""

    def __init__(self, pid: int, out: Path, rate: int = 200):
        self.pid, self.out, self.rate = pid, out, rate
        self.binary = find_py_spy()
        self.process: subprocess.Popen | None = None
        self.wall = 0.0

    def __enter__(self) -> PySpy:
        if self.binary is None:
            return self
        self.process = subprocess.Popen(
            [self.binary, "record", "--pid", str(self.pid), "--gil", "--nonblocking", "--threads", "--rate",
             str(self.rate), "--format", "raw", "--output", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # attach
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        self.wall = time.perf_counter() - self._started
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# Ordered: the first category whose pattern matches any frame of a stack takes the sample.
CATEGORIES: list[tuple[str, re.Pattern]] = [
    ("background loops (matching window, sender, indexer, keeper)", re.compile(r"market-loops|_run \(marketplace/service")),
    ("ECDSA recover (eth_keys/coincurve)", re.compile(r"recover_message|eth_keys|coincurve")),
    ("EIP-712 hashing (marketplace/signing.py, keccak)", re.compile(r"encode_typed_data|marketplace/signing\.py")),
    ("chain reads: RPC to anvil (web3, requests, urllib3, http.client)", re.compile(r"web3/|requests/|urllib3/|http/client")),
    ("SQLite through SQLAlchemy/SQLModel", re.compile(r"sqlalchemy/|sqlmodel/|sqlite3|alembic/")),
    ("matching engine (marketplace/matching)", re.compile(r"marketplace/matching/")),
    ("order parsing, hashing, other service code", re.compile(r"marketplace/")),
    ("FastAPI/Starlette/pydantic (routing, validation, JSON)", re.compile(r"fastapi/|starlette/|pydantic|anyio/|json/")),
    ("uvicorn/httptools/uvloop/asyncio (HTTP server, event loop)", re.compile(r"uvicorn/|h11/|httptools|uvloop|asyncio/|selectors")),
]


@dataclass
class Profile:
    samples: int
    wall: float
    rate: int
    by_category: list[tuple[str, int]]
    top_self: list[tuple[str, int]]

    @property
    def gil_busy(self) -> float:
        """Share of the wall time some thread of the server held the GIL."""
        return self.samples / (self.rate * self.wall) if self.wall else 0.0


def summarize(path: Path, wall: float, rate: int) -> Profile | None:
    if not path.exists():
        return None
    categories: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for name, pattern in CATEGORIES:
            if any(pattern.search(frame) for frame in frames):
                categories[name] += count
                break
        else:
            categories["other (thread pool, interpreter)"] += count
        leaves[re.sub(r":\d+\)$", ")", frames[-1])] += count
    if total == 0:
        return None
    ordered = [(name, categories[name]) for name, _ in CATEGORIES if categories[name]]
    if categories["other (thread pool, interpreter)"]:
        ordered.append(("other (thread pool, interpreter)", categories["other (thread pool, interpreter)"]))
    return Profile(total, wall, rate, ordered, leaves.most_common(12))
