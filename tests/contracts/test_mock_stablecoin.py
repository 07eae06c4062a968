"""MockStablecoin: devnet settlement token with configurable decimals and a bounded faucet."""

from __future__ import annotations

import ape
import pytest

# Every module-scoped fixture from the first test on, so Ape's snapshot isolation never rebases.
pytestmark = pytest.mark.usefixtures("deployer", "user", "token")


@pytest.fixture(scope="module")
def deployer(accounts):
    return accounts[0]


@pytest.fixture(scope="module")
def user(accounts):
    return accounts[1]


@pytest.fixture(
    scope="module",
    params=[("Mock USD Coin", "mUSDC", 6), ("Mock Dai Stablecoin", "mDAI", 18)],
    ids=["mUSDC", "mDAI"],
)
def token(request, project, deployer):
    """The two devnet stablecoins the deploy script makes: 6 decimals (USDC-like) and 18 (DAI-like)."""
    return deployer.deploy(project.MockStablecoin, *request.param)


def test_deploy__decimals_argument__reported_by_token(token):
    expected = {"mUSDC": 6, "mDAI": 18}[token.symbol()]
    assert token.decimals() == expected
    assert token.totalSupply() == 0


def test_mint__at_faucet_limit__anyone_gets_tokens_and_event(token, user):
    limit = 1_000_000 * 10 ** token.decimals()
    tx = token.mint(user, limit, sender=user)
    assert token.balanceOf(user) == limit
    assert tx.events.filter(token.FaucetMinted) == [token.FaucetMinted(to=user, amount=limit)]


def test_mint__over_faucet_limit__reverts_faucet_limit(token, user):
    limit = 1_000_000 * 10 ** token.decimals()
    with ape.reverts(token.MockStablecoinFaucetLimit, requested=limit + 1, limit=limit):
        token.mint(user, limit + 1, sender=user)
    assert token.balanceOf(user) == 0
