"""Adversarial tests: reentrant and fee-on-transfer tokens, deadline griefing, self-dealing.

Money invariant checked throughout: the market's token balance covers every internal balance plus
the escrow of every deal still open (`market_books`), and ProviderStaking's balance covers every
position's staked + pending (`staking_books`).
"""

from types import SimpleNamespace

import pytest
from ape.exceptions import TransactionError
from eth_utils import keccak
from hexbytes import HexBytes

from marketplace.signing import DealStatus, SettlementRule

from market_constants import CHALLENGE_WINDOW, COLLATERAL_BPS, DAY, FEE_BPS, HOUR, USDC
from strict_reverts import encoded, reverts

R = 10**18  # one whole ReentrantToken
COOLDOWN = 7 * DAY
MAX_UINT = 2**256 - 1
RESULT = "0x" + "cd" * 32
REENTRANT_CALL = keccak(text="ReentrancyGuardReentrantCall()")[:4]
RECORDER_ROLE = keccak(text="RECORDER_ROLE")

# Every module- and session-scoped fixture from the first test on, so Ape's isolation never rebases.
pytestmark = pytest.mark.usefixtures(
    "admin", "provider", "trainer", "stranger", "matcher", "treasury", "market", "staking", "reward_pool",
    "arbiter", "usdc", "fund_stake", "fund_vault", "make_offer", "make_request", "sign", "trainer2", "rtoken", "arena",
    "fot",
)


# ───────────────────────────── helpers ─────────────────────────────


def market_books(market, token, holders, deal_ids):
    """(tokens the market holds, what it owes: Σ internal balances + escrow of open deals)."""
    owed = sum(market.balanceOf(h, token) for h in holders) + sum(market.escrowOf(d) for d in deal_ids)
    return token.balanceOf(market), owed


def staking_books(staking, token, providers):
    owed = 0
    for p in providers:
        staked, _, pending, _ = staking.positionOf(p, token)
        owed += staked + pending
    return token.balanceOf(staking), owed


def open_args(offer, request, provider_account, trainer_account, sign, hours=None):
    """The arguments of `openDeal` for a pair of orders, each signed by its owner."""
    return (
        offer.as_tuple(),
        sign(offer, provider_account),
        request.as_tuple(),
        sign(request, trainer_account),
        hours if hours is not None else request.totalHours,
    )


# ───────────────────────────── fixtures ─────────────────────────────


@pytest.fixture(scope="module")
def trainer2(accounts):
    """A second trainer (test account 9; 0-8 have fixed roles)."""
    return accounts[9]


@pytest.fixture(scope="module")
def rtoken(project, admin, market, staking):
    """ReentrantToken, whitelisted for settlement and collateral (as a careless admin might)."""
    token = admin.deploy(project.ReentrantToken)
    market.setSettlementToken(token, True, sender=admin)
    staking.setCollateralToken(token, True, sender=admin)
    return token


@pytest.fixture(scope="module")
def fot(project, admin, market, staking):
    """FeeOnTransferToken (1 % of every transfer burned), whitelisted for settlement and collateral."""
    token = admin.deploy(project.FeeOnTransferToken)
    market.setSettlementToken(token, True, sender=admin)
    staking.setCollateralToken(token, True, sender=admin)
    return token


