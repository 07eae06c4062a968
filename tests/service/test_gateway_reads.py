"""ChainGateway.read encodes and decodes view calls itself (web3's per-call ABI work was most of
an order's intake cost): its results must equal web3's `contract.functions.f(*args).call()`."""

from __future__ import annotations

import pytest

from marketplace.chain.gateway import MARKET, STAKING, ChainGateway
from marketplace.registry import Registry

from devnet_market import PROVIDER, TRAINER, USDC, DevnetMarket  # noqa: I001

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def chain(anvil, tmp_path_factory):
    market = DevnetMarket.deploy(anvil, tmp_path_factory.mktemp("reads"))
    market.stake(PROVIDER, 300 * USDC)
    market.fund_vault(TRAINER, 70 * USDC)
    return market, ChainGateway(anvil.url, Registry.load(market.registry_path))


def web3_call(market: DevnetMarket, name: str, function: str, *args):
    return getattr(market.contract(name).functions, function)(*args).call()


@pytest.mark.parametrize("name, function, args", [
    (MARKET, "balanceOf", ("trainer", "usdc")),          # one uint256
    (MARKET, "isSettlementToken", ("usdc",)),             # bool
    (MARKET, "treasury", ()),                              # address: checksummed like web3
    (MARKET, "counterOf", ("provider",)),
    (MARKET, "orderState", (b"\x01" * 32,)),              # two outputs
    (STAKING, "positionOf", ("provider", "usdc")),        # four outputs
    (STAKING, "freeStake", ("provider", "usdc")),
])
def test_read__equals_web3s_call(chain, name, function, args):
    market, gateway = chain
    values = {"trainer": market.address(TRAINER), "provider": market.address(PROVIDER), "usdc": market.usdc.address}
    resolved = tuple(values.get(a, a) if isinstance(a, str) else a for a in args)
    ours = gateway.read(name, function, *resolved)
    assert ours == web3_call(market, name, function, *resolved)
    assert type(ours) is type(web3_call(market, name, function, *resolved))


def test_read__struct_output__equals_web3s_call(chain):
    market, gateway = chain
    assert gateway.read(MARKET, "getDeal", 0) == web3_call(market, MARKET, "getDeal", 0)


def test_read__values_match_the_chain_state_set_up(chain):
    market, gateway = chain
    assert gateway.vault_balance(market.address(TRAINER), market.usdc.address) == 70 * USDC
    assert gateway.free_stake(market.address(PROVIDER), market.usdc.address) == 300 * USDC
    assert gateway.is_settlement_token(market.usdc.address) is True


def test_read__unknown_function__attribute_error_naming_it(chain):
    _, gateway = chain
    with pytest.raises(AttributeError, match="noSuchView"):
        gateway.read(MARKET, "noSuchView")

