"""The provider agent (`provider serve`): it does the work the provider sold.

Each pass (`ProviderAgent.tick`):

  1. lists the provider's open and running deals from the service (GET /deals?provider=…), plus
     every deal its own state file still tracks;
  2. re-reads each deal on chain (getDeal) — the chain, not the service or the state file,
     decides what happens next;
  3. Open, before its start deadline → fetches the job spec (GET /jobs/{hash}), checks it is in
     the catalogue, sends startDeal and launches the job in a subprocess with CPU-time,
     wall-time and memory limits;
  4. Running → watches the job; when it ends, reports completeDeal(usedSeconds, resultHash),
     with usedSeconds = the job's wall time, rounded up, never more than booked (nor than the
     chain's time since start: the contract enforces that, and the agent trims to it);
  5. Aborted / disputed / settled / … while a job still runs → stops the job.

Restart safety: before each chain write and after each step the agent records the deal's phase
in a small JSON file keyed by chain id and deal id (atomic rename). Jobs run in their own
session with their output in a file, so they survive an agent crash; after a restart the agent
adopts a still-running job (same pid and start time), or reads the result a finished one left,
and only re-runs a job whose process is gone without a result. startDeal is never sent for a
deal the chain already shows as started.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from web3.exceptions import Web3RPCError

from marketplace.chain.gateway import ChainGateway, ChainUnavailable
from marketplace.chain.wallet import TransactionReverted, Wallet
from marketplace.client import MarketClient
from marketplace.errors import MarketError, NotFound
from marketplace.jobs import JobSpecError, validate
from marketplace.signing import DealStatus

ZERO_HASH = "0x" + "00" * 32
SECONDS_PER_HOUR = 3600
# How long past the job's end the agent waits for the chain's clock to reach the job's wall time
# before it reports only what the chain will accept (a devnet with a frozen clock never catches up).
CHAIN_CLOCK_GRACE_SECONDS = 5.0
ONCE_REPORT_RETRIES = 6  # `serve --once`: extra passes to retry a report that failed to send

Log = Callable[[str, dict[str, Any]], None]


def detect_device() -> str:
    """The GPU this machine would run jobs on (first `nvidia-smi` GPU), else 'cpu'."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "cpu"
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "cpu"
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return f"gpu:{names[0]}" if out.returncode == 0 and names else "cpu"


# ───────────────────────────── persistent state ─────────────────────────────


@dataclass
class DealRecord:
    """What the agent knows about one deal (the chain stays the authority)."""

    chain_id: int
    deal_id: int
    provider: str
    phase: str = "new"  # new → starting → running → finished → done | missed | skipped | stopped
    fingerprint: str | None = None  # the deal's fixed terms: a reset devnet reuses deal ids for other deals
    job_spec_hash: str | None = None
    start_tx: str | None = None
    started_at: int | None = None  # chain time (DealStarted)
    pid: int | None = None
    pid_started: float | None = None  # the process's create time: guards against pid reuse
    job_started_wall: float | None = None
    runs: int = 0
    result_hash: str | None = None
    used_seconds: int | None = None
    metrics: dict[str, Any] | None = None
    device: str | None = None
    complete_tx: str | None = None
    report_after: float | None = None  # wall time: wait this long for the chain clock before trimming usage
    error: str | None = None
    note: str | None = None
    updated: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return f"{self.chain_id}:{self.deal_id}"

    @property
    def active(self) -> bool:
        return self.phase in {"new", "starting", "running", "finished"}


