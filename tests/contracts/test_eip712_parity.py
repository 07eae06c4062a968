"""EIP-712 parity between marketplace/signing.py and ComputeMarket, and what an order signature binds.

Parity: type hashes, the domain separator, struct hashes and digests agree between the contract,
signing.py's own encoding and eth-account's, over random field values at the Solidity widths.
Binding: a signature is valid only for its chain, its market, its owner (EOA, or an ERC-1271
wallet answering the right magic value), and only in its low-s form. Replay past capacity,
cancellation and counters are test_market_orders.py's.
"""

from __future__ import annotations

import pytest
from eth_abi import encode as abi_encode
from eth_account.messages import encode_typed_data
from eth_keys import keys
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.signing import Attestation, Offer, Request

from market_constants import CHALLENGE_WINDOW, COLLATERAL_BPS, FEE_BPS, USDC
from strict_reverts import reverts  # the strict ape.reverts

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
PRICE, GPUS, HOURS = 2 * USDC, 2, 4  # factory defaults
ESCROW = PRICE * GPUS * HOURS
COLLATERAL = -(-ESCROW * COLLATERAL_BPS // 10_000)
FUNDS = 1_000 * USDC

pytestmark = pytest.mark.usefixtures(
    "market", "staking", "usdc", "admin", "provider", "trainer", "matcher", "stranger", "treasury",
    "make_offer", "make_request", "sign", "fund_vault", "fund_stake", "chain", "funded_parties",
    "other_market", "wallets",
)


# ───────────────────────────── fixtures ─────────────────────────────


@pytest.fixture(scope="module")
def funded_parties(fund_vault, fund_stake, trainer, provider, usdc):
    fund_vault(trainer, usdc, FUNDS)
    fund_stake(provider, usdc, FUNDS)


@pytest.fixture(scope="module")
def other_market(project, admin, treasury, staking, reward_pool):
    """A second ComputeMarket: same name and version, so only verifyingContract tells them apart."""
    return admin.deploy(
        project.ComputeMarket, admin, treasury, staking, reward_pool, CHALLENGE_WINDOW, FEE_BPS, COLLATERAL_BPS
    )


@pytest.fixture(scope="module")
def wallets(project, market, staking, usdc, provider, trainer):
    """ERC-1271 wallets owned by the provider's and the trainer's EOAs: the provider wallet has
    FUNDS staked, the trainer wallet FUNDS in the market vault (each set up through `execute`)."""
    provider_wallet = provider.deploy(project.MockERC1271Wallet, provider)
    trainer_wallet = trainer.deploy(project.MockERC1271Wallet, trainer)
    for wallet, owner, target, action in [
        (provider_wallet, provider, staking, staking.stake),
        (trainer_wallet, trainer, market, market.deposit),
    ]:
        usdc.mint(wallet, FUNDS, sender=owner)
        wallet.execute(usdc, usdc.approve.encode_input(target, FUNDS), sender=owner)
        wallet.execute(target, action.encode_input(usdc, FUNDS), sender=owner)
    return provider_wallet, trainer_wallet


def submit(market, offer, offer_sig, request, request_sig, sender, hours=HOURS):
    return market.openDeal(offer.as_tuple(), offer_sig, request.as_tuple(), request_sig, hours, sender=sender)


# ───────────────────────────── parity ─────────────────────────────


def test_typehashes__contract_constants__equal_keccak_of_the_python_type_strings(market):
    assert Offer.type_string() == (
        "Offer(address provider,uint16 gpuModel,uint16 gpuCount,uint16 vramGb,uint8 region,bool greenEnergy,"
        "address token,uint96 pricePerGpuHour,uint32 minHours,uint32 maxHours,uint32 capacityGpuHours,"
        "uint64 availableUntil,uint64 expiry,uint256 salt,uint256 counter)"
    )
    assert market.OFFER_TYPEHASH() == keccak(text=Offer.type_string())
    assert market.REQUEST_TYPEHASH() == keccak(text=Request.type_string())
    assert market.ATTESTATION_TYPEHASH() == keccak(text=Attestation.type_string())


def test_domain_separator__equals_eth_accounts_domain_hash_and_the_eip5267_fields(
    market, other_market, chain, make_offer
):
    chain_id = chain.chain_id
    for contract in (market, other_market):
        signable = encode_typed_data(full_message=make_offer().typed_data(chain_id, contract.address))
        by_hand = keccak(
            abi_encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                    keccak(text="ComputeMarket"),
                    keccak(text="1"),
                    chain_id,
                    contract.address,
                ],
            )
        )
        assert contract.domainSeparator() == signable.header == by_hand
    assert market.domainSeparator() != other_market.domainSeparator()
    domain = market.eip712Domain()
    assert (domain.name, domain.version, domain.chainId, domain.verifyingContract) == (
        "ComputeMarket", "1", chain_id, market.address,
    )


