"""Deployment registry: chain id → contract name → address, ABI, deploy block, tx hash.

Written by the deploy script, read by the service and CLIs without importing Ape. One JSON file
holds every chain, so one service binary can be pointed at any network by its chain id.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from marketplace.devnet import PROJECT_ROOT

DEFAULT_REGISTRY_PATH = PROJECT_ROOT / "deployments" / "registry.json"


class RegistryError(Exception):
    """The registry file is missing, malformed or lacks a chain or contract."""


@dataclass(frozen=True)
class Deployment:
    name: str
    address: str
    abi: list[dict[str, Any]]
    block_number: int
    tx_hash: str
    constructor_args: list[Any] = field(default_factory=list)


class Registry:
    """The registry file, loaded into memory; `save()` writes it atomically."""

    def __init__(self, path: Path | str = DEFAULT_REGISTRY_PATH, chains: dict[str, dict[str, Any]] | None = None):
        self.path = Path(path)
        self._chains: dict[str, dict[str, Any]] = chains or {}

    @classmethod
    def load(cls, path: Path | str | None = None, *, missing_ok: bool = False) -> Registry:
        path = Path(path or os.environ.get("MARKET_REGISTRY") or DEFAULT_REGISTRY_PATH)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            if missing_ok:
                return cls(path)
            raise RegistryError(f"no deployment registry at {path}: run the deploy script first") from None
        except json.JSONDecodeError as exc:
            raise RegistryError(f"deployment registry {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise RegistryError(f"deployment registry {path} must map chain ids to contract tables")
        return cls(path, data)

    def chain_ids(self) -> list[int]:
        return sorted(int(chain_id) for chain_id in self._chains)

    def deployments(self, chain_id: int) -> dict[str, Deployment]:
        return {name: Deployment(**entry) for name, entry in self._chains.get(str(chain_id), {}).items()}

    def get(self, chain_id: int, name: str) -> Deployment:
        entry = self._chains.get(str(chain_id), {}).get(name)
        if entry is None:
            known = ", ".join(sorted(self._chains.get(str(chain_id), {}))) or "nothing"
            raise RegistryError(f"{name} is not deployed on chain {chain_id} (registry {self.path} has {known})")
        return Deployment(**entry)

    def record(self, chain_id: int, deployment: Deployment) -> None:
        self._chains.setdefault(str(chain_id), {})[deployment.name] = asdict(deployment)

    def forget_chain(self, chain_id: int) -> None:
        self._chains.pop(str(chain_id), None)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temp file and rename, so a crash never leaves half a registry.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".registry-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(self._chains, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, self.path)


def main(argv: list[str] | None = None) -> int:
    """Print the registry as a table: `python -m marketplace.registry [path]`."""
    import shutil
    import sys

    from rich.console import Console
    from rich.table import Table

    args = sys.argv[1:] if argv is None else argv
    console = Console(width=max(120, shutil.get_terminal_size().columns))
    try:
        registry = Registry.load(args[0] if args else None)
    except RegistryError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    for chain_id in registry.chain_ids():
        table = Table(title=f"Deployments on chain {chain_id} ({registry.path})")
        table.add_column("contract", no_wrap=True)
        table.add_column("address", no_wrap=True, min_width=42)
        table.add_column("block", justify="right")
        table.add_column("tx hash", no_wrap=True)
        for name, deployment in sorted(registry.deployments(chain_id).items()):
            short_tx = f"{deployment.tx_hash[:10]}…{deployment.tx_hash[-6:]}" if deployment.tx_hash else "-"
            table.add_row(name, deployment.address, str(deployment.block_number), short_tx)
        console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