class AgentState:
    """`{chain_id}:{deal_id}` → DealRecord in one JSON file, rewritten atomically on every change."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.records: dict[str, DealRecord] = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
            except json.JSONDecodeError as exc:
                raise MarketError(f"agent state file {self.path} is corrupt ({exc}); move it aside to start over") from None
            for key, value in raw.get("deals", {}).items():
                self.records[key] = DealRecord(**value)

    def get(self, chain_id: int, deal_id: int) -> DealRecord | None:
        return self.records.get(f"{chain_id}:{deal_id}")

    def active(self, chain_id: int, provider: str) -> list[DealRecord]:
        return [r for r in self.records.values()
                if r.chain_id == chain_id and r.provider.lower() == provider.lower() and r.active]

    def save(self, record: DealRecord) -> None:
        record.updated = time.time()
        with self._lock:
            self.records[record.key] = record
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".agent-", suffix=".json")
            with os.fdopen(fd, "w") as handle:
                json.dump({"version": 1, "deals": {k: asdict(v) for k, v in self.records.items()}}, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)


# ───────────────────────────── job processes ─────────────────────────────


class JobFailed(Exception):
    """A job exited without a result (crash, limit hit, or killed)."""


class JobProcess:
    """A catalogue job in its own process (own session, so it outlives an agent crash), with
    RLIMIT_CPU / RLIMIT_AS limits like marketplace.jobs.run_isolated, output to a file."""

    def __init__(self, pid: int, create_time: float, out_path: Path, err_path: Path, started_wall: float,
                 timeout: float, popen: subprocess.Popen | None = None):
        self.pid = pid
        self.create_time = create_time
        self.out_path = out_path
        self.err_path = err_path
        self.started_wall = started_wall
        self.timeout = timeout
        self.popen = popen
        self.killed = False

    @classmethod
    def launch(cls, spec: dict[str, Any], *, out_path: Path, err_path: Path, timeout: float,
               memory_mb: int) -> JobProcess:
        cpu = max(1, int(timeout) + 1)

        def limits() -> None:  # in the child, before exec
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))

        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "marketplace.jobs", "run", json.dumps(spec)],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, preexec_fn=limits, start_new_session=True,
                env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
            )
        started = time.time()
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            create_time = started
        return cls(popen.pid, create_time, out_path, err_path, started, timeout, popen)

    @classmethod
    def adopt(cls, record: DealRecord, *, out_path: Path, err_path: Path, timeout: float) -> JobProcess | None:
        """The job a previous agent process started, if that very process is still alive."""
        if not record.pid or record.pid_started is None:
            return None
        try:
            process = psutil.Process(record.pid)
            if abs(process.create_time() - record.pid_started) > 1.0 or process.status() == psutil.STATUS_ZOMBIE:
                return None
            if "marketplace.jobs" not in " ".join(process.cmdline()):
                return None
        except psutil.Error:
            return None
        return cls(record.pid, record.pid_started, out_path, err_path, record.job_started_wall or time.time(), timeout)

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            process = psutil.Process(self.pid)
            return abs(process.create_time() - self.create_time) <= 1.0 and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def overdue(self) -> bool:
        return time.time() - self.started_wall > self.timeout

    def kill(self) -> None:
        self.killed = True
        if not self.running():
            return
        try:
            os.killpg(self.pid, 9)  # its own session: the job and anything it spawned
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
        if self.popen is not None:
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def result(self) -> tuple[str, dict[str, Any], float]:
        """(result hash, metrics, wall seconds) of a finished job; JobFailed if it left no result."""
        return read_result(self.out_path, self.err_path, self.started_wall,
                           self.popen.returncode if self.popen is not None else None)


def read_result(out_path: Path, err_path: Path, started_wall: float | None,
                returncode: int | None = None) -> tuple[str, dict[str, Any], float]:
    try:
        data = json.loads(out_path.read_text())
        result_hash = data["result_hash"]
        finished = out_path.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        tail = ""
        try:
            tail = (err_path.read_text(errors="replace").strip().splitlines() or [""])[-1]
        except OSError:
            pass
        code = f"exit {returncode}" if returncode is not None else "no result"
        raise JobFailed(f"job failed ({code}){': ' + tail if tail else ''}") from None
    wall = max(0.0, finished - started_wall) if started_wall else float(data.get("seconds", 0.0))
    return result_hash, data.get("metrics", {}), wall


# ───────────────────────────── the agent ─────────────────────────────


class ProviderAgent:
    def __init__(self, *, api: MarketClient, wallet: Wallet, state: AgentState, work_dir: Path,
                 memory_mb: int = 1024, max_parallel: int = 2, log: Log | None = None,
                 device: str | None = None):
        self.api = api
        self.wallet = wallet
        self.gateway: ChainGateway = wallet.gateway
        self.state = state
        self.work_dir = Path(work_dir)
        self.memory_mb = memory_mb
        self.max_parallel = max_parallel
        self.log: Log = log or (lambda event, data: None)
        self.device = device or detect_device()
        self.jobs: dict[int, JobProcess] = {}
        self._said: set[tuple[int, str]] = set()

    @property
    def provider(self) -> str:
        return self.wallet.address

    @property
    def chain_id(self) -> int:
        return self.gateway.chain_id

    # ───────────── loop ─────────────

    def run(self, *, stop: threading.Event | None = None, poll_seconds: float = 2.0, once: bool = False) -> None:
        """Pass after pass until `stop` is set; `once`: one pass, then wait for the jobs it runs."""
        stop = stop or threading.Event()
        self.log("agent_started", {"provider": self.provider, "chain_id": self.chain_id, "device": self.device,
                                   "state_file": str(self.state.path)})
        passes = report_retries = 0
        while not stop.is_set():
            try:
                self.tick()
            except (MarketError, ChainUnavailable, requests.RequestException, Web3RPCError) as exc:
                if passes == 0:
                    raise  # not even one pass: the caller reports it (service or node down)
                self.log("error", {"message": getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"})
            passes += 1
            if once and not self.jobs:
                # The jobs are done; their reports may still wait for the chain's clock or retry a
                # failed send (a few passes), so that `--once` ends with the work reported.
                unreported = self._unreported()
                if not unreported or (report_retries >= ONCE_REPORT_RETRIES
                                      and not any(self._waiting_for_chain_clock(r) for r in unreported)):
                    break
                report_retries += 1
            stop.wait(poll_seconds if not once else min(poll_seconds, 0.5))
        for deal_id in self.jobs:
            self.log("job_left_running", {"deal_id": deal_id, "pid": self.jobs[deal_id].pid})
        for record in self._unreported() if once else ():
            self.log("report_pending", {"deal_id": record.deal_id, "reason": "completeDeal not sent yet; "
                                        "the next `provider serve` pass retries it"})

    def tick(self) -> None:
        deal_ids = set(self.jobs)
        deal_ids |= {r.deal_id for r in self.state.active(self.chain_id, self.provider)}
        for status in ("open", "running"):
            offset = 0
            while True:
                page = self.api.deals(provider=self.provider, status=status, limit=200, offset=offset)
                deal_ids |= {d.deal_id for d in page.items}
                offset += len(page.items)
                if not page.items or offset >= page.total:
                    break
        for deal_id in sorted(deal_ids):
            try:
                self.reconcile(deal_id)
            except MarketError as exc:  # one deal's trouble must not stop the others
                self.log("error", {"deal_id": deal_id, "message": exc.message})

    # ───────────── one deal ─────────────

    def reconcile(self, deal_id: int) -> None:
        deal = self.gateway.get_deal(deal_id)
        status = DealStatus(deal["status"])
        record = self.state.get(self.chain_id, deal_id)
        if status == DealStatus.NONE or deal["provider"].lower() != self.provider.lower():
            if record is not None and record.active:  # remembered from a chain that was reset
                record.phase, record.note = "stopped", "no such deal of this provider on chain any more"
                self.state.save(record)
            return
        fingerprint = f"{deal['buyer']}:{deal['startDeadline']}:{deal['bookedHours']}:{deal['pricePerGpuHour']}"
        if record is not None and record.fingerprint not in (None, fingerprint):
            self.log("stale_record", {"deal_id": deal_id, "note": "a different deal had this id (chain reset?)"})
            record = None
        if record is None:
            record = DealRecord(chain_id=self.chain_id, deal_id=deal_id, provider=self.provider,
                                fingerprint=fingerprint)
        record.fingerprint = fingerprint
        if status == DealStatus.OPEN:
            self._open(deal_id, deal, record)
        elif status == DealStatus.RUNNING:
            self._running(deal_id, deal, record)
        else:
            self._ended(deal_id, status, record)

    def _open(self, deal_id: int, deal: dict[str, Any], record: DealRecord) -> None:
        if record.phase in {"missed", "skipped"}:
            return
        now = self.gateway.timestamp()
        if now > deal["startDeadline"]:
            record.phase, record.note = "missed", f"start deadline {deal['startDeadline']} passed (chain time {now})"
            self.state.save(record)
            self.log("deal_missed", {"deal_id": deal_id, "start_deadline": deal["startDeadline"]})
            return
        spec = self._job_spec(deal_id, record)
        if spec is None:
            return
        if len(self.jobs) >= self.max_parallel:
            self._say_once(deal_id, "waiting", {"reason": f"{len(self.jobs)} jobs already running"})
            return
        record.phase = "starting"
        self.state.save(record)  # before the transaction: a crash from here re-checks the chain
        try:
            sent = self.wallet.send(self.gateway.market.functions.startDeal(deal_id), action=f"startDeal({deal_id})")
        except TransactionReverted as exc:
            self.log("error", {"deal_id": deal_id, "message": exc.message})
            if exc.error_name == "ComputeMarketStartDeadlinePassed":
                record.phase = "missed"
                self.state.save(record)
            return
        started = self.gateway.get_deal(deal_id)
        record.phase, record.start_tx, record.started_at = "running", sent.tx_hash, started["startedAt"]
        self.state.save(record)
        self.log("deal_started", {"deal_id": deal_id, "tx": sent.tx_hash, "started_at": started["startedAt"],
                                  "job": spec.get("type")})
        self._launch(deal_id, started, record, spec)

    def _running(self, deal_id: int, deal: dict[str, Any], record: DealRecord) -> None:
        job = self.jobs.get(deal_id)
        if job is None and record.phase == "finished":
            self._complete(deal_id, deal, record)
            return
        if job is None:
            job = JobProcess.adopt(record, out_path=self._out(deal_id), err_path=self._err(deal_id),
                                   timeout=self._timeout(deal))
            if job is not None:
                self.jobs[deal_id] = job
                self.log("job_adopted", {"deal_id": deal_id, "pid": job.pid})
        if job is None:
            if record.phase == "running" and record.pid and self._out(deal_id).exists():
                # The job ended while the agent was down: use what it left, if anything.
                try:
                    self._finish(deal_id, record, *read_result(self._out(deal_id), self._err(deal_id),
                                                              record.job_started_wall))
                    self._complete(deal_id, deal, record)
                    return
                except JobFailed:
                    pass
            spec = self._job_spec(deal_id, record)
            if spec is None:
                return
            if record.started_at is None:
                record.started_at = deal["startedAt"]
            # runs > 0: the agent stopped while the job ran and the process is gone without a result.
            self.log("job_rerun" if record.runs else "job_late_start", {"deal_id": deal_id, "runs_before": record.runs})
            self._launch(deal_id, deal, record, spec)
            return
        if job.running():
            if job.overdue():
                job.kill()
                self.jobs.pop(deal_id, None)
                booked = deal["bookedHours"] * SECONDS_PER_HOUR
                self._fail(deal_id, record, f"job exceeded the booked {booked}s and was stopped",
                           used=math.ceil(min(time.time() - job.started_wall, booked)))
                self._complete(deal_id, deal, record)
            return
        self.jobs.pop(deal_id, None)
        try:
            self._finish(deal_id, record, *job.result())
        except JobFailed as exc:
            self._fail(deal_id, record, str(exc), used=math.ceil(time.time() - job.started_wall))
        self._complete(deal_id, deal, record)

    def _ended(self, deal_id: int, status: DealStatus, record: DealRecord) -> None:
        job = self.jobs.pop(deal_id, None)
        if job is None and record.active and record.pid:
            job = JobProcess.adopt(record, out_path=self._out(deal_id), err_path=self._err(deal_id), timeout=0)
        if job is not None and job.running():
            job.kill()
            self.log("job_stopped", {"deal_id": deal_id, "status": status.name.lower(), "pid": job.pid})
        if record.active or record.phase == "new":
            record.phase = "done" if status in (DealStatus.COMPLETED, DealStatus.SETTLED) else "stopped"
            record.note = f"deal is {status.name.lower()} on chain"
            self.state.save(record)
            if record.phase == "stopped":
                self.log("deal_ended", {"deal_id": deal_id, "status": status.name.lower()})

    # ───────────── steps ─────────────

    def _job_spec(self, deal_id: int, record: DealRecord) -> dict[str, Any] | None:
        deal_row = None
        try:
            deal_row = self.api.deal(deal_id, live=False)
            spec = self.api.job_spec(deal_row.job_spec_hash)
            validate(spec)
        except NotFound:
            reason = ("the service does not know this deal yet" if deal_row is None
                      else f"no job spec {deal_row.job_spec_hash} at the service")
            self._say_once(deal_id, "no_job_spec", {"reason": reason})
            if deal_row is not None:
                record.phase, record.note = "skipped", reason
                self.state.save(record)
            return None
        except JobSpecError as exc:
            record.phase, record.note = "skipped", f"job not in this agent's catalogue: {exc}"
            self.state.save(record)
            self.log("deal_skipped", {"deal_id": deal_id, "reason": record.note})
            return None
        record.job_spec_hash = deal_row.job_spec_hash
        return spec

    def _launch(self, deal_id: int, deal: dict[str, Any], record: DealRecord, spec: dict[str, Any]) -> None:
        job = JobProcess.launch(spec, out_path=self._out(deal_id), err_path=self._err(deal_id),
                                timeout=self._timeout(deal), memory_mb=self.memory_mb)
        self.jobs[deal_id] = job
        record.phase, record.pid, record.pid_started = "running", job.pid, job.create_time
        record.job_started_wall, record.runs, record.device = job.started_wall, record.runs + 1, self.device
        self.state.save(record)
        self.log("job_launched", {"deal_id": deal_id, "pid": job.pid, "job": spec.get("type"), "device": self.device,
                                  "timeout_seconds": job.timeout, "memory_mb": self.memory_mb})

    def _finish(self, deal_id: int, record: DealRecord, result_hash: str, metrics: dict[str, Any], wall: float) -> None:
        record.phase, record.result_hash, record.metrics = "finished", result_hash, metrics
        record.used_seconds = max(1, math.ceil(wall))
        record.error = None
        self.state.save(record)
        self.log("job_finished", {"deal_id": deal_id, "result_hash": result_hash, "seconds": round(wall, 3),
                                  "metrics": metrics, "device": record.device})

    def _fail(self, deal_id: int, record: DealRecord, message: str, *, used: int) -> None:
        record.phase, record.result_hash, record.used_seconds, record.error = "finished", ZERO_HASH, max(1, used), message
        self.state.save(record)
        self.log("job_failed", {"deal_id": deal_id, "error": message})

    def _complete(self, deal_id: int, deal: dict[str, Any], record: DealRecord) -> None:
        booked = deal["bookedHours"] * SECONDS_PER_HOUR
        used = min(max(record.used_seconds or 1, deal["withdrawnSeconds"]), booked)
        market = self.gateway.market.functions
        result = bytes.fromhex((record.result_hash or ZERO_HASH)[2:])
        for _ in range(2):
            try:
                sent = self.wallet.send(market.completeDeal(deal_id, used, result), action=f"completeDeal({deal_id})")
                break
            except TransactionReverted as exc:
                chain_elapsed = int(exc.error_args.get("maxSeconds", used)) if exc.error_name == "ComputeMarketInvalidUsage" else used
                if chain_elapsed < used:
                    # The chain's clock is behind the job's wall time (blocks are stamped in whole seconds):
                    # wait for it rather than give the work away, then settle for what the chain accepts.
                    if record.report_after is None:
                        record.report_after = time.time() + (used - chain_elapsed) + CHAIN_CLOCK_GRACE_SECONDS
                        self.state.save(record)
                        self.log("waiting_for_chain_clock", {"deal_id": deal_id, "used_seconds": used,
                                                             "chain_elapsed": chain_elapsed})
                    if time.time() < record.report_after:
                        return  # reported on a later pass
                    used = max(chain_elapsed, deal["withdrawnSeconds"])
                    continue
                self.log("error", {"deal_id": deal_id, "message": exc.message})
                return  # re-checked next pass (aborted or disputed meanwhile, or a node hiccup)
        else:
            return
        record.phase, record.complete_tx, record.used_seconds = "done", sent.tx_hash, used
        self.state.save(record)
        self.log("deal_completed", {"deal_id": deal_id, "used_seconds": used, "result_hash": record.result_hash,
                                    "tx": sent.tx_hash, "device": record.device})

    # ───────────── helpers ─────────────

    def _timeout(self, deal: dict[str, Any]) -> float:
        return float(deal["bookedHours"] * SECONDS_PER_HOUR)

    def _out(self, deal_id: int) -> Path:
        return self.work_dir / f"{self.chain_id}-{deal_id}.out.json"

    def _err(self, deal_id: int) -> Path:
        return self.work_dir / f"{self.chain_id}-{deal_id}.err"

    def _unreported(self) -> list[DealRecord]:
        """Deals whose job has ended but whose completion is not on chain yet."""
        return [r for r in self.state.active(self.chain_id, self.provider) if r.phase == "finished"]

    @staticmethod
    def _waiting_for_chain_clock(record: DealRecord) -> bool:
        """The report waits for the chain's clock (bounded by CHAIN_CLOCK_GRACE_SECONDS)."""
        return record.report_after is not None and time.time() < record.report_after

    def _say_once(self, deal_id: int, event: str, data: dict[str, Any]) -> None:
        if (deal_id, event) not in self._said:
            self._said.add((deal_id, event))
            self.log(event, {"deal_id": deal_id, **data})
