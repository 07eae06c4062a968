"""Order intake and matchmaking: verify a signed order against the chain, store it, match it,
and write each match with its outbox transaction in the same DB transaction.

The service only proposes: every pairing it sends is re-verified by ComputeMarket (signatures,
prices, capacity, balances), so a bug here can at worst fail to match, never move money wrongly.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from eth_utils import keccak
from sqlalchemy import bindparam, func, insert
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlmodel import Session, select

from marketplace.matching.batch import BatchConfig, BatchResult, clear_batch
from marketplace.matching.continuous import ContinuousMatcher
from marketplace.matching.deals import Deal as MatchedDeal
from marketplace.matching.orders import Offer as MatchingOffer
from marketplace.matching.orders import Request as MatchingRequest
from marketplace.matching.orders import Side
from marketplace.chain.gateway import MARKET, ChainGateway
from marketplace.chain.state_cache import ChainStateCache, IntakeState
from marketplace.chain.sender import TxSender
from marketplace.db.models import JobSpecRow, MatchRow, MatchState, OrderRow, OrderSide, OrderStatus, utcnow
from marketplace.db.session import rows_in, session_scope
from marketplace.errors import Conflict, InsufficientFunds, InvalidInput, InvalidSignature, MarketError, NotFound
from marketplace.matching.errors import MatchingError
from marketplace.signing import CancelOrder, Offer, Request, SettlementRule, SignatureError, checksum_address

log = logging.getLogger(__name__)

BPS = 10_000
_UINT_BITS = {"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64, "uint96": 96, "uint256": 256}


# ───────────────────────────── parsing ─────────────────────────────


def parse_typed(cls: Any, message: dict[str, Any]) -> Any:
    """Strictly typed fields: ints as int or decimal string (no bools, no floats), addresses
    checksummed, bytes32 as 0x + 64 hex. Unknown or missing fields are errors."""
    if not isinstance(message, dict):
        raise InvalidInput(f"{cls.TYPE_NAME} must be an object")
    names = {n for n, _ in cls.TYPES}
    missing = names - set(message) - ({"counter"} if "counter" in names else set())
    if missing:
        raise InvalidInput(f"{cls.TYPE_NAME} is missing {', '.join(sorted(missing))}", field=sorted(missing)[0])
    unknown = set(message) - names
    if unknown:
        raise InvalidInput(f"{cls.TYPE_NAME} has unknown field(s) {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    values: dict[str, Any] = {}
    for name, solidity_type in cls.TYPES:
        if name not in message:
            continue
        values[name] = _parse_field(name, solidity_type, message[name])
    return cls(**values)


def _parse_field(name: str, solidity_type: str, value: Any) -> Any:
    if solidity_type in _UINT_BITS:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InvalidInput(f"{name} must be an integer (or a decimal string), got {type(value).__name__}", field=name)
        if isinstance(value, str):
            if not value.isdigit():
                raise InvalidInput(f"{name} must be a non-negative whole number, got {value!r}", field=name)
            value = int(value)
        if not 0 <= value < 2 ** _UINT_BITS[solidity_type]:
            raise InvalidInput(f"{name} must fit {solidity_type} (0 ≤ {name} < 2^{_UINT_BITS[solidity_type]})", field=name)
        return value
    if solidity_type == "bool":
        if not isinstance(value, bool):
            raise InvalidInput(f"{name} must be true or false", field=name)
        return value
    if solidity_type == "address":
        if not isinstance(value, str) or len(value) != 42 or not value.startswith("0x"):
            raise InvalidInput(f"{name} must be a 0x-prefixed 20-byte address", field=name)
        try:
            return checksum_address(value)
        except ValueError:
            raise InvalidInput(f"{name} must be a 0x-prefixed 20-byte address", field=name) from None
    if solidity_type == "bytes32":
        if not isinstance(value, str) or len(value) != 66 or not value.startswith("0x"):
            raise InvalidInput(f"{name} must be 0x followed by 64 hex digits", field=name)
        try:
            bytes.fromhex(value[2:])
        except ValueError:
            raise InvalidInput(f"{name} must be 0x followed by 64 hex digits", field=name) from None
        return value.lower()
    if solidity_type == "string":
        if not isinstance(value, str) or len(value) > 300:
            raise InvalidInput(f"{name} must be a string of at most 300 characters", field=name)
        return value
    raise AssertionError(solidity_type)


def parse_signature(signature: Any) -> bytes:
    if not isinstance(signature, str) or not signature.startswith("0x"):
        raise InvalidInput("signature must be 0x-prefixed hex", field="signature")
    try:
        raw = bytes.fromhex(signature[2:])
    except ValueError:
        raise InvalidInput("signature must be 0x-prefixed hex", field="signature") from None
    if len(raw) != 65:
        raise InvalidInput(f"signature must be 65 bytes, got {len(raw)}", field="signature")
    return raw


def message_json(order: Offer | Request) -> str:
    """Typed-data message with big ints as decimal strings (JSON-safe, exact)."""
    return json.dumps(
        {n: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for n, v in order.message().items()},
        sort_keys=True,
    )


def order_from_row(row: OrderRow) -> Offer | Request:
    cls = Offer if row.side == OrderSide.OFFER else Request
    return parse_typed(cls, json.loads(row.payload))


def to_matching(order: Offer | Request, order_hash: str) -> MatchingOffer | MatchingRequest:
    """The matching engine's view of a signed order (same fields, snake_case)."""
    if isinstance(order, Offer):
        return MatchingOffer(
            order_id=order_hash, provider=order.provider, gpu_model=order.gpuModel, gpu_count=order.gpuCount,
            vram_gb=order.vramGb, region=order.region, green_energy=order.greenEnergy, token=order.token,
            price_per_gpu_hour=order.pricePerGpuHour, min_hours=order.minHours, max_hours=order.maxHours,
            capacity_gpu_hours=order.capacityGpuHours, available_until=order.availableUntil, expiry=order.expiry,
            salt=order.salt,
        )
    return MatchingRequest(
        order_id=order_hash, trainer=order.trainer, gpu_model=order.gpuModel, gpu_count=order.gpuCount,
        min_vram_gb=order.minVramGb, region_mask=order.regionMask, green_only=order.greenOnly, token=order.token,
        max_price_per_gpu_hour=order.maxPricePerGpuHour, hours=order.totalHours, min_hours=order.minHours,
        start_by=order.startBy, expiry=order.expiry, job_spec_hash=order.jobSpecHash, salt=order.salt,
    )


