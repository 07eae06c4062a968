"""Request/response models: the contract with web clients (OpenAPI). Amounts are decimal strings."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from marketplace.db.models import OrderSide, OrderStatus

EXAMPLE_OFFER = {
    "provider": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", "gpuModel": 8, "gpuCount": 8, "vramGb": 80,
    "region": 1, "greenEnergy": True, "token": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
    "pricePerGpuHour": "2000000", "minHours": 1, "maxHours": 24, "capacityGpuHours": 192,
    "availableUntil": 1795000000, "expiry": 1794000000, "salt": "1", "counter": 0,
}
EXAMPLE_REQUEST = {
    "trainer": "0x90F79bf6EB2c4f870365E785982E1f101E93b906", "gpuModel": 8, "gpuCount": 2, "minVramGb": 40,
    "regionMask": "6", "greenOnly": False, "token": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
    "maxPricePerGpuHour": "3000000", "totalHours": 4, "minHours": 1, "startBy": 1794000000,
    "expiry": 1794000000, "jobSpecHash": "0x" + "ab" * 32, "settlementRule": 0, "salt": "2", "counter": 0,
}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OfferSubmission(StrictModel):
    order: dict[str, Any] = Field(description="EIP-712 Offer message", examples=[EXAMPLE_OFFER])
    signature: str = Field(description="65-byte EIP-712 signature by order.provider", examples=["0x" + "00" * 65])


class RequestSubmission(StrictModel):
    order: dict[str, Any] = Field(description="EIP-712 Request message", examples=[EXAMPLE_REQUEST])
    signature: str = Field(description="65-byte EIP-712 signature by order.trainer")
    job_spec: dict[str, Any] | None = Field(
        default=None, description="the job the request pays for; must hash to order.jobSpecHash",
        examples=[{"type": "train-logreg", "seed": 7, "samples": 2000, "features": 16, "epochs": 200}],
    )


MAX_ORDERS_PER_BATCH = 200


class OrderSubmission(StrictModel):
    side: OrderSide = Field(description="offer (signed by order.provider) or request (signed by order.trainer)")
    order: dict[str, Any] = Field(description="EIP-712 Offer or Request message")
    signature: str = Field(description="65-byte EIP-712 signature by the order's owner")
    job_spec: dict[str, Any] | None = Field(default=None, description="requests only: must hash to order.jobSpecHash")


class BatchSubmission(StrictModel):
    orders: list[OrderSubmission] = Field(min_length=1, max_length=MAX_ORDERS_PER_BATCH,
                                          description="judged one by one, stored and matched in this order")


class CancelSubmission(StrictModel):
    signature: str = Field(description="EIP-712 CancelOrder(orderHash) signed by the order's owner")


class MatchOut(BaseModel):
    offer_hash: str
    request_hash: str
    gpu_count: int
    deal_hours: int
    price_per_gpu_hour: str
    state: str
    deal_id: int | None
    error: str | None = None


class OrderOut(BaseModel):
    hash: str
    side: OrderSide
    owner: str
    token: str
    gpu_model: int
    price: str
    capacity: int
    filled: int
    reserved: int
    expiry: int
    status: OrderStatus
    order: dict[str, Any]
    signature: str
    created_at: datetime


class SubmittedOut(BaseModel):
    order: OrderOut
    matches: list[MatchOut]


class BatchItemOut(BaseModel):
    """One order of a batch: `status` is what POST /offers or /requests would have answered."""

    status: int
    hash: str | None = None
    matches: list[MatchOut] = []
    error: str | None = None
    message: str | None = None
    field: str | None = None


class BatchOut(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItemOut]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class DealEventOut(BaseModel):
    name: str
    block_number: int
    tx_hash: str
    args: dict[str, Any]


class DealOut(BaseModel):
    deal_id: int
    status: str
    provider: str
    buyer: str
    offer_hash: str
    request_hash: str
    job_spec_hash: str
    token: str
    price_per_gpu_hour: str
    gpu_count: int
    deal_hours: int
    escrow: str
    collateral: str
    start_deadline: int
    started_at: int | None
    completed_at: int | None
    used_seconds: int | None
    result_hash: str | None
    provider_paid: str
    buyer_refund: str
    fee: str
    collateral_slashed: str


class DealDetailOut(DealOut):
    events: list[DealEventOut]
    on_chain: dict[str, Any] | None = Field(default=None, description="the contract's current view (getDeal)")


class ProviderRegistration(StrictModel):
    profile: dict[str, Any] = Field(
        description="EIP-712 ProviderProfile message", examples=[{"provider": EXAMPLE_OFFER["provider"],
                                                                  "name": "nordic-hydro-1", "endpoint": ""}])
    signature: str


class ProviderOut(BaseModel):
    address: str
    name: str | None
    endpoint: str | None
    registered: bool
    stakes: dict[str, dict[str, str]] = Field(description="token → staked/locked/pending/free (base units)")
    deals_by_status: dict[str, int]
    reliability: float | None = Field(description="settled / (settled + refunded + resolved), None without history")


class MarketStatsOut(BaseModel):
    open_offers: int
    open_requests: int
    deals_by_status: dict[str, int]
    gpu_hours_sold: int
    volume_by_token: dict[str, str]
    price_index: dict[str, dict[str, str | None]] = Field(
        description="per GPU model: best open ask, and the last deal price (token base units per GPU-hour)")


class HealthOut(BaseModel):
    status: str
    chain_id: int | None
    head_block: int | None
    indexed_block: int | None
    loop_passes: int
    loop_errors: int
    last_error: str | None


class ErrorOut(BaseModel):
    error: str
    message: str
    field: str | None = None