def uint(bits):
    return st.integers(min_value=0, max_value=2**bits - 1)


addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)

offers = st.builds(
    Offer,
    provider=addresses, gpuModel=uint(16), gpuCount=uint(16), vramGb=uint(16), region=uint(8),
    greenEnergy=st.booleans(), token=addresses, pricePerGpuHour=uint(96), minHours=uint(32),
    maxHours=uint(32), capacityGpuHours=uint(32), availableUntil=uint(64), expiry=uint(64),
    salt=uint(256), counter=uint(256),
)

requests = st.builds(
    Request,
    trainer=addresses, gpuModel=uint(16), gpuCount=uint(16), minVramGb=uint(16), regionMask=uint(256),
    greenOnly=st.booleans(), token=addresses, maxPricePerGpuHour=uint(96), totalHours=uint(32),
    minHours=uint(32), startBy=uint(64), expiry=uint(64),
    jobSpecHash=st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()),
    settlementRule=uint(8), salt=uint(256), counter=uint(256),
)

# Only view calls below, so sharing Ape's per-test chain snapshot across examples is safe.
parity_settings = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_parity(market, chain_id, order, contract_hash):
    eth_account_hash = encode_typed_data(full_message=order.typed_data(chain_id, market.address)).body
    assert contract_hash == order.struct_hash() == eth_account_hash
    assert market.typedDataDigest(contract_hash) == order.digest(chain_id, market.address)


@parity_settings
@given(offer=offers)
def test_hash_offer__any_field_values__contract_python_and_eth_account_agree(market, chain, offer):
    assert_parity(market, chain.chain_id, offer, market.hashOffer(offer.as_tuple()))


@parity_settings
@given(request=requests)
def test_hash_request__any_field_values__contract_python_and_eth_account_agree(market, chain, request):
    assert_parity(market, chain.chain_id, request, market.hashRequest(request.as_tuple()))


def test_typed_data_digest__attestation__matches_python(market, chain):
    attestation = Attestation(dealId=7, resultHash="0x" + "cd" * 32, passed=False)
    assert market.typedDataDigest(attestation.struct_hash()) == attestation.digest(chain.chain_id, market.address)


# ───────────────────────────── what a signature binds ─────────────────────────────


@pytest.mark.parametrize("side", ["offer", "request"])
@pytest.mark.parametrize("signed_for", ["another_chain", "another_market", "another_signer"])
def test_open_deal__signature_for_another_chain_market_or_signer__reverts_invalid_signature(
    signed_for, side, market, other_market, usdc, chain, make_offer, make_request, sign,
    provider, trainer, stranger, matcher,
):
    offer, request = make_offer(), make_request()
    order, owner = (offer, provider) if side == "offer" else (request, trainer)
    bad = {
        "another_chain": lambda: sign(order, owner, chain_id=chain.chain_id + 1),
        "another_market": lambda: sign(order, owner, verifying_contract=other_market.address),
        "another_signer": lambda: sign(order, stranger),
    }[signed_for]()
    offer_sig = bad if side == "offer" else sign(offer, provider)
    request_sig = bad if side == "request" else sign(request, trainer)

    with reverts(market.ComputeMarketInvalidSignature, orderHash=order.struct_hash(), signer=owner.address):
        submit(market, offer, offer_sig, request, request_sig, matcher)

    assert market.orderState(order.struct_hash()) == (0, False)
    assert market.balanceOf(trainer, usdc) == FUNDS


