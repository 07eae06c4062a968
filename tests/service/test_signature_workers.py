"""Batch intake's signature workers: the same verdicts as in-process checks (errors keep their
class and field), and no worker outlives the service, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from eth_account import Account

from marketplace.db.models import OrderSide
from marketplace.errors import InvalidInput, InvalidSignature
from marketplace.orderbook import SignatureWorkers, SignedOrder, _signed_or_error
from marketplace.signing import Offer

KEY = "0x" + "42" * 32
OWNER = Account.from_key(KEY).address
MARKET = "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707"
TOKEN = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def signed_items(n: int) -> list[tuple[OrderSide, dict, str]]:
    items = []
    for i in range(n):
        offer = Offer(provider=OWNER, gpuModel=8, gpuCount=8, vramGb=80, region=1, greenEnergy=True, token=TOKEN,
                      pricePerGpuHour=2_000_000 + i, minHours=1, maxHours=24, capacityGpuHours=192,
                      availableUntil=2_000_000_000, expiry=1_900_000_000, salt=i, counter=0)
        message = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in offer.message().items()}
        items.append((OrderSide.OFFER, message, "0x" + offer.sign(KEY, 31337, MARKET).hex()))
    return items


@pytest.fixture(scope="module")
def workers():
    pool = SignatureWorkers(1)
    yield pool
    pool.close()


def test_signed_orders__valid_and_invalid__same_verdicts_as_in_process(workers):
    items = signed_items(40)
    items[3] = (items[3][0], {**items[3][1], "gpuCount": True}, items[3][2])  # bool as int
    items[7] = (items[7][0], items[7][1], items[8][2])  # someone else's signature
    items[9] = (items[9][0], items[9][1], "0x1234")  # malformed
    remote = workers.signed_orders(items, 31337, MARKET)
    local = [_signed_or_error(side, message, signature, 31337, MARKET) for side, message, signature in items]
    assert len(remote) == len(local) == 40
    for got, want in zip(remote, local, strict=True):
        if isinstance(want, SignedOrder):
            assert got == want and got.order.struct_hash() == want.order.struct_hash()
        else:
            assert (type(got), got.message, got.field) == (type(want), want.message, want.field)
    assert isinstance(remote[3], InvalidInput) and remote[3].field == "gpuCount"
    assert isinstance(remote[7], InvalidSignature) and isinstance(remote[9], InvalidInput)
    assert sum(isinstance(r, SignedOrder) for r in remote) == 37


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead too
        return stat.read().split()[2] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_workers__service_killed__workers_exit():
    script = textwrap.dedent("""
        import os, sys, time
        from marketplace.orderbook import SignatureWorkers
        pool = SignatureWorkers(2)
        print(" ".join(str(p) for p in pool._pool._processes), flush=True)
        time.sleep(600)
    """)
    service = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in service.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        service.send_signal(signal.SIGKILL)
        service.wait(10)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)
