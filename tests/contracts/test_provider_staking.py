"""ProviderStaking: measured stakes, the unstake cooldown, and market-only lock/unlock/slash.

Every revert path is matched by its custom error through the shared strict `reverts`
(tests/contracts/strict_reverts.py): a bare `ape.reverts(Error)` lets a revert Ape cannot decode
pass, e.g. a ProviderStaking error bubbling out of a market call.
"""


import ape
import pytest
from eth_utils import keccak

from market_constants import COLLATERAL_BPS, DAY, USDC
from strict_reverts import reverts

COOLDOWN = 7 * DAY  # DeployConfig.unstake_cooldown, what the fixtures deploy with
MAX_COOLDOWN = 90 * DAY
MARKET_ROLE = keccak(text="MARKET_ROLE")

# Module-scoped deployments are requested from the first test on, so Ape's isolation never rebases.
pytestmark = pytest.mark.usefixtures(
    "admin", "provider", "trainer", "stranger", "matcher", "market", "staking", "usdc", "credit",
    "fund_stake", "fund_vault", "make_offer", "make_request", "sign", "fot", "fake_market",
)


@pytest.fixture(scope="module")
def fot(project, admin, staking):
    """A 1 %-burn fee-on-transfer token, allowed as collateral."""
    token = admin.deploy(project.FeeOnTransferToken)
    staking.setCollateralToken(token, True, sender=admin)
    return token


@pytest.fixture(scope="module")
def fake_market(accounts, admin, staking):
    """An EOA holding MARKET_ROLE, to drive lock/unlock/slash directly."""
    account = accounts[9]
    staking.grantRole(MARKET_ROLE, account, sender=admin)
    return account


def position(staking, provider, token):
    staked, locked, pending, available_at = staking.positionOf(provider, token)
    return dict(staked=staked, locked=locked, pending=pending, available_at=available_at)


# ───────────────────────────── stake ─────────────────────────────


def test_stake__allowed_token__credits_amount_and_takes_the_tokens(staking, usdc, provider):
    usdc.mint(provider, 500 * USDC, sender=provider)
    usdc.approve(staking, 500 * USDC, sender=provider)

    receipt = staking.stake(usdc, 500 * USDC, sender=provider)

    assert position(staking, provider, usdc) == dict(staked=500 * USDC, locked=0, pending=0, available_at=0)
    assert staking.freeStake(provider, usdc) == 500 * USDC
    assert usdc.balanceOf(provider) == 0
    assert usdc.balanceOf(staking) == 500 * USDC
    event = receipt.decode_logs(staking.Staked)[0]
    # `event.provider` would be Ape's chain provider: read the field by key.
    assert (event["provider"], event["token"], event["amount"]) == (provider.address, usdc.address, 500 * USDC)


def test_stake__fee_on_transfer_token__credits_the_measured_amount(staking, fot, provider):
    nominal = 1_000_001  # 1 % burn rounded down: 10_000 burned, 990_001 arrive
    fot.mint(provider, nominal, sender=provider)
    fot.approve(staking, nominal, sender=provider)

    receipt = staking.stake(fot, nominal, sender=provider)

    arrived = nominal - nominal // 100
    assert arrived == 990_001
    assert position(staking, provider, fot)["staked"] == arrived
    assert fot.balanceOf(staking) == arrived
    assert receipt.decode_logs(staking.Staked)[0].amount == arrived


def test_stake__amount_beyond_uint128__reverts_and_takes_nothing(staking, project, admin, provider):
    """A collateral token with many decimals (here 40, as some bridged tokens have) makes 2**128
    base units only ~3.4 whole tokens. Such a stake must revert, not be truncated."""
    big = admin.deploy(project.MockStablecoin, "Many Decimals", "MANY", 40)
    staking.setCollateralToken(big, True, sender=admin)
    amount = 2**128 + 5
    big.mint(provider, amount, sender=provider)
    big.approve(staking, amount, sender=provider)
    with reverts(staking.SafeCastOverflowedUintDowncast, bits=128, value=amount):
        staking.stake(big, amount, sender=provider)
    assert big.balanceOf(provider) == amount  # refused: nothing taken
    assert position(staking, provider, big)["staked"] == 0


