"""The market vault (deposit, depositWithPermit, withdraw) and the admin settings around it
(settlement-token whitelist, fee, collateral ratio, treasury, constructor bounds)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from market_constants import CHALLENGE_WINDOW, COLLATERAL_BPS, DAY, FEE_BPS, USDC
from strict_reverts import reverts  # the strict ape.reverts

CCR = 10**18
DEFAULT_ADMIN_ROLE = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
MAX_FEE_BPS = 1_000
BPS = 10_000
MAX_CHALLENGE_WINDOW = 30 * DAY

pytestmark = pytest.mark.usefixtures(
    "market", "staking", "reward_pool", "usdc", "credit", "admin", "trainer", "stranger", "treasury",
    "chain", "fee_tokens",
)


# ───────────────────────────── fixtures and helpers ─────────────────────────────


@pytest.fixture(scope="module")
def fee_tokens(project, market, admin):
    """Whitelisted fee-on-transfer tokens: one keeps 1 % of every transfer, one keeps all of it."""
    tokens = {bps: admin.deploy(project.MockFeeOnTransferToken, bps) for bps in (100, 10_000)}
    for token in tokens.values():
        market.setSettlementToken(token, True, sender=admin)
    return tokens


def mint_and_approve(token, market, account, amount):
    token.mint(account, amount, sender=account)
    token.approve(market, amount, sender=account)


def permit_signature(token, owner, spender, value, deadline, chain_id):
    """An EIP-2612 permit signed in Python: (v, r, s)."""
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {"name": token.name(), "version": "1", "chainId": chain_id, "verifyingContract": token.address},
        "message": {
            "owner": owner.address,
            "spender": getattr(spender, "address", spender),
            "value": value,
            "nonce": token.nonces(owner),
            "deadline": deadline,
        },
    }
    signable = encode_typed_data(full_message=typed)
    assert signable.header == token.DOMAIN_SEPARATOR()  # our domain is the token's
    signed = Account.sign_message(signable, owner.private_key)
    return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")


# ───────────────────────────── deposit ─────────────────────────────


def test_deposit__whitelisted_token__credits_the_amount_and_emits_deposited(market, usdc, trainer):
    mint_and_approve(usdc, market, trainer, 100 * USDC)

    receipt = market.deposit(usdc, 40 * USDC, sender=trainer)

    assert market.balanceOf(trainer, usdc) == 40 * USDC
    assert (usdc.balanceOf(trainer), usdc.balanceOf(market)) == (60 * USDC, 40 * USDC)
    [event] = receipt.decode_logs(market.Deposited)
    assert (event.account, event.token, event.amount) == (trainer.address, usdc.address, 40 * USDC)


def test_deposit__fee_on_transfer_token__credits_only_what_arrived(market, fee_tokens, trainer):
    token = fee_tokens[100]  # 1 % lost in transit
    mint_and_approve(token, market, trainer, 1_000)

    receipt = market.deposit(token, 1_000, sender=trainer)

    assert market.balanceOf(trainer, token) == token.balanceOf(market) == 990
    assert receipt.decode_logs(market.Deposited)[0].amount == 990
    # The credited 990 is all there is to take out (the token keeps its 1 % again on the way).
    market.withdraw(token, 990, sender=trainer)
    assert (market.balanceOf(trainer, token), token.balanceOf(market), token.balanceOf(trainer)) == (0, 0, 981)


def test_deposit__token_keeps_everything_in_transit__reverts_zero_amount(market, fee_tokens, trainer):
    token = fee_tokens[10_000]
    mint_and_approve(token, market, trainer, 1_000)
    with reverts(market.ComputeMarketZeroAmount):
        market.deposit(token, 1_000, sender=trainer)
    assert (market.balanceOf(trainer, token), token.balanceOf(trainer)) == (0, 1_000)


def test_deposit__zero_amount__reverts_zero_amount(market, usdc, trainer):
    with reverts(market.ComputeMarketZeroAmount):
        market.deposit(usdc, 0, sender=trainer)


def test_deposit__token_not_whitelisted__reverts_token_not_allowed(market, credit, admin, trainer):
    credit.mint(trainer, 10 * CCR, sender=admin)
    credit.approve(market, 10 * CCR, sender=trainer)
    with reverts(market.ComputeMarketTokenNotAllowed, token=credit.address):
        market.deposit(credit, 10 * CCR, sender=trainer)
    assert (credit.balanceOf(trainer), market.balanceOf(trainer, credit)) == (10 * CCR, 0)


# ───────────────────────────── withdraw ─────────────────────────────


def test_withdraw__part_of_the_balance__pays_out_and_emits_withdrawn(market, usdc, trainer):
    mint_and_approve(usdc, market, trainer, 100 * USDC)
    market.deposit(usdc, 100 * USDC, sender=trainer)

    receipt = market.withdraw(usdc, 30 * USDC, sender=trainer)

    assert market.balanceOf(trainer, usdc) == 70 * USDC
    assert (usdc.balanceOf(trainer), usdc.balanceOf(market)) == (30 * USDC, 70 * USDC)
    [event] = receipt.decode_logs(market.Withdrawn)
    assert (event.account, event.token, event.amount) == (trainer.address, usdc.address, 30 * USDC)


@pytest.mark.parametrize("who", ["owner", "stranger"])
def test_withdraw__more_than_the_callers_balance__reverts_insufficient_balance(who, market, usdc, trainer, stranger):
    mint_and_approve(usdc, market, trainer, 100 * USDC)
    market.deposit(usdc, 100 * USDC, sender=trainer)
    caller, available = (trainer, 100 * USDC) if who == "owner" else (stranger, 0)

    with reverts(
        market.ComputeMarketInsufficientBalance,
        account=caller.address, token=usdc.address, available=available, needed=available + 1,
    ):
        market.withdraw(usdc, available + 1, sender=caller)

    assert market.balanceOf(trainer, usdc) == usdc.balanceOf(market) == 100 * USDC


def test_withdraw__zero_amount__reverts_zero_amount(market, usdc, trainer):
    with reverts(market.ComputeMarketZeroAmount):
        market.withdraw(usdc, 0, sender=trainer)


def test_withdraw__token_delisted_after_deposit__still_pays_out_but_deposits_are_refused(
    market, usdc, admin, trainer
):
    mint_and_approve(usdc, market, trainer, 100 * USDC)
    market.deposit(usdc, 60 * USDC, sender=trainer)

    market.setSettlementToken(usdc, False, sender=admin)

    market.withdraw(usdc, 60 * USDC, sender=trainer)
    assert (market.balanceOf(trainer, usdc), usdc.balanceOf(trainer)) == (0, 100 * USDC)
    with reverts(market.ComputeMarketTokenNotAllowed, token=usdc.address):
        market.deposit(usdc, 40 * USDC, sender=trainer)


# ───────────────────────────── depositWithPermit ─────────────────────────────


@pytest.fixture
def permit_token(request, usdc, credit, market, admin, trainer):
    """mUSDC (6 decimals) or ComputeCredit (whitelisted here for the test), with 100 units minted
    to the trainer and no approval given."""
    if request.param == "usdc":
        usdc.mint(trainer, 100 * USDC, sender=trainer)
        return usdc, 100 * USDC
    market.setSettlementToken(credit, True, sender=admin)
    credit.mint(trainer, 100 * CCR, sender=admin)
    return credit, 100 * CCR


@pytest.mark.parametrize("permit_token", ["usdc", "credit"], indirect=True)
def test_deposit_with_permit__permit_signed_in_python__deposits_without_an_approval_transaction(
    permit_token, market, trainer, chain
):
    token, amount = permit_token
    assert token.allowance(trainer, market) == 0
    deadline = chain.pending_timestamp + DAY
    v, r, s = permit_signature(token, trainer, market, amount, deadline, chain.chain_id)

    receipt = market.depositWithPermit(token, amount, deadline, v, r, s, sender=trainer)

    assert market.balanceOf(trainer, token) == amount
    assert (token.balanceOf(trainer), token.allowance(trainer, market), token.nonces(trainer)) == (0, 0, 1)
    assert receipt.decode_logs(market.Deposited)[0].amount == amount


def test_deposit_with_permit__stranger_submits_the_permit_first__deposit_still_goes_through(
    market, usdc, trainer, stranger, chain
):
    usdc.mint(trainer, 100 * USDC, sender=trainer)
    deadline = chain.pending_timestamp + DAY
    v, r, s = permit_signature(usdc, trainer, market, 100 * USDC, deadline, chain.chain_id)
    usdc.permit(trainer, market, 100 * USDC, deadline, v, r, s, sender=stranger)  # front-run: nonce used
    assert (usdc.nonces(trainer), usdc.allowance(trainer, market)) == (1, 100 * USDC)

    market.depositWithPermit(usdc, 100 * USDC, deadline, v, r, s, sender=trainer)

    assert market.balanceOf(trainer, usdc) == 100 * USDC
    assert (usdc.balanceOf(trainer), usdc.allowance(trainer, market), usdc.nonces(trainer)) == (0, 0, 1)
    assert market.balanceOf(stranger, usdc) == 0


def test_deposit_with_permit__permit_not_by_the_depositor_and_no_allowance__reverts_and_nothing_moves(
    market, usdc, trainer, stranger, chain
):
    usdc.mint(trainer, 100 * USDC, sender=trainer)
    deadline = chain.pending_timestamp + DAY
    # A permit signed by someone else does not authorise spending the trainer's tokens.
    v, r, s = permit_signature(usdc, stranger, market, 100 * USDC, deadline, chain.chain_id)

    with reverts(usdc.ERC20InsufficientAllowance, spender=market.address, allowance=0, needed=100 * USDC):
        market.depositWithPermit(usdc, 100 * USDC, deadline, v, r, s, sender=trainer)

    assert (usdc.balanceOf(trainer), market.balanceOf(trainer, usdc), usdc.nonces(trainer)) == (100 * USDC, 0, 0)


def test_deposit_with_permit__token_not_whitelisted__reverts_token_not_allowed_and_permit_unused(
    market, credit, admin, trainer, chain
):
    credit.mint(trainer, 10 * CCR, sender=admin)
    deadline = chain.pending_timestamp + DAY
    v, r, s = permit_signature(credit, trainer, market, 10 * CCR, deadline, chain.chain_id)
    with reverts(market.ComputeMarketTokenNotAllowed, token=credit.address):
        market.depositWithPermit(credit, 10 * CCR, deadline, v, r, s, sender=trainer)
    assert (credit.nonces(trainer), credit.allowance(trainer, market)) == (0, 0)


# ───────────────────────────── admin settings ─────────────────────────────


@pytest.mark.parametrize(
    "setter, args, read",
    [
        ("setSettlementToken", lambda c: (c["usdc"], False), lambda m, c: m.isSettlementToken(c["usdc"])),
        ("setProtocolFee", lambda c: (MAX_FEE_BPS,), lambda m, c: m.protocolFeeBps()),
        ("setCollateralRatio", lambda c: (BPS,), lambda m, c: m.collateralBps()),
        ("setTreasury", lambda c: (c["stranger"],), lambda m, c: m.treasury()),
    ],
)
def test_admin_setters__called_by_a_non_admin__revert_access_control_and_change_nothing(
    setter, args, read, market, usdc, stranger, arbiter
):
    context = dict(usdc=usdc, stranger=stranger)
    before = read(market, context)
    for caller in (stranger, arbiter):  # no role, and a role that is not admin
        with reverts(
            market.AccessControlUnauthorizedAccount, account=caller.address, neededRole=DEFAULT_ADMIN_ROLE
        ):
            getattr(market, setter)(*args(context), sender=caller)
    assert read(market, context) == before


@pytest.mark.parametrize(
    "setter, maximum, read, event",
    [
        ("setProtocolFee", MAX_FEE_BPS, "protocolFeeBps", "ProtocolFeeSet"),
        ("setCollateralRatio", BPS, "collateralBps", "CollateralRatioSet"),
    ],
)
def test_admin_setters__bps_parameter__maximum_accepted_one_above_reverts_parameter_out_of_range(
    setter, maximum, read, event, market, admin
):
    receipt = getattr(market, setter)(maximum, sender=admin)
    assert getattr(market, read)() == maximum
    assert list(receipt.decode_logs(getattr(market, event))[0].event_arguments.values()) == [maximum]

    with reverts(market.ComputeMarketParameterOutOfRange, value=maximum + 1, maximum=maximum):
        getattr(market, setter)(maximum + 1, sender=admin)
    assert getattr(market, read)() == maximum


def test_set_treasury__zero_address_reverts_another_address_is_set(market, admin, treasury, stranger):
    with reverts(market.ComputeMarketZeroAddress):
        market.setTreasury(ZERO_ADDRESS, sender=admin)
    assert market.treasury() == treasury.address

    receipt = market.setTreasury(stranger, sender=admin)

    assert market.treasury() == stranger.address
    assert receipt.decode_logs(market.TreasurySet)[0].treasury == stranger.address


def test_set_settlement_token__zero_address_reverts_a_token_is_listed_and_delisted(market, credit, admin):
    with reverts(market.ComputeMarketZeroAddress):
        market.setSettlementToken(ZERO_ADDRESS, True, sender=admin)

    listed = market.setSettlementToken(credit, True, sender=admin).decode_logs(market.SettlementTokenSet)[0]
    assert (listed.token, listed.allowed, market.isSettlementToken(credit)) == (credit.address, True, True)
    market.setSettlementToken(credit, False, sender=admin)
    assert not market.isSettlementToken(credit)


@pytest.mark.parametrize(
    "broken, error, inputs",
    [
        ("admin", "ComputeMarketZeroAddress", {}),
        ("treasury", "ComputeMarketZeroAddress", {}),
        ("staking", "ComputeMarketZeroAddress", {}),
        ("challenge_window", "ComputeMarketParameterOutOfRange",
         dict(value=MAX_CHALLENGE_WINDOW + 1, maximum=MAX_CHALLENGE_WINDOW)),
        ("fee", "ComputeMarketParameterOutOfRange", dict(value=MAX_FEE_BPS + 1, maximum=MAX_FEE_BPS)),
        ("collateral", "ComputeMarketParameterOutOfRange", dict(value=BPS + 1, maximum=BPS)),
    ],
)
def test_constructor__zero_address_or_parameter_out_of_range__reverts(
    broken, error, inputs, project, admin, treasury, staking, reward_pool
):
    args = dict(
        admin=admin.address, treasury=treasury.address, staking=staking.address, reward_pool=reward_pool.address,
        challenge_window=CHALLENGE_WINDOW, fee=FEE_BPS, collateral=COLLATERAL_BPS,
    )
    args[broken] = {
        "challenge_window": MAX_CHALLENGE_WINDOW + 1, "fee": MAX_FEE_BPS + 1, "collateral": BPS + 1,
    }.get(broken, ZERO_ADDRESS)
    # The error class of the contract type, not of the deployed instance: Ape ties an instance's
    # errors to its address, and a failed deployment has none.
    with reverts(getattr(project.ComputeMarket, error), **inputs):
        admin.deploy(project.ComputeMarket, *args.values())
