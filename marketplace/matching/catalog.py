"""GPU and region catalogues.

Ids are part of signed orders (the contract stores them as plain integers), so
they are append-only: never renumber or reuse an id, only add new ones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


class GpuClass(enum.IntEnum):
    """Coarse market segment; a request can ask for "any model" plus a VRAM floor."""

    CONSUMER = 1
    WORKSTATION = 2
    DATACENTER = 3


@dataclass(frozen=True, slots=True)
class GpuModel:
    id: int
    name: str
    vram_gb: int
    gpu_class: GpuClass
    vendor: str


ANY_GPU_MODEL = 0
"""``Request.gpu_model`` value meaning "any model that meets min_vram_gb"."""

GPU_MODELS: Mapping[int, GpuModel] = MappingProxyType(
    {
        m.id: m
        for m in (
            GpuModel(1, "RTX 4090", 24, GpuClass.CONSUMER, "nvidia"),
            GpuModel(2, "RTX 3090", 24, GpuClass.CONSUMER, "nvidia"),
            GpuModel(3, "L4", 24, GpuClass.DATACENTER, "nvidia"),
            GpuModel(4, "RTX 6000 Ada", 48, GpuClass.WORKSTATION, "nvidia"),
            GpuModel(5, "L40S", 48, GpuClass.DATACENTER, "nvidia"),
            GpuModel(6, "A100 40GB", 40, GpuClass.DATACENTER, "nvidia"),
            GpuModel(7, "A100 80GB", 80, GpuClass.DATACENTER, "nvidia"),
            GpuModel(8, "H100 80GB", 80, GpuClass.DATACENTER, "nvidia"),
            GpuModel(9, "H200 141GB", 141, GpuClass.DATACENTER, "nvidia"),
            GpuModel(10, "MI300X 192GB", 192, GpuClass.DATACENTER, "amd"),
        )
    }
)


@dataclass(frozen=True, slots=True)
class Region:
    id: int
    name: str
    continent: str


REGIONS: Mapping[int, Region] = MappingProxyType(
    {
        r.id: r
        for r in (
            Region(0, "us-east", "north-america"),
            Region(1, "us-west", "north-america"),
            Region(2, "us-central", "north-america"),
            Region(3, "ca-central", "north-america"),
            Region(4, "sa-east", "south-america"),
            Region(5, "eu-west", "europe"),
            Region(6, "eu-central", "europe"),
            Region(7, "eu-north", "europe"),
            Region(8, "ap-northeast", "asia-pacific"),
            Region(9, "ap-southeast", "asia-pacific"),
            Region(10, "ap-south", "asia-pacific"),
            Region(11, "me-central", "middle-east"),
        )
    }
)

MAX_REGION_ID = 255
"""Region ids are one byte on chain; a request's mask has one bit per id."""

KNOWN_REGIONS_MASK: int = sum(1 << r for r in REGIONS)


def region_mask(*region_ids: int) -> int:
    """Bitmask selecting the given region ids (bit r set = region r allowed)."""
    mask = 0
    for r in region_ids:
        if r not in REGIONS:
            raise KeyError(f"unknown region id {r}")
        mask |= 1 << r
    return mask


def regions_in(mask: int) -> tuple[int, ...]:
    """Known region ids whose bit is set in ``mask``, ascending."""
    return tuple(r for r in sorted(REGIONS) if mask >> r & 1)


def continent_mask(continent: str) -> int:
    return region_mask(*(r.id for r in REGIONS.values() if r.continent == continent))


def gpu_model_by_name(name: str) -> GpuModel:
    for model in GPU_MODELS.values():
        if model.name.lower() == name.lower():
            return model
    raise KeyError(f"unknown GPU model {name!r}")


def region_by_name(name: str) -> Region:
    for region in REGIONS.values():
        if region.name == name.lower():
            return region
    raise KeyError(f"unknown region {name!r}")