@pytest.fixture(scope="module")
def arena(rtoken, market, staking, make_offer, make_request, sign, provider, trainer, matcher, admin, chain):
    """A market where everything is ripe for a reentry, all in ReentrantToken:

    - trainer: 1,000 R in the vault (less the escrow of three deals);
    - provider: 1,000 R staked, 100 R unstaking (cooldown over);
    - the token itself, as an account: 100 R in the vault, 100 R staked of which 40 R unstaking
      (cooldown over), unlimited allowances to market and staking, 1,000 R in its wallet;
    - deals A and B never started (start deadline passed: refundable by anyone);
    - deal C ran its 4 h and completed (challenge window over: settleable by anyone).
    """

    def as_token(target, method, *args):
        rtoken.execute(target, getattr(target, method).encode_input(*args), sender=admin)

    rtoken.mint(trainer, 1_000 * R, sender=trainer)
    rtoken.approve(market, MAX_UINT, sender=trainer)
    market.deposit(rtoken, 1_000 * R, sender=trainer)
    rtoken.mint(provider, 1_000 * R, sender=provider)
    rtoken.approve(staking, MAX_UINT, sender=provider)
    staking.stake(rtoken, 1_000 * R, sender=provider)

    rtoken.mint(rtoken, 1_000 * R, sender=admin)
    as_token(rtoken, "approve", market.address, MAX_UINT)
    as_token(rtoken, "approve", staking.address, MAX_UINT)
    as_token(market, "deposit", rtoken.address, 100 * R)
    as_token(staking, "stake", rtoken.address, 100 * R)
    as_token(staking, "requestUnstake", rtoken.address, 40 * R)

    deal_ids = []
    for _ in range(3):
        offer = make_offer(token=rtoken.address, pricePerGpuHour=2 * R)
        request = make_request(token=rtoken.address, maxPricePerGpuHour=3 * R)
        receipt = market.openDeal(*open_args(offer, request, provider, trainer, sign), sender=matcher)
        deal_ids.append(receipt.decode_logs(market.DealOpened)[0].dealId)
    a, b, c = deal_ids
    market.startDeal(c, sender=provider)
    chain.pending_timestamp += 4 * HOUR
    market.completeDeal(c, 4 * HOUR, RESULT, sender=provider)
    staking.requestUnstake(rtoken, 100 * R, sender=provider)
    chain.pending_timestamp += COOLDOWN  # past every start deadline, C's window and both cooldowns
    chain.mine()
    return SimpleNamespace(unstarted=(a, b), ready=c, deals=deal_ids, as_token=as_token)


@pytest.fixture
def holders(trainer, provider, treasury, rtoken):
    """Every account that holds ReentrantToken in the vault here. (Were anyone else credited, the
    books would show it: held == owed is asserted as an equality.)"""
    return [trainer, provider, treasury, rtoken]


@pytest.fixture
def arm(rtoken, admin):
    """Arm the token: on its next transfer it calls `target.method(*args)` as itself."""

    def do_arm(target, method, *args, bubble):
        rtoken.arm(target, getattr(target, method).encode_input(*args), bubble, sender=admin)

    return do_arm


# ───────────────────────────── reentrant token: every reentry reverts ─────────────────────────────

# (outer call made by an honest EOA, contract whose guard is hit, reentry the token makes as itself)
REENTRIES = {
    "deposit>deposit": ("deposit", "market", ("market", "deposit", "rtoken", 10 * R)),
    "withdraw>withdraw": ("withdraw", "market", ("market", "withdraw", "rtoken", 100 * R)),
    "withdraw>settle": ("withdraw", "market", ("market", "settle", "ready")),
    "withdraw>settleMany": ("withdraw", "market", ("market", "settleMany", "ready_list")),
    "withdraw>claimRefund": ("withdraw", "market", ("market", "claimRefund", "unstarted_a")),
    # Reentered from inside ProviderStaking.slash: the market's guard stops it, and the nested
    # slash would hit staking's own guard too (same error), so this one has two locks.
    "claimRefund>claimRefund": ("claimRefund", "market", ("market", "claimRefund", "unstarted_b")),
    "stake>stake": ("stake", "staking", ("staking", "stake", "rtoken", 10 * R)),
    "withdrawUnstaked>withdrawUnstaked": ("withdrawUnstaked", "staking", ("staking", "withdrawUnstaked", "rtoken")),
}


