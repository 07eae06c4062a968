"""Where a transaction's gas goes, from anvil's `debug_traceTransaction` struct logs.

Pure functions (no node needed), so the attribution is unit-tested on hand-made traces.

Each step's *inclusive* cost is the gas it took until the next step of the same call frame
(so a CALL includes everything its callee spent); its *self* cost is that minus what its direct
children spent. Self costs add up to the transaction's execution gas, and each one is filed
under a category (what the opcode was for) and the contract whose code ran it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CALL_OPS = {"CALL", "STATICCALL", "DELEGATECALL", "CALLCODE"}
# Solidity checks a call target's code size, and SignatureChecker a signer's: the first touch of
# an account in a transaction costs 2,600 (EIP-2929), paid here rather than by the CALL.
ACCOUNT_OPS = {"EXTCODESIZE", "EXTCODEHASH", "EXTCODECOPY", "BALANCE"}
ECRECOVER = 0x01

# Category names, in the order reports list them.
SSTORE_NEW = "SSTORE 0→x (new slot)"
SSTORE_UPDATE = "SSTORE x→y (update)"
SSTORE_OTHER = "SSTORE no-op / reset"
SLOAD_COLD = "SLOAD cold"
SLOAD_WARM = "SLOAD warm"
TSTORE = "TSTORE/TLOAD (reentrancy guard)"
ECRECOVER_CALL = "ecrecover precompile"
ACCOUNT_ACCESS = "account access (EXTCODESIZE …)"
EXTERNAL_CALL = "external call overhead"
LOGS = "LOG (events)"
KECCAK = "KECCAK256 (hashing)"
OTHER = "compute, memory, calldata"
CATEGORIES = (
    SSTORE_NEW, SSTORE_UPDATE, SSTORE_OTHER, SLOAD_COLD, SLOAD_WARM, TSTORE, ECRECOVER_CALL,
    ACCOUNT_ACCESS, EXTERNAL_CALL, LOGS, KECCAK, OTHER,
)


@dataclass
class Breakdown:
    """Execution gas of one transaction split by category and by contract."""

    total: int = 0
    by_category: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    count_by_category: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_contract: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def scaled(self, divisor: int) -> Breakdown:
        """Per-item view of a batch (integer division; counts become averages rounded down)."""
        out = Breakdown(total=self.total // divisor)
        for key, value in self.by_category.items():
            out.by_category[key] = value // divisor
        for key, value in self.count_by_category.items():
            out.count_by_category[key] = value // divisor
        for key, value in self.by_contract.items():
            out.by_contract[key] = value // divisor
        return out


def _category(op: str, self_cost: int, call_target: int | None) -> str:
    if op == "SSTORE":
        if self_cost >= 20_000:
            return SSTORE_NEW
        if self_cost >= 2_900:
            return SSTORE_UPDATE
        return SSTORE_OTHER
    if op == "SLOAD":
        return SLOAD_COLD if self_cost >= 2_100 else SLOAD_WARM
    if op in ("TSTORE", "TLOAD"):
        return TSTORE
    if op in ACCOUNT_OPS:
        return ACCOUNT_ACCESS
    if op in CALL_OPS:
        return ECRECOVER_CALL if call_target == ECRECOVER else EXTERNAL_CALL
    if op.startswith("LOG"):
        return LOGS
    if op in ("KECCAK256", "SHA3"):
        return KECCAK
    return OTHER


def _call_target(step: Mapping[str, Any]) -> int | None:
    stack = step.get("stack")
    if not stack or len(stack) < 2:
        return None
    value = stack[-2]
    return int(value, 16) if isinstance(value, str) else int(value)


def attribute(
    struct_logs: list[Mapping[str, Any]],
    to_address: str,
    names: Mapping[str, str] | None = None,
) -> Breakdown:
    """Split the execution gas of a trace by category and contract.

    `to_address` is the transaction's recipient (the code at depth 1); `names` maps lower-case
    addresses to display names (unknown ones show as the address).
    """
    names = {k.lower(): v for k, v in (names or {}).items()}
    n = len(struct_logs)
    inclusive = [0] * n
    # Next step of the same frame, found with a stack of open steps per depth.
    for i, step in enumerate(struct_logs):
        depth = step["depth"]
        j = i + 1
        while j < n and struct_logs[j]["depth"] > depth:
            j += 1
        if j < n and struct_logs[j]["depth"] == depth:
            inclusive[i] = step["gas"] - struct_logs[j]["gas"]
        else:
            # Last step of its frame (RETURN/STOP/REVERT or an exceptional halt).
            inclusive[i] = int(step.get("gasCost", 0))

    children = [0] * n
    open_calls: list[int] = []  # index of the call step that opened each deeper frame
    for i, step in enumerate(struct_logs):
        depth = step["depth"]
        while open_calls and struct_logs[open_calls[-1]]["depth"] >= depth:
            open_calls.pop()
        if open_calls:
            children[open_calls[-1]] += inclusive[i]
        if step["op"] in CALL_OPS and i + 1 < n and struct_logs[i + 1]["depth"] > depth:
            open_calls.append(i)

    result = Breakdown()
    frames: list[str] = [to_address.lower()]  # code address per depth (1-based → index depth-1)
    for i, step in enumerate(struct_logs):
        depth = step["depth"]
        del frames[depth:]
        self_cost = inclusive[i] - children[i]
        op = step["op"]
        target = _call_target(step) if op in CALL_OPS else None
        category = _category(op, self_cost, target)
        result.by_category[category] += self_cost
        result.count_by_category[category] += 1
        address = frames[depth - 1] if depth - 1 < len(frames) else "?"
        result.by_contract[names.get(address, address)] += self_cost
        result.total += self_cost
        if op in CALL_OPS and i + 1 < n and struct_logs[i + 1]["depth"] > depth:
            if op == "DELEGATECALL":
                frames.append(address)  # code of the target, storage of the caller: file under caller
            else:
                frames.append(f"0x{target:040x}" if target is not None else "?")
    return result


def merge(breakdowns: Iterable[Breakdown]) -> Breakdown:
    out = Breakdown()
    for b in breakdowns:
        out.total += b.total
        for k, v in b.by_category.items():
            out.by_category[k] += v
        for k, v in b.count_by_category.items():
            out.count_by_category[k] += v
        for k, v in b.by_contract.items():
            out.by_contract[k] += v
    return out