def test_stake__zero__reverts(staking, usdc, provider):
    with reverts(staking.ProviderStakingZeroAmount):
        staking.stake(usdc, 0, sender=provider)


def test_stake__token_not_allowed__reverts(staking, credit, admin):
    credit.mint(admin, 10, sender=admin)
    credit.approve(staking, 10, sender=admin)
    with reverts(staking.ProviderStakingTokenNotAllowed) as info:
        staking.stake(credit, 10, sender=admin)
    assert info.inputs["token"] == credit.address


# ───────────────────────────── unstake ─────────────────────────────


def test_request_unstake__free_stake__moves_to_pending_and_starts_cooldown(staking, usdc, provider, fund_stake):
    fund_stake(provider, usdc, 100 * USDC)

    receipt = staking.requestUnstake(usdc, 30 * USDC, sender=provider)

    requested_at = ape.chain.blocks.head.timestamp
    assert position(staking, provider, usdc) == dict(
        staked=70 * USDC, locked=0, pending=30 * USDC, available_at=requested_at + COOLDOWN
    )
    assert staking.freeStake(provider, usdc) == 70 * USDC
    assert usdc.balanceOf(staking) == 100 * USDC  # nothing leaves before the cooldown
    event = receipt.decode_logs(staking.UnstakeRequested)[0]
    assert (event.amount, event.availableAt) == (30 * USDC, requested_at + COOLDOWN)


def test_request_unstake__second_request__restarts_cooldown_for_everything_pending(
    staking, usdc, provider, fund_stake, chain
):
    fund_stake(provider, usdc, 100 * USDC)
    staking.requestUnstake(usdc, 30 * USDC, sender=provider)
    first_available = position(staking, provider, usdc)["available_at"]

    chain.pending_timestamp = first_available - 1  # almost out of the queue ...
    staking.requestUnstake(usdc, 10 * USDC, sender=provider)  # ... then asks for more

    second_available = chain.blocks.head.timestamp + COOLDOWN
    assert position(staking, provider, usdc)["pending"] == 40 * USDC
    assert position(staking, provider, usdc)["available_at"] == second_available
    chain.pending_timestamp = first_available
    with reverts(staking.ProviderStakingCooldownActive) as info:
        staking.withdrawUnstaked(usdc, sender=provider)
    assert info.inputs["availableAt"] == second_available


def test_request_unstake__zero__reverts(staking, usdc, provider, fund_stake):
    fund_stake(provider, usdc, 100 * USDC)
    with reverts(staking.ProviderStakingZeroAmount):
        staking.requestUnstake(usdc, 0, sender=provider)


def test_request_unstake__more_than_staked__reverts_insufficient_free_stake(staking, usdc, provider, fund_stake):
    fund_stake(provider, usdc, 100 * USDC)
    with reverts(staking.ProviderStakingInsufficientFreeStake) as info:
        staking.requestUnstake(usdc, 100 * USDC + 1, sender=provider)
    assert (info.inputs["free"], info.inputs["needed"]) == (100 * USDC, 100 * USDC + 1)


def test_request_unstake__collateral_locked_by_an_open_deal__cannot_be_unstaked(
    staking, market, usdc, provider, open_deal
):
    deal_id, _, _, _ = open_deal()  # provider staked 1,000 mUSDC; the deal locks 20 % of its escrow
    collateral = market.escrowOf(deal_id) * COLLATERAL_BPS // 10_000
    free = 1_000 * USDC - collateral
    assert staking.freeStake(provider, usdc) == free

    with reverts(staking.ProviderStakingInsufficientFreeStake) as info:
        staking.requestUnstake(usdc, free + 1, sender=provider)
    assert (info.inputs["free"], info.inputs["needed"]) == (free, free + 1)

    staking.requestUnstake(usdc, free, sender=provider)  # everything unlocked may go
    assert position(staking, provider, usdc)["staked"] == collateral
    assert position(staking, provider, usdc)["locked"] == collateral


