"""Contract fixtures on Ape's in-process chain: roles, the wired contract set, order factories.

The contract set is deployed once per session through the same `deploy_all` the deploy script
uses (so the wiring is tested too); Ape's isolation reverts each test's changes.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from marketplace.deploy import DeployConfig, deploy_all
from marketplace.registry import Registry
from marketplace.signing import Offer, Request, SettlementRule, region_mask

from market_constants import (  # noqa: E402 - tests/contracts is on sys.path under pytest
    CHALLENGE_WINDOW,
    COLLATERAL_BPS,
    DAY,
    EPOCH_LENGTH,
    FEE_BPS,
    GPU_H100,
    HOUR,
    REGION_EU_NORTH,
    USDC,
)

_salts = itertools.count(1)


# ───────────────────────────── roles ─────────────────────────────


@pytest.fixture(scope="session")
def admin(accounts):
    return accounts[0]


@pytest.fixture(scope="session")
def treasury(accounts):
    return accounts[1]


@pytest.fixture(scope="session")
def provider(accounts):
    return accounts[2]


@pytest.fixture(scope="session")
def trainer(accounts):
    return accounts[3]


@pytest.fixture(scope="session")
def matcher(accounts):
    return accounts[4]


@pytest.fixture(scope="session")
def verifier(accounts):
    return accounts[5]


@pytest.fixture(scope="session")
def arbiter(accounts):
    return accounts[6]


@pytest.fixture(scope="session")
def sponsor(accounts):
    return accounts[7]


@pytest.fixture(scope="session")
def stranger(accounts):
    return accounts[8]


# ───────────────────────────── contracts ─────────────────────────────


@pytest.fixture(scope="session")
def deployed(project, chain, admin, treasury, verifier, arbiter, tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("registry") / "registry.json")
    config = DeployConfig(
        challenge_window=CHALLENGE_WINDOW,
        protocol_fee_bps=FEE_BPS,
        collateral_bps=COLLATERAL_BPS,
        epoch_length=EPOCH_LENGTH,
        treasury=treasury.address,
        arbiter=arbiter.address,
        verifier=verifier.address,
    )
    outcomes = deploy_all(project, chain, admin, registry, devnet=True, config=config)
    return {o.name: o.address for o in outcomes}


@pytest.fixture(scope="session")
def market(project, deployed):
    return project.ComputeMarket.at(deployed["ComputeMarket"])


@pytest.fixture(scope="session")
def staking(project, deployed):
    return project.ProviderStaking.at(deployed["ProviderStaking"])


@pytest.fixture(scope="session")
def reward_pool(project, deployed):
    return project.RewardPool.at(deployed["RewardPool"])


@pytest.fixture(scope="session")
def credit(project, deployed):
    return project.ComputeCredit.at(deployed["ComputeCredit"])


@pytest.fixture(scope="session")
def usdc(project, deployed):
    return project.MockStablecoin.at(deployed["MockUSDC"])


@pytest.fixture(scope="session")
def dai(project, deployed):
    return project.MockStablecoin.at(deployed["MockDAI"])


# ───────────────────────────── helpers ─────────────────────────────


@pytest.fixture(scope="session")
def now(chain):
    return lambda: chain.pending_timestamp


@pytest.fixture(scope="session")
def fund_vault(market):
    """Mint a settlement token to `account` and deposit it into the market vault."""

    def fund(account, token, amount):
        token.mint(account, amount, sender=account)
        token.approve(market, amount, sender=account)
        market.deposit(token, amount, sender=account)

    return fund


@pytest.fixture(scope="session")
def fund_stake(staking):
    def fund(account, token, amount):
        token.mint(account, amount, sender=account)
        token.approve(staking, amount, sender=account)
        staking.stake(token, amount, sender=account)

    return fund


@pytest.fixture(scope="session")
def make_offer(provider, usdc, chain):
    """Offer factory: an H100×8 box in eu-north at 2 mUSDC per GPU-hour, overridable."""

    def make(**overrides) -> Offer:
        now = chain.pending_timestamp
        fields = dict(
            provider=provider.address,
            gpuModel=GPU_H100,
            gpuCount=8,
            vramGb=80,
            region=REGION_EU_NORTH,
            greenEnergy=True,
            token=usdc.address,
            pricePerGpuHour=2 * USDC,
            minHours=1,
            maxHours=24,
            capacityGpuHours=8 * 24,
            availableUntil=now + 7 * DAY,
            expiry=now + DAY,
            salt=next(_salts),
            counter=0,
        )
        fields.update(overrides)
        return Offer(**fields)

    return make


@pytest.fixture(scope="session")
def make_request(trainer, usdc, chain):
    """Request factory: 2 H100 for 4 hours at up to 3 mUSDC per GPU-hour, overridable."""

    def make(**overrides) -> Request:
        now = chain.pending_timestamp
        fields = dict(
            trainer=trainer.address,
            gpuModel=GPU_H100,
            gpuCount=2,
            minVramGb=40,
            regionMask=region_mask(REGION_EU_NORTH, 2),
            greenOnly=False,
            token=usdc.address,
            maxPricePerGpuHour=3 * USDC,
            totalHours=4,
            minHours=1,
            startBy=now + DAY,
            expiry=now + DAY,
            jobSpecHash="0x" + "ab" * 32,
            settlementRule=int(SettlementRule.CHALLENGE_WINDOW),
            salt=next(_salts),
            counter=0,
        )
        fields.update(overrides)
        return Request(**fields)

    return make


@pytest.fixture(scope="session")
def sign(market, chain):
    """Sign an order (or attestation) as `account` for this market's EIP-712 domain."""

    def do_sign(order, account, *, chain_id=None, verifying_contract=None) -> bytes:
        return order.sign(
            account.private_key,
            chain_id if chain_id is not None else chain.chain_id,
            verifying_contract or market.address,
        )

    return do_sign