def test_open_deal__malleable_twin_signature__reverts_while_the_original_opens(
    market, make_offer, make_request, sign, provider, trainer, matcher, chain
):
    offer, request = make_offer(), make_request()
    original = sign(offer, provider)
    r, s, v = original[:32], int.from_bytes(original[32:64], "big"), original[64]
    assert s <= SECP256K1_N // 2 and v in (27, 28)
    twin = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # s' = n - s, v flipped
    # The twin is a valid secp256k1 signature of the same digest by the same key…
    digest = offer.digest(chain.chain_id, market.address)
    twin_key = keys.Signature(vrs=(28 - v, int.from_bytes(r, "big"), SECP256K1_N - s))
    assert twin_key.recover_public_key_from_msg_hash(digest).to_checksum_address() == provider.address

    # …but the market accepts only the low-s form.
    with reverts(market.ComputeMarketInvalidSignature, orderHash=offer.struct_hash(), signer=provider.address):
        submit(market, offer, twin, request, sign(request, trainer), matcher)
    receipt = submit(market, offer, original, request, sign(request, trainer), matcher)
    assert receipt.decode_logs(market.DealOpened)[0].offerHash == offer.struct_hash()


@pytest.mark.parametrize("malformed", ["empty", "64_bytes", "66_bytes", "v_is_29"])
def test_open_deal__malformed_signature__reverts_invalid_signature(
    malformed, market, make_offer, make_request, sign, provider, trainer, matcher
):
    offer, request = make_offer(), make_request()
    good = sign(request, trainer)
    bad = {"empty": b"", "64_bytes": good[:64], "66_bytes": good + b"\x00", "v_is_29": good[:64] + b"\x1d"}[malformed]
    with reverts(market.ComputeMarketInvalidSignature, orderHash=request.struct_hash(), signer=trainer.address):
        submit(market, offer, sign(offer, provider), request, bad, matcher)


# ───────────────────────────── ERC-1271 wallets ─────────────────────────────


def test_open_deal__contract_wallets_as_provider_and_trainer__owner_signatures_accepted(
    market, staking, usdc, wallets, make_offer, make_request, sign, provider, trainer, matcher
):
    provider_wallet, trainer_wallet = wallets
    offer = make_offer(provider=provider_wallet.address)
    request = make_request(trainer=trainer_wallet.address)

    receipt = submit(market, offer, sign(offer, provider), request, sign(request, trainer), matcher)

    event = receipt.decode_logs(market.DealOpened)[0]
    deal = market.getDeal(event.dealId)
    assert (deal.provider, deal.buyer) == (provider_wallet.address, trainer_wallet.address)
    assert market.balanceOf(trainer_wallet, usdc) == FUNDS - ESCROW
    assert staking.positionOf(provider_wallet, usdc)[:2] == (FUNDS, COLLATERAL)
    # The owners' own EOA positions are untouched: the wallets are the parties.
    assert market.balanceOf(trainer, usdc) == FUNDS
    assert staking.positionOf(provider, usdc)[1] == 0


@pytest.mark.parametrize("side", ["provider", "trainer"])
def test_open_deal__wallet_answers_a_wrong_magic_value__reverts_invalid_signature(
    side, market, usdc, wallets, make_offer, make_request, sign, provider, trainer, matcher
):
    provider_wallet, trainer_wallet = wallets
    wallet, owner = (provider_wallet, provider) if side == "provider" else (trainer_wallet, trainer)
    wallet.setMagicValue(b"\xde\xad\xbe\xef", sender=owner)
    offer = make_offer(provider=provider_wallet.address)
    request = make_request(trainer=trainer_wallet.address)
    order = offer if side == "provider" else request

    with reverts(market.ComputeMarketInvalidSignature, orderHash=order.struct_hash(), signer=wallet.address):
        submit(market, offer, sign(offer, provider), request, sign(request, trainer), matcher)

    assert market.balanceOf(trainer_wallet, usdc) == FUNDS


