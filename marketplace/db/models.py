"""SQLModel tables: the off-chain order book, the index of on-chain state, and the outbox.

Token amounts, salts and masks are uint256 on chain; they are stored as decimal strings so that
SQLite and PostgreSQL keep every digit (SQLite has no exact 256-bit numeric type).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class OrderSide(StrEnum):
    OFFER = "offer"
    REQUEST = "request"


class OrderStatus(StrEnum):
    OPEN = "open"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class MatchState(StrEnum):
    PROPOSED = "proposed"  # written with its outbox transaction, not yet mined
    OPENED = "opened"  # the deal exists on chain
    FAILED = "failed"  # the contract refused it (DealOpenFailed) or the transaction failed


class TxState(StrEnum):
    QUEUED = "queued"  # in the outbox, not signed yet
    SIGNED = "signed"  # nonce assigned and raw transaction stored: safe to (re)broadcast
    CONFIRMED = "confirmed"  # receipt with status 1
    FAILED = "failed"  # receipt with status 0, or dropped and replaced


class OrderRow(SQLModel, table=True):
    """A signed offer or request as received by the API (the service's order book)."""

    __tablename__ = "orders"

    hash: str = Field(primary_key=True, max_length=66, description="EIP-712 struct hash")
    side: OrderSide = Field(index=True)
    owner: str = Field(index=True, max_length=42)
    token: str = Field(max_length=42)
    gpu_model: int = Field(index=True)
    price: str = Field(description="offer: ask; request: max bid (token base units)")
    capacity: int = Field(description="offer: GPU-hours; request: hours")
    filled: int = Field(default=0, description="confirmed on chain")
    reserved: int = Field(default=0, description="proposed to the chain, not yet confirmed")
    expiry: int = Field(index=True)
    status: OrderStatus = Field(default=OrderStatus.OPEN, index=True)
    seq: int = Field(index=True, description="arrival order: time priority")
    payload: str = Field(sa_column=Column(Text, nullable=False), description="typed-data message as JSON")
    signature: str
    created_at: datetime = Field(default_factory=utcnow)


class JobSpecRow(SQLModel, table=True):
    """A request's job spec, addressed by the keccak hash the request signs."""

    __tablename__ = "job_specs"

    hash: str = Field(primary_key=True, max_length=66)
    spec: str = Field(sa_column=Column(Text, nullable=False))


class ChainTx(SQLModel, table=True):
    """Outbox of transactions the service sends. The raw signed transaction is stored before
    it is broadcast, so after a crash it is re-sent as is (same nonce, same hash)."""

    __tablename__ = "chain_txs"
    __table_args__ = (UniqueConstraint("sender", "nonce"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    sender: str = Field(max_length=42)
    nonce: int | None = None
    raw_tx: str | None = Field(default=None, sa_column=Column(Text))
    tx_hash: str | None = Field(default=None, index=True, max_length=66)
    state: TxState = Field(default=TxState.QUEUED, index=True)
    block_number: int | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class MatchRow(SQLModel, table=True):
    """A pairing the matcher proposed; written in the same DB transaction as its ChainTx."""

    __tablename__ = "matches"

    id: int | None = Field(default=None, primary_key=True)
    offer_hash: str = Field(index=True, max_length=66)
    request_hash: str = Field(index=True, max_length=66)
    gpu_count: int
    deal_hours: int
    price: str
    state: MatchState = Field(default=MatchState.PROPOSED, index=True)
    tx_id: int | None = Field(default=None, foreign_key="chain_txs.id", index=True)
    batch_index: int | None = None
    deal_id: int | None = Field(default=None, index=True)
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ChainEvent(SQLModel, table=True):
    """A decoded contract log; (tx_hash, log_index) makes indexing idempotent."""

    __tablename__ = "chain_events"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)

    id: int | None = Field(default=None, primary_key=True)
    block_number: int = Field(index=True)
    block_hash: str = Field(max_length=66)
    tx_hash: str = Field(max_length=66)
    log_index: int
    contract: str
    name: str = Field(index=True)
    deal_id: int | None = Field(default=None, index=True)
    args: str = Field(sa_column=Column(Text, nullable=False))


class IndexedBlock(SQLModel, table=True):
    """Hashes of indexed blocks, to notice a reorg by a parent-hash mismatch."""

    __tablename__ = "indexed_blocks"

    number: int = Field(primary_key=True)
    hash: str = Field(max_length=66)
    parent_hash: str = Field(max_length=66)


class ChainCursor(SQLModel, table=True):
    """How far the indexer has applied confirmed blocks."""

    __tablename__ = "chain_cursor"

    name: str = Field(primary_key=True)
    block_number: int
    block_hash: str = Field(max_length=66)


class DealRow(SQLModel, table=True):
    """A deal as the indexer reconstructs it from confirmed events (never written otherwise)."""

    __tablename__ = "deals"

    deal_id: int = Field(primary_key=True)
    provider: str = Field(index=True, max_length=42)
    buyer: str = Field(index=True, max_length=42)
    offer_hash: str = Field(index=True, max_length=66)
    request_hash: str = Field(index=True, max_length=66)
    job_spec_hash: str = Field(max_length=66)
    token: str = Field(max_length=42)
    price_per_gpu_hour: str
    gpu_count: int
    deal_hours: int
    escrow: str
    collateral: str
    start_deadline: int
    status: int = Field(index=True, description="IComputeMarket.DealStatus")
    started_at: int | None = None
    completed_at: int | None = None
    used_seconds: int | None = None
    result_hash: str | None = None
    provider_paid: str = "0"
    buyer_refund: str = "0"
    fee: str = "0"
    collateral_slashed: str = "0"
    opened_block: int
    updated_block: int


class ProviderRow(SQLModel, table=True):
    """A provider that registered with the service (name and contact are off-chain metadata)."""

    __tablename__ = "providers"

    address: str = Field(primary_key=True, max_length=42)
    name: str = Field(max_length=100)
    endpoint: str | None = Field(default=None, max_length=300)
    registered_at: datetime = Field(default_factory=utcnow)


class JobReceiptRow(SQLModel, table=True):
    """The verifier's check of a completed deal's result."""

    __tablename__ = "job_receipts"

    deal_id: int = Field(primary_key=True)
    result_hash: str = Field(max_length=66)
    expected_hash: str | None = Field(default=None, max_length=66)
    passed: bool
    signature: str
    tx_id: int | None = Field(default=None, foreign_key="chain_txs.id")
    created_at: datetime = Field(default_factory=utcnow)
