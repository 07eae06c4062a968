"""Deployment plan for the marketplace contracts, run through Ape.

Only `scripts/deploy.py` and the tests import this module (it needs Ape); the service reads the
registry file it writes instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marketplace.registry import Deployment, Registry

CREDIT_MAX_SUPPLY = 1_000_000_000 * 10**18  # 1e9 CCR


@dataclass(frozen=True)
class PlannedContract:
    """One contract of the plan: its registry name, its Ape contract type, and how to build
    its constructor arguments from the deployer and what is already deployed."""

    name: str
    contract_type: str
    constructor_args: Callable[[Any, dict[str, str]], list[Any]]
    devnet_only: bool = False


def deployment_plan() -> list[PlannedContract]:
    return [
        PlannedContract("ComputeCredit", "ComputeCredit", lambda deployer, _: [deployer.address, CREDIT_MAX_SUPPLY]),
        PlannedContract("MockUSDC", "MockStablecoin", lambda *_: ["Mock USD Coin", "mUSDC", 6], devnet_only=True),
        PlannedContract("MockDAI", "MockStablecoin", lambda *_: ["Mock Dai Stablecoin", "mDAI", 18], devnet_only=True),
    ]


@dataclass(frozen=True)
class DeployOutcome:
    name: str
    address: str
    newly_deployed: bool


def deploy_all(project: Any, chain_manager: Any, deployer: Any, registry: Registry, *, devnet: bool) -> list[DeployOutcome]:
    """Deploy what the registry does not already show live on this chain, then save it.

    A contract counts as deployed when the registry names it for this chain id *and* the node
    has code at that address (a restarted devnet keeps its chain id but loses its state).
    """
    chain_id = chain_manager.chain_id
    provider = chain_manager.provider
    known = registry.deployments(chain_id)
    addresses: dict[str, str] = {}
    outcomes: list[DeployOutcome] = []
    for planned in deployment_plan():
        if planned.devnet_only and not devnet:
            continue
        existing = known.get(planned.name)
        if existing is not None and provider.get_code(existing.address):
            addresses[planned.name] = existing.address
            outcomes.append(DeployOutcome(planned.name, existing.address, newly_deployed=False))
            continue
        container = getattr(project, planned.contract_type)
        args = planned.constructor_args(deployer, addresses)
        instance = deployer.deploy(container, *args)
        receipt = instance.creation_metadata.receipt if instance.creation_metadata else None
        deployment = Deployment(
            name=planned.name,
            address=instance.address,
            abi=[item.model_dump(mode="json", by_alias=True) for item in container.contract_type.abi],
            block_number=receipt.block_number if receipt else chain_manager.blocks.head.number,
            tx_hash=receipt.txn_hash if receipt else "",
            constructor_args=[a if isinstance(a, (int, str, bool)) else str(a) for a in args],
        )
        registry.record(chain_id, deployment)
        registry.save()  # after each one, so a failure half-way keeps what exists
        addresses[planned.name] = instance.address
        outcomes.append(DeployOutcome(planned.name, instance.address, newly_deployed=True))
    return outcomes
