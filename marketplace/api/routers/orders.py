"""Offers, requests and their cancellation: the signed-order intake."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import func
from sqlmodel import select

from marketplace.api.deps import (
    ServiceDep, SessionDep, SessionReleasingRoute, WriteLimited, rate_limit_address, rate_limit_ip,
)
from marketplace.api.metrics import ORDERS_SUBMITTED
from marketplace.api.schemas import (
    BatchOut,
    BatchSubmission,
    CancelSubmission,
    MatchOut,
    OfferSubmission,
    OrderOut,
    Page,
    RequestSubmission,
    SubmittedOut,
)
from marketplace.db.models import MatchRow, OrderRow, OrderSide, OrderStatus
from marketplace.errors import MarketError, NotFound
from marketplace.orderbook import Submitted

router = APIRouter(tags=["orders"], route_class=SessionReleasingRoute)


def order_out(row: OrderRow | dict) -> OrderOut:
    values = row if isinstance(row, dict) else row.model_dump()
    return OrderOut(**{name: values[name] for name in _ORDER_OUT_COLUMNS}, hash=values["hash"],
                    order=json.loads(values["payload"]))


_ORDER_OUT_COLUMNS = ("side", "owner", "token", "gpu_model", "price", "capacity", "filled", "reserved", "expiry",
                      "status", "signature", "created_at")


def match_out(row: MatchRow) -> MatchOut:
    return MatchOut(**match_fields(row))


def match_fields(row: MatchRow) -> dict[str, Any]:
    """A match as MatchOut's fields, in its order."""
    return {"offer_hash": row.offer_hash, "request_hash": row.request_hash, "gpu_count": row.gpu_count,
            "deal_hours": row.deal_hours, "price_per_gpu_hour": row.price, "state": row.state.value,
            "deal_id": row.deal_id, "error": row.error}


def _owner_of(order: dict, key: str) -> str:
    value = order.get(key)
    return value if isinstance(value, str) else "unknown"


@router.post("/offers", status_code=status.HTTP_201_CREATED, response_model=SubmittedOut, dependencies=[WriteLimited],
             summary="Submit a provider's signed offer")
def submit_offer(body: OfferSubmission, request: Request, service: ServiceDep) -> SubmittedOut:
    rate_limit_address(request, _owner_of(body.order, "provider"))
    submitted = service.book.submit(OrderSide.OFFER, body.order, body.signature)
    ORDERS_SUBMITTED.labels(side="offer").inc()
    return SubmittedOut(order=order_out(submitted.row), matches=[match_out(m) for m in submitted.matches])


@router.post("/requests", status_code=status.HTTP_201_CREATED, response_model=SubmittedOut,
             dependencies=[WriteLimited], summary="Submit a trainer's signed request (and its job spec)")
def submit_request(body: RequestSubmission, request: Request, service: ServiceDep) -> SubmittedOut:
    rate_limit_address(request, _owner_of(body.order, "trainer"))
    submitted = service.book.submit(OrderSide.REQUEST, body.order, body.signature, body.job_spec)
    ORDERS_SUBMITTED.labels(side="request").inc()
    return SubmittedOut(order=order_out(submitted.row), matches=[match_out(m) for m in submitted.matches])


@router.post("/orders/batch", response_model=BatchOut, summary="Submit many signed offers and requests at once",
             description="Each order is judged on its own, exactly as POST /offers or /requests would judge it; "
                         "its `status` in `results` is the status that call would have answered (201 accepted). "
                         "Accepted orders are stored and matched in the given order, and the deals they make are "
                         "sent together. Every order counts against the per-IP and per-address write limits.")
def submit_batch(body: BatchSubmission, request: Request, service: ServiceDep) -> JSONResponse:
    rate_limit_ip(request, len(body.orders))
    items: list[tuple] = []
    limited: dict[int, MarketError] = {}
    for index, item in enumerate(body.orders):
        try:
            rate_limit_address(request, _owner_of(item.order, "provider" if item.side == OrderSide.OFFER else "trainer"))
        except MarketError as exc:
            limited[index] = exc
            continue
        items.append((item.side, item.order, item.signature, item.job_spec))
    outcomes = iter(service.book.submit_many(items))
    # BatchOut's fields as plain JSON values, encoded once: building and then re-validating a
    # pydantic model per order was a tenth of the book's process CPU per order (response_model
    # above still documents the shape; tests/service/test_intake_cache_and_batch.py checks it).
    results = []
    accepted = {OrderSide.OFFER: 0, OrderSide.REQUEST: 0}
    for index, item in enumerate(body.orders):
        outcome = limited.get(index) or next(outcomes)
        if isinstance(outcome, Submitted):
            accepted[item.side] += 1
            results.append({"status": status.HTTP_201_CREATED, "hash": outcome.order_hash,
                            "matches": [match_fields(m) for m in outcome.matches],
                            "error": None, "message": None, "field": None})
        else:
            results.append({"status": outcome.http_status, "hash": None, "matches": [], "error": outcome.code,
                            "message": outcome.message, "field": outcome.field})
    for side, count in accepted.items():
        if count:
            ORDERS_SUBMITTED.labels(side=side.value).inc(count)
    total = sum(accepted.values())
    return JSONResponse({"accepted": total, "rejected": len(results) - total, "results": results})


@router.post("/orders/{order_hash}/cancel", response_model=OrderOut, dependencies=[WriteLimited],
             summary="Stop the service from matching an order (signed by its owner)")
def cancel_order(order_hash: str, body: CancelSubmission, service: ServiceDep) -> OrderOut:
    return order_out(service.book.cancel(order_hash, body.signature))


@router.get("/orders", response_model=Page[OrderOut], summary="List orders")
def list_orders(
    session: SessionDep,
    side: OrderSide | None = None,
    owner: str | None = Query(default=None, pattern=r"^0x[0-9a-fA-F]{40}$"),
    order_status: OrderStatus | None = Query(default=None, alias="status"),
    gpu_model: int | None = Query(default=None, ge=0, le=65535),
    limit: int = Query(default=50, ge=1, le=200),
    offset: int = Query(default=0, ge=0),
) -> Page[OrderOut]:
    query = select(OrderRow)
    if side is not None:
        query = query.where(OrderRow.side == side)
    if owner is not None:
        query = query.where(func.lower(OrderRow.owner) == owner.lower())
    if order_status is not None:
        query = query.where(OrderRow.status == order_status)
    if gpu_model is not None:
        query = query.where(OrderRow.gpu_model == gpu_model)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(OrderRow.seq.desc()).limit(limit).offset(offset)).all()
    return Page[OrderOut](items=[order_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/orders/{order_hash}", response_model=OrderOut, summary="One order")
def get_order(order_hash: str, session: SessionDep) -> OrderOut:
    row = session.get(OrderRow, order_hash.lower())
    if row is None:
        raise NotFound(f"no order {order_hash}")
    return order_out(row)


@router.get("/orders/{order_hash}/matches", response_model=list[MatchOut], summary="Matches involving an order")
def order_matches(order_hash: str, session: SessionDep) -> list[MatchOut]:
    h = order_hash.lower()
    rows = session.exec(select(MatchRow).where((MatchRow.offer_hash == h) | (MatchRow.request_hash == h))
                        .order_by(MatchRow.id)).all()
    return [match_out(r) for r in rows]
