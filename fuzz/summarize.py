"""Summarise a `make fuzz` run: calls per campaign (from forge's output) and, per action, how
often the contracts accepted / rejected it (from the campaigns' FUZZ_STATS files).

Usage: python fuzz/summarize.py FORGE_LOG STATS_DIR
Prints a plain closing line "fuzz: N passed, N failed" (campaigns); exits 1 when any failed or
when forge reported no campaign at all.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

RESULT = re.compile(r"\[(PASS|FAIL)[^\]]*\]\s+(\S+)\(\)\s+\(runs: (\d+), calls: (\d+), reverts: (\d+)\)")
SUITE = re.compile(r"^Ran \d+ tests? for (\S+):(\S+)")


def main(log_path: str, stats_dir: str) -> int:
    lines = Path(log_path).read_text(errors="replace").splitlines()
    campaigns: list[tuple[str, str, int, int, int]] = []
    suite = "?"
    for line in lines:
        if m := SUITE.search(line):
            suite = m.group(2)
        elif m := RESULT.search(line):
            status, test, runs, calls, reverts = m.groups()
            campaigns.append((f"{suite}.{test}", status, int(runs), int(calls), int(reverts)))
    passed = sum(1 for c in campaigns if c[1] == "PASS")
    failed = len(campaigns) - passed
    total = sum(c[3] for c in campaigns)

    for stats in sorted(Path(stats_dir).glob("*.csv")):
        accepted: dict[str, int] = defaultdict(int)
        rejected: dict[str, int] = defaultdict(int)
        with stats.open() as handle:
            for action, ok, no in csv.reader(handle):
                accepted[action] += int(ok)
                rejected[action] += int(no)
        print(f"\n{stats.stem}: contract calls the model predicted, summed over runs")
        print(f"  {'action':<44} {'accepted':>9} {'rejected':>9}")
        for action in sorted(accepted):
            print(f"  {action:<44} {accepted[action]:>9} {rejected[action]:>9}")

    print()
    for name, status, runs, calls, reverts in campaigns:
        print(f"  {status} {name}: {runs} runs, {calls} calls, {reverts} reverts")
    print(f"fuzzed calls: {total} (invariants checked after every call)")
    print(f"fuzz: {passed} passed, {failed} failed")
    return 0 if campaigns and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
