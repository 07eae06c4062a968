"""The compatibility and deal rules, written once, exactly as the contract checks them.

A deal between an offer and a request is ``request.gpu_count`` GPUs for ``h``
hours at the offer's ask (``price_per_gpu_hour``) -- whichever side was
resting. It consumes ``request.gpu_count * h`` GPU-hours of the offer's
capacity and ``h`` hours of the request.

The book and both matchers use these functions (or a signature-level split of
them, see ``book.py``), so there is one definition of "fits".
"""

from __future__ import annotations

from .catalog import ANY_GPU_MODEL
from .orders import SECONDS_PER_HOUR, Offer, Request


def statically_compatible(offer: Offer, request: Request) -> bool:
    """The time- and quantity-independent part of the rule (no price, no hours)."""
    return (
        offer.token == request.token
        and (request.gpu_model == ANY_GPU_MODEL or request.gpu_model == offer.gpu_model)
        and offer.gpu_count >= request.gpu_count
        and offer.vram_gb >= request.min_vram_gb
        and (request.region_mask >> offer.region) & 1 == 1
        and (offer.green_energy or not request.green_only)
    )


def prices_cross(offer: Offer, request: Request) -> bool:
    return offer.price_per_gpu_hour <= request.max_price_per_gpu_hour


def deal_hours_bounds(
    offer: Offer, offer_remaining_gpu_hours: int, request: Request, request_remaining_hours: int, now: int
) -> tuple[int, int]:
    """``(lo, hi)``: a deal of ``h`` hours is allowed iff ``lo <= h <= hi``.

    Does not include the static, price or expiry checks (see ``deal_is_allowed``).
    """
    lo = max(offer.min_hours, request.min_hours)
    hi = min(
        offer.max_hours,
        request_remaining_hours,
        offer_remaining_gpu_hours // request.gpu_count,  # capacity: gpu_count * h <= remaining
        (offer.available_until - now) // SECONDS_PER_HOUR,  # must finish: now + h*3600 <= available_until
    )
    return lo, hi


def is_live(offer_or_request: Offer | Request, now: int) -> bool:
    """Not expired (and, for a request, start_by not passed) at ``now``."""
    if isinstance(offer_or_request, Request):
        return now <= offer_or_request.expiry and now <= offer_or_request.start_by
    return now <= offer_or_request.expiry


def deal_is_allowed(
    offer: Offer,
    offer_remaining_gpu_hours: int,
    request: Request,
    request_remaining_hours: int,
    hours: int,
    now: int,
) -> bool:
    """The full rule for one deal of ``hours`` hours at ``now``: what the contract enforces."""
    lo, hi = deal_hours_bounds(offer, offer_remaining_gpu_hours, request, request_remaining_hours, now)
    return (
        statically_compatible(offer, request)
        and prices_cross(offer, request)
        and is_live(offer, now)
        and is_live(request, now)
        and lo <= hours <= hi
    )


def max_deal_hours(
    offer: Offer, offer_remaining_gpu_hours: int, request: Request, request_remaining_hours: int, now: int
) -> int:
    """Largest allowed deal in hours, or 0 if no deal is allowed at all."""
    if not (
        statically_compatible(offer, request)
        and prices_cross(offer, request)
        and is_live(offer, now)
        and is_live(request, now)
    ):
        return 0
    lo, hi = deal_hours_bounds(offer, offer_remaining_gpu_hours, request, request_remaining_hours, now)
    return hi if lo <= hi else 0


def offer_can_still_trade(offer: Offer, remaining_gpu_hours: int) -> bool:
    """Smallest possible deal is 1 GPU for ``offer.min_hours`` hours."""
    return remaining_gpu_hours >= offer.min_hours


def request_can_still_trade(request: Request, remaining_hours: int) -> bool:
    return remaining_hours >= request.min_hours


def surplus_per_gpu_hour(offer: Offer, request: Request) -> int:
    """Gains from trade per GPU-hour: what the trainer would pay minus what the provider asks."""
    return request.max_price_per_gpu_hour - offer.price_per_gpu_hour