@pytest.mark.parametrize("scenario", list(REENTRIES))
def test_reentrant_token__reentry_during_transfer__reverts_with_reentrancy_guard(
    scenario, rtoken, arena, market, staking, arm, trainer, provider, stranger, holders
):
    outer, guarded, (target_name, method, *raw_args) = REENTRIES[scenario]
    contracts = {"market": market, "staking": staking}
    values = {
        "rtoken": rtoken.address,
        "ready": arena.ready,
        "ready_list": [arena.ready],
        "unstarted_a": arena.unstarted[0],
        "unstarted_b": arena.unstarted[1],
    }
    args = [values.get(a, a) if isinstance(a, str) else a for a in raw_args]
    rtoken.mint(trainer, 10 * R, sender=trainer)
    rtoken.mint(provider, 10 * R, sender=provider)
    books_before = market_books(market, rtoken, holders, arena.deals)
    stake_before = staking_books(staking, rtoken, [provider, rtoken])

    arm(contracts[target_name], method, *args, bubble=True)
    with reverts(contracts[guarded].ReentrancyGuardReentrantCall):
        {
            "deposit": lambda: market.deposit(rtoken, 10 * R, sender=trainer),
            "withdraw": lambda: market.withdraw(rtoken, 10 * R, sender=trainer),
            "claimRefund": lambda: market.claimRefund(arena.unstarted[0], sender=stranger),
            "stake": lambda: staking.stake(rtoken, 10 * R, sender=provider),
            "withdrawUnstaked": lambda: staking.withdrawUnstaked(rtoken, sender=provider),
        }[outer]()

    # Nothing moved (escrowOf drops to 0 when a deal settles or is refunded, so the books see that too).
    assert market_books(market, rtoken, holders, arena.deals) == books_before
    assert staking_books(staking, rtoken, [provider, rtoken]) == stake_before
    assert books_before[0] == books_before[1] and stake_before[0] == stake_before[1]


# ───────────────────────────── reentrant token: nothing extracted beyond what is owed ─────────────


def test_reentrant_token__withdraw_reenters_withdraw__pays_the_balance_once(
    rtoken, arena, market, arm, holders
):
    wallet_before = rtoken.balanceOf(rtoken)
    arm(market, "withdraw", rtoken.address, 100 * R, bubble=False)

    arena.as_token(market, "withdraw", rtoken.address, 100 * R)

    assert rtoken.reentries() == 1 and not rtoken.lastSuccess()
    assert HexBytes(rtoken.lastResult()) == REENTRANT_CALL
    assert market.balanceOf(rtoken, rtoken) == 0
    assert rtoken.balanceOf(rtoken) - wallet_before == 100 * R  # once, not twice
    held, owed = market_books(market, rtoken, holders, arena.deals)
    assert held == owed


def test_reentrant_token__deposit_reenters_deposit__credits_only_what_arrived(rtoken, arena, market, arm, holders):
    """Without the guard a nested deposit would be counted twice by the outer balance measurement."""
    held_before, _ = market_books(market, rtoken, holders, arena.deals)
    arm(market, "deposit", rtoken.address, 50 * R, bubble=False)

    arena.as_token(market, "deposit", rtoken.address, 50 * R)

    assert HexBytes(rtoken.lastResult()) == REENTRANT_CALL
    assert market.balanceOf(rtoken, rtoken) == 150 * R  # 100 R from the arena + 50 R, not 200 R
    held, owed = market_books(market, rtoken, holders, arena.deals)
    assert held - held_before == 50 * R
    assert held == owed


def test_reentrant_token__stake_reenters_stake__credits_only_what_arrived(rtoken, arena, staking, arm, provider):
    arm(staking, "stake", rtoken.address, 30 * R, bubble=False)

    arena.as_token(staking, "stake", rtoken.address, 30 * R)

    assert HexBytes(rtoken.lastResult()) == REENTRANT_CALL
    assert staking.positionOf(rtoken, rtoken)[0] == 60 * R + 30 * R  # 60 R left staked + 30 R, once
    held, owed = staking_books(staking, rtoken, [provider, rtoken])
    assert held == owed


def test_reentrant_token__withdraw_unstaked_reenters_itself__pays_pending_once(rtoken, arena, staking, arm, provider):
    wallet_before = rtoken.balanceOf(rtoken)
    arm(staking, "withdrawUnstaked", rtoken.address, bubble=False)

    arena.as_token(staking, "withdrawUnstaked", rtoken.address)

    assert HexBytes(rtoken.lastResult()) == REENTRANT_CALL
    assert rtoken.balanceOf(rtoken) - wallet_before == 40 * R
    assert staking.positionOf(rtoken, rtoken)[2] == 0
    held, owed = staking_books(staking, rtoken, [provider, rtoken])
    assert held == owed


