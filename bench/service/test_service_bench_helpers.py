"""Unit tests of the service benchmark's pure parts: `.venv/bin/pytest bench/service -q`.

The benchmark itself is a script (`make bench-service`); these check that it splices BENCHMARKS.md
in the right place without touching other sections, and how it reads a py-spy profile. Nothing
here is timed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import END_MARKER, START_MARKER, percentile, splice_section, write_section
from loadgen import summarize

SECTION = f"{START_MARKER}\n## Service\nnew numbers\n{END_MARKER}\n"
GAS = "<!-- bench:gas:start -->\n## Gas\ngas\n<!-- bench:gas:end -->\n"
MATCHING = "<!-- bench:matching:start -->\n## Matching engine (`bench/matching`)\nm\n<!-- bench:matching:end -->\n"


def test_splice__no_section_yet__inserted_after_gas_before_matching():
    document = f"# Benchmarks\n\n{GAS}\n{MATCHING}"
    updated = splice_section(document, SECTION)
    assert updated.index("## Gas") < updated.index("## Service") < updated.index("## Matching engine")
    assert updated.replace(SECTION.rstrip("\n") + "\n\n", "") == document


def test_splice__section_present__only_it_is_replaced():
    document = f"# Benchmarks\n\n{GAS}\n{START_MARKER}\nold\n{END_MARKER}\n\n{MATCHING}"
    updated = splice_section(document, SECTION)
    assert "old" not in updated and "new numbers" in updated
    assert updated.startswith(f"# Benchmarks\n\n{GAS}\n") and updated.endswith(f"\n\n{MATCHING}")
    assert splice_section(updated, SECTION) == updated  # idempotent


def test_splice__no_anchor__appended():
    assert splice_section("# Benchmarks\n", SECTION).endswith(SECTION)


def test_splice__unwrapped_or_unterminated__refused():
    with pytest.raises(ValueError):
        splice_section("# Benchmarks\n", "## Service\n")
    with pytest.raises(ValueError):
        splice_section(f"{START_MARKER}\nno end\n", SECTION)


def test_write_section__keeps_crlf_of_other_sections(tmp_path: Path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_bytes(b"# Benchmarks\r\n\r\n" + MATCHING.encode())
    write_section(path, SECTION)
    assert path.read_bytes().startswith(b"# Benchmarks\r\n\r\n" + START_MARKER.encode())


def test_summarize__first_matching_category_takes_the_sample(tmp_path: Path):
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "thread;submit_offer (marketplace/api/routers/orders.py:51);call (web3/contract/contract.py:10) 6\n"
        "thread;submit_offer (marketplace/api/routers/orders.py:51);recover (marketplace/signing.py:111);"
        "struct_hash (marketplace/signing.py:120) 2\n"
        "thread;submit_offer (marketplace/api/routers/orders.py:51);recover_digest (marketplace/signing.py:50);"
        "recover (coincurve/ecdsa.py:36) 1\n"
        "thread;run (asyncio/base_events.py:600) 1\n"
        "garbage line\n"
    )
    profile = summarize(raw, wall=1.0, rate=20)
    shares = dict(profile.by_category)
    assert profile.samples == 10
    assert shares["chain reads: RPC to anvil (web3, requests, urllib3, http.client)"] == 6
    assert shares["EIP-712 hashing (marketplace/signing.py, keccak)"] == 2
    assert shares["ECDSA recover (eth_keys/coincurve)"] == 1  # listed before hashing: it takes the sample
    assert shares["uvicorn/httptools/uvloop/asyncio (HTTP server, event loop)"] == 1
    assert profile.gil_busy == pytest.approx(0.5)
    assert profile.top_self[0] == ("call (web3/contract/contract.py)", 6)


def test_percentile__nearest_rank_on_sorted_values():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 51.0  # round(0.5 * 99) = 50 → the 51st value
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
