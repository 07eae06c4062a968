"""The chain state order intake checks, kept in memory and refreshed from the contracts' events.

Intake checks every order against the chain (settlement token, the owner's counter, the trainer's
vault balance or the provider's free collateral, chain time). Reading them per order cost a round
trip and most of an order's CPU (BENCHMARKS.md, service section); here each value is read once and
kept until an event says it may have changed:

- `poll()` (one eth_getLogs per service pass) drops every entry that names an address found in an
  indexed topic of a market or staking event since the last poll (Deposited, Withdrawn, DealOpened,
  CounterIncremented, CollateralLocked, Slashed, SettlementTokenSet, …), and the collateral ratio
  on CollateralRatioSet. Over-invalidating is harmless: the next order re-reads.
- a value is not kept if a poll saw an event for its address after the read began (the read
  may have raced the event);
- every entry also expires after `max_age_seconds` (30 s), which bounds staleness when no poll
  runs or a reorg replaced blocks the poll had seen; chain time is re-read after 2 s.

Cached values may only *accept* an order: the caller re-checks with `fresh=True` before refusing
(a stale balance must never turn away someone who just deposited). Accepting on a stale value is
safe because the contract re-checks everything when the deal opens; at worst one pairing fails.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from marketplace.chain.gateway import MARKET, STAKING, ChainGateway

_COLLATERAL_RATIO_SET = Web3.keccak(text="CollateralRatioSet(uint256)")
_GLOBAL = "*"  # pseudo-address of market-wide values (the collateral ratio)


@dataclass(frozen=True)
class IntakeState:
    """What intake needs to judge one order, as of chain time `now`."""

    now: int
    is_settlement_token: bool
    counter: int
    collateral_bps: int | None = None  # offers
    free_stake: int | None = None  # offers
    vault_balance: int | None = None  # requests
    cached: bool = False  # True if any value came from memory rather than this call's reads


@dataclass
class _Entry:
    value: Any
    fetched_at: float  # when the read began (monotonic)


class ChainStateCache:
    def __init__(self, gateway: ChainGateway, *, max_age_seconds: float = 30.0, head_max_age_seconds: float = 2.0):
        self.gateway = gateway
        self.max_age_seconds = max_age_seconds  # a value's life when no event names it
        self.head_max_age_seconds = head_max_age_seconds  # chain time's (the service's loop refreshes it)
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, ...], _Entry] = {}
        self._keys_by_address: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        self._changed_at: dict[str, float] = {}  # address → when a poll last saw an event naming it
        self._head: tuple[int, float] | None = None  # (chain timestamp, when read)
        self._polled_to: int | None = None

    # ───────────── intake ─────────────

    def intake_state(self, *, offer: bool, owner: str, token: str, fresh: bool = False) -> IntakeState:
        """The values an offer (or a request) by `owner` in `token` is checked against: from memory
        when every one is there and young, else all of them in one JSON-RPC batch with chain time."""
        keys = self._keys(offer, owner, token)
        if not fresh:
            now = time.monotonic()
            with self._lock:
                head = self._head
                entries = [self._entries.get(key) for key in keys]
            if all(e is not None and now - e.fetched_at < self.max_age_seconds for e in entries):
                if head is None or now - head[1] >= self.head_max_age_seconds:  # the loop's poll is late
                    head = self._refresh_head()
                return self._state(offer, head[0], [e.value for e in entries], cached=True)
        timestamp, values = self._read(keys)
        return self._state(offer, timestamp, values, cached=False)

    def _refresh_head(self) -> tuple[int, float]:
        began = time.monotonic()
        timestamp = self.gateway.timestamp()
        with self._lock:
            return self._note_head(timestamp, began)

    def prefetch(self, wanted: Iterable[tuple[bool, str, str]]) -> int:
        """Read, in one JSON-RPC batch, whatever intake will need for these (offer?, owner, token)
        and does not remember: a batch of orders from owners not seen lately then costs one round
        trip, not one per owner (those made batch intake's slowest requests). Returns keys read."""
        now = time.monotonic()
        missing: dict[tuple[str, ...], None] = {}  # ordered, without repeats
        with self._lock:
            for offer, owner, token in wanted:
                for key in self._keys(offer, owner, token):
                    entry = self._entries.get(key)
                    if entry is None or now - entry.fetched_at >= self.max_age_seconds:
                        missing[key] = None
        if missing:
            self._read(list(missing))
        return len(missing)

    def _read(self, keys: list[tuple[str, ...]]) -> tuple[int, list[Any]]:
        """The keys' values and chain time from the node (one JSON-RPC batch), remembered."""
        began = time.monotonic()
        contract_of = {"freeStake": STAKING}
        reads = [(contract_of.get(key[0], MARKET), key[0], key[1:] if key[1] != _GLOBAL else ()) for key in keys]
        timestamp, values = self.gateway.read_with_time(reads)
        self._store(keys, values, timestamp, began)
        return timestamp, values

    @staticmethod
    def _keys(offer: bool, owner: str, token: str) -> list[tuple[str, ...]]:
        keys = [("isSettlementToken", token), ("counterOf", owner)]
        if offer:
            keys += [("collateralBps", _GLOBAL), ("freeStake", owner, token)]
        else:
            keys += [("balanceOf", owner, token)]
        return keys

    @staticmethod
    def _state(offer: bool, now: int, values: list[Any], *, cached: bool) -> IntakeState:
        is_token, counter, *funds = values
        if offer:
            return IntakeState(now, is_token, counter, collateral_bps=funds[0], free_stake=funds[1], cached=cached)
        return IntakeState(now, is_token, counter, vault_balance=funds[0], cached=cached)

    def _store(self, keys: list[tuple[str, ...]], values: list[Any], timestamp: int, began: float) -> None:
        with self._lock:
            self._note_head(timestamp, began)
            for key, value in zip(keys, values, strict=True):
                addresses = key[1:]
                if any(self._changed_at.get(a.lower(), -1.0) >= began for a in addresses):
                    continue  # an event seen since the read began may have changed it
                self._entries[key] = _Entry(value, began)
                for address in addresses:
                    self._keys_by_address[address.lower()].add(key)

    # ───────────── refresh ─────────────

    def poll(self) -> int:
        """Drop what the market's and staking's events since the last poll may have changed, and
        note the head's time. One eth_getLogs (plus the head) per call; returns entries dropped."""
        began = time.monotonic()
        head = self.gateway.get_block("latest")
        number, timestamp = int(head["number"]), int(head["timestamp"])
        # The first poll starts at the head: a change before it that an earlier read missed is bounded
        # by max_age, as after a reorg.
        start = number if self._polled_to is None else self._polled_to + 1
        logs = []
        if start <= number:
            addresses = [self.gateway.contract(MARKET).address, self.gateway.contract(STAKING).address]
            logs = self.gateway.raw_logs(start, number, addresses)
        seen = time.monotonic()
        dropped = 0
        with self._lock:
            for log in logs:
                dropped += self._invalidate(log, seen)
            self._polled_to = number
            self._note_head(timestamp, began)
            # A read that began longer than max_age ago is expired anyway: forget older changes.
            self._changed_at = {a: t for a, t in self._changed_at.items() if seen - t < self.max_age_seconds}
        return dropped

    def _note_head(self, timestamp: int, at: float) -> tuple[int, float]:
        """Chain time `timestamp`, read at monotonic `at`, unless a later one is known (under the lock)."""
        if self._head is None or timestamp >= self._head[0]:
            self._head = (timestamp, at)
        return self._head

    def _invalidate(self, log: Any, seen: float) -> int:
        topics = [bytes(t) for t in log["topics"]]
        names = [_GLOBAL] if topics and topics[0] == _COLLATERAL_RATIO_SET else []
        # Any indexed word shaped like an address may name an account or token whose state changed.
        names += ["0x" + t[12:].hex() for t in topics[1:] if not any(t[:12]) and any(t[12:])]
        dropped = 0
        for name in names:
            self._changed_at[name] = seen
            for key in self._keys_by_address.pop(name, ()):
                dropped += self._entries.pop(key, None) is not None
        return dropped

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._keys_by_address.clear()
            self._head = None