def test_reentrant_token__claim_refund_reenters_claim_refund__refunds_one_deal_once(
    rtoken, arena, market, staking, arm, stranger, trainer, provider, holders
):
    a, b = arena.unstarted
    escrow = market.escrowOf(a)
    collateral = escrow * COLLATERAL_BPS // 10_000
    vault_before, wallet_before = market.balanceOf(trainer, rtoken), rtoken.balanceOf(trainer)
    arm(market, "claimRefund", b, bubble=False)

    market.claimRefund(a, sender=stranger)

    assert HexBytes(rtoken.lastResult()) == REENTRANT_CALL
    assert market.getDeal(a).status == DealStatus.REFUNDED
    assert market.getDeal(b).status == DealStatus.OPEN  # the nested refund did not happen ...
    assert market.balanceOf(trainer, rtoken) - vault_before == escrow
    assert rtoken.balanceOf(trainer) - wallet_before == collateral
    market.claimRefund(b, sender=stranger)  # ... and still can, exactly once
    assert market.balanceOf(trainer, rtoken) - vault_before == 2 * escrow
    assert rtoken.balanceOf(trainer) - wallet_before == 2 * collateral
    held, owed = market_books(market, rtoken, holders, arena.deals)
    assert held == owed
    held, owed = staking_books(staking, rtoken, [provider, rtoken])
    assert held == owed


def test_reentrant_token__cross_contract_reentry__each_side_pays_only_what_it_owes(
    rtoken, arena, market, staking, arm, provider, holders
):
    """The guards are per contract: reentering *staking* while the market pays out is allowed, and
    harmless — the token gets its vault balance and its pending unstake, each exactly once."""
    wallet_before = rtoken.balanceOf(rtoken)
    arm(staking, "withdrawUnstaked", rtoken.address, bubble=False)

    arena.as_token(market, "withdraw", rtoken.address, 100 * R)

    assert rtoken.lastSuccess()
    assert rtoken.balanceOf(rtoken) - wallet_before == 100 * R + 40 * R
    assert market.balanceOf(rtoken, rtoken) == 0
    assert staking.positionOf(rtoken, rtoken)[2] == 0
    with reverts(staking.ProviderStakingNothingToWithdraw):
        arena.as_token(staking, "withdrawUnstaked", rtoken.address)
    held, owed = market_books(market, rtoken, holders, arena.deals)
    assert held == owed
    held, owed = staking_books(staking, rtoken, [provider, rtoken])
    assert held == owed


def test_reentrant_token__settle_reentered_from_a_staking_payout__settles_exactly_as_normal(
    rtoken, arena, market, staking, arm, provider, trainer, treasury, holders
):
    """Anyone may settle a ready deal, also from inside a token callback; it pays exactly what the
    deal says, and the payer (staking) is unaffected."""
    c = arena.ready
    escrow = market.escrowOf(c)
    fee = escrow * FEE_BPS // 10_000
    provider_before, treasury_before = market.balanceOf(provider, rtoken), market.balanceOf(treasury, rtoken)
    arm(market, "settle", c, bubble=False)

    staking.withdrawUnstaked(rtoken, sender=provider)

    assert rtoken.lastSuccess()
    assert market.getDeal(c).status == DealStatus.SETTLED
    assert market.balanceOf(provider, rtoken) - provider_before == escrow - fee
    assert market.balanceOf(treasury, rtoken) - treasury_before == fee
    assert rtoken.balanceOf(provider) == 100 * R
    held, owed = market_books(market, rtoken, holders, arena.deals)
    assert held == owed


# ───────────────────────────── fee-on-transfer token ─────────────────────────────


def test_fee_on_transfer__deposit__credited_with_the_measured_amount(market, fot, trainer):
    nominal = 1_000_001  # 1 % burn, rounded down: 10,000 burned, 990,001 arrive
    fot.mint(trainer, nominal, sender=trainer)
    fot.approve(market, nominal, sender=trainer)

    receipt = market.deposit(fot, nominal, sender=trainer)

    assert market.balanceOf(trainer, fot) == 990_001 == nominal - fot.feeOn(nominal)
    assert fot.balanceOf(market) == 990_001
    assert receipt.decode_logs(market.Deposited)[0].amount == 990_001