def test_open_deal__wallet_order_signed_by_someone_other_than_its_owner__reverts_invalid_signature(
    market, wallets, make_offer, make_request, sign, provider, stranger, matcher
):
    _, trainer_wallet = wallets
    offer, request = make_offer(), make_request(trainer=trainer_wallet.address)
    with reverts(
        market.ComputeMarketInvalidSignature, orderHash=request.struct_hash(), signer=trainer_wallet.address
    ):
        submit(market, offer, sign(offer, provider), request, sign(request, stranger), matcher)


# ───────────────────────────── non-canonical encodings ─────────────────────────────

# Bits of each order field's Solidity type, in field order (bool: 1); 256-bit fields cannot be dirty.
OFFER_BITS = (160, 16, 16, 16, 8, 1, 160, 96, 32, 32, 32, 64, 64, 256, 256)
REQUEST_BITS = (160, 16, 16, 16, 256, 1, 160, 96, 32, 32, 64, 64, 256, 8, 256, 256)


def with_dirty_bit(calldata: bytes, word: int, bits: int) -> bytes:
    """`calldata` with the bit just above a `bits`-wide field set in argument word `word`."""
    at = 4 + 32 * word
    value = int.from_bytes(calldata[at : at + 32], "big") | (1 << bits)
    return calldata[:at] + value.to_bytes(32, "big") + calldata[at + 32 :]


def raw_call(chain, to, data: bytes) -> bytes | None:
    """eth_call with hand-made calldata: its return data, or None when it reverted without data
    (what the ABI decoder does with a malformed argument); a custom error propagates."""
    from ape.exceptions import ContractLogicError, CustomError

    txn = chain.provider.network.ecosystem.create_transaction(receiver=to.address, data=data)
    try:
        return bytes(chain.provider.send_call(txn))
    except CustomError:
        raise
    except ContractLogicError as exc:
        assert exc.revert_message == "Transaction failed.", exc.revert_message  # Ape's text for no data
        return None


@pytest.mark.parametrize("kind", ["offer", "request"])
def test_hash_order__a_field_with_bits_beyond_its_type__reverts_without_data(
    kind, market, chain, make_offer, make_request
):
    order, bits, method = (
        (make_offer(), OFFER_BITS, market.hashOffer) if kind == "offer"
        else (make_request(), REQUEST_BITS, market.hashRequest)
    )
    calldata = bytes(method.encode_input(order.as_tuple()))
    assert raw_call(chain, market, calldata) == order.struct_hash()
    for word, width in enumerate(bits):
        if width < 256:
            assert raw_call(chain, market, with_dirty_bit(calldata, word, width)) is None, (word, width)


def test_open_deal__offer_field_never_compared_has_dirty_bits__reverts_without_data(
    market, chain, make_offer, make_request, sign, provider, trainer, funded_parties
):
    # A request for any model (gpuModel 0) never compares the offer's gpuModel; the dirty word is
    # still refused before anything else is checked, as the ABI decoder refuses it.
    offer, request = make_offer(), make_request(gpuModel=0)
    args = (offer.as_tuple(), sign(offer, provider), request.as_tuple(), sign(request, trainer), HOURS)
    calldata = bytes(market.openDeal.encode_input(*args))
    assert raw_call(chain, market, with_dirty_bit(calldata, 1, 16)) is None
    assert raw_call(chain, market, calldata) == (1).to_bytes(32, "big")


@pytest.mark.parametrize(
    ("field", "word", "bits"),
    [("offer.gpuModel", 1, 16), ("request.settlementRule", 16 + 13, 8), ("dealHours", 33, 32)],
)
def test_open_deals__a_pairing_with_dirty_bits__reverts_the_batch_without_data(
    field, word, bits, market, chain, make_offer, make_request, sign, provider, trainer, funded_parties
):
    # Malformed calldata is the submitter's own mistake, not a refused pairing: the batch reverts.
    offer, request = make_offer(), make_request(gpuModel=0)
    pairing = (offer.as_tuple(), sign(offer, provider), request.as_tuple(), sign(request, trainer), HOURS)
    calldata = bytes(market.openDeals.encode_input([pairing]))
    first_match = 3  # words: array offset, length, offset of element 0, then element 0 itself
    assert raw_call(chain, market, with_dirty_bit(calldata, first_match + word, bits)) is None
    assert raw_call(chain, market, calldata) is not None
