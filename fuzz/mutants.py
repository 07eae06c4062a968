"""Mutation check for the invariant fuzzing: each mutant plants one known bug in a scratch copy
of the contracts; the campaign must fail on every one of them (a run that passes means the
invariants cannot see that bug). The working tree is never touched.

Usage: python fuzz/mutants.py [MUTANT_NAME ...]     (from the repository root, after `make setup`)
Each mutant costs a full compile through solc-js (~40 s) plus a short campaign.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS, DEPTH, SEED = "20", "300", "0x5eed"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    bug: str


MUTANTS = [
    Mutant(
        "settle-many-resettles",
        "contracts/ComputeMarket.sol",
        "deal.status == DealStatus.Completed && _rule(deal) == SettlementRule.ChallengeWindow",
        "(deal.status == DealStatus.Completed || deal.status == DealStatus.Settled)"
        " && _rule(deal) == SettlementRule.ChallengeWindow",
        "settleMany pays a settled deal again (a terminal state is left)",
    ),
    Mutant(
        "accept-settled",
        "contracts/ComputeMarket.sol",
        "if (status != DealStatus.Completed && !(status == DealStatus.Disputed && deal.completedAt != 0)) {",
        "if (status != DealStatus.Completed && status != DealStatus.Settled"
        " && !(status == DealStatus.Disputed && deal.completedAt != 0)) {",
        "accept works on a settled deal (paid twice)",
    ),
    Mutant(
        "refund-before-deadline",
        "contracts/ComputeMarket.sol",
        "if (block.timestamp <= deal.startDeadline) {\n            revert ComputeMarketStartDeadlineNotPassed",
        "if (false && block.timestamp <= deal.startDeadline) {\n            revert ComputeMarketStartDeadlineNotPassed",
        "claimRefund before the start deadline (provider slashed while still on time)",
    ),
    Mutant(
        "capacity-off-by-one",
        "contracts/ComputeMarket.sol",
        "if (gpuHours > offerRemaining) revert",
        "if (gpuHours > offerRemaining + 1) revert",
        "an offer can be filled one GPU-hour beyond its capacity",
    ),
    Mutant(
        "fee-not-cumulative",
        "contracts/ComputeMarket.sol",
        "fee = feeTo - feeFrom;\n        net = (grossTo - feeTo) - (grossFrom - feeFrom);",
        "fee = (grossTo - grossFrom) * deal.feeBps / BPS;\n        net = (grossTo - grossFrom) - fee;",
        "the fee is rounded per withdrawal, not cumulatively (split payouts round differently)",
    ),
    Mutant(
        "accrued-paid-twice",
        "contracts/ComputeMarket.sol",
        "deal.withdrawnSeconds = elapsed;\n        (uint256 providerNet, uint256 fee) = _payProvider",
        "(uint256 providerNet, uint256 fee) = _payProvider",
        "withdrawAccrued does not record what it paid (the provider can withdraw it again)",
    ),
    Mutant(
        "resolve-skips-collateral",
        "contracts/ComputeMarket.sol",
        "else staking.unlock(deal.provider, deal.token, collateral);\n    }",
        "\n    }",
        "a dispute resolved in the provider's favour leaves its collateral locked",
    ),
    Mutant(
        "slash-keeps-stake",
        "contracts/ProviderStaking.sol",
        "position.locked -= uint128(amount);\n            position.staked -= uint128(amount);",
        "position.locked -= uint128(amount);",
        "a slash pays the buyer but leaves the provider's stake on the books (staking insolvent)",
    ),
    Mutant(
        "reward-share-rounds-up",
        "contracts/RewardPool.sol",
        "return Math.mulDiv(info.funding, _weights[epoch][provider], info.totalWeight);",
        "return Math.mulDiv(info.funding, _weights[epoch][provider], info.totalWeight, Math.Rounding.Ceil);",
        "reward shares rounded up (claims can exceed an epoch's funding)",
    ),
]


def forge_binary() -> str:
    # The platform binary: the node wrapper node_modules/.bin/forge exits 0 even when forge fails.
    found = sorted(ROOT.glob("node_modules/@foundry-rs/forge-*/bin/forge"))
    return str(found[0] if found else ROOT / "node_modules/.bin/forge")


def scratch_copy() -> Path:
    work = Path(tempfile.mkdtemp(prefix="fuzz-mutant-"))
    for folder in ("contracts", "fuzz"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns(".cache", "__pycache__"))
    shutil.copy(ROOT / "foundry.toml", work / "foundry.toml")
    for link in ("node_modules", ".solcx"):
        (work / link).symlink_to(ROOT / link)
    return work


def run(mutant: Mutant) -> tuple[bool, str]:
    work = scratch_copy()
    try:
        target = work / mutant.file
        source = target.read_text()
        if source.count(mutant.old) != 1:
            return False, f"mutation site not found exactly once in {mutant.file} (contract changed?)"
        target.write_text(source.replace(mutant.old, mutant.new))
        env = dict(os.environ, FOUNDRY_INVARIANT_RUNS=RUNS, FOUNDRY_INVARIANT_DEPTH=DEPTH)
        result = subprocess.run(
            [forge_binary(), "test", "--fuzz-seed", SEED, "--match-contract", "^MarketInvariants$"],
            cwd=work, env=env, capture_output=True, text=True, timeout=1800,
        )
        output = result.stdout + result.stderr
        if "Compiler run failed" in output or "Error (" in output:
            return False, "mutant does not compile"
        failure = re.search(r"\[FAIL: (.*?)\]", output)
        if result.returncode != 0 and failure:
            return True, failure.group(1)[:160]
        return False, "campaign PASSED: the invariants did not see this bug"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    survivors = 0
    for mutant in chosen:
        killed, detail = run(mutant)
        survivors += not killed
        print(f"{'KILLED ' if killed else 'SURVIVED'} {mutant.name}: {mutant.bug}\n         -> {detail}", flush=True)
    print(f"mutants: {len(chosen) - survivors} passed, {survivors} failed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
