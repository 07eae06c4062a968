"""The output of matching: deals, in the shape the contract's ``openDeal`` takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from .orders import Offer, Request, Side


@dataclass(frozen=True, slots=True)
class Deal:
    """``gpu_count`` GPUs of ``offer_id`` for ``hours`` hours, for ``request_id``.

    ``price_per_gpu_hour`` is always the offer's ask: the deal price rule the
    contract enforces, whichever side was resting.
    """

    offer_id: str
    request_id: str
    gpu_count: int
    hours: int
    price_per_gpu_hour: int
    taker: Side | None = None  # incoming side in continuous matching; None in a batch

    @property
    def gpu_hours(self) -> int:
        return self.gpu_count * self.hours

    @property
    def cost(self) -> int:
        """Escrowed by the trainer: price x GPU-hours (token base units)."""
        return self.price_per_gpu_hour * self.gpu_count * self.hours

    def as_tuple(self) -> tuple[str, str, int, int, int, int]:
        """Stable, byte-comparable form (used for determinism checks and digests)."""
        return (
            self.offer_id,
            self.request_id,
            self.gpu_count,
            self.hours,
            self.price_per_gpu_hour,
            -1 if self.taker is None else int(self.taker),
        )


def deal_surplus(deal: Deal, request: Request) -> int:
    """(request max price - deal price) x GPU-hours."""
    return (request.max_price_per_gpu_hour - deal.price_per_gpu_hour) * deal.gpu_hours


def total_welfare(deals: Iterable[Deal], offers: Mapping[str, Offer], requests: Mapping[str, Request]) -> int:
    """Sum over deals of (request max price - offer ask) x GPU-hours.

    With pay-as-ask this is the trainers' surplus; the providers' surplus
    relative to their ask is zero, so it is also total gains from trade
    measured against declared prices.
    """
    total = 0
    for d in deals:
        total += (requests[d.request_id].max_price_per_gpu_hour - offers[d.offer_id].price_per_gpu_hour) * d.gpu_hours
    return total


_new_object = object.__new__
_set_offer_id = Deal.offer_id.__set__  # type: ignore[attr-defined]  # slot descriptors
_set_request_id = Deal.request_id.__set__  # type: ignore[attr-defined]
_set_gpu_count = Deal.gpu_count.__set__  # type: ignore[attr-defined]
_set_hours = Deal.hours.__set__  # type: ignore[attr-defined]
_set_price = Deal.price_per_gpu_hour.__set__  # type: ignore[attr-defined]
_set_taker = Deal.taker.__set__  # type: ignore[attr-defined]


def new_deal(offer_id: str, request_id: str, gpu_count: int, hours: int, price_per_gpu_hour: int, taker: Side) -> Deal:
    """``Deal(...)`` for the matcher's hot path: the same object, built through the slot
    descriptors instead of the frozen dataclass ``__init__`` (six ``object.__setattr__``
    calls by name), about half the cost. No validation either way."""
    deal = _new_object(Deal)
    _set_offer_id(deal, offer_id)
    _set_request_id(deal, request_id)
    _set_gpu_count(deal, gpu_count)
    _set_hours(deal, hours)
    _set_price(deal, price_per_gpu_hour)
    _set_taker(deal, taker)
    return deal
