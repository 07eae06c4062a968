"""The FastAPI application: routers, error mapping, request metrics.

    create_app(service)  → an app bound to a running MarketService (tests, `marketplace serve`)
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketplace.api.deps import RateLimiter
from marketplace.api.metrics import HTTP_LATENCY, HTTP_REQUESTS
from marketplace.api.routers import deals, market, orders
from marketplace.chain.gateway import ChainUnavailable
from marketplace.errors import MarketError
from marketplace.service import MarketService

DESCRIPTION = """
A decentralized marketplace for GPU-hours. Providers submit EIP-712 signed **offers**, trainers
signed **requests**; the service matches them and opens **deals** on chain, where payment stays
in escrow until the work is settled. Amounts are decimal strings in token base units.
Writes are authenticated by the owner's signature and rate-limited per IP and per address.
"""


def create_app(service: MarketService, *, start_loops: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if start_loops:
            service.start()
        try:
            yield
        finally:
            if start_loops:
                service.stop()

    app = FastAPI(title="Compute Marketplace", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.service = service
    app.state.rate_limiter = RateLimiter(service.settings.rate_limit_per_minute)
    app.include_router(orders.router)
    app.include_router(deals.router)
    app.include_router(market.router)

    @app.exception_handler(MarketError)
    async def market_error(_request: Request, exc: MarketError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status,
                            content={"error": exc.code, "message": exc.message, "field": exc.field})

    @app.exception_handler(ChainUnavailable)
    async def chain_unavailable(_request: Request, exc: ChainUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"error": "unavailable", "message": str(exc), "field": None})

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        location = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(status_code=422, content={
            "error": "invalid_input", "message": f"{location or 'request'}: {first.get('msg')}", "field": location or None,
        })

    app.add_middleware(RequestMetrics)
    return app


class RequestMetrics:
    """Counts requests by method and status and times them. Plain ASGI: Starlette's
    BaseHTTPMiddleware (`@app.middleware`) costs a task and a stream per request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            HTTP_LATENCY.observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(method=scope["method"], status=str(status[0])).inc()
