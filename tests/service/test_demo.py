"""`make demo`'s story on a real anvil: every deal path shows, and the printed summary agrees with
the balances on chain (read independently here, not from the demo's own numbers)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from eth_account import Account

from marketplace.demo import ANVIL_KEYS, SCENARIOS
from marketplace.signing import DealStatus

from devnet_market import REPO_ROOT, USDC, DevnetMarket  # noqa: I001 - tests/service is on sys.path under pytest

pytestmark = pytest.mark.anvil


def test_demo__runs_every_path__summary_matches_chain_balances(anvil, tmp_path):
    market = DevnetMarket.deploy(anvil, tmp_path, challenge_window=60, epoch_length=600)
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "marketplace.demo", "--rpc-url", anvil.url, "--registry", str(market.registry_path),
         "--no-live", "--json", str(summary_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())

    m, usdc = market.market.functions, market.usdc.functions
    statuses = [DealStatus(m.getDeal(i).call()[1]).name.lower() for i in range(1, m.dealCount().call() + 1)]
    assert sorted(statuses) == ["aborted", "refunded", "resolved", "settled", "settled"]
    assert summary["deals_by_state"] == {"aborted": 1, "refunded": 1, "resolved": 1, "settled": 2}

    providers = {s.provider for s in SCENARIOS}
    trainers = {s.trainer for s in SCENARIOS}
    address = [Account.from_key(key).address for key in ANVIL_KEYS]
    token = market.usdc.address
    # Providers never withdrew: what they were paid is in their vault balances.
    assert sum(m.balanceOf(address[p], token).call() for p in providers) == summary["paid_to_providers"] > 0
    assert m.balanceOf(summary["accounts"]["treasury"], token).call() == summary["protocol_fees"] > 0
    # Trainers deposited 1,000 each; every escrow went to a provider, the treasury or back to them.
    assert sum(m.balanceOf(address[t], token).call() for t in trainers) == (
        len(trainers) * 1_000 * USDC - summary["paid_to_providers"] - summary["protocol_fees"])
    # Slashed collateral goes to the harmed buyer's wallet (they deposited all they minted).
    assert sum(usdc.balanceOf(address[t]).call() for t in trainers) == summary["collateral_slashed"] > 0
    credit = market.contract("ComputeCredit").functions
    claimed = sum(credit.balanceOf(address[p]).call() for p in providers)
    assert claimed == summary["rewards_claimed"] and 0 <= 10_000 * 10**18 - claimed < len(providers)
