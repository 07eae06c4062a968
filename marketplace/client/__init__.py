"""Typed httpx clients for the marketplace API (sync and async), used by the CLIs and by anyone's
scripts. Errors come back as the service's own exception types (marketplace.errors)."""

from __future__ import annotations

from typing import Any

import httpx

from marketplace.api.schemas import (
    BatchOut,
    DealDetailOut,
    DealOut,
    HealthOut,
    MarketStatsOut,
    MatchOut,
    OrderOut,
    Page,
    ProviderOut,
    SubmittedOut,
)
from marketplace.errors import (
    Conflict,
    InsufficientFunds,
    InvalidInput,
    InvalidSignature,
    MarketError,
    NotFound,
    RateLimited,
    ServiceUnavailable,
)

DEFAULT_URL = "http://127.0.0.1:8000"
_BY_CODE: dict[str, type[MarketError]] = {
    cls.code: cls for cls in (InvalidInput, InvalidSignature, NotFound, Conflict, InsufficientFunds, RateLimited,
                              ServiceUnavailable)
}


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        message, code, field = body.get("message") or str(body), body.get("error", ""), body.get("field")
    except ValueError:
        message, code, field = response.text[:300] or response.reason_phrase, "", None
    cls = _BY_CODE.get(code) or (NotFound if response.status_code == 404 else MarketError)
    raise cls(message, field=field)


def _params(**filters: Any) -> dict[str, Any]:
    return {k: v for k, v in filters.items() if v is not None}


class MarketClient:
    """Synchronous client.

        with MarketClient("http://127.0.0.1:8000") as api:
            api.health().status
    """

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 30.0, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> MarketClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(
                f"the marketplace service is not reachable at {self.base_url} ({exc.__class__.__name__}); "
                "start it with `marketplace serve` or check --api-url"
            ) from None
        _raise_for(response)
        return response.json() if response.content else None

    def health(self) -> HealthOut:
        return HealthOut.model_validate(self._request("GET", "/health"))

    def submit_offer(self, order: dict[str, Any], signature: str) -> SubmittedOut:
        return SubmittedOut.model_validate(self._request("POST", "/offers", json={"order": order, "signature": signature}))

    def submit_request(self, order: dict[str, Any], signature: str, job_spec: dict[str, Any] | None = None) -> SubmittedOut:
        body: dict[str, Any] = {"order": order, "signature": signature}
        if job_spec is not None:
            body["job_spec"] = job_spec
        return SubmittedOut.model_validate(self._request("POST", "/requests", json=body))

    def submit_batch(self, orders: list[dict[str, Any]]) -> BatchOut:
        """Many orders in one request: each {"side": "offer"|"request", "order", "signature"[, "job_spec"]};
        each is accepted or refused on its own (see the result's per-order `status`)."""
        return BatchOut.model_validate(self._request("POST", "/orders/batch", json={"orders": orders}))

    def cancel(self, order_hash: str, signature: str) -> OrderOut:
        return OrderOut.model_validate(self._request("POST", f"/orders/{order_hash}/cancel", json={"signature": signature}))

    def orders(self, *, side: str | None = None, owner: str | None = None, status: str | None = None,
               gpu_model: int | None = None, limit: int = 50, offset: int = 0) -> Page[OrderOut]:
        params = _params(side=side, owner=owner, status=status, gpu_model=gpu_model, limit=limit, offset=offset)
        return Page[OrderOut].model_validate(self._request("GET", "/orders", params=params))

    def order(self, order_hash: str) -> OrderOut:
        return OrderOut.model_validate(self._request("GET", f"/orders/{order_hash}"))

    def order_matches(self, order_hash: str) -> list[MatchOut]:
        return [MatchOut.model_validate(m) for m in self._request("GET", f"/orders/{order_hash}/matches")]

    def deals(self, *, provider: str | None = None, buyer: str | None = None, status: str | None = None,
              limit: int = 50, offset: int = 0) -> Page[DealOut]:
        params = _params(provider=provider, buyer=buyer, status=status, limit=limit, offset=offset)
        return Page[DealOut].model_validate(self._request("GET", "/deals", params=params))

    def deal(self, deal_id: int, *, live: bool = True) -> DealDetailOut:
        return DealDetailOut.model_validate(self._request("GET", f"/deals/{deal_id}", params={"live": live}))

    def register_provider(self, profile: dict[str, Any], signature: str) -> ProviderOut:
        return ProviderOut.model_validate(self._request("POST", "/providers", json={"profile": profile, "signature": signature}))

    def provider(self, address: str) -> ProviderOut:
        return ProviderOut.model_validate(self._request("GET", f"/providers/{address}"))

    def stats(self) -> MarketStatsOut:
        return MarketStatsOut.model_validate(self._request("GET", "/market/stats"))

    def job_spec(self, spec_hash: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{spec_hash}")


class AsyncMarketClient:
    """Asynchronous client with the same methods as MarketClient (awaitable)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncMarketClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(
                f"the marketplace service is not reachable at {self.base_url} ({exc.__class__.__name__})"
            ) from None
        _raise_for(response)
        return response.json() if response.content else None

    async def health(self) -> HealthOut:
        return HealthOut.model_validate(await self._request("GET", "/health"))

    async def submit_offer(self, order: dict[str, Any], signature: str) -> SubmittedOut:
        return SubmittedOut.model_validate(await self._request("POST", "/offers", json={"order": order, "signature": signature}))

    async def submit_request(self, order: dict[str, Any], signature: str,
                             job_spec: dict[str, Any] | None = None) -> SubmittedOut:
        body: dict[str, Any] = {"order": order, "signature": signature}
        if job_spec is not None:
            body["job_spec"] = job_spec
        return SubmittedOut.model_validate(await self._request("POST", "/requests", json=body))

    async def submit_batch(self, orders: list[dict[str, Any]]) -> BatchOut:
        return BatchOut.model_validate(await self._request("POST", "/orders/batch", json={"orders": orders}))

    async def orders(self, **filters: Any) -> Page[OrderOut]:
        return Page[OrderOut].model_validate(await self._request("GET", "/orders", params=_params(**filters)))

    async def deals(self, **filters: Any) -> Page[DealOut]:
        return Page[DealOut].model_validate(await self._request("GET", "/deals", params=_params(**filters)))

    async def deal(self, deal_id: int, *, live: bool = True) -> DealDetailOut:
        return DealDetailOut.model_validate(await self._request("GET", f"/deals/{deal_id}", params={"live": live}))

    async def stats(self) -> MarketStatsOut:
        return MarketStatsOut.model_validate(await self._request("GET", "/market/stats"))
