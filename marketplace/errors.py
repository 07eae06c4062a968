"""One exception hierarchy for the service: mapped to HTTP statuses at the API edge and to exit
codes in the CLIs. Messages say what is wrong and, where it helps, what to do."""

from __future__ import annotations


class MarketError(Exception):
    """Base of every error the service reports to a user."""

    http_status = 400
    exit_code = 1
    code = "market_error"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __reduce__(self):  # keeps `field` across processes (batch intake's signature workers)
        return _rebuild, (type(self), self.message, self.field)


def _rebuild(cls: type[MarketError], message: str, field: str | None) -> MarketError:
    return cls(message, field=field)


class InvalidInput(MarketError):
    http_status = 422
    exit_code = 2
    code = "invalid_input"


class InvalidSignature(MarketError):
    http_status = 401
    exit_code = 2
    code = "invalid_signature"


class NotFound(MarketError):
    http_status = 404
    code = "not_found"


class Conflict(MarketError):
    http_status = 409
    code = "conflict"


class InsufficientFunds(MarketError):
    """Vault balance or free collateral on chain does not cover the order."""

    http_status = 422
    exit_code = 3
    code = "insufficient_funds"


class RateLimited(MarketError):
    http_status = 429
    code = "rate_limited"


class ServiceUnavailable(MarketError):
    """The chain node or a dependency is not reachable."""

    http_status = 503
    exit_code = 4
    code = "unavailable"
