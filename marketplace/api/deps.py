"""FastAPI dependencies: the running service, DB sessions, and per-IP / per-address rate limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from marketplace.errors import RateLimited
from marketplace.service import MarketService


def get_service(request: Request) -> MarketService:
    return request.app.state.service


ServiceDep = Annotated[MarketService, Depends(get_service)]


def get_session(service: ServiceDep) -> Iterator[Session]:
    with Session(service.engine) as session:
        yield session


# Closed when the handler returns, before the response is serialised: a request-scoped session
# would keep its pooled connection while the response waits for a worker thread, and under load
# (all threads queued on the order book's lock, whose holder waits for a connection) that wedges
# the service for good.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


class RateLimiter:
    """Token buckets keyed by client IP and by signing address: `per_minute` writes each."""

    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                retry = (1.0 - tokens) / self.refill_per_second
                raise RateLimited(f"too many writes from {key.split(':', 1)[1]}; retry in {retry:.1f}s")
            self._buckets[key] = (tokens - 1.0, now)


def rate_limit_writes(request: Request) -> None:
    limiter: RateLimiter = request.app.state.rate_limiter
    client = request.client.host if request.client else "unknown"
    limiter.hit(f"ip:{client}")


def rate_limit_address(request: Request, address: str) -> None:
    request.app.state.rate_limiter.hit(f"address:{address.lower()}")


WriteLimited = Depends(rate_limit_writes)