def test_withdraw_unstaked__before_cooldown_ends__reverts_then_pays_at_the_second(
    staking, usdc, provider, fund_stake, chain
):
    fund_stake(provider, usdc, 100 * USDC)
    staking.requestUnstake(usdc, 40 * USDC, sender=provider)
    available_at = position(staking, provider, usdc)["available_at"]

    chain.pending_timestamp = available_at - 1
    with reverts(staking.ProviderStakingCooldownActive) as info:
        staking.withdrawUnstaked(usdc, sender=provider)
    assert info.inputs["availableAt"] == available_at

    chain.pending_timestamp = available_at
    receipt = staking.withdrawUnstaked(usdc, sender=provider)

    assert usdc.balanceOf(provider) == 40 * USDC
    assert usdc.balanceOf(staking) == 60 * USDC
    assert position(staking, provider, usdc)["staked"] == 60 * USDC
    assert position(staking, provider, usdc)["pending"] == 0
    assert receipt.decode_logs(staking.Unstaked)[0].amount == 40 * USDC


def test_withdraw_unstaked__nothing_pending__reverts(staking, usdc, provider, fund_stake):
    fund_stake(provider, usdc, 100 * USDC)
    with reverts(staking.ProviderStakingNothingToWithdraw):
        staking.withdrawUnstaked(usdc, sender=provider)


def test_withdraw_unstaked__twice__second_reverts_nothing_to_withdraw(staking, usdc, provider, fund_stake, chain):
    fund_stake(provider, usdc, 100 * USDC)
    staking.requestUnstake(usdc, 100 * USDC, sender=provider)
    chain.pending_timestamp += COOLDOWN
    staking.withdrawUnstaked(usdc, sender=provider)
    with reverts(staking.ProviderStakingNothingToWithdraw):
        staking.withdrawUnstaked(usdc, sender=provider)
    assert usdc.balanceOf(provider) == 100 * USDC


def test_open_deal__provider_stake_all_pending__cannot_lock_collateral(staking, market, usdc, provider, open_deal):
    """Stake on its way out is not collateral: the market's lock() fails and the deal does not open."""
    staking.requestUnstake(usdc, 1_000 * USDC, sender=provider)  # everything `funded` staked
    with reverts(staking.ProviderStakingInsufficientFreeStake, provider=provider.address, token=usdc.address, free=0):
        open_deal()
    assert market.dealCount() == 0


# ───────────────────────────── market role ─────────────────────────────


@pytest.mark.parametrize("action", ["lock", "unlock", "slash"])
@pytest.mark.parametrize("caller", ["provider", "admin", "stranger"])
def test_market_actions__caller_without_market_role__reverts(
    action, caller, staking, usdc, fund_stake, provider, request
):
    fund_stake(provider, usdc, 100 * USDC)
    sender = request.getfixturevalue(caller)
    call = {
        "lock": lambda: staking.lock(provider, usdc, 1, sender=sender),
        "unlock": lambda: staking.unlock(provider, usdc, 1, sender=sender),
        "slash": lambda: staking.slash(provider, usdc, 1, sender, sender=sender),
    }[action]
    with reverts(staking.AccessControlUnauthorizedAccount) as info:
        call()
    assert info.inputs["account"] == sender.address
    assert info.inputs["neededRole"] == MARKET_ROLE


def test_lock__more_than_free__reverts(staking, usdc, fund_stake, provider, fake_market):
    fund_stake(provider, usdc, 100 * USDC)
    staking.requestUnstake(usdc, 30 * USDC, sender=provider)  # pending stake is not free either
    staking.lock(provider, usdc, 50 * USDC, sender=fake_market)
    with reverts(staking.ProviderStakingInsufficientFreeStake) as info:
        staking.lock(provider, usdc, 20 * USDC + 1, sender=fake_market)
    assert (info.inputs["free"], info.inputs["needed"]) == (20 * USDC, 20 * USDC + 1)


def test_lock_then_unlock__market_role__moves_collateral_between_free_and_locked(
    staking, usdc, fund_stake, provider, fake_market
):
    fund_stake(provider, usdc, 100 * USDC)
    lock_receipt = staking.lock(provider, usdc, 25 * USDC, sender=fake_market)
    assert position(staking, provider, usdc)["locked"] == 25 * USDC
    assert staking.freeStake(provider, usdc) == 75 * USDC

    unlock_receipt = staking.unlock(provider, usdc, 25 * USDC, sender=fake_market)

    assert position(staking, provider, usdc) == dict(staked=100 * USDC, locked=0, pending=0, available_at=0)
    assert lock_receipt.decode_logs(staking.CollateralLocked)[0].amount == 25 * USDC
    assert unlock_receipt.decode_logs(staking.CollateralUnlocked)[0].amount == 25 * USDC


