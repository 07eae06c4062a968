"""Unit tests of the gas benchmark's pure parts: `.venv/bin/pytest bench/gas -q`.

The benchmark itself is a script (`make bench-gas`); these check that it splices BENCHMARKS.md
without touching other sections and that the trace attribution adds up.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gas_report import END_MARKER, START_MARKER, floor_gas, intrinsic_gas, splice_section, write_section  # noqa: E402
from gas_trace import (  # noqa: E402
    ACCOUNT_ACCESS,
    ECRECOVER_CALL,
    EXTERNAL_CALL,
    LOGS,
    OTHER,
    SLOAD_COLD,
    SSTORE_NEW,
    SSTORE_UPDATE,
    attribute,
)

SECTION = f"{START_MARKER}\n## Gas\nnew numbers\n{END_MARKER}\n"


# ───────────────────────────── BENCHMARKS.md splice ─────────────────────────────


def test_splice__section_present__replaces_only_between_markers_byte_for_byte():
    before = "# Benchmarks\r\n\r\n## Matching\r\nkeep  trailing spaces  \r\n\n"
    after = "\n## Load\nkeep\ttabs\n<!-- bench:other:start -->x<!-- bench:other:end -->"
    document = f"{before}{START_MARKER}\nold\nnumbers\n{END_MARKER}{after}"

    result = splice_section(document, SECTION)

    assert result == f"{before}{START_MARKER}\n## Gas\nnew numbers\n{END_MARKER}{after}"


def test_splice__section_missing__appends_after_existing_text_unchanged():
    document = "# Benchmarks\n\n## Matching\nkeep"

    result = splice_section(document, SECTION)

    assert result.startswith(document)
    assert result == document + "\n\n" + SECTION


def test_splice__end_marker_missing__refuses_instead_of_eating_the_rest():
    with pytest.raises(ValueError, match="no <!-- bench:gas:end -->"):
        splice_section(f"# B\n{START_MARKER}\nold\n## Other section\n", SECTION)


def test_splice__section_without_markers__refused():
    with pytest.raises(ValueError, match="markers"):
        splice_section("# B\n", "## Gas\n")


def test_write_section__twice__second_run_replaces_first(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_bytes(b"# Benchmarks\r\n\r\n## Other\r\nmine\r\n")

    write_section(path, SECTION)
    write_section(path, SECTION.replace("new numbers", "newer numbers"))

    text = path.read_bytes().decode()
    assert text.startswith("# Benchmarks\r\n\r\n## Other\r\nmine\r\n")
    assert text.count(START_MARKER) == 1
    assert "newer numbers" in text and "new numbers\n" not in text


# ───────────────────────────── intrinsic gas ─────────────────────────────


def test_intrinsic_gas__zero_and_nonzero_bytes_and_access_list__priced_per_eip_2028_and_2930():
    data = bytes([0, 0, 7, 0xFF])
    access_list = [{"address": "0x" + "11" * 20, "storageKeys": ["0x" + "00" * 32, "0x" + "01" * 32]}]

    assert intrinsic_gas(data) == 21_000 + 2 * 4 + 2 * 16
    assert intrinsic_gas(data, access_list) == 21_000 + 2 * 4 + 2 * 16 + 2_400 + 2 * 1_900
    assert floor_gas(data) == 21_000 + 10 * (2 + 2 * 4)


# ───────────────────────────── trace attribution ─────────────────────────────

MARKET = "0x" + "aa" * 20
STAKING = "0x" + "bb" * 20


def step(op, gas, depth, gas_cost=0, stack=None):
    return {"op": op, "gas": gas, "gasCost": gas_cost, "depth": depth, "stack": stack or []}


def test_attribute__call_into_contract__self_costs_add_up_and_land_on_the_right_contract():
    logs = [
        step("PUSH1", 100_000, 1),
        step("SSTORE", 99_997, 1),                                   # 22,100: new slot, cold
        step("EXTCODESIZE", 77_897, 1, stack=[STAKING]),             # 2,600: first touch of staking
        step("CALL", 75_297, 1, stack=["0x0", STAKING, "0xffff"]),   # 100 itself, child spends 7,100
        step("SLOAD", 70_000, 2),                                    # 2,100 cold (in staking)
        step("SSTORE", 67_900, 2),                                   # 5,000: update
        step("STOP", 62_900, 2),
        step("STATICCALL", 68_097, 1, stack=["0x0", "0x1", "0xbb8"]),  # ecrecover: 3,100, no child steps
        step("LOG1", 64_997, 1),                                     # 997
        step("STOP", 64_000, 1),
    ]

    b = attribute(logs, MARKET, {MARKET: "ComputeMarket", STAKING: "ProviderStaking"})

    assert b.total == 100_000 - 64_000
    assert b.by_category[SSTORE_NEW] == 22_100
    assert b.by_category[SSTORE_UPDATE] == 5_000
    assert b.by_category[SLOAD_COLD] == 2_100
    assert b.by_category[ACCOUNT_ACCESS] == 2_600
    assert b.by_category[EXTERNAL_CALL] == 100
    assert b.by_category[ECRECOVER_CALL] == 3_100
    assert b.by_category[LOGS] == 997
    assert b.by_category[OTHER] == 3
    assert b.by_contract == {"ComputeMarket": 100_000 - 64_000 - 7_100, "ProviderStaking": 7_100}
    assert sum(b.by_category.values()) == b.total


def test_attribute__scaled__divides_a_batch_per_item():
    logs = [step("SSTORE", 50_000, 1), step("SSTORE", 5_800, 1), step("STOP", 1_000, 1)]

    per_item = attribute(logs, MARKET).scaled(2)

    assert per_item.total == 49_000 // 2
    assert per_item.by_category[SSTORE_NEW] == 44_200 // 2
    assert per_item.count_by_category[SSTORE_NEW] == 0  # one store over two items, rounded down
