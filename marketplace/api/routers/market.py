"""Providers, market statistics, job specs, health and metrics."""

from __future__ import annotations

import json
from collections import Counter

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlmodel import select

from marketplace.api.deps import ServiceDep, SessionDep, SessionReleasingRoute, WriteLimited, rate_limit_address
from marketplace.api.metrics import INDEXED_BLOCK, LOOP_ERRORS, LOOP_PASSES, REGISTRY
from marketplace.api.schemas import HealthOut, MarketStatsOut, ProviderOut, ProviderRegistration
from marketplace.db.models import ChainCursor, DealRow, JobSpecRow, OrderRow, OrderSide, OrderStatus, ProviderRow
from marketplace.errors import InvalidSignature, NotFound
from marketplace.orderbook import parse_signature, parse_typed, signer_of
from marketplace.signing import DealStatus, ProviderProfile

router = APIRouter(route_class=SessionReleasingRoute)


@router.post("/providers", response_model=ProviderOut, dependencies=[WriteLimited], tags=["providers"],
             summary="Register (or update) a provider's profile, signed by the provider")
def register_provider(body: ProviderRegistration, request: Request, service: ServiceDep,
                      session: SessionDep) -> ProviderOut:
    profile = parse_typed(ProviderProfile, body.profile)
    rate_limit_address(request, profile.provider)
    signer = signer_of(profile, parse_signature(body.signature), service.gateway)
    if signer != profile.provider:
        raise InvalidSignature(f"profile must be signed by the provider {profile.provider}")
    row = session.get(ProviderRow, profile.provider) or ProviderRow(address=profile.provider, name=profile.name)
    row.name = profile.name
    row.endpoint = profile.endpoint or None
    session.add(row)
    session.commit()
    return get_provider(profile.provider, service, session)


@router.get("/providers/{address}", response_model=ProviderOut, tags=["providers"],
            summary="A provider: stake on chain, deal history, reliability")
def get_provider(address: str, service: ServiceDep, session: SessionDep) -> ProviderOut:
    parsed = parse_typed(ProviderProfile, {"provider": address, "name": "", "endpoint": ""}).provider
    row = session.get(ProviderRow, parsed)
    deals = session.exec(select(DealRow).where(DealRow.provider == parsed)).all()
    by_status = Counter(DealStatus(d.status).name.lower() for d in deals)
    # Tokens this provider may have staked: those of its deals and offers, plus the devnet's mocks.
    tokens = {d.token for d in deals}
    tokens |= set(session.exec(select(OrderRow.token).where(OrderRow.owner == parsed)).all())
    deployed = service.gateway.registry.deployments(service.gateway.chain_id)
    tokens |= {deployed[name].address for name in ("MockUSDC", "MockDAI") if name in deployed}
    stakes = {}
    for token in sorted(tokens):
        staked, locked, pending, _ = service.gateway.read("ProviderStaking", "positionOf", parsed, token)
        if staked or locked or pending:
            stakes[token] = {"staked": str(staked), "locked": str(locked), "pending": str(pending),
                             "free": str(staked - locked)}
    good = by_status.get("settled", 0)
    bad = by_status.get("refunded", 0) + by_status.get("resolved", 0)
    if row is None and not deals and not stakes:
        raise NotFound(f"provider {parsed} has not registered, staked or dealt here")
    return ProviderOut(
        address=parsed, name=row.name if row else None, endpoint=row.endpoint if row else None,
        registered=row is not None, stakes=stakes, deals_by_status=dict(by_status),
        reliability=(good / (good + bad)) if good + bad else None,
    )


@router.get("/market/stats", response_model=MarketStatsOut, tags=["market"], summary="Order book and deal statistics")
def market_stats(session: SessionDep) -> MarketStatsOut:
    open_orders = session.exec(select(OrderRow).where(OrderRow.status == OrderStatus.OPEN)).all()
    deals = session.exec(select(DealRow).order_by(DealRow.deal_id)).all()
    by_status = Counter(DealStatus(d.status).name.lower() for d in deals)
    volume: Counter[str] = Counter()
    gpu_hours = 0
    for d in deals:
        if d.status in (DealStatus.SETTLED, DealStatus.ABORTED, DealStatus.RESOLVED):
            volume[d.token] += int(d.provider_paid) + int(d.fee)
            gpu_hours += d.gpu_count * (d.used_seconds or 0) // 3600
    best_ask: dict[int, int] = {}
    for order in open_orders:
        if order.side == OrderSide.OFFER:
            best_ask[order.gpu_model] = min(best_ask.get(order.gpu_model, int(order.price)), int(order.price))
    last_price: dict[int, int] = {}
    for d in deals:
        offer = session.get(OrderRow, d.offer_hash)
        if offer is not None:
            last_price[offer.gpu_model] = int(d.price_per_gpu_hour)
    models = sorted(set(best_ask) | set(last_price))
    return MarketStatsOut(
        open_offers=sum(o.side == OrderSide.OFFER for o in open_orders),
        open_requests=sum(o.side == OrderSide.REQUEST for o in open_orders),
        deals_by_status=dict(by_status),
        gpu_hours_sold=gpu_hours,
        volume_by_token={k: str(v) for k, v in volume.items()},
        price_index={str(m): {"best_ask": str(best_ask[m]) if m in best_ask else None,
                              "last_deal": str(last_price[m]) if m in last_price else None} for m in models},
    )


@router.get("/jobs/{spec_hash}", tags=["market"], summary="A request's job spec, by its hash")
def get_job_spec(spec_hash: str, session: SessionDep) -> dict:
    row = session.get(JobSpecRow, spec_hash.lower())
    if row is None:
        raise NotFound(f"no job spec {spec_hash}")
    return json.loads(row.spec)


@router.get("/health", response_model=HealthOut, tags=["ops"], summary="Liveness and chain/indexer progress")
def health(service: ServiceDep, session: SessionDep) -> HealthOut:
    cursor = session.get(ChainCursor, "market")
    try:
        chain_id, head = service.gateway.chain_id, service.gateway.block_number()
        state = "ok" if service.stats.errors == 0 or service.stats.last_error is None else "degraded"
    except Exception:  # noqa: BLE001 - health reports, never raises
        chain_id, head, state = None, None, "chain-unreachable"
    return HealthOut(status=state, chain_id=chain_id, head_block=head,
                     indexed_block=cursor.block_number if cursor else None, loop_passes=service.stats.passes,
                     loop_errors=service.stats.errors, last_error=service.stats.last_error)


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
def metrics(service: ServiceDep, session: SessionDep) -> Response:
    LOOP_PASSES.set(service.stats.passes)
    LOOP_ERRORS.set(service.stats.errors)
    cursor = session.get(ChainCursor, "market")
    if cursor is not None:
        INDEXED_BLOCK.set(cursor.block_number)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