def job_spec_hash(spec: dict[str, Any]) -> str:
    """keccak256 of the canonical JSON of a job spec: what a Request's jobSpecHash commits to."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return "0x" + keccak(text=canonical).hex()


# ───────────────────────────── the book ─────────────────────────────


@dataclass
class Submitted:
    order_hash: str
    matches: list[MatchRow]
    row: dict[str, Any]  # the order's `orders` row as committed (what GET /orders/{hash} shows)


@dataclass(frozen=True)
class SignedOrder:
    """A well-typed order whose signature recovers to its owner (nothing checked against the chain yet)."""

    side: OrderSide
    order: Offer | Request
    order_hash: str
    owner: str
    signature: str
    matching_order: MatchingOffer | MatchingRequest
    payload: str  # message_json(order): what its `orders` row stores, built here (in a worker, if any)


def signed_order(side: OrderSide, message: dict[str, Any], signature: str, chain_id: int, market: str) -> SignedOrder:
    """Types, EIP-712 hash and signature of one order: pure work, no I/O (runs in worker processes too)."""
    cls = Offer if side == OrderSide.OFFER else Request
    order = parse_typed(cls, message)
    sig = parse_signature(signature)
    order_hash = "0x" + order.struct_hash().hex()
    owner = order.provider if isinstance(order, Offer) else order.trainer
    try:
        matching_order = to_matching(order, order_hash)
    except MatchingError as exc:
        raise InvalidInput(str(exc), field=getattr(exc, "field", None)) from None
    if _signer(order, sig, chain_id, market) != owner:
        raise InvalidSignature(
            f"signature does not recover to the order's {'provider' if side == OrderSide.OFFER else 'trainer'} {owner} "
            f"for chain {chain_id} and market {market}"
        )
    return SignedOrder(side, order, order_hash, owner, "0x" + sig.hex(), matching_order, message_json(order))


def _signed_or_error(side: OrderSide, message: Any, signature: Any, chain_id: int, market: str
                     ) -> SignedOrder | MarketError:
    try:
        return signed_order(side, message, signature, chain_id, market)
    except MarketError as exc:
        return exc


@dataclass(frozen=True)
class VerifiedOrder(SignedOrder):
    """A signed order that also passed the chain checks: every check that needs no lock."""

    now: int
    job_spec: dict[str, Any] | None

    def row(self, seq: int, created_at: datetime) -> dict[str, Any]:
        """Its `orders` row, as the values of a bulk insert (building ORM objects cost more than the insert)."""
        order = self.order
        is_offer = isinstance(order, Offer)
        return dict(
            hash=self.order_hash, side=self.side, owner=self.owner, token=order.token, gpu_model=order.gpuModel,
            price=str(order.pricePerGpuHour if is_offer else order.maxPricePerGpuHour),
            capacity=order.capacityGpuHours if is_offer else order.totalHours, filled=0, reserved=0,
            expiry=order.expiry, status=OrderStatus.OPEN, seq=seq, payload=self.payload,
            signature=self.signature, created_at=created_at,
        )


def _insert_orders(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """The `orders` rows in one executemany at the driver. The Core insert ran every value of
    every row through SQLAlchemy's parameter processing (a seventh of the book's CPU under batch
    intake); here only the columns that have a bind processor (side, status, created_at) are
    converted, once per distinct value, by the same processors the Core insert uses."""
    sql, keys, processors, positional = _orders_insert(connection.dialect)
    converted: dict[tuple[str, Any], Any] = {}
    params: list[Any] = []
    for row in rows:
        values = dict(row)
        for key, process in processors:
            value = values[key]
            try:
                values[key] = converted[key, value]
            except KeyError:
                values[key] = converted[key, value] = process(value)
        params.append(tuple(values[key] for key in keys) if positional else values)
    connection.exec_driver_sql(sql, params)


# Which of a batch's hashes are stored already. Built once: building the IN clause of 100 literals
# per batch cost more than running it.
_KNOWN_HASHES = (select(OrderRow.__table__.c.hash)
                 .where(OrderRow.__table__.c.hash.in_(bindparam("hashes", expanding=True))))


@lru_cache(maxsize=4)
def _orders_insert(dialect: Dialect) -> tuple[str, tuple[str, ...], list[tuple[str, Any]], bool]:
    table = OrderRow.__table__
    compiled = insert(table).compile(dialect=dialect, column_keys=[column.key for column in table.columns])
    processors = [(column.key, process) for column in table.columns
                  if (process := column.type.dialect_impl(dialect).bind_processor(dialect)) is not None]
    keys = tuple(compiled.positiontup) if compiled.positional else tuple(column.key for column in table.columns)
    return compiled.string, keys, processors, compiled.positional


class _PendingOrder:
    """A verified order waiting to be accepted by whichever thread holds the book next."""

    __slots__ = ("verified", "done", "result", "error")

    def __init__(self, verified: VerifiedOrder):
        self.verified = verified
        self.done = False  # set, like the result, by the book's lock holder; read under that lock
        self.result: Submitted | MarketError | None = None
        self.error: BaseException | None = None


def signer_of(message: Any, signature: bytes, gateway: ChainGateway) -> str:
    """Who signed an EIP-712 message for this chain and market; 401 for a signature nobody can own."""
    return _signer(message, signature, gateway.chain_id, gateway.market.address)


def _signer(message: Any, signature: bytes, chain_id: int, market: str) -> str:
    try:
        return message.recover(signature, chain_id, market)
    except SignatureError as exc:
        raise InvalidSignature(f"signature is not valid: {exc}", field="signature") from None


class SignatureWorkers:
    """Worker processes for the pure part of batch intake (types, EIP-712 hash, ECDSA recovery),
    so that it runs beside the one process that owns the book, which otherwise did all of it under
    one GIL. Spawned, not forked (the service has threads); on Linux each worker is told to exit
    with the service (PR_SET_PDEATHSIG), so none outlives it, even after a SIGKILL."""

    MIN_ORDERS = 16  # below this, pickling to and from a worker costs more than it saves

    def __init__(self, processes: int):
        import concurrent.futures
        import multiprocessing

        self.processes = processes
        self._pool = concurrent.futures.ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("spawn"), initializer=_signature_worker_init,
            initargs=(os.getpid(),),
        )
        # Start every worker now (imports take a second or two), not in the first batch's request.
        list(self._pool.map(_ready, range(processes)))

    def signed_orders(self, items: list[tuple[OrderSide, Any, Any]], chain_id: int, market: str
                      ) -> list[SignedOrder | MarketError]:
        chunk = -(-len(items) // (2 * self.processes))  # two chunks per worker keep every worker busy
        parts = [items[i:i + chunk] for i in range(0, len(items), chunk)]
        out: list[SignedOrder | MarketError] = []
        for part in self._pool.map(_signed_orders_chunk, parts, [chain_id] * len(parts), [market] * len(parts)):
            out.extend(part)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _signature_worker_init(service_pid: int) -> None:
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the service, which stops its workers
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != service_pid:  # the service died while this worker was starting
        os._exit(0)


def _ready(_: int) -> bool:
    return True


def _signed_orders_chunk(items: list[tuple[OrderSide, Any, Any]], chain_id: int, market: str
                         ) -> list[SignedOrder | MarketError]:
    return [_signed_or_error(side, message, signature, chain_id, market) for side, message, signature in items]


class OrderBookService:
    """Intake, cancellation and matching. Thread-safe: one lock around the in-memory book."""

    def __init__(self, engine: Engine, gateway: ChainGateway, sender: TxSender, *, max_batch_size: int = 50,
                 mode: str = "continuous", batch_window_seconds: float = 2.0, batch_method: str = "auto"):
        if mode not in ("continuous", "batch"):
            raise ValueError(f"matching mode must be continuous or batch, got {mode!r}")
        self.mode = mode
        self.batch_window_seconds = batch_window_seconds
        self.batch_config = BatchConfig(method=batch_method)
        self.last_batch: BatchResult | None = None
        self._next_batch_at = 0.0
        self.engine = engine
        self.gateway = gateway
        self.sender = sender
        self.max_batch_size = max_batch_size
        self._lock = threading.RLock()
        self._matcher = ContinuousMatcher()
        if mode == "batch":
            import scipy.optimize  # noqa: F401 - the auction's solver, loaded now rather than in the first window (~1 s)
        self._last_now = 0
        self._next_seq: int | None = None  # read from the DB once, then counted under the lock
        self.signature_workers: SignatureWorkers | None = None  # set by the service (MARKET_INTAKE_PROCESSES)
        self._pending: list[_PendingOrder] = []  # verified single orders waiting for the lock
        self._pending_lock = threading.Lock()
        self.chain_state = ChainStateCache(gateway)
        sender.on_receipt("open_deals", self._on_open_deals_receipt)

    # ───────────── startup ─────────────

    def load(self) -> int:
        """Rebuild the in-memory book from the DB's open orders (after a restart or a failed match)."""
        with self._lock, Session(self.engine) as session:
            self._matcher = ContinuousMatcher()
            self._next_seq = None
            now = self._now()
            rows = session.exec(select(OrderRow).where(OrderRow.status == OrderStatus.OPEN).order_by(OrderRow.seq)).all()
            loaded = 0
            for row in rows:
                remaining = row.capacity - row.filled - row.reserved
                order = to_matching(order_from_row(row), row.hash)
                if remaining <= 0 or order.deadline < now:
                    continue
                try:
                    self._matcher.book.add(order, now, remaining=remaining)
                    loaded += 1
                except MatchingError as exc:
                    log.info("order %s not reloaded: %s", row.hash, exc)
            return loaded

    # ───────────── intake ─────────────

    def submit(self, side: OrderSide, message: dict[str, Any], signature: str,
               job_spec: dict[str, Any] | None = None) -> Submitted:
        """Verify one signed order, store it and match it (or let it rest); MarketError if refused."""
        result = self._accept_combined(self.verify(side, message, signature, job_spec))
        if isinstance(result, MarketError):
            raise result
        return result

    def _accept_combined(self, verified: VerifiedOrder) -> Submitted | MarketError:
        """Accept one order, together with every other order verified meanwhile (group commit).

        Orders that arrive while the book is busy queue up; whichever thread gets the book's lock
        next stores and matches all of them in one DB transaction, and the others find their result
        ready. Storing one order per transaction made concurrent single-order intake wait on the
        lock (and on the GIL's hand-offs) about 10 ms per order (BENCHMARKS.md, service section)."""
        slot = _PendingOrder(verified)
        with self._pending_lock:
            self._pending.append(slot)
        with self._lock:
            if not slot.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    results = self._accept([pending.verified for pending in batch])
                except BaseException as exc:
                    for pending in batch:
                        pending.error = exc
                        pending.done = True
                    raise
                for pending, result in zip(batch, results, strict=True):
                    pending.result = result
                    pending.done = True
        if slot.error is not None:
            raise slot.error
        return slot.result

    def submit_many(self, orders: list[tuple[OrderSide, dict[str, Any], str, dict[str, Any] | None]]
                    ) -> list[Submitted | MarketError]:
        """Verify, store and match many orders under one lock and one DB transaction; each order is
        accepted or refused on its own (a refused one is not stored), in the given order. The
        deals they make go out together: one openDeals per max_batch_size pairings."""
        chain_id, market = self.gateway.chain_id, self.gateway.market.address
        items = [(side, message, signature) for side, message, signature, _ in orders]
        if self.signature_workers is not None and len(items) >= SignatureWorkers.MIN_ORDERS:
            signed = self.signature_workers.signed_orders(items, chain_id, market)
        else:
            signed = [_signed_or_error(side, message, signature, chain_id, market) for side, message, signature in items]
        self.chain_state.prefetch((isinstance(s.order, Offer), s.owner, s.order.token)
                                  for s in signed if isinstance(s, SignedOrder))
        verified: list[VerifiedOrder | MarketError] = []
        for checked, (_, _, _, job_spec) in zip(signed, orders, strict=True):
            if isinstance(checked, MarketError):
                verified.append(checked)
                continue
            try:
                verified.append(self._verify_signed(checked, job_spec))
            except MarketError as exc:
                verified.append(exc)
        return self._accept(verified)

    def verify(self, side: OrderSide, message: dict[str, Any], signature: str,
               job_spec: dict[str, Any] | None = None) -> VerifiedOrder:
        """Everything that needs no lock: types, signature, chain state, job spec."""
        return self._verify_signed(signed_order(side, message, signature, self.gateway.chain_id,
                                                self.gateway.market.address), job_spec)

    def _verify_signed(self, signed: SignedOrder, job_spec: dict[str, Any] | None) -> VerifiedOrder:
        """The checks of an order whose signature is already verified: chain state and job spec."""
        order = signed.order
        now = self._check_against_chain(order, signed.owner)
        if isinstance(order, Request):
            self._check_job_spec(order, job_spec)
        return VerifiedOrder(**vars(signed), now=now, job_spec=job_spec if isinstance(order, Request) else None)

    def _accept(self, verified: list[VerifiedOrder | MarketError]) -> list[Submitted | MarketError]:
        results: list[Submitted | MarketError] = list(verified)
        todo = [(i, v) for i, v in enumerate(verified) if isinstance(v, VerifiedOrder)]
        if not todo:
            return results
        with self._lock, session_scope(self.engine) as session:
            # `now` was read before waiting for the lock: an order submitted meanwhile may have
            # moved the book's clock past it, and the book refuses time going backwards.
            hashes = [v.order_hash for _, v in todo]
            # Core statements on the session's connection (same transaction): the ORM's per-statement
            # work was a fifth of a single order's intake CPU.
            connection = session.connection()
            known = set(connection.execute(_KNOWN_HASHES, {"hashes": hashes}).scalars())
            if self._next_seq is None:
                self._next_seq = (session.exec(select(func.max(OrderRow.seq))).one() or 0) + 1
            accepted: list[tuple[int, VerifiedOrder, dict[str, Any]]] = []
            rows: list[dict[str, Any]] = []
            created_at = utcnow()
            deals: list[MatchedDeal] = []
            try:
                for i, v in todo:
                    if v.order_hash in known:
                        results[i] = Conflict(f"order {v.order_hash} was already submitted")
                        continue
                    now = self._last_now = max(v.now, self._last_now)
                    try:
                        if self.mode == "batch":
                            self._matcher.book.add(v.matching_order, now)  # rests until the next auction
                        else:
                            deals += self._matcher.submit(v.matching_order, now)
                    except MatchingError as exc:
                        results[i] = InvalidInput(str(exc), field=getattr(exc, "field", None))
                        continue
                    known.add(v.order_hash)
                    rows.append(row := v.row(self._next_seq, created_at))
                    self._next_seq += 1
                    if v.job_spec is not None and session.get(JobSpecRow, v.order.jobSpecHash) is None:
                        session.add(JobSpecRow(hash=v.order.jobSpecHash, spec=json.dumps(v.job_spec, sort_keys=True)))
                    accepted.append((i, v, row))
                if rows:
                    _insert_orders(connection, rows)
                session.flush()
                matches = self._propose(session, deals)
            except BaseException:
                self._next_seq = None
                self._reload_after_failure()
                raise
        by_order: dict[str, list[MatchRow]] = {}
        for match in matches:
            by_order.setdefault(match.offer_hash, []).append(match)
            by_order.setdefault(match.request_hash, []).append(match)
        for i, v, row in accepted:
            mine = by_order.get(v.order_hash, [])
            # What _propose reserved of this order for its matches (an offer in GPU-hours, a request in hours).
            row["reserved"] = sum(m.gpu_count * m.deal_hours if m.offer_hash == v.order_hash else m.deal_hours
                                  for m in mine)
            results[i] = Submitted(v.order_hash, mine, row)
        return results

    def cancel(self, order_hash: str, signature: str) -> OrderRow:
        """Off-chain cancel signed by the owner: the service stops matching the order at once.
        (It stays valid on chain until cancelled there or past its counter.)"""
        sig = parse_signature(signature)
        with self._lock, session_scope(self.engine) as session:
            row = session.get(OrderRow, order_hash.lower())
            if row is None:
                raise NotFound(f"no order {order_hash}")
            if signer_of(CancelOrder(orderHash=row.hash), sig, self.gateway) != row.owner:
                raise InvalidSignature(f"cancel must be signed by the order's owner {row.owner}")
            if row.status != OrderStatus.OPEN:
                raise Conflict(f"order {row.hash} is {row.status.value}, not open")
            row.status = OrderStatus.CANCELLED
            try:
                self._matcher.cancel(row.hash)
            except MatchingError:
                pass  # not resting (fully reserved by in-flight matches)
            return row

    def run_batch(self) -> BatchResult | None:
        """Batch mode: once per window, allocate every resting order to maximise gains from trade
        (marketplace.matching.batch) and send the deals; the book is rebuilt from the DB after."""
        if self.mode != "batch" or time.monotonic() < self._next_batch_at:
            return None
        self._next_batch_at = time.monotonic() + self.batch_window_seconds
        with self._lock:
            now = self._now()
            snapshot = self._matcher.book.snapshot()
            offers = [order for order, _, _ in snapshot if order.side is Side.OFFER]
            requests = [order for order, _, _ in snapshot if order.side is Side.REQUEST]
            if not offers or not requests:
                return None
            result = clear_batch(offers, requests, now, config=self.batch_config,
                                 remaining={order.order_id: left for order, _, left in snapshot})
            self.last_batch = result
            if result.deals:
                with session_scope(self.engine) as session:
                    self._propose(session, list(result.deals))
                log.info("batch at %s: %d deals, welfare %s, gap %s", now, len(result.deals), result.welfare,
                         result.gap)
                self.load()
            return result

    # ───────────── matching → outbox ─────────────

    def _propose(self, session: Session, deals: list[MatchedDeal]) -> list[MatchRow]:
        if not deals:
            return []
        matches: list[MatchRow] = []
        ids = sorted({d.offer_id for d in deals} | {d.request_id for d in deals})
        order_rows = {row.hash: row for row in rows_in(session, OrderRow, OrderRow.hash, ids)}
        for start in range(0, len(deals), self.max_batch_size):
            batch = deals[start:start + self.max_batch_size]
            payload = []
            rows = []
            for index, deal in enumerate(batch):
                offer_row, request_row = order_rows[deal.offer_id], order_rows[deal.request_id]
                payload.append({
                    "offer": json.loads(offer_row.payload), "offer_signature": offer_row.signature,
                    "request": json.loads(request_row.payload), "request_signature": request_row.signature,
                    "deal_hours": deal.hours,
                })
                offer_row.reserved += deal.gpu_hours
                request_row.reserved += deal.hours
                rows.append(MatchRow(
                    offer_hash=deal.offer_id, request_hash=deal.request_id, gpu_count=deal.gpu_count,
                    deal_hours=deal.hours, price=str(deal.price_per_gpu_hour), batch_index=index,
                ))
            tx = self.sender.enqueue(session, "open_deals", {"matches": payload})
            for row in rows:
                row.tx_id = tx.id
                session.add(row)
            matches.extend(rows)
        session.flush()
        return matches

    def _on_open_deals_receipt(self, session: Session, tx: Any, receipt: Any) -> None:
        """Finalise a batch: opened pairings get their deal id, refused ones release capacity."""
        rows = session.exec(select(MatchRow).where(MatchRow.tx_id == tx.id).order_by(MatchRow.batch_index)).all()
        failed: dict[int, str] = {}
        opened_ids: list[int] = []
        if receipt is not None:
            for args in self.gateway.receipt_events(receipt, MARKET, "DealOpenFailed"):
                failed[args["index"]] = args["reason"]  # 0x hex
            opened_ids = [args["dealId"] for args in self.gateway.receipt_events(receipt, MARKET, "DealOpened")]
        opened = iter(opened_ids)
        any_failed = False
        filled_orders: dict[str, OrderRow] = {}
        hashes = {h for row in rows for h in (row.offer_hash, row.request_hash)}  # one query, not two per pairing
        orders = {order.hash: order for order in rows_in(session, OrderRow, OrderRow.hash, hashes)}
        for row in rows:
            offer_row, request_row = orders[row.offer_hash], orders[row.request_hash]
            offer_row.reserved = max(0, offer_row.reserved - row.gpu_count * row.deal_hours)
            request_row.reserved = max(0, request_row.reserved - row.deal_hours)
            if receipt is None or row.batch_index in failed:
                row.state = MatchState.FAILED
                row.error = failed.get(row.batch_index, tx.error or "transaction failed")
                any_failed = True
                continue
            row.state = MatchState.OPENED
            row.deal_id = next(opened)
            filled_orders.update({offer_row.hash: offer_row, request_row.hash: request_row})
        if filled_orders:
            # Every opened order's fill at the receipt's block, in one round trip (not two per deal).
            states = self.gateway.order_states(list(filled_orders), block=receipt["blockNumber"])
            for order_row, (filled, _) in zip(filled_orders.values(), states, strict=True):
                order_row.filled = filled
                if order_row.filled >= order_row.capacity:
                    order_row.status = OrderStatus.FILLED
        if any_failed:
            # Refused pairings gave capacity back: rebuild the book once this transaction commits.
            self._needs_reload = True

    _needs_reload = False

    def after_pump(self) -> None:
        if self._needs_reload:
            self._needs_reload = False
            self.load()

    def _reload_after_failure(self) -> None:
        try:
            self.load()
        except Exception:  # the original error matters more
            log.exception("reloading the book failed")

    # ───────────── checks ─────────────

    def _now(self) -> int:
        # Chain time, not wall time: the contract judges expiry by block.timestamp.
        self._last_now = max(self._last_now, self.gateway.timestamp())
        return self._last_now

    def _check_against_chain(self, order: Offer | Request, owner: str) -> int:
        """The order against the chain's state; returns chain time. Remembered state may only
        accept: before refusing, the same checks run again on state read from the chain now."""
        offer = isinstance(order, Offer)
        state = self.chain_state.intake_state(offer=offer, owner=owner, token=order.token)
        try:
            return self._judge(order, owner, state)
        except MarketError:
            if not state.cached:
                raise
        return self._judge(order, owner,
                           self.chain_state.intake_state(offer=offer, owner=owner, token=order.token, fresh=True))

    def _judge(self, order: Offer | Request, owner: str, state: IntakeState) -> int:
        # Chain time, not wall time: the contract judges expiry by block.timestamp.
        now = max(self._last_now, state.now)
        if order.expiry <= now:
            raise InvalidInput(f"order expired at {order.expiry} (chain time is {now})", field="expiry")
        if not state.is_settlement_token:
            raise InvalidInput(f"token {order.token} is not a settlement token of this market", field="token")
        if order.counter != state.counter:
            raise InvalidInput(f"order counter {order.counter} is not {owner}'s current counter {state.counter}",
                               field="counter")
        if isinstance(order, Offer):
            smallest_deal = order.pricePerGpuHour * order.minHours
            needed = -(-smallest_deal * state.collateral_bps // BPS)
            if state.free_stake < needed:
                raise InsufficientFunds(
                    f"provider {owner} has {state.free_stake} free collateral in {order.token}; the smallest deal of "
                    f"this offer locks {needed}: stake more first", field="provider"
                )
        else:
            if order.startBy <= now:
                raise InvalidInput(f"startBy {order.startBy} is not in the future (chain time {now})", field="startBy")
            if order.settlementRule > max(SettlementRule):
                raise InvalidInput(f"settlementRule must be 0, 1 or 2, got {order.settlementRule}", field="settlementRule")
            needed = order.maxPricePerGpuHour * order.gpuCount * order.minHours
            if state.vault_balance < needed:
                raise InsufficientFunds(
                    f"trainer {owner} has {state.vault_balance} in the market vault; the smallest fill at the max "
                    f"price escrows {needed}: deposit more first", field="trainer"
                )
        return now

    @staticmethod
    def _check_job_spec(order: Request, job_spec: dict[str, Any] | None) -> None:
        if job_spec is None:
            return
        if job_spec_hash(job_spec) != order.jobSpecHash:
            raise InvalidInput("job_spec does not hash to the request's jobSpecHash", field="job_spec")

