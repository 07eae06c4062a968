"""RewardPool: sponsor-funded epochs, market-recorded GPU-seconds, pro-rata claims that never
exceed funding, and roll-over of epochs nobody worked in.

Rewards are paid in ComputeCredit (CCR): the admin mints it to the sponsor, who approves the pool
and funds an epoch. Each test starts at the first second of a fresh epoch (`epoch` fixture), so no
deal or record straddles an epoch boundary by accident.
"""


import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market_constants import EPOCH_LENGTH, HOUR, USDC
from strict_reverts import reverts

CCR = 10**18
GREEN_BPS = 12_000  # DeployConfig.green_multiplier_bps
RECORDER_ROLE = keccak(text="RECORDER_ROLE")
RESULT = "0x" + "cd" * 32

# Every module- and session-scoped fixture from the first test on, so Ape's isolation never rebases.
pytestmark = pytest.mark.usefixtures(
    "admin", "provider", "trainer", "stranger", "sponsor", "matcher", "market", "staking", "usdc", "credit",
    "reward_pool", "fund_stake", "fund_vault", "make_offer", "make_request", "sign", "recorder", "earners", "driver", "claimers",
)


def weight(gpu_seconds, green):
    return gpu_seconds * GREEN_BPS // 10_000 if green else gpu_seconds


# ───────────────────────────── fixtures ─────────────────────────────


@pytest.fixture(scope="module")
def recorder(accounts, admin, reward_pool):
    """An EOA standing in for the market as recorder, for the pure pool arithmetic tests."""
    account = accounts[9]
    reward_pool.grantRole(RECORDER_ROLE, account, sender=admin)
    return account


@pytest.fixture(scope="module")
def earners(accounts, admin):
    """Four fresh provider accounts with gas money (test accounts 0-8 have fixed roles)."""
    made = [accounts.generate_test_account() for _ in range(4)]
    for account in made:
        admin.transfer(account, 10**18)
    return made


@pytest.fixture
def epoch(chain, reward_pool):
    """Move to the first second of the next epoch and return its index."""
    chain.pending_timestamp = reward_pool.epochEndsAt(reward_pool.currentEpoch())
    chain.mine()
    return reward_pool.currentEpoch()


@pytest.fixture
def fund(credit, reward_pool, admin, sponsor):
    """The sponsor gets CCR minted by the admin, approves the pool and funds `epoch`."""

    def do_fund(epoch, amount):
        credit.mint(sponsor, amount, sender=admin)
        credit.approve(reward_pool, amount, sender=sponsor)
        return reward_pool.fund(epoch, amount, sender=sponsor)

    return do_fund


def close(chain, reward_pool, epoch):
    chain.pending_timestamp = reward_pool.epochEndsAt(epoch)
    chain.mine()


# ───────────────────────────── funding ─────────────────────────────


def test_fund__current_and_future_epochs__escrows_credits_per_epoch(
    reward_pool, credit, fund, epoch, sponsor
):
    receipt = fund(epoch, 300 * CCR)
    fund(epoch + 3, 200 * CCR)
    fund(epoch, 1)

    assert reward_pool.epochInfo(epoch) == (300 * CCR + 1, 0, 0)
    assert reward_pool.epochInfo(epoch + 3) == (200 * CCR, 0, 0)
    assert credit.balanceOf(reward_pool) == 500 * CCR + 1
    assert credit.balanceOf(sponsor) == 0
    event = receipt.decode_logs(reward_pool.RewardsFunded)[0]
    assert (event.epoch, event.sponsor, event.amount) == (epoch, sponsor.address, 300 * CCR)


def test_fund__past_epoch__reverts_epoch_closed(reward_pool, credit, epoch, chain, admin, sponsor):
    credit.mint(sponsor, CCR, sender=admin)
    credit.approve(reward_pool, CCR, sender=sponsor)
    close(chain, reward_pool, epoch)
    with reverts(reward_pool.RewardPoolEpochClosed) as info:
        reward_pool.fund(epoch, CCR, sender=sponsor)
    assert (info.inputs["epoch"], info.inputs["currentEpoch"]) == (epoch, epoch + 1)


