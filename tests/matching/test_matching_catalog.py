"""The catalogues are part of signed orders: ids must stay put."""

from __future__ import annotations

import pytest

from marketplace.matching.catalog import (
    ANY_GPU_MODEL,
    GPU_MODELS,
    KNOWN_REGIONS_MASK,
    REGIONS,
    GpuClass,
    continent_mask,
    gpu_model_by_name,
    region_by_name,
    region_mask,
    regions_in,
)


def test_gpu_catalogue__ids__stable() -> None:
    # Changing any of these breaks signed orders: append new models instead.
    assert {i: (m.name, m.vram_gb) for i, m in GPU_MODELS.items()} == {
        1: ("RTX 4090", 24),
        2: ("RTX 3090", 24),
        3: ("L4", 24),
        4: ("RTX 6000 Ada", 48),
        5: ("L40S", 48),
        6: ("A100 40GB", 40),
        7: ("A100 80GB", 80),
        8: ("H100 80GB", 80),
        9: ("H200 141GB", 141),
        10: ("MI300X 192GB", 192),
    }
    assert ANY_GPU_MODEL not in GPU_MODELS
    assert GPU_MODELS[1].gpu_class is GpuClass.CONSUMER
    assert gpu_model_by_name("h100 80gb").id == 8


def test_region_catalogue__names_and_masks() -> None:
    assert REGIONS[7].name == "eu-north"
    assert region_by_name("us-east").id == 0
    assert region_mask(0, 7) == 0b1000_0001
    assert regions_in(region_mask(5, 6, 7) | 1 << 200) == (5, 6, 7)
    assert regions_in(KNOWN_REGIONS_MASK) == tuple(sorted(REGIONS))
    assert regions_in(continent_mask("europe")) == (5, 6, 7)
    with pytest.raises(KeyError):
        region_mask(99)