def test_fee_on_transfer__tiny_deposit__fee_rounds_down_to_zero_and_all_of_it_is_credited(market, fot, trainer):
    fot.mint(trainer, 99, sender=trainer)
    fot.approve(market, 99, sender=trainer)
    market.deposit(fot, 99, sender=trainer)
    assert market.balanceOf(trainer, fot) == 99 == fot.balanceOf(market)


def test_fee_on_transfer__stake__credited_with_the_measured_amount(staking, fot, provider):
    fot.mint(provider, 5_000_000, sender=provider)
    fot.approve(staking, 5_000_000, sender=provider)
    staking.stake(fot, 5_000_000, sender=provider)
    assert staking.positionOf(provider, fot)[0] == 4_950_000 == fot.balanceOf(staking)


def test_fee_on_transfer__full_deal_lifecycle__market_always_holds_what_it_owes(
    market, staking, fot, make_offer, make_request, sign, provider, trainer, matcher, stranger, treasury, chain
):
    """Rounding: the token burns floor(1 %) of every transfer, from the amount in transit. The
    market credits exactly what arrived and debits exactly what it sends, so the burn is borne by
    whoever receives a transfer (the depositor on the way in, the withdrawer on the way out) and the
    books balance to the unit: held == Σ balances + open escrow. The only surplus ever is tokens
    sent to the market outside `deposit` (here a stranger's donation), which nobody can withdraw."""
    holders = [trainer, provider, treasury, stranger, matcher]
    price = 1_000_003  # per GPU-hour, in FOT base units: an awkward number on purpose
    escrow = price * 2 * 4
    collateral = -(-escrow * COLLATERAL_BPS // 10_000)  # ceil

    def books(deal_ids):
        held, owed = market_books(market, fot, holders, deal_ids)
        assert held >= owed
        return held - owed

    fot.mint(stranger, 1_000, sender=stranger)
    fot.transfer(market, 1_000, sender=stranger)  # a donation: arrives as 990, credited to nobody
    donation = 990
    fot.mint(trainer, 10_000_000, sender=trainer)
    fot.approve(market, 10_000_000, sender=trainer)
    market.deposit(fot, 10_000_000, sender=trainer)
    fot.mint(provider, 5_000_000, sender=provider)
    fot.approve(staking, 5_000_000, sender=provider)
    staking.stake(fot, 5_000_000, sender=provider)
    assert market.balanceOf(trainer, fot) == 9_900_000
    assert staking.positionOf(provider, fot)[0] == 4_950_000
    assert books([]) == donation

    offer = make_offer(token=fot.address, pricePerGpuHour=price)
    request = make_request(token=fot.address, maxPricePerGpuHour=price)
    receipt = market.openDeal(*open_args(offer, request, provider, trainer, sign), sender=matcher)
    deal_id = receipt.decode_logs(market.DealOpened)[0].dealId
    assert receipt.decode_logs(market.DealOpened)[0].collateral == collateral
    assert books([deal_id]) == donation

    market.startDeal(deal_id, sender=provider)
    started_at = market.getDeal(deal_id).startedAt
    chain.pending_timestamp = started_at + 1_234
    market.withdrawAccrued(deal_id, sender=provider)
    assert books([deal_id]) == donation

    used = 4 * HOUR - 7
    chain.pending_timestamp = started_at + 4 * HOUR
    market.completeDeal(deal_id, used, RESULT, sender=provider)
    chain.pending_timestamp += CHALLENGE_WINDOW
    market.settle(deal_id, sender=stranger)
    assert books([deal_id]) == donation

    gross = price * 2 * used // HOUR
    fee = gross * FEE_BPS // 10_000
    owed = {provider: gross - fee, treasury: fee, trainer: 9_900_000 - gross}
    assert {a: market.balanceOf(a, fot) for a in owed} == owed
    for account, amount in owed.items():  # everyone leaves; each withdrawal pays its own 1 %
        market.withdraw(fot, amount, sender=account)
        assert fot.balanceOf(account) == amount - fot.feeOn(amount)
        assert books([deal_id]) == donation
    assert fot.balanceOf(market) == donation  # nothing stuck but the donation, nothing owed

    held, staked = staking_books(staking, fot, [provider])
    assert held == staked == 4_950_000  # collateral unlocked, untouched


def test_fee_on_transfer__refund_slash__buyer_compensated_net_of_the_burn_and_books_balance(
    market, staking, fot, make_offer, make_request, sign, provider, trainer, matcher, stranger, treasury, chain
):
    fot.mint(trainer, 1_000_000, sender=trainer)
    fot.approve(market, 1_000_000, sender=trainer)
    market.deposit(fot, 1_000_000, sender=trainer)
    fot.mint(provider, 1_000_000, sender=provider)
    fot.approve(staking, 1_000_000, sender=provider)
    staking.stake(fot, 1_000_000, sender=provider)
    offer = make_offer(token=fot.address, pricePerGpuHour=10_007)
    request = make_request(token=fot.address, maxPricePerGpuHour=10_007)
    receipt = market.openDeal(*open_args(offer, request, provider, trainer, sign), sender=matcher)
    deal_id = receipt.decode_logs(market.DealOpened)[0].dealId
    collateral = receipt.decode_logs(market.DealOpened)[0].collateral
    chain.pending_timestamp = request.startBy + 1

    market.claimRefund(deal_id, sender=stranger)

    assert market.balanceOf(trainer, fot) == 990_000  # the whole escrow back in the vault
    assert fot.balanceOf(trainer) == collateral - fot.feeOn(collateral)  # the slash pays the burn
    held, owed = market_books(market, fot, [trainer, provider, treasury, stranger], [deal_id])
    assert held == owed
    held, owed = staking_books(staking, fot, [provider])
    assert held == owed == 990_000 - collateral


# ───────────────────────────── griefing deadlines ─────────────────────────────


def test_griefing__provider_never_starts__anyone_refunds_the_buyer_right_after_the_deadline(
    market, usdc, staking, open_deal, chain, stranger, trainer, provider
):
    deal_id, _, _, _ = open_deal()
    deal = market.getDeal(deal_id)
    escrow = market.escrowOf(deal_id)
    collateral = escrow * COLLATERAL_BPS // 10_000

    chain.pending_timestamp = deal.startDeadline  # the last second the provider may still start
    with reverts(market.ComputeMarketStartDeadlineNotPassed):
        market.claimRefund(deal_id, sender=stranger)

    chain.pending_timestamp = deal.startDeadline + 1  # one second later the buyer is free
    market.claimRefund(deal_id, sender=stranger)
    with reverts(market.ComputeMarketInvalidDealStatus):
        market.startDeal(deal_id, sender=provider)

    assert market.balanceOf(trainer, usdc) == 1_000 * USDC  # escrow back, withdrawable at once
    market.withdraw(usdc, 1_000 * USDC, sender=trainer)
    assert usdc.balanceOf(trainer) == 1_000 * USDC + collateral  # plus the provider's collateral
    assert staking.positionOf(provider, usdc)[:2] == (1_000 * USDC - collateral, 0)


def test_griefing__provider_starts_at_the_deadline_second__still_allowed(market, open_deal, chain, provider):
    deal_id, _, _, _ = open_deal()
    chain.pending_timestamp = market.getDeal(deal_id).startDeadline
    market.startDeal(deal_id, sender=provider)
    assert market.getDeal(deal_id).status == DealStatus.RUNNING


def test_griefing__buyer_never_accepts_in_challenge_window_mode__anyone_settles_after_the_window(
    market, usdc, completed_deal, chain, stranger, trainer, provider
):
    deal_id, _, _ = completed_deal()  # ChallengeWindow rule; the buyer stays silent
    escrow = market.escrowOf(deal_id)
    ends_at = market.getDeal(deal_id).completedAt + CHALLENGE_WINDOW

    chain.pending_timestamp = ends_at - 1
    with reverts(market.ComputeMarketChallengeWindowActive):
        market.settle(deal_id, sender=stranger)

    chain.pending_timestamp = ends_at
    market.settle(deal_id, sender=stranger)
    assert market.balanceOf(provider, usdc) == escrow - escrow * FEE_BPS // 10_000
    with reverts(market.ComputeMarketInvalidDealStatus):
        market.dispute(deal_id, sender=trainer)


def test_griefing__buyer_disputes_after_the_window__reverts_and_settlement_still_possible(
    market, completed_deal, chain, stranger, trainer
):
    deal_id, _, _ = completed_deal()
    ends_at = market.getDeal(deal_id).completedAt + CHALLENGE_WINDOW
    chain.pending_timestamp = ends_at  # the window is [completedAt, ends_at)
    with reverts(market.ComputeMarketChallengeWindowOver) as info:
        market.dispute(deal_id, sender=trainer)
    assert info.inputs["endedAt"] == ends_at
    market.settle(deal_id, sender=stranger)
    assert market.getDeal(deal_id).status == DealStatus.SETTLED


def test_griefing__provider_reports_more_usage_than_wall_time__reverts(
    market, usdc, started_deal, chain, provider
):
    deal_id, _, _ = started_deal()
    started_at = market.getDeal(deal_id).startedAt

    # Accrual is bounded by wall time: after one hour, one hour of 2 GPUs at 2 mUSDC, net of the fee.
    chain.pending_timestamp = started_at + HOUR
    receipt = market.withdrawAccrued(deal_id, sender=provider)
    assert receipt.decode_logs(market.AccruedWithdrawn)[0].paidSeconds == HOUR
    accrued = 2 * USDC * 2
    assert market.balanceOf(provider, usdc) == accrued - accrued * FEE_BPS // 10_000

    chain.pending_timestamp = started_at + HOUR + 1
    with reverts(market.ComputeMarketInvalidUsage) as info:
        market.completeDeal(deal_id, HOUR + 2, RESULT, sender=provider)
    assert (info.inputs["usedSeconds"], info.inputs["maxSeconds"]) == (HOUR + 2, HOUR + 1)


def test_griefing__provider_reports_beyond_the_booking_long_after__reverts(market, started_deal, chain, provider):
    deal_id, _, _ = started_deal()  # booked 4 h
    chain.pending_timestamp = market.getDeal(deal_id).startedAt + 10 * HOUR
    with reverts(market.ComputeMarketInvalidUsage) as info:
        market.completeDeal(deal_id, 4 * HOUR + 1, RESULT, sender=provider)
    assert info.inputs["maxSeconds"] == 4 * HOUR


def test_griefing__one_trainer_empties_their_vault_before_a_batch__other_pairings_still_open(
    market, usdc, make_offer, make_request, sign, funded, fund_vault, provider, trainer, trainer2, matcher
):
    fund_vault(trainer2, usdc, 100 * USDC)
    pairs = [
        (make_offer(), make_request()),
        (make_offer(), make_request(trainer=trainer2.address)),
        (make_offer(), make_request(gpuCount=1)),
    ]
    matches = [
        open_args(offer, request, provider, trainer2 if i == 1 else trainer, sign)
        for i, (offer, request) in enumerate(pairs)
    ]
    market.withdraw(usdc, 100 * USDC, sender=trainer2)  # front-runs the batch

    receipt = market.openDeals(matches, sender=matcher)

    opened = receipt.decode_logs(market.DealOpened)
    assert [(log.buyer, log.escrow) for log in opened] == [
        (trainer.address, 2 * USDC * 2 * 4),
        (trainer.address, 2 * USDC * 1 * 4),
    ]
    failed = receipt.decode_logs(market.DealOpenFailed)
    assert [log["index"] for log in failed] == [1]
    assert HexBytes(failed[0]["reason"]) == encoded(
        market.ComputeMarketInsufficientBalance, trainer2.address, usdc.address, 0, 2 * USDC * 2 * 4
    )
    assert market.balanceOf(trainer, usdc) == 1_000 * USDC - 16 * USDC - 8 * USDC


def test_griefing__settle_many_with_unready_deals__skips_them_and_settles_the_ready_one(
    market, completed_deal, started_deal, open_deal, chain, trainer, stranger, arbiter
):
    ready, _, _ = completed_deal()
    settled, _, _ = completed_deal()
    disputed, _, _ = completed_deal()
    market.dispute(disputed, sender=trainer)
    acceptance_only, _, _ = completed_deal(settlementRule=int(SettlementRule.BUYER_ACCEPTANCE))
    chain.pending_timestamp += CHALLENGE_WINDOW
    market.settle(settled, sender=stranger)
    in_window, _, _ = completed_deal()  # completed just now: its window is still open
    running, _, _ = started_deal()
    still_open, _, _, _ = open_deal()
    batch = [still_open, running, in_window, acceptance_only, disputed, settled, ready, 10**9]
    statuses = {d: market.getDeal(d).status for d in batch}

    receipt = market.settleMany(batch, sender=stranger)

    assert [log.dealId for log in receipt.decode_logs(market.DealSettled)] == [ready]
    statuses[ready] = DealStatus.SETTLED
    assert {d: market.getDeal(d).status for d in batch} == statuses


def test_griefing__settle_with_a_tight_gas_limit__cannot_drop_the_providers_reward(
    market, reward_pool, completed_deal, chain, stranger, provider
):
    """The market records rewards in try/catch (rewards never block payment). Anyone may settle,
    and a caller picks the gas limit: could they starve only the inner recordDelivery call (EIP-150
    keeps 1/64 of the gas for the catch) so the deal settles but the provider's reward is lost?
    The smallest gas limit at which settle succeeds is searched; there the delivery is recorded,
    and below it the whole settlement reverts."""
    deal_id, _, _ = completed_deal()
    chain.pending_timestamp += CHALLENGE_WINDOW
    chain.mine()

    def attempt(gas):
        """(recorded, not recorded) events of a settle with this gas limit, or None if it failed."""
        snapshot = chain.snapshot()
        try:
            receipt = market.settle(deal_id, sender=stranger, gas=gas)
        except TransactionError:
            return None
        else:
            return (
                len(receipt.decode_logs(reward_pool.DeliveryRecorded)),
                len(receipt.decode_logs(market.DeliveryNotRecorded)),
            )
        finally:
            chain.restore(snapshot)

    low, high = 30_000, 1_000_000
    assert attempt(low) is None and attempt(high) == (1, 0)
    while high - low > 1:  # invariant: attempt(low) fails, attempt(high) succeeds
        middle = (low + high) // 2
        if attempt(middle) is None:
            low = middle
        else:
            high = middle
    print(f"\nsmallest gas limit that settles: {high:,}")
    assert attempt(high) == (1, 0)  # recorded, even with the least gas that works
    assert attempt(high - 1) is None
    # The search assumes success is monotonic in gas; a coarse sweep checks no lower limit settles
    # through the catch branch (outcome (0, 1)).
    for gas in range(60_000, high + 20_000, 10_000):
        assert attempt(gas) in (None, (1, 0)), f"gas {gas:,}: settled without recording the delivery"


# ───────────────────────────── self-dealing and rewards ─────────────────────────────


def test_self_deal__provider_buys_its_own_offer__rejected(market, make_offer, make_request, sign, provider, matcher, fund_vault, usdc, funded):
    fund_vault(provider, usdc, 100 * USDC)
    offer = make_offer()
    request = make_request(trainer=provider.address)
    with reverts(market.ComputeMarketSelfDeal) as info:
        market.openDeal(*open_args(offer, request, provider, provider, sign), sender=matcher)
    assert info.inputs["account"] == provider.address


@pytest.mark.parametrize("caller", ["provider", "trainer", "admin", "matcher", "arbiter"])
def test_rewards__recorded_by_anyone_but_the_market__reverts(caller, reward_pool, market, provider, request):
    sender = request.getfixturevalue(caller)
    with reverts(reward_pool.AccessControlUnauthorizedAccount):
        reward_pool.recordDelivery(provider, 10**9, True, sender=sender)
    assert reward_pool.weightOf(reward_pool.currentEpoch(), provider) == 0
    assert reward_pool.hasRole(RECORDER_ROLE, market)
    assert not reward_pool.hasRole(RECORDER_ROLE, sender)