def test_fund__zero__reverts(reward_pool, epoch, sponsor):
    with reverts(reward_pool.RewardPoolZeroAmount):
        reward_pool.fund(epoch, 0, sender=sponsor)


# ───────────────────────────── recording ─────────────────────────────


@pytest.mark.parametrize("caller", ["admin", "provider", "stranger", "sponsor"])
def test_record_delivery__not_the_recorder__reverts(caller, reward_pool, provider, request, epoch):
    sender = request.getfixturevalue(caller)
    with reverts(reward_pool.AccessControlUnauthorizedAccount) as info:
        reward_pool.recordDelivery(provider, 3600, False, sender=sender)
    assert (info.inputs["account"], info.inputs["neededRole"]) == (sender.address, RECORDER_ROLE)
    assert reward_pool.weightOf(epoch, provider) == 0


def test_record_delivery__recorder_role__is_held_by_the_market(reward_pool, market):
    assert reward_pool.hasRole(RECORDER_ROLE, market)


def test_record_delivery__zero_seconds__reverts(reward_pool, recorder, provider, epoch):
    with reverts(reward_pool.RewardPoolZeroAmount):
        reward_pool.recordDelivery(provider, 0, False, sender=recorder)


def test_record_delivery__green__weighted_by_multiplier(reward_pool, recorder, provider, stranger, epoch):
    receipt = reward_pool.recordDelivery(provider, 7_777, True, sender=recorder)
    reward_pool.recordDelivery(stranger, 7_777, False, sender=recorder)

    assert reward_pool.weightOf(epoch, provider) == 7_777 * 12_000 // 10_000 == 9_332  # floor(9332.4)
    assert reward_pool.weightOf(epoch, stranger) == 7_777
    assert reward_pool.epochInfo(epoch)[1] == 9_332 + 7_777
    event = receipt.decode_logs(reward_pool.DeliveryRecorded)[0]
    assert (event.gpuSeconds, event.weight) == (7_777, 9_332)


# ───────────────────────────── end to end through the market ─────────────────────────────


@pytest.fixture
def settle_deal(market, make_offer, make_request, sign, trainer, matcher, chain, usdc, fund_stake):
    """Open → start → run `used` seconds → complete → buyer accepts, for `provider_account`."""

    def run(provider_account, *, gpus, used, green):
        fund_stake(provider_account, usdc, 100 * USDC)
        offer = make_offer(provider=provider_account.address, greenEnergy=green)
        request = make_request(gpuCount=gpus)
        receipt = market.openDeal(
            offer.as_tuple(), sign(offer, provider_account), request.as_tuple(), sign(request, trainer),
            request.totalHours, sender=matcher,
        )
        deal_id = receipt.decode_logs(market.DealOpened)[0].dealId
        market.startDeal(deal_id, sender=provider_account)
        chain.pending_timestamp += used
        market.completeDeal(deal_id, used, RESULT, sender=provider_account)
        return market.accept(deal_id, sender=trainer)

    return run


