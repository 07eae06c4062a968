"""Deployment plan for the marketplace contracts, run through Ape.

Only `scripts/deploy.py` and the tests import this module (it needs Ape); the service reads the
registry file it writes instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marketplace.registry import Deployment, Registry

CREDIT_MAX_SUPPLY = 1_000_000_000 * 10**18  # 1e9 CCR


@dataclass(frozen=True)
class DeployConfig:
    """Market parameters; the defaults suit a public network, the demo shortens the windows."""

    challenge_window: int = 3600  # seconds a buyer has to dispute a completed deal
    protocol_fee_bps: int = 100  # 1 %
    collateral_bps: int = 2000  # provider collateral = 20 % of a deal's escrow
    unstake_cooldown: int = 7 * 24 * 3600
    epoch_length: int = 7 * 24 * 3600
    green_multiplier_bps: int = 12_000  # green-energy GPU-hours earn 1.2x rewards
    treasury: str | None = None  # default: the deployer
    arbiter: str | None = None  # default: the deployer
    verifier: str | None = None  # default: the deployer
    extra_settlement_tokens: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedContract:
    """One contract of the plan: its registry name, its Ape contract type, and how to build
    its constructor arguments from the deployer, the config and what is already deployed."""

    name: str
    contract_type: str
    constructor_args: Callable[[Any, DeployConfig, dict[str, str]], list[Any]]
    devnet_only: bool = False


def deployment_plan() -> list[PlannedContract]:
    return [
        PlannedContract("ComputeCredit", "ComputeCredit", lambda d, c, a: [d.address, CREDIT_MAX_SUPPLY]),
        PlannedContract("MockUSDC", "MockStablecoin", lambda *_: ["Mock USD Coin", "mUSDC", 6], devnet_only=True),
        PlannedContract("MockDAI", "MockStablecoin", lambda *_: ["Mock Dai Stablecoin", "mDAI", 18], devnet_only=True),
        PlannedContract("ProviderStaking", "ProviderStaking", lambda d, c, a: [d.address, c.unstake_cooldown]),
        PlannedContract(
            "RewardPool",
            "RewardPool",
            lambda d, c, a: [d.address, a["ComputeCredit"], c.epoch_length, c.green_multiplier_bps],
        ),
        PlannedContract(
            "ComputeMarket",
            "ComputeMarket",
            lambda d, c, a: [
                d.address,
                c.treasury or d.address,
                a["ProviderStaking"],
                a["RewardPool"],
                c.challenge_window,
                c.protocol_fee_bps,
                c.collateral_bps,
            ],
        ),
    ]


@dataclass(frozen=True)
class DeployOutcome:
    name: str
    address: str
    newly_deployed: bool


def deploy_all(
    project: Any,
    chain_manager: Any,
    deployer: Any,
    registry: Registry,
    *,
    devnet: bool,
    config: DeployConfig | None = None,
) -> list[DeployOutcome]:
    """Deploy what the registry does not already show live on this chain, wire the roles and
    tokens (idempotently), then save the registry.

    A contract counts as deployed when the registry names it for this chain id *and* the node
    has code at that address (a restarted devnet keeps its chain id but loses its state).
    """
    config = config or DeployConfig()
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
        args = planned.constructor_args(deployer, config, addresses)
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
    wire(project, deployer, addresses, config, devnet=devnet)
    return outcomes


def wire(project: Any, deployer: Any, addresses: dict[str, str], config: DeployConfig, *, devnet: bool) -> None:
    """Grant the market its roles on staking and rewards, the arbiter/verifier roles, and
    whitelist settlement/collateral tokens. Each step is skipped when already in place."""
    market = project.ComputeMarket.at(addresses["ComputeMarket"])
    staking = project.ProviderStaking.at(addresses["ProviderStaking"])
    pool = project.RewardPool.at(addresses["RewardPool"])

    def grant(contract: Any, role: bytes, account: str) -> None:
        if not contract.hasRole(role, account):
            contract.grantRole(role, account, sender=deployer)

    grant(staking, staking.MARKET_ROLE(), market.address)
    grant(pool, pool.RECORDER_ROLE(), market.address)
    grant(market, market.ARBITER_ROLE(), config.arbiter or deployer.address)
    grant(market, market.VERIFIER_ROLE(), config.verifier or deployer.address)

    tokens = list(config.extra_settlement_tokens)
    if devnet:
        tokens += [addresses["MockUSDC"], addresses["MockDAI"]]
    for token in tokens:
        if not market.isSettlementToken(token):
            market.setSettlementToken(token, True, sender=deployer)
        if not staking.isCollateralToken(token):
            staking.setCollateralToken(token, True, sender=deployer)


def run_deploy_script(rpc_url: str, registry_path: str | Path, *extra_args: str, timeout: float = 300) -> str:
    """Run `ape run deploy` against the node at `rpc_url` (a local devnet) in a subprocess and
    return its output; raises RuntimeError with the output's tail when it fails."""
    import os
    import shutil
    import subprocess

    from marketplace.devnet import PROJECT_ROOT

    # ape-solidity's copy of OpenZeppelin under contracts/.cache can hide our own sources from a
    # later Ape process (it lists at most 500 files): it is only needed while compiling.
    shutil.rmtree(PROJECT_ROOT / "contracts" / ".cache", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "MARKET_REGISTRY"}
    env["APE_FOUNDRY_HOST"] = rpc_url
    result = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "ape"), "run", "deploy", "--network", "ethereum:local:foundry",
         "--registry", str(registry_path), *extra_args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"deploy failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout
