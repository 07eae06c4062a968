"""Pure helpers of the gas benchmark: intrinsic gas, ratios, and the BENCHMARKS.md splice.

BENCHMARKS.md is shared: other benchmarks own other sections. Only the text between the gas
markers is ever replaced; everything else is kept byte for byte.
"""

from __future__ import annotations

from pathlib import Path

START_MARKER = "<!-- bench:gas:start -->"
END_MARKER = "<!-- bench:gas:end -->"

TX_BASE_GAS = 21_000
CALLDATA_ZERO_GAS = 4
CALLDATA_NONZERO_GAS = 16
# EIP-7623 (Prague): a transaction pays at least 21,000 + 10 gas per calldata token,
# where a zero byte is one token and a non-zero byte four.
FLOOR_GAS_PER_TOKEN = 10


def calldata_gas(data: bytes) -> int:
    """Standard calldata cost (EIP-2028 pricing)."""
    zeros = data.count(0)
    return zeros * CALLDATA_ZERO_GAS + (len(data) - zeros) * CALLDATA_NONZERO_GAS


def floor_gas(data: bytes) -> int:
    """EIP-7623 minimum gas of a transaction carrying `data`."""
    zeros = data.count(0)
    tokens = zeros + 4 * (len(data) - zeros)
    return TX_BASE_GAS + FLOOR_GAS_PER_TOKEN * tokens


ACCESS_LIST_ADDRESS_GAS = 2_400
ACCESS_LIST_KEY_GAS = 1_900


def intrinsic_gas(data: bytes, access_list: list | None = None) -> int:
    """21,000 + calldata + EIP-2930 access list, for a call (not a contract creation)."""
    entries = access_list or []
    keys = sum(len(entry["storageKeys"]) for entry in entries)
    return TX_BASE_GAS + calldata_gas(data) + ACCESS_LIST_ADDRESS_GAS * len(entries) + ACCESS_LIST_KEY_GAS * keys


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}×"


def splice_section(document: str, section: str) -> str:
    """Replace the gas section of `document` (markers included) with `section`, or append it.

    `section` must start with START_MARKER and end with END_MARKER. Text outside the markers
    is returned unchanged, byte for byte.
    """
    if not (section.startswith(START_MARKER) and section.rstrip("\n").endswith(END_MARKER)):
        raise ValueError("the section must be wrapped in the bench:gas markers")
    section = section.rstrip("\n")
    start = document.find(START_MARKER)
    if start == -1:
        if document and not document.endswith("\n"):
            document += "\n"
        separator = "\n" if document else ""
        return f"{document}{separator}{section}\n"
    end = document.find(END_MARKER, start)
    if end == -1:
        raise ValueError(f"BENCHMARKS.md has {START_MARKER} but no {END_MARKER}; fix it by hand")
    if document.find(START_MARKER, start + len(START_MARKER)) != -1:
        raise ValueError(f"BENCHMARKS.md has more than one {START_MARKER}; fix it by hand")
    return document[:start] + section + document[end + len(END_MARKER):]


def write_section(path: Path, section: str) -> None:
    """Rewrite only the gas section of the file at `path` (created when missing)."""
    # Bytes, not text mode: no newline translation may touch other people's sections.
    document = path.read_bytes().decode("utf-8") if path.exists() else "# Benchmarks\n"
    updated = splice_section(document, section)
    tmp = path.with_name(f".{path.name}.gas.tmp")
    tmp.write_bytes(updated.encode("utf-8"))
    tmp.replace(path)