def test_market_settlements__record_gpu_seconds_and_providers_claim_their_pro_rata_share(
    reward_pool, credit, market, fund, epoch, chain, settle_deal, funded, provider, earners
):
    """Two deals settle through the market in one epoch: the green one (2 GPUs × 3 h) weighs
    2 × 10,800 × 1.2; the other (3 GPUs × 1 h 7 s) 3 × 3,607. After the epoch each provider
    claims floor(funding × weight / total)."""
    other = earners[0]
    funding = 1_000 * CCR + 7  # not divisible by the total weight
    fund(epoch, funding)

    green_receipt = settle_deal(provider, gpus=2, used=3 * HOUR, green=True)
    plain_receipt = settle_deal(other, gpus=3, used=HOUR + 7, green=False)

    green_weight = weight(2 * 3 * HOUR, True)
    plain_weight = weight(3 * (HOUR + 7), False)
    assert (green_weight, plain_weight) == (25_920, 10_821)
    recorded = green_receipt.decode_logs(reward_pool.DeliveryRecorded)[0]
    assert (recorded["provider"], recorded.gpuSeconds, recorded.weight) == (provider.address, 21_600, 25_920)
    assert plain_receipt.decode_logs(reward_pool.DeliveryRecorded)[0].weight == 10_821
    total = green_weight + plain_weight
    assert reward_pool.epochInfo(epoch) == (funding, total, 0)

    with reverts(reward_pool.RewardPoolEpochNotClosed):
        reward_pool.claim(epoch, sender=provider)

    close(chain, reward_pool, epoch)
    expected = {provider: funding * green_weight // total, other: funding * plain_weight // total}
    for account, amount in expected.items():
        assert reward_pool.claimable(epoch, account) == amount
        receipt = reward_pool.claim(epoch, sender=account)
        assert receipt.decode_logs(reward_pool.RewardsClaimed)[0].amount == amount
        assert credit.balanceOf(account) == amount

    claimed = sum(expected.values())
    assert reward_pool.epochInfo(epoch) == (funding, total, claimed)
    assert 0 <= funding - claimed < len(expected)
    assert credit.balanceOf(reward_pool) == funding - claimed


def test_market_abort__pays_and_records_only_the_elapsed_gpu_seconds(
    reward_pool, market, epoch, chain, started_deal, trainer, provider
):
    deal_id, _, _ = started_deal()  # 2 GPUs, green offer (factory defaults)
    started_at = market.getDeal(deal_id).startedAt
    chain.pending_timestamp = started_at + 1_000
    receipt = market.abort(deal_id, sender=trainer)
    assert receipt.decode_logs(reward_pool.DeliveryRecorded)[0].gpuSeconds == 2 * 1_000
    assert reward_pool.weightOf(epoch, provider) == 2_400


# ───────────────────────────── claims ─────────────────────────────


def test_claim__open_epoch__reverts_epoch_not_closed(reward_pool, recorder, fund, provider, epoch):
    fund(epoch, CCR)
    reward_pool.recordDelivery(provider, 100, False, sender=recorder)
    with reverts(reward_pool.RewardPoolEpochNotClosed) as info:
        reward_pool.claim(epoch, sender=provider)
    assert (info.inputs["epoch"], info.inputs["currentEpoch"]) == (epoch, epoch)
    assert reward_pool.claimable(epoch, provider) == 0  # the view agrees


def test_claim__twice__reverts_already_claimed(reward_pool, credit, recorder, fund, provider, epoch, chain):
    fund(epoch, CCR)
    reward_pool.recordDelivery(provider, 100, False, sender=recorder)
    close(chain, reward_pool, epoch)
    reward_pool.claim(epoch, sender=provider)
    with reverts(reward_pool.RewardPoolAlreadyClaimed):
        reward_pool.claim(epoch, sender=provider)
    assert credit.balanceOf(provider) == CCR
    assert reward_pool.claimable(epoch, provider) == 0


def test_claim__no_delivered_work__reverts_nothing_to_claim(reward_pool, recorder, fund, provider, stranger, epoch, chain):
    fund(epoch, CCR)
    reward_pool.recordDelivery(provider, 100, False, sender=recorder)
    close(chain, reward_pool, epoch)
    with reverts(reward_pool.RewardPoolNothingToClaim) as info:
        reward_pool.claim(epoch, sender=stranger)
    assert info.inputs["provider"] == stranger.address


def test_claim__work_in_an_unfunded_epoch__reverts_nothing_to_claim(reward_pool, recorder, provider, epoch, chain):
    reward_pool.recordDelivery(provider, 100, False, sender=recorder)
    close(chain, reward_pool, epoch)
    with reverts(reward_pool.RewardPoolNothingToClaim):
        reward_pool.claim(epoch, sender=provider)


def test_claim__three_providers_funding_not_divisible__dust_stays_below_claimant_count(
    reward_pool, credit, recorder, fund, earners, epoch, chain
):
    funding = 100  # base units, split three ways
    fund(epoch, funding)
    trio = earners[:3]
    for account in trio:
        reward_pool.recordDelivery(account, 3_600, False, sender=recorder)
    close(chain, reward_pool, epoch)

    claims = []
    for account in trio:
        reward_pool.claim(epoch, sender=account)
        claims.append(credit.balanceOf(account))

    assert claims == [33, 33, 33]  # floor(100 × 1/3) each
    assert sum(claims) <= funding
    assert funding - sum(claims) == 1 < len(trio)  # the dust, never claimable
    assert credit.balanceOf(reward_pool) == 1


@pytest.fixture(scope="module")
def driver(project, admin, reward_pool, credit):
    """RewardPoolDriver (contracts/test): holds RECORDER_ROLE and CCR, funds and records in one
    transaction and lets four contract providers claim in another, so 50 examples stay fast."""
    harness = admin.deploy(project.RewardPoolDriver, reward_pool, credit, MAX_PROVIDERS)
    reward_pool.grantRole(RECORDER_ROLE, harness, sender=admin)
    credit.mint(harness, 50 * MAX_FUNDING, sender=admin)
    return harness


@pytest.fixture(scope="module")
def claimers(driver):
    return [driver.claimerAt(i) for i in range(MAX_PROVIDERS)]


MAX_PROVIDERS = 4
MAX_FUNDING = 10**24  # one million CCR


@settings(
    max_examples=30,  # ≤ 50 per the issue; 30 keeps this file well under a minute
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    funding=st.integers(min_value=1, max_value=MAX_FUNDING),
    work=st.lists(
        st.tuples(st.integers(min_value=1, max_value=10**15), st.booleans()), min_size=1, max_size=MAX_PROVIDERS
    ),
)
def test_claim__random_weights_and_funding__claims_never_exceed_funding(
    reward_pool, credit, driver, claimers, admin, chain, funding, work
):
    """Each example uses a fresh epoch (the previous example closed its own), so examples never
    interfere. Every provider gets exactly floor(funding × weight / total) (a zero share is not
    claimable); the sum never exceeds funding and the dust is below the number of providers."""
    epoch = reward_pool.currentEpoch()
    driver.fundAndRecord(epoch, funding, [s for s, _ in work], [g for _, g in work], sender=admin)
    chain.pending_timestamp = reward_pool.epochEndsAt(epoch)
    receipt = driver.claimAll(epoch, len(work), sender=admin)

    weights = [weight(s, g) for s, g in work]
    total = sum(weights)
    paid = {log["provider"]: log.amount for log in receipt.decode_logs(reward_pool.RewardsClaimed)}
    transferred = {log["to"]: log.value for log in receipt.decode_logs(credit.Transfer)}
    assert paid == transferred  # every claim really moved its tokens
    claims = [paid.get(c, 0) for c in claimers[: len(work)]]
    assert claims == [funding * w // total for w in weights]
    assert sum(claims) <= funding
    assert funding - sum(claims) < len(work)
    assert reward_pool.epochInfo(epoch) == (funding, total, sum(claims))


# ───────────────────────────── roll-over ─────────────────────────────


def test_roll_over__closed_empty_epoch__moves_funding_to_the_current_epoch(
    reward_pool, credit, recorder, fund, provider, stranger, epoch, chain
):
    fund(epoch, 500 * CCR)
    fund(epoch + 1, 20 * CCR)
    close(chain, reward_pool, epoch)

    receipt = reward_pool.rollOver(epoch, sender=stranger)  # anyone may

    assert reward_pool.epochInfo(epoch)[0] == 0
    assert reward_pool.epochInfo(epoch + 1)[0] == 520 * CCR
    event = receipt.decode_logs(reward_pool.RewardsRolledOver)[0]
    assert (event.fromEpoch, event.toEpoch, event.amount) == (epoch, epoch + 1, 500 * CCR)

    # The rolled funds are earned in the current epoch like any other.
    reward_pool.recordDelivery(provider, 60, False, sender=recorder)
    close(chain, reward_pool, epoch + 1)
    reward_pool.claim(epoch + 1, sender=provider)
    assert credit.balanceOf(provider) == 520 * CCR


def test_roll_over__epoch_with_delivered_work__reverts(reward_pool, recorder, fund, provider, stranger, epoch, chain):
    fund(epoch, CCR)
    reward_pool.recordDelivery(provider, 60, False, sender=recorder)
    close(chain, reward_pool, epoch)
    with reverts(reward_pool.RewardPoolCannotRollOver) as info:
        reward_pool.rollOver(epoch, sender=stranger)
    assert (info.inputs["totalWeight"], info.inputs["funding"]) == (60, CCR)


def test_roll_over__no_funding__reverts(reward_pool, stranger, epoch, chain):
    close(chain, reward_pool, epoch)
    with reverts(reward_pool.RewardPoolCannotRollOver) as info:
        reward_pool.rollOver(epoch, sender=stranger)
    assert (info.inputs["totalWeight"], info.inputs["funding"]) == (0, 0)


def test_roll_over__twice__second_reverts_cannot_roll_over(reward_pool, fund, stranger, epoch, chain):
    fund(epoch, CCR)
    close(chain, reward_pool, epoch)
    reward_pool.rollOver(epoch, sender=stranger)
    with reverts(reward_pool.RewardPoolCannotRollOver):
        reward_pool.rollOver(epoch, sender=stranger)
    assert reward_pool.epochInfo(epoch + 1)[0] == CCR


def test_roll_over__open_epoch__reverts_epoch_not_closed(reward_pool, fund, stranger, epoch):
    fund(epoch, CCR)
    with reverts(reward_pool.RewardPoolEpochNotClosed):
        reward_pool.rollOver(epoch, sender=stranger)


# ───────────────────────────── governance ─────────────────────────────


@pytest.mark.parametrize("multiplier", [0, 9_999, 30_001])
def test_set_green_multiplier__out_of_range__reverts(reward_pool, admin, multiplier):
    with reverts(reward_pool.RewardPoolMultiplierOutOfRange) as info:
        reward_pool.setGreenMultiplier(multiplier, sender=admin)
    assert info.inputs["multiplierBps"] == multiplier
    assert reward_pool.greenMultiplierBps() == GREEN_BPS


@pytest.mark.parametrize("multiplier", [10_000, 30_000])
def test_set_green_multiplier__bounds__accepted_and_applied_to_new_records(
    reward_pool, admin, recorder, provider, epoch, multiplier
):
    reward_pool.setGreenMultiplier(multiplier, sender=admin)
    reward_pool.recordDelivery(provider, 1_000, True, sender=recorder)
    assert reward_pool.weightOf(epoch, provider) == 1_000 * multiplier // 10_000


def test_set_green_multiplier__not_admin__reverts(reward_pool, stranger):
    with reverts(reward_pool.AccessControlUnauthorizedAccount):
        reward_pool.setGreenMultiplier(15_000, sender=stranger)


def test_constructor__bad_parameters__revert(project, admin, credit):
    with reverts(project.RewardPool.RewardPoolMultiplierOutOfRange):
        admin.deploy(project.RewardPool, admin, credit, EPOCH_LENGTH, 30_001)
    with reverts(project.RewardPool.RewardPoolInvalidEpochLength):
        admin.deploy(project.RewardPool, admin, credit, 0, GREEN_BPS)
