"""Deploy the marketplace contracts and write the deployment registry.

    ape run deploy --network ethereum:local:foundry
    ape run deploy --network ethereum:sepolia:node --account my-deployer
"""

import json

import click
from ape import chain, project
from ape.cli import ConnectedProviderCommand, network_option
from ape.exceptions import AccountsError

from marketplace.deploy import deploy_all
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
@click.option("--json", "as_json", is_flag=True, help="Print the chain's registry entries as JSON.")
def cli(network, account_alias, registry_path, as_json):
    """Deploy ComputeCredit (and the devnet's mock stablecoins) and record them in the registry."""
    devnet = network.name in LOCAL_NETWORKS
    deployer = resolve_deployer(account_alias, network.name)
    try:
        registry = Registry.load(registry_path, missing_ok=True)
    except RegistryError as exc:
        raise click.ClickException(str(exc))
    outcomes = deploy_all(project, chain, deployer, registry, devnet=devnet)
    if as_json:
        entries = {name: {"address": d.address, "block": d.block_number, "tx": d.tx_hash}
                   for name, d in registry.deployments(chain.chain_id).items()}
        click.echo(json.dumps({"chain_id": chain.chain_id, "registry": str(registry.path), "contracts": entries}, indent=2))
        return
    for outcome in outcomes:
        state = "deployed" if outcome.newly_deployed else "already deployed"
        click.echo(f"{outcome.name:<18} {outcome.address}  ({state})")
    click.echo(f"registry: {registry.path} (chain {chain.chain_id})")
