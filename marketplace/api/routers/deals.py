"""Deals as indexed from confirmed chain events, with their history and live on-chain state."""

from __future__ import annotations

import json

from fastapi import APIRouter, Query
from sqlalchemy import func
from sqlmodel import select

from marketplace.api.deps import ServiceDep, SessionDep, SessionReleasingRoute
from marketplace.api.schemas import DealDetailOut, DealEventOut, DealOut, Page
from marketplace.db.models import ChainEvent, DealRow
from marketplace.errors import InvalidInput, NotFound
from marketplace.signing import DealStatus

router = APIRouter(tags=["deals"], route_class=SessionReleasingRoute)


def deal_out(row: DealRow, cls: type[DealOut] = DealOut, **extra) -> DealOut:
    data = row.model_dump()
    data["status"] = DealStatus(row.status).name.lower()
    return cls(**data, **extra)


@router.get("/deals", response_model=Page[DealOut], summary="List deals")
def list_deals(
    session: SessionDep,
    provider: str | None = Query(default=None, pattern=r"^0x[0-9a-fA-F]{40}$"),
    buyer: str | None = Query(default=None, pattern=r"^0x[0-9a-fA-F]{40}$"),
    deal_status: str | None = Query(default=None, alias="status", description="open, running, completed, ..."),
    limit: int = Query(default=50, ge=1, le=200),
    offset: int = Query(default=0, ge=0),
) -> Page[DealOut]:
    query = select(DealRow)
    if provider is not None:
        query = query.where(func.lower(DealRow.provider) == provider.lower())
    if buyer is not None:
        query = query.where(func.lower(DealRow.buyer) == buyer.lower())
    if deal_status is not None:
        try:
            query = query.where(DealRow.status == int(DealStatus[deal_status.upper()]))
        except KeyError:
            names = ", ".join(s.name.lower() for s in DealStatus if s != DealStatus.NONE)
            raise InvalidInput(f"unknown deal status {deal_status!r}; one of {names}", field="status") from None
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(DealRow.deal_id.desc()).limit(limit).offset(offset)).all()
    return Page[DealOut](items=[deal_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/deals/{deal_id}", response_model=DealDetailOut, summary="One deal: indexed state, events, chain view")
def get_deal(deal_id: int, session: SessionDep, service: ServiceDep, live: bool = True) -> DealDetailOut:
    row = session.get(DealRow, deal_id)
    if row is None:
        raise NotFound(f"no deal {deal_id} (not opened, or not yet confirmed)")
    events = session.exec(
        select(ChainEvent).where(ChainEvent.deal_id == deal_id).order_by(ChainEvent.block_number, ChainEvent.log_index)
    ).all()
    on_chain = None
    if live:
        raw = service.gateway.get_deal(deal_id)
        on_chain = {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in raw.items()}
        on_chain["status"] = DealStatus(on_chain["status"]).name.lower()
    return deal_out(
        row, DealDetailOut,
        events=[DealEventOut(name=e.name, block_number=e.block_number, tx_hash=e.tx_hash, args=json.loads(e.args))
                for e in events],
        on_chain=on_chain,
    )
