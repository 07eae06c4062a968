"""Deploy the marketplace contracts and write the deployment registry.

    ape run deploy --network ethereum:local:foundry
    ape run deploy --network ethereum:sepolia:node --account my-deployer
"""

import json

import click
from ape import chain, project
from ape.cli import ConnectedProviderCommand, network_option
from ape.exceptions import AccountsError

from marketplace.deploy import DeployConfig, deploy_all
from marketplace.registry import Registry, RegistryError

LOCAL_NETWORKS = {"local"}


def resolve_deployer(alias: str | None, network_name: str):
    from ape import accounts

    if alias:
        try:
            return accounts.load(alias)
        except (AccountsError, IndexError) as exc:
            raise click.ClickException(f"no account named '{alias}' ({exc}); see `ape accounts list`")
    if network_name in LOCAL_NETWORKS:
        return accounts.test_accounts[0]
    raise click.ClickException(f"--account is required on network '{network_name}'")


@click.command(cls=ConnectedProviderCommand)
@network_option()
@click.option("--account", "account_alias", default=None, help="Ape account alias (default on local networks: test account 0).")
@click.option("--registry", "registry_path", default=None, help="Registry file (default: $MARKET_REGISTRY or deployments/registry.json).")
@click.option("--challenge-window", type=click.IntRange(0, 30 * 86400), default=3600, show_default=True,
              help="Seconds a buyer has to dispute a completed deal.")
@click.option("--fee-bps", type=click.IntRange(0, 1000), default=100, show_default=True, help="Protocol fee (basis points).")
@click.option("--collateral-bps", type=click.IntRange(0, 10000), default=2000, show_default=True,
              help="Provider collateral as a share of a deal's escrow (basis points).")
@click.option("--epoch-length", type=click.IntRange(1), default=7 * 86400, show_default=True, help="Reward epoch length (seconds).")
@click.option("--settlement-token", "settlement_tokens", multiple=True,
              help="ERC-20 address to whitelist for settlement and collateral (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the chain's registry entries as JSON.")
def cli(network, account_alias, registry_path, challenge_window, fee_bps, collateral_bps, epoch_length,
        settlement_tokens, as_json):
    """Deploy and wire ComputeCredit, ProviderStaking, RewardPool and ComputeMarket (plus mock
    stablecoins on a local devnet), and record them in the deployment registry.

    \b
    Examples:
      ape run deploy --network ethereum:local:foundry
      ape run deploy --network ethereum:local:foundry --challenge-window 60 --epoch-length 600
      ape run deploy --network ethereum:sepolia:node --account deployer --settlement-token 0x...
    """
    config = DeployConfig(
        challenge_window=challenge_window,
        protocol_fee_bps=fee_bps,
        collateral_bps=collateral_bps,
        epoch_length=epoch_length,
        extra_settlement_tokens=list(settlement_tokens),
    )
    devnet = network.name in LOCAL_NETWORKS
    deployer = resolve_deployer(account_alias, network.name)
    try:
        registry = Registry.load(registry_path, missing_ok=True)
    except RegistryError as exc:
        raise click.ClickException(str(exc))
    outcomes = deploy_all(project, chain, deployer, registry, devnet=devnet, config=config)
    if as_json:
        entries = {name: {"address": d.address, "block": d.block_number, "tx": d.tx_hash}
                   for name, d in registry.deployments(chain.chain_id).items()}
        click.echo(json.dumps({"chain_id": chain.chain_id, "registry": str(registry.path), "contracts": entries}, indent=2))
        return
    for outcome in outcomes:
        state = "deployed" if outcome.newly_deployed else "already deployed"
        click.echo(f"{outcome.name:<18} {outcome.address}  ({state})")
    click.echo(f"registry: {registry.path} (chain {chain.chain_id})")
