"""The machine a benchmark ran on, as BENCHMARKS.md records it (shared by the bench scripts)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_facts() -> dict[str, str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass  # no /proc: memory stays "?"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": memory, "os": platform.platform(terse=True),
            "python": platform.python_version()}