@pytest.fixture
def funded(fund_vault, fund_stake, provider, trainer, usdc):
    """Trainer has 1,000 mUSDC in the vault; provider has 1,000 mUSDC staked."""
    fund_vault(trainer, usdc, 1_000 * USDC)
    fund_stake(provider, usdc, 1_000 * USDC)


@pytest.fixture
def open_deal(market, make_offer, make_request, sign, provider, trainer, matcher, funded):
    """Open a deal (matcher submits) and return (deal_id, offer, request, receipt)."""

    def do_open(offer: Offer | None = None, request: Request | None = None, hours: int | None = None, **request_overrides):
        offer = offer or make_offer()
        request = request or make_request(**request_overrides)
        hours = hours if hours is not None else request.totalHours
        receipt = market.openDeal(
            offer.as_tuple(), sign(offer, provider), request.as_tuple(), sign(request, trainer), hours, sender=matcher
        )
        deal_id = receipt.decode_logs(market.DealOpened)[0].dealId
        return deal_id, offer, request, receipt

    return do_open


@pytest.fixture
def started_deal(open_deal, market, provider):
    def do_start(**kwargs):
        deal_id, offer, request, _ = open_deal(**kwargs)
        market.startDeal(deal_id, sender=provider)
        return deal_id, offer, request

    return do_start


@pytest.fixture
def completed_deal(started_deal, market, provider, chain):
    """A deal run for its whole booking and completed with a result hash."""

    def do_complete(result_hash="0x" + "cd" * 32, used_seconds=None, **kwargs):
        deal_id, offer, request = started_deal(**kwargs)
        booked = market.getDeal(deal_id).bookedHours * HOUR
        chain.pending_timestamp += booked
        market.completeDeal(deal_id, booked if used_seconds is None else used_seconds, result_hash, sender=provider)
        return deal_id, offer, request

    return do_complete


def with_(order, **changes):
    """A copy of a frozen order with some fields changed."""
    return replace(order, **changes)
