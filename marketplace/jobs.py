"""The job catalogue: real workloads a provider agent runs for the GPU-hours it sold, and that the
verifier can re-run, because each is deterministic for its spec.

A job spec is a small JSON object; a Request commits to it by `jobSpecHash` (keccak of its
canonical JSON, see orderbook.job_spec_hash). Jobs run in a subprocess with CPU-time, wall-time
and memory limits (`run_isolated`), and report a result hash and metrics.

    python -m marketplace.jobs run '{"type": "train-logreg", "seed": 7, "samples": 2000, "features": 16, "epochs": 200}'
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak

MAX_ITERATIONS = 50_000_000
MAX_SAMPLES = 200_000


class JobSpecError(ValueError):
    """The spec names an unknown job type or has out-of-range parameters."""


@dataclass(frozen=True)
class JobResult:
    result_hash: str
    metrics: dict[str, Any]
    seconds: float


def _int_param(spec: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise JobSpecError(f"{spec.get('type')}: {name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def hash_chain(spec: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Iterated SHA-256 from a seed: a CPU-bound proof-of-work-like benchmark job."""
    iterations = _int_param(spec, "iterations", 100_000, 1, MAX_ITERATIONS)
    digest = hashlib.sha256(str(spec.get("seed", "")).encode()).digest()
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    return digest, {"iterations": iterations, "digest": digest.hex()}


def train_logreg(spec: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Logistic regression trained by full-batch gradient descent on a seeded synthetic dataset.
    The weights are rounded before hashing so that BLAS summation order cannot change the result."""
    import numpy as np

    seed = _int_param(spec, "seed", 0, 0, 2**32 - 1)
    samples = _int_param(spec, "samples", 2000, 10, MAX_SAMPLES)
    features = _int_param(spec, "features", 16, 1, 512)
    epochs = _int_param(spec, "epochs", 200, 1, 100_000)
    rng = np.random.default_rng(seed)
    true_w = rng.normal(size=features)
    x = rng.normal(size=(samples, features))
    y = (x @ true_w + 0.5 * rng.normal(size=samples) > 0).astype(np.float64)
    w = np.zeros(features)
    for _ in range(epochs):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        w -= 0.5 * (x.T @ (p - y)) / samples
    accuracy = float(((x @ w > 0) == (y > 0.5)).mean())
    rounded = [round(float(v), 6) for v in w]
    blob = json.dumps({"weights": rounded}, separators=(",", ":")).encode()
    return blob, {"accuracy": round(accuracy, 4), "epochs": epochs, "samples": samples}


JOB_TYPES: dict[str, Callable[[dict[str, Any]], tuple[bytes, dict[str, Any]]]] = {
    "hash-chain": hash_chain,
    "train-logreg": train_logreg,
}


def validate(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or spec.get("type") not in JOB_TYPES:
        raise JobSpecError(f"job type must be one of {', '.join(sorted(JOB_TYPES))}")
    return spec


def run(spec: dict[str, Any]) -> JobResult:
    """Run a job in this process."""
    job = JOB_TYPES[validate(spec)["type"]]
    started = time.perf_counter()
    output, metrics = job(spec)
    return JobResult("0x" + keccak(output).hex(), metrics, time.perf_counter() - started)


def run_isolated(spec: dict[str, Any], *, timeout: float, memory_mb: int = 1024) -> JobResult:
    """Run a job in a subprocess with wall-time, CPU-time and address-space limits."""
    validate(spec)

    def limits() -> None:  # runs in the child before exec
        cpu = max(1, int(timeout) + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))

    completed = subprocess.run(
        [sys.executable, "-m", "marketplace.jobs", "run", json.dumps(spec)],
        capture_output=True, text=True, timeout=timeout, preexec_fn=limits,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    if completed.returncode != 0:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"job {spec['type']} failed (exit {completed.returncode}): {tail}")
    data = json.loads(completed.stdout)
    return JobResult(data["result_hash"], data["metrics"], data["seconds"])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        print("usage: python -m marketplace.jobs run '<job spec json>'", file=sys.stderr)
        return 2
    try:
        result = run(json.loads(args[1]))
    except (JobSpecError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"result_hash": result.result_hash, "metrics": result.metrics, "seconds": result.seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
