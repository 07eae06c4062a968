"""Seeded market generator: providers, trainers, and the order flow they produce.

Used by the matching benchmark, property tests and the demo. Everything is a
pure function of the seed (``random.Random``), so a flow can be replayed.

Model of the market (all prices in token base units per GPU-hour; the default
token has 6 decimals, like a USD stablecoin):

* each GPU model has a reference price (roughly 2025-26 cloud rates);
* a provider owns one machine: model, GPU count, region, green or not, and an
  energy + depreciation cost below the reference price; it asks cost x markup;
* a trainer has a home region and a region tolerance (home / continent / any),
  a model preference (exact model, or any model with a VRAM floor), a GPU
  count, a budget per GPU-hour around the reference price, and deadlines
  (start-by) from minutes to two days away.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

from .catalog import ANY_GPU_MODEL, GPU_MODELS, GpuClass, KNOWN_REGIONS_MASK, REGIONS, continent_mask
from .orders import Offer, Order, Request

DEFAULT_TOKEN = "0x5fbdb2315678afecb367f032d93f642f64180aa3"  # first anvil deployment address; any fixed address works
SECOND_TOKEN = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512"
TOKEN_UNIT = 10**6  # 6 decimals

REFERENCE_PRICE: dict[int, int] = {  # per GPU-hour, token base units
    1: 400_000,  # RTX 4090
    2: 220_000,  # RTX 3090
    3: 450_000,  # L4
    4: 800_000,  # RTX 6000 Ada
    5: 900_000,  # L40S
    6: 1_100_000,  # A100 40GB
    7: 1_400_000,  # A100 80GB
    8: 2_300_000,  # H100
    9: 3_200_000,  # H200
    10: 2_600_000,  # MI300X
}

_MODEL_POPULARITY: dict[int, int] = {1: 18, 2: 8, 3: 6, 4: 5, 5: 8, 6: 8, 7: 12, 8: 20, 9: 7, 10: 8}
_REGION_WEIGHT: dict[int, int] = {0: 16, 1: 12, 2: 6, 3: 4, 4: 3, 5: 10, 6: 14, 7: 8, 8: 8, 9: 7, 10: 6, 11: 3}
_VRAM_FLOORS = (24, 40, 80, 141)
_REQUEST_HOURS = (1, 2, 4, 8, 12, 24, 48, 72, 168)
_REQUEST_HOURS_WEIGHT = (10, 10, 14, 16, 10, 16, 10, 8, 6)
_OFFER_MAX_HOURS = (24, 72, 168, 336, 720)
_OFFER_MAX_HOURS_WEIGHT = (15, 25, 30, 15, 15)


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    address: str
    gpu_model: int
    gpu_count: int
    region: int
    green_energy: bool
    cost_per_gpu_hour: int  # energy + depreciation: the provider never asks below it


@dataclass(frozen=True, slots=True)
class TrainerProfile:
    address: str
    gpu_model: int  # ANY_GPU_MODEL or an exact id
    min_vram_gb: int
    region_mask: int
    green_only: bool
    budget_per_gpu_hour: int  # typical willingness to pay; each job varies around it
    gpu_count: int


def _address(rng: random.Random) -> str:
    return "0x" + rng.getrandbits(160).to_bytes(20, "big").hex()


def _cheapest_reference(min_vram_gb: int) -> int:
    return min(p for m, p in REFERENCE_PRICE.items() if GPU_MODELS[m].vram_gb >= min_vram_gb)


class MarketGenerator:
    """Deterministic source of providers, trainers and their signed-order contents."""

    def __init__(
        self,
        seed: int = 0,
        *,
        providers: int = 2_000,
        trainers: int = 5_000,
        second_token_share: float = 0.05,
    ) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self._second_token_share = second_token_share
        self._counter = 0
        self.providers = [self._make_provider() for _ in range(providers)]
        self.trainers = [self._make_trainer() for _ in range(trainers)]

    # ---------------------------------------------------------------- profiles

    def _make_provider(self) -> ProviderProfile:
        rng = self._rng
        model = rng.choices(list(_MODEL_POPULARITY), weights=list(_MODEL_POPULARITY.values()))[0]
        gpu_class = GPU_MODELS[model].gpu_class
        if gpu_class is GpuClass.DATACENTER:
            count = rng.choices((1, 2, 4, 8), weights=(10, 10, 20, 60))[0]
        else:
            count = rng.choices((1, 2, 4, 8), weights=(50, 25, 15, 10))[0]
        green = rng.random() < 0.35
        # Green power costs a little more in most places; the cost share covers energy + depreciation.
        cost_share = rng.uniform(0.55, 0.95) * (1.04 if green else 1.0)
        return ProviderProfile(
            address=_address(rng),
            gpu_model=model,
            gpu_count=count,
            region=rng.choices(list(_REGION_WEIGHT), weights=list(_REGION_WEIGHT.values()))[0],
            green_energy=green,
            cost_per_gpu_hour=int(REFERENCE_PRICE[model] * cost_share),
        )

    def _make_trainer(self) -> TrainerProfile:
        rng = self._rng
        home = rng.choices(list(_REGION_WEIGHT), weights=list(_REGION_WEIGHT.values()))[0]
        tolerance = rng.random()
        if tolerance < 0.40:
            mask = 1 << home
        elif tolerance < 0.75:
            mask = continent_mask(REGIONS[home].continent)
        else:
            mask = KNOWN_REGIONS_MASK
        if rng.random() < 0.75:
            model = rng.choices(list(_MODEL_POPULARITY), weights=list(_MODEL_POPULARITY.values()))[0]
            min_vram = GPU_MODELS[model].vram_gb if rng.random() < 0.2 else 0
            reference = REFERENCE_PRICE[model]
        else:
            model = ANY_GPU_MODEL
            min_vram = rng.choices(_VRAM_FLOORS, weights=(40, 25, 30, 5))[0]
            reference = _cheapest_reference(min_vram)
        return TrainerProfile(
            address=_address(rng),
            gpu_model=model,
            min_vram_gb=min_vram,
            region_mask=mask,
            green_only=rng.random() < 0.12,
            budget_per_gpu_hour=int(reference * rng.uniform(0.65, 1.25)),
            gpu_count=rng.choices((1, 2, 4, 8), weights=(45, 20, 15, 20))[0],
        )

    # ------------------------------------------------------------------ orders

    def _next_id(self) -> str:
        # Shaped like the EIP-712 order hash the service will use as id.
        self._counter += 1
        return f"0x{self.seed & 0xFFFFFFFF:08x}{self._counter:056x}"

    def _token(self) -> str:
        return SECOND_TOKEN if self._rng.random() < self._second_token_share else DEFAULT_TOKEN

    def offer(self, now: int, provider: ProviderProfile | None = None) -> Offer:
        rng = self._rng
        p = provider if provider is not None else rng.choice(self.providers)
        days = rng.randint(1, 30)
        min_hours = rng.choices((1, 2, 4), weights=(70, 20, 10))[0]
        max_hours = rng.choices(_OFFER_MAX_HOURS, weights=_OFFER_MAX_HOURS_WEIGHT)[0]
        price = int(p.cost_per_gpu_hour * rng.uniform(1.0, 1.45)) // 100 * 100 + 100
        return Offer(
            order_id=self._next_id(),
            provider=p.address,
            gpu_model=p.gpu_model,
            gpu_count=p.gpu_count,
            vram_gb=GPU_MODELS[p.gpu_model].vram_gb,
            region=p.region,
            green_energy=p.green_energy,
            token=self._token(),
            price_per_gpu_hour=price,
            min_hours=min_hours,
            max_hours=max_hours,
            capacity_gpu_hours=p.gpu_count * 24 * days,
            available_until=now + days * 86_400,
            expiry=now + min(days * 86_400, rng.randint(3_600, 3 * 86_400)),
            salt=rng.getrandbits(256),
        )

    def request(self, now: int, trainer: TrainerProfile | None = None) -> Request:
        rng = self._rng
        t = trainer if trainer is not None else rng.choice(self.trainers)
        hours = rng.choices(_REQUEST_HOURS, weights=_REQUEST_HOURS_WEIGHT)[0]
        if rng.random() < 0.30:
            min_hours = hours  # all or nothing
        else:
            min_hours = max(1, hours // rng.choice((2, 4, 8)))
        start_by = now + rng.randint(300, 2 * 86_400)
        price = int(t.budget_per_gpu_hour * rng.uniform(0.85, 1.15)) // 100 * 100 + 100
        return Request(
            order_id=self._next_id(),
            trainer=t.address,
            gpu_model=t.gpu_model,
            gpu_count=t.gpu_count,
            min_vram_gb=t.min_vram_gb,
            region_mask=t.region_mask,
            green_only=t.green_only,
            token=self._token(),
            max_price_per_gpu_hour=price,
            hours=hours,
            min_hours=min_hours,
            start_by=start_by,
            expiry=min(start_by, now + rng.randint(600, 86_400)),
            job_spec_hash=rng.randbytes(32),
            salt=rng.getrandbits(256),
        )

    def order(self, now: int, *, offer_share: float = 0.4) -> Order:
        return self.offer(now) if self._rng.random() < offer_share else self.request(now)

    def flow(
        self, n: int, *, start: int, offer_share: float = 0.4, orders_per_second: int = 1_000
    ) -> Iterator[tuple[int, Order]]:
        """``n`` orders as ``(arrival time, order)``; time advances one second per ``orders_per_second``."""
        for i in range(n):
            now = start + i // orders_per_second
            yield now, self.order(now, offer_share=offer_share)

    def window(self, n: int, *, now: int, offer_share: float = 0.4) -> tuple[list[Offer], list[Request]]:
        """``n`` orders arriving within one batch window, split by side (arrival order kept)."""
        offers: list[Offer] = []
        requests: list[Request] = []
        for _ in range(n):
            o = self.order(now, offer_share=offer_share)
            (offers if isinstance(o, Offer) else requests).append(o)  # type: ignore[arg-type]
        return offers, requests


__all__ = [
    "DEFAULT_TOKEN",
    "SECOND_TOKEN",
    "TOKEN_UNIT",
    "REFERENCE_PRICE",
    "ProviderProfile",
    "TrainerProfile",
    "MarketGenerator",
]
