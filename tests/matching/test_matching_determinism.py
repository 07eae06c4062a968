"""Same input sequence -> same matches, byte for byte (also across hash seeds and processes)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from marketplace.matching.batch import clear_batch
from marketplace.matching.continuous import ContinuousMatcher
from marketplace.matching.generator import MarketGenerator

START = 1_800_000_000
REPO = Path(__file__).resolve().parents[2]

DIGEST_SCRIPT = """
import hashlib, json
from marketplace.matching.batch import clear_batch
from marketplace.matching.continuous import ContinuousMatcher
from marketplace.matching.generator import MarketGenerator
gen = MarketGenerator(42, providers=200, trainers=400)
matcher = ContinuousMatcher()
deals = []
for now, order in gen.flow(3_000, start=%d, orders_per_second=50):
    deals += [d.as_tuple() for d in matcher.submit(order, now)]
    if now %% 17 == 0:
        deals.append(("expired", *matcher.expire(now)))
offers, requests = MarketGenerator(43, providers=80, trainers=160).window(600, now=%d)
print(hashlib.sha256(json.dumps(deals).encode()).hexdigest(), clear_batch(offers, requests, %d).digest())
""" % (START, START, START)


def run_digest(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_continuous__same_flow_twice__identical_deals() -> None:
    def replay() -> str:
        gen = MarketGenerator(7, providers=100, trainers=200)
        matcher = ContinuousMatcher()
        deals = [d.as_tuple() for now, o in gen.flow(2_000, start=START, orders_per_second=20) for d in matcher.submit(o, now)]
        assert deals, "the flow should trade"
        return hashlib.sha256(json.dumps(deals).encode()).hexdigest()

    assert replay() == replay()


def test_batch__same_window_twice__identical_digest() -> None:
    offers, requests = MarketGenerator(9, providers=80, trainers=160).window(800, now=START)
    first = clear_batch(offers, requests, START)
    assert first.deals
    assert clear_batch(offers, requests, START).digest() == first.digest()


def test_across_processes_and_hash_seeds__identical() -> None:
    assert run_digest("1") == run_digest("12345")
