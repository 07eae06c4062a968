"""FastAPI dependencies: the running service, DB sessions, and per-IP / per-address rate limits."""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from sqlmodel import Session

from marketplace.errors import RateLimited
from marketplace.service import MarketService


def get_service(request: Request) -> MarketService:
    return request.app.state.service


ServiceDep = Annotated[MarketService, Depends(get_service)]


def get_session(service: ServiceDep) -> Iterator[Session]:
    with Session(service.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _releasing_sessions(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """The endpoint, closing its DB sessions as it returns, in its own worker thread.

    A dependency's session otherwise lives until the response is serialised, which for a sync
    endpoint needs another worker thread. Under load every thread can be queued on the order
    book's lock while the lock's holder waits for a pooled connection that only such a finished
    request would give back: the service wedged for good (bench/service, 64 concurrent writers).
    """
    if inspect.iscoroutinefunction(endpoint):
        return endpoint

    @functools.wraps(endpoint)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session):
                    value.close()  # returns its connection; the response is already built

    return wrapper


class SessionReleasingRoute(APIRoute):
    """Routes whose DB sessions are closed when the endpoint returns (see _releasing_sessions)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        super().__init__(path, _releasing_sessions(endpoint), **kwargs)


class RateLimiter:
    """Token buckets keyed by client IP and by signing address: `per_minute` writes each."""

    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, cost: int = 1) -> None:
        """Take `cost` writes from the key's bucket, or none and RateLimited if it has fewer."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
            if tokens < cost:
                self._buckets[key] = (tokens, now)
                if cost > self.capacity:
                    raise RateLimited(f"{cost} writes at once exceed the limit of {int(self.capacity)} per minute")
                retry = (cost - tokens) / self.refill_per_second
                raise RateLimited(f"too many writes from {key.split(':', 1)[1]}; retry in {retry:.1f}s")
            self._buckets[key] = (tokens - cost, now)


def rate_limit_writes(request: Request) -> None:
    rate_limit_ip(request, 1)


def rate_limit_ip(request: Request, cost: int) -> None:
    limiter: RateLimiter = request.app.state.rate_limiter
    client = request.client.host if request.client else "unknown"
    limiter.hit(f"ip:{client}", cost)


def rate_limit_address(request: Request, address: str) -> None:
    request.app.state.rate_limiter.hit(f"address:{address.lower()}")


WriteLimited = Depends(rate_limit_writes)
