"""Indexer: the contracts' events into the DB, from a confirmed block cursor, reorg-safe.

How a pass works (`Indexer.poll`):

1. The cursor (block number + hash) says how far confirmed blocks were applied. Before reading
   on, the cursor block's hash is compared with the chain's; if the chain replaced it (a reorg
   deeper than the confirmation depth, or a devnet reverted), the indexer walks back over the
   block hashes it stored (IndexedBlock, newest first) to the highest one the chain still has:
   the fork point. Events above it are deleted, the deals they touched are rebuilt from the
   events that remain, and the cursor moves there.
2. Blocks (cursor, head - confirmations] are read in chunks. For each chunk the reads are checked
   to describe one chain (the chunk's first block links to the cursor by its parent hash, every
   log's block hash is the fetched block's, the chunk's last block did not change while reading);
   then ONE DB transaction inserts the events, applies them to the projections, records the
   block hashes and moves the cursor. A crash never leaves half a chunk; a chain that moved
   under the reads is re-read.
3. Events are keyed by (tx hash, log index): an event is inserted and applied at most once.

Projections (pure functions of the events in chain order, so `resync()` rebuilds them exactly):

- DealRow: one row per deal from DealOpened, moved through its lifecycle by the other deal
  events. Money columns are decimal strings. `provider_paid` adds accrued withdrawals and the
  final payout; at a terminal event `fee` is the deal's total protocol fee, derived as
  escrow - buyer_refund - provider_paid (the contract's payouts are cumulative, so this equals
  the sum of the fees taken at each withdrawal and at the end; AccruedWithdrawn does not carry
  its fee), hence provider_paid + buyer_refund + fee == escrow for every settled, aborted or
  resolved deal.
- OrderRow (the service's off-chain book; only rows that exist are touched): `filled` is the
  confirmed fill, summed over the order's deals (offer: GPU-hours, request: hours), which is what
  the contract's orderState counts, without needing archive state; `status` becomes FILLED when
  nothing is left, CANCELLED on OrderCancelled or when the owner's CounterIncremented passes the
  order's counter. A rollback recomputes `filled` of the orders it touched and re-opens an order
  it had marked FILLED; it never re-opens a cancelled order (the owner wanted it gone, and an
  off-chain cancel looks the same).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from web3 import Web3
from web3.exceptions import BlockNotFound, Web3RPCError

from marketplace.chain.gateway import INDEXED_CONTRACTS, MARKET, ChainGateway, DecodedLog
from marketplace.db.models import ChainCursor, ChainEvent, DealRow, IndexedBlock, OrderRow, OrderSide, OrderStatus
from marketplace.db.session import IN_CHUNK, rows_in, session_scope
from marketplace.signing import DealStatus

log = logging.getLogger(__name__)

CURSOR_NAME = "market"
MAX_CONSECUTIVE_RETRIES = 5


class IndexerError(Exception):
    """The indexer cannot go on safely (e.g. another writer moved its cursor)."""


class _ChainMoved(Exception):
    """The chain changed while a chunk was being read: re-check the cursor and read again."""


@dataclass(frozen=True)
class Cursor:
    block_number: int
    block_hash: str


@dataclass(frozen=True)
class _Chunk:
    start: int
    end: int
    end_hash: str
    logs: list[DecodedLog]
    blocks: dict[int, Any]  # number → web3 block (event blocks and the chunk's last block)


class Indexer:
    """Confirmed contract events → ChainEvent rows and the deal/order projections.

    One Indexer (one process) writes a given DB; `poll()` raises IndexerError if it finds the
    cursor moved by someone else."""

    def __init__(
        self,
        gateway: ChainGateway,
        engine: Engine,
        *,
        confirmations: int,
        chunk_size: int = 2000,
        keep_blocks: int = 1000,
    ):
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.gateway = gateway
        self.engine = engine
        self.confirmations = confirmations
        self.chunk_size = chunk_size  # halved for good if the node refuses a range as too large
        self.keep_blocks = keep_blocks  # event-less block hashes kept below the cursor (reorg walk-back)
        self.reorgs = 0  # rollbacks this instance performed (for metrics and tests)

    # ───────────────────────────── public ─────────────────────────────

    def cursor(self) -> Cursor | None:
        """The last block applied (None before the first poll)."""
        with Session(self.engine) as session:
            row = session.get(ChainCursor, CURSOR_NAME)
            return Cursor(row.block_number, row.block_hash) if row else None

    def origin(self) -> int:
        """The block before the first indexed contract was deployed: where indexing starts."""
        deployed = self.gateway.registry.deployments(self.gateway.chain_id)
        blocks = [deployed[name].block_number for name in INDEXED_CONTRACTS if name in deployed]
        return max(0, min(blocks) - 1) if blocks else max(0, self.gateway.deploy_block(MARKET) - 1)

    def poll(self, *, max_chunks: int | None = None) -> int:
        """Apply confirmed blocks up to head - confirmations (at most `max_chunks` chunks).
        Returns how many new events were applied."""
        cursor = self._cursor_or_start()
        target = self.gateway.block_number() - self.confirmations
        applied = chunks = retries = 0
        verify = True  # after a chunk, the next one's parent-hash check covers the cursor block
        while True:
            if verify:
                cursor = self._verified(cursor)
            if cursor.block_number >= target or (max_chunks is not None and chunks >= max_chunks):
                return applied
            end = min(target, cursor.block_number + self.chunk_size)
            try:
                chunk = self._read(cursor, end)
            except _ChainMoved:
                retries += 1
                if retries >= MAX_CONSECUTIVE_RETRIES:
                    log.warning("chain kept moving while reading blocks %d..%d; next poll retries",
                                cursor.block_number + 1, end)
                    return applied
                verify = True
                continue
            retries, verify = 0, False
            applied += self._write(cursor, chunk)
            cursor = Cursor(chunk.end, chunk.end_hash)
            chunks += 1

    def resync(self) -> int:
        """Drop everything derived from the chain and rescan from the origin block.
        Returns how many events were applied."""
        with session_scope(self.engine) as session:
            self._drop_derived(session)
        return self.poll()

    # ───────────────────────────── cursor and reorgs ─────────────────────────────

    def _cursor_or_start(self) -> Cursor:
        current = self.cursor()
        if current is not None:
            return current
        origin = self.origin()
        block = self.gateway.get_block(origin)
        with session_scope(self.engine) as session:
            if session.get(ChainCursor, CURSOR_NAME) is not None:
                raise IndexerError("the indexer cursor appeared while starting: another indexer writes this DB")
            session.add(ChainCursor(name=CURSOR_NAME, block_number=origin, block_hash=_hex(block["hash"])))
            session.merge(IndexedBlock(number=origin, hash=_hex(block["hash"]), parent_hash=_hex(block["parentHash"])))
        log.info("indexer starts at block %d", origin)
        return Cursor(origin, _hex(block["hash"]))

    def _verified(self, cursor: Cursor) -> Cursor:
        """The cursor if the chain still has its block, else the fork point after a rollback."""
        if self._chain_hash(cursor.block_number) == cursor.block_hash:
            return cursor
        return self._roll_back(cursor)

    def _chain_hash(self, number: int) -> str | None:
        try:
            block = self.gateway.get_block(number)
        except BlockNotFound:
            return None
        return _hex(block["hash"]) if block is not None else None

    def _find_fork(self) -> IndexedBlock | None:
        """The highest stored block the chain still has (stored hashes, newest first)."""
        below: int | None = None
        while True:
            with Session(self.engine) as session:
                query = select(IndexedBlock).order_by(IndexedBlock.number.desc()).limit(100)
                if below is not None:
                    query = query.where(IndexedBlock.number < below)
                rows = session.exec(query).all()
            if not rows:
                return None
            for row in rows:
                if self._chain_hash(row.number) == row.hash:
                    return row
            below = rows[-1].number

    def _roll_back(self, cursor: Cursor) -> Cursor:
        fork = self._find_fork()
        self.reorgs += 1
        if fork is None:
            log.warning("reorg: the chain has none of the indexed blocks (devnet reset?); full rescan")
            with session_scope(self.engine) as session:
                self._check_cursor(session, cursor)
                self._drop_derived(session)
            return self._cursor_or_start()
        with session_scope(self.engine) as session:
            self._check_cursor(session, cursor)
            removed = session.exec(select(ChainEvent).where(ChainEvent.block_number > fork.number)).all()
            deal_ids = {e.deal_id for e in removed if e.deal_id is not None and e.contract == MARKET}
            order_hashes: set[str] = set()
            for event in removed:
                if event.contract == MARKET and event.name == "DealOpened":
                    args = json.loads(event.args)
                    order_hashes.update((args["offerHash"], args["requestHash"]))
            # A deal's DealCompleted below the fork keeps its block, hence its timestamp.
            completed_at = {
                row.deal_id: row.completed_at
                for row in rows_in(session, DealRow, DealRow.deal_id, deal_ids)
            }
            session.exec(delete(ChainEvent).where(ChainEvent.block_number > fork.number))
            session.exec(delete(IndexedBlock).where(IndexedBlock.number > fork.number))
            for start in range(0, len(deal_ids), IN_CHUNK):
                batch = sorted(deal_ids)[start:start + IN_CHUNK]
                session.exec(delete(DealRow).where(DealRow.deal_id.in_(batch)))
                rebuilt: dict[int, DealRow] = {}  # the batch's rows, from their kept events (DealOpened first)
                kept = session.exec(
                    select(ChainEvent)
                    .where(ChainEvent.deal_id.in_(batch), ChainEvent.contract == MARKET)
                    .order_by(ChainEvent.block_number, ChainEvent.log_index)
                ).all()
                for event in kept:
                    timestamp = completed_at.get(event.deal_id) if event.name == "DealCompleted" else None
                    if event.name == "DealCompleted" and timestamp is None:
                        timestamp = int(self.gateway.get_block(event.block_number)["timestamp"])
                    _apply_to_deals(session, event.name, json.loads(event.args), event.block_number, timestamp,
                                    rebuilt)
            session.flush()
            _refresh_orders(session, order_hashes, reopen=True)
            row = session.get(ChainCursor, CURSOR_NAME)
            row.block_number, row.block_hash = fork.number, fork.hash
        log.warning(
            "reorg: block %d %s is no longer on the chain; rolled back to block %d (%d events, %d deals rebuilt)",
            cursor.block_number, cursor.block_hash, fork.number, len(removed), len(deal_ids),
        )
        return Cursor(fork.number, fork.hash)

    def _check_cursor(self, session: Session, cursor: Cursor) -> ChainCursor:
        row = session.get(ChainCursor, CURSOR_NAME)
        if row is None or (row.block_number, row.block_hash) != (cursor.block_number, cursor.block_hash):
            raise IndexerError("the indexer cursor moved under this indexer: only one indexer may write a DB")
        return row

    def _drop_derived(self, session: Session) -> None:
        session.exec(delete(ChainEvent))
        session.exec(delete(IndexedBlock))
        session.exec(delete(DealRow))
        session.exec(delete(ChainCursor).where(ChainCursor.name == CURSOR_NAME))
        session.exec(update(OrderRow).values(filled=0))
        session.exec(update(OrderRow).where(OrderRow.status == OrderStatus.FILLED).values(status=OrderStatus.OPEN))

    # ───────────────────────────── reading a chunk ─────────────────────────────

    def _block(self, number: int) -> Any:
        try:
            block = self.gateway.get_block(number)
        except BlockNotFound:
            raise _ChainMoved from None
        if block is None:
            raise _ChainMoved
        return block

    def _blocks(self, numbers: list[int]) -> list[Any]:
        """Several blocks in one round trip; a missing one means the chain moved."""
        blocks = self.gateway.get_blocks(numbers)
        if any(block is None for block in blocks):
            raise _ChainMoved
        return blocks

    def _read(self, cursor: Cursor, end: int) -> _Chunk:
        start = cursor.block_number + 1
        while True:
            # Both read before the logs: if the last block is unchanged after, so are they.
            last, first = self._blocks([end, start]) if end != start else [self._block(end)] * 2
            if _hex(first["parentHash"]) != cursor.block_hash:
                raise _ChainMoved  # the cursor block was replaced; _verified rolls back
            try:
                logs = self.gateway.get_logs(start, end)
            except (Web3RPCError, ValueError) as exc:
                if end == start:
                    raise
                self.chunk_size = max(1, (end - start + 1) // 2)
                log.info("node refused logs of %d..%d (%s); chunk size now %d", start, end, exc, self.chunk_size)
                end = start + self.chunk_size - 1
                continue
            break
        numbers = {entry.block_number for entry in logs}
        blocks: dict[int, Any] = {end: last}
        if start in numbers:
            blocks[start] = first
        missing = sorted(numbers - blocks.keys())
        # The event blocks and the last block again, in one round trip (not one per event block).
        *event_blocks, last_again = self._blocks([*missing, end])
        blocks.update(zip(missing, event_blocks, strict=True))
        for entry in logs:
            if entry.block_hash != _hex(blocks[entry.block_number]["hash"]):
                raise _ChainMoved
        if _hex(last_again["hash"]) != _hex(last["hash"]):
            raise _ChainMoved
        return _Chunk(start, end, _hex(last["hash"]), logs, blocks)

    # ───────────────────────────── writing a chunk ─────────────────────────────

    def _write(self, cursor: Cursor, chunk: _Chunk) -> int:
        applied = 0
        with session_scope(self.engine) as session:
            row = self._check_cursor(session, cursor)
            seen = _existing_keys(session, {entry.tx_hash for entry in chunk.logs})
            # The chunk's deals in one query, not one per event (each also flushed the session first).
            deal_ids = {int(e.args["dealId"]) for e in chunk.logs if e.contract == MARKET and "dealId" in e.args}
            deals = {deal.deal_id: deal for deal in rows_in(session, DealRow, DealRow.deal_id, deal_ids)}
            fills = _OrderFills(session)
            events: list[dict[str, Any]] = []  # inserted as rows in one statement, not as ORM objects
            for entry in chunk.logs:
                if (entry.tx_hash, entry.log_index) in seen:
                    continue
                seen.add((entry.tx_hash, entry.log_index))
                args = _jsonable(entry.args)
                deal_id = entry.args.get("dealId") if entry.contract == MARKET else None
                events.append(dict(
                    block_number=entry.block_number, block_hash=entry.block_hash, tx_hash=entry.tx_hash,
                    log_index=entry.log_index, contract=entry.contract, name=entry.name,
                    deal_id=int(deal_id) if deal_id is not None else None, args=json.dumps(args, sort_keys=True),
                ))
                if entry.contract == MARKET:
                    timestamp = int(chunk.blocks[entry.block_number]["timestamp"])
                    _apply_to_deals(session, entry.name, args, entry.block_number, timestamp, deals)
                    _apply_to_orders(session, entry.name, args, fills)
                applied += 1
            fills.refresh()
            if events:
                session.execute(insert(ChainEvent), events)
            stored = {b.number: b for b in rows_in(session, IndexedBlock, IndexedBlock.number, chunk.blocks)}
            for number, block in chunk.blocks.items():
                block_hash, parent_hash = _hex(block["hash"]), _hex(block["parentHash"])
                if number in stored:
                    stored[number].hash, stored[number].parent_hash = block_hash, parent_hash
                else:
                    session.add(IndexedBlock(number=number, hash=block_hash, parent_hash=parent_hash))
            row.block_number, row.block_hash = chunk.end, chunk.end_hash
            self._prune(session, chunk.end)
        if applied:
            log.info("indexed %d events in blocks %d..%d", applied, chunk.start, chunk.end)
        return applied

    def _prune(self, session: Session, cursor_block: int) -> None:
        """Forget hashes of old blocks without events (the walk-back then just stops lower)."""
        horizon = cursor_block - self.keep_blocks
        lowest = session.exec(select(func.min(IndexedBlock.number))).one()
        if lowest is None or horizon <= lowest:
            return
        has_events = select(ChainEvent.id).where(ChainEvent.block_number == IndexedBlock.number).exists()
        session.exec(
            delete(IndexedBlock).where(IndexedBlock.number > lowest, IndexedBlock.number < horizon, ~has_events)
        )


# ───────────────────────────── projections ─────────────────────────────


def _apply_to_deals(session: Session, name: str, args: dict[str, Any], block_number: int, timestamp: int | None,
                    deals: dict[int, DealRow]) -> None:
    """One event on its deal's row. `deals` (deal id → row) holds every row the events may touch
    and gets the new ones, so no row is looked up one by one."""
    if name == "DealOpened":
        existing = deals.get(int(args["dealId"]))
        if existing is not None:  # cannot happen after a proper rollback; the chain wins
            log.warning("deal %s opened again at block %d: replacing its row", args["dealId"], block_number)
            session.delete(existing)
            session.flush()
        opened = DealRow(
            deal_id=int(args["dealId"]), provider=args["provider"], buyer=args["buyer"],
            offer_hash=args["offerHash"], request_hash=args["requestHash"], job_spec_hash=args["jobSpecHash"],
            token=args["token"], price_per_gpu_hour=str(int(args["pricePerGpuHour"])),
            gpu_count=int(args["gpuCount"]), deal_hours=int(args["dealHours"]),
            escrow=str(int(args["escrow"])), collateral=str(int(args["collateral"])),
            start_deadline=int(args["startDeadline"]), status=int(DealStatus.OPEN),
            opened_block=block_number, updated_block=block_number,
        )
        session.add(opened)
        deals[opened.deal_id] = opened
        return
    if "dealId" not in args or name not in _DEAL_EVENTS:
        return
    deal = deals.get(int(args["dealId"]))
    if deal is None:
        log.warning("%s for unknown deal %s at block %d ignored", name, args["dealId"], block_number)
        return
    deal.updated_block = block_number
    if name == "DealStarted":
        deal.status = int(DealStatus.RUNNING)
        deal.started_at = int(args["startedAt"])
    elif name == "DealCompleted":
        deal.status = int(DealStatus.COMPLETED)
        deal.completed_at = timestamp
        deal.used_seconds = int(args["usedSeconds"])
        deal.result_hash = args["resultHash"]
    elif name == "AccruedWithdrawn":
        deal.provider_paid = str(int(deal.provider_paid) + int(args["amount"]))
    elif name == "DealDisputed":
        deal.status = int(DealStatus.DISPUTED)
    elif name == "DealRefunded":
        deal.status = int(DealStatus.REFUNDED)
        deal.buyer_refund = str(int(args["buyerRefund"]))
        deal.collateral_slashed = str(int(args["collateralSlashed"]))
    else:  # DealSettled, DealAborted, DealResolved: the final payout
        deal.status = int(_TERMINAL[name])
        provider_paid = int(deal.provider_paid) + int(args["providerPaid"])
        buyer_refund = int(args["buyerRefund"])
        deal.provider_paid = str(provider_paid)
        deal.buyer_refund = str(buyer_refund)
        deal.fee = str(int(deal.escrow) - buyer_refund - provider_paid)
        if name == "DealResolved":
            deal.collateral_slashed = str(int(args["collateralSlashed"]))


_TERMINAL = {"DealSettled": DealStatus.SETTLED, "DealAborted": DealStatus.ABORTED, "DealResolved": DealStatus.RESOLVED}
_DEAL_EVENTS = {"DealStarted", "DealCompleted", "AccruedWithdrawn", "DealDisputed", "DealRefunded", *_TERMINAL}


def _apply_to_orders(session: Session, name: str, args: dict[str, Any], fills: _OrderFills) -> None:
    if name == "DealOpened":
        fills.add(args["offerHash"], args["requestHash"])
    elif name == "OrderCancelled":
        fills.refresh()
        row = session.get(OrderRow, args["orderHash"])
        if row is not None and row.status == OrderStatus.OPEN:
            row.status = OrderStatus.CANCELLED
    elif name == "CounterIncremented":
        fills.refresh()
        owner = Web3.to_checksum_address(args["owner"])
        new_counter = int(args["newCounter"])
        rows = session.exec(select(OrderRow).where(OrderRow.owner == owner, OrderRow.status == OrderStatus.OPEN)).all()
        for row in rows:
            if _order_counter(row) < new_counter:
                row.status = OrderStatus.CANCELLED


class _OrderFills:
    """Orders whose fill DealOpened events changed, refreshed together (two grouped queries, not two
    per deal). Refreshed before any event that can cancel an order, and at the chunk's end: as if
    each were refreshed at its DealOpened, since a fill only grows and FILLED only follows OPEN."""

    def __init__(self, session: Session):
        self.session = session
        self.pending: dict[str, None] = {}  # insertion-ordered set

    def add(self, *order_hashes: str) -> None:
        self.pending.update(dict.fromkeys(order_hashes))

    def refresh(self) -> None:
        if self.pending:
            self.session.flush()
            _refresh_orders(self.session, list(self.pending), reopen=False)
            self.pending.clear()


def _refresh_orders(session: Session, order_hashes: Iterable[str], *, reopen: bool) -> None:
    """Set each order's confirmed fill from the deals that filled it (FILLED when none is left)."""
    rows = rows_in(session, OrderRow, OrderRow.hash, set(order_hashes))
    offers = [row.hash for row in rows if row.side == OrderSide.OFFER]
    requests = [row.hash for row in rows if row.side != OrderSide.OFFER]
    filled: dict[str, int] = {}
    for hashes, column, amount in ((offers, DealRow.offer_hash, DealRow.gpu_count * DealRow.deal_hours),
                                   (requests, DealRow.request_hash, DealRow.deal_hours)):
        for start in range(0, len(hashes), IN_CHUNK):
            query = select(column, func.sum(amount)).where(column.in_(hashes[start:start + IN_CHUNK])).group_by(column)
            filled.update((order_hash, int(total or 0)) for order_hash, total in session.exec(query))
    for row in rows:
        row.filled = filled.get(row.hash, 0)
        if row.filled >= row.capacity and row.status == OrderStatus.OPEN:
            row.status = OrderStatus.FILLED
        elif reopen and row.filled < row.capacity and row.status == OrderStatus.FILLED:
            row.status = OrderStatus.OPEN


def _order_counter(row: OrderRow) -> int:
    try:
        return int(json.loads(row.payload).get("counter", 0))
    except (ValueError, TypeError, AttributeError):
        return 0


# ───────────────────────────── helpers ─────────────────────────────


def _existing_keys(session: Session, tx_hashes: set[str]) -> set[tuple[str, int]]:
    keys: set[tuple[str, int]] = set()
    ordered = sorted(tx_hashes)
    for start in range(0, len(ordered), IN_CHUNK):
        batch = ordered[start:start + IN_CHUNK]
        rows = session.exec(select(ChainEvent.tx_hash, ChainEvent.log_index).where(ChainEvent.tx_hash.in_(batch)))
        keys.update((tx_hash, log_index) for tx_hash, log_index in rows)
    return keys


def _jsonable(value: Any) -> Any:
    """Event args for JSON: ints as decimal strings (uint256 keeps every digit), bools kept."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return value


def _hex(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    text = str(value)
    return text if text.startswith("0x") else "0x" + text