def test_unlock__more_than_locked__reverts(staking, usdc, fund_stake, provider, fake_market):
    fund_stake(provider, usdc, 100 * USDC)
    staking.lock(provider, usdc, 10 * USDC, sender=fake_market)
    with reverts(staking.ProviderStakingInsufficientLocked) as info:
        staking.unlock(provider, usdc, 10 * USDC + 1, sender=fake_market)
    assert (info.inputs["locked"], info.inputs["needed"]) == (10 * USDC, 10 * USDC + 1)


def test_slash__more_than_locked__reverts_even_with_plenty_staked(staking, usdc, fund_stake, provider, fake_market, trainer):
    fund_stake(provider, usdc, 1_000 * USDC)
    staking.lock(provider, usdc, 10 * USDC, sender=fake_market)
    with reverts(staking.ProviderStakingInsufficientLocked) as info:
        staking.slash(provider, usdc, 10 * USDC + 1, trainer, sender=fake_market)
    assert (info.inputs["locked"], info.inputs["needed"]) == (10 * USDC, 10 * USDC + 1)
    assert usdc.balanceOf(trainer) == 0


def test_slash__locked_collateral__goes_to_the_recipient_and_leaves_the_stake(
    staking, usdc, fund_stake, provider, fake_market, trainer
):
    fund_stake(provider, usdc, 100 * USDC)
    staking.lock(provider, usdc, 30 * USDC, sender=fake_market)

    receipt = staking.slash(provider, usdc, 12 * USDC, trainer, sender=fake_market)

    assert usdc.balanceOf(trainer) == 12 * USDC
    assert usdc.balanceOf(staking) == 88 * USDC
    assert position(staking, provider, usdc) == dict(staked=88 * USDC, locked=18 * USDC, pending=0, available_at=0)
    event = receipt.decode_logs(staking.Slashed)[0]
    assert (event["provider"], event["amount"], event["recipient"]) == (provider.address, 12 * USDC, trainer.address)


def test_slash__provider_no_show_through_the_market__collateral_goes_to_the_buyer(
    staking, market, usdc, open_deal, chain, stranger, trainer, provider
):
    deal_id, _, request, _ = open_deal()
    collateral = market.escrowOf(deal_id) * COLLATERAL_BPS // 10_000
    chain.pending_timestamp = request.startBy + 1

    receipt = market.claimRefund(deal_id, sender=stranger)

    assert usdc.balanceOf(trainer) == collateral
    assert usdc.balanceOf(stranger) == 0
    assert position(staking, provider, usdc)["staked"] == 1_000 * USDC - collateral
    assert position(staking, provider, usdc)["locked"] == 0
    slashed = receipt.decode_logs(staking.Slashed)[0]
    assert (slashed.recipient, slashed.amount) == (trainer.address, collateral)


# ───────────────────────────── admin ─────────────────────────────


def test_set_cooldown__above_maximum__reverts(staking, admin):
    with reverts(staking.ProviderStakingCooldownTooLong) as info:
        staking.setCooldown(MAX_COOLDOWN + 1, sender=admin)
    assert (info.inputs["cooldown"], info.inputs["maximum"]) == (MAX_COOLDOWN + 1, MAX_COOLDOWN)
    staking.setCooldown(MAX_COOLDOWN, sender=admin)
    assert staking.cooldown() == MAX_COOLDOWN


def test_constructor__cooldown_above_maximum__reverts(project, admin):
    with reverts(project.ProviderStaking.ProviderStakingCooldownTooLong):
        admin.deploy(project.ProviderStaking, admin, MAX_COOLDOWN + 1)


def test_admin_setters__not_admin__reverts(staking, usdc, stranger):
    with reverts(staking.AccessControlUnauthorizedAccount):
        staking.setCooldown(0, sender=stranger)
    with reverts(staking.AccessControlUnauthorizedAccount):
        staking.setCollateralToken(usdc, False, sender=stranger)

