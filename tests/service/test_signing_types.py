"""The service-only EIP-712 types hash exactly as eth-account does (strings as their keccak)."""

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.signing import (
    SECP256K1_N, Attestation, CancelOrder, Offer, ProviderProfile, Request, SignatureError,
)

MARKET = "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707"
KEY = "0x" + "11" * 32


@pytest.mark.parametrize("message", [
    ProviderProfile(provider=Account.from_key(KEY).address, name="nordic-hydro-1", endpoint="https://gpu.example"),
    ProviderProfile(provider=Account.from_key(KEY).address, name="", endpoint=""),
    CancelOrder(orderHash="0x" + "ab" * 32),
    Attestation(dealId=7, resultHash="0x" + "cd" * 32, passed=False),
])
def test_struct_hash_and_signature__equal_eth_account(message):
    signable = encode_typed_data(full_message=message.typed_data(31337, MARKET))
    assert message.struct_hash() == signable.body
    signature = message.sign(KEY, 31337, MARKET)
    assert message.recover(signature, 31337, MARKET) == Account.from_key(KEY).address
    assert message.recover(signature, 1, MARKET) != Account.from_key(KEY).address  # bound to the chain


# ───────────── the fast path (struct words built by hand, coincurve recover) ─────────────

addresses = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b))


def uint(bits):
    return st.integers(min_value=0, max_value=2**bits - 1)


orders = st.one_of(
    st.builds(Offer, provider=addresses, gpuModel=uint(16), gpuCount=uint(16), vramGb=uint(16), region=uint(8),
              greenEnergy=st.booleans(), token=addresses, pricePerGpuHour=uint(96), minHours=uint(32),
              maxHours=uint(32), capacityGpuHours=uint(32), availableUntil=uint(64), expiry=uint(64),
              salt=uint(256), counter=uint(256)),
    st.builds(Request, trainer=addresses, gpuModel=uint(16), gpuCount=uint(16), minVramGb=uint(16),
              regionMask=uint(256), greenOnly=st.booleans(), token=addresses, maxPricePerGpuHour=uint(96),
              totalHours=uint(32), minHours=uint(32), startBy=uint(64), expiry=uint(64),
              jobSpecHash=st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()),
              settlementRule=uint(8), salt=uint(256), counter=uint(256)),
)


@settings(max_examples=200, deadline=None)
@given(order=orders, chain_id=uint(64), market=addresses)
def test_digest_and_recover__any_order__equal_eth_account(order, chain_id, market):
    signable = encode_typed_data(full_message=order.typed_data(chain_id, market))
    assert order.struct_hash() == signable.body
    assert order.digest(chain_id, market) == keccak(b"\x19" + signable.version + signable.header + signable.body)
    signature = bytes(Account.sign_message(signable, KEY).signature)
    assert order.recover(signature, chain_id, market) == Account.recover_message(signable, signature=signature)


def test_recover__malleable_twin_and_malformed_signatures__refused_like_the_contract():
    message = CancelOrder(orderHash="0x" + "ab" * 32)
    signature = message.sign(KEY, 31337, MARKET)
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    twin = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # same key, high s: OZ ECDSA refuses it
    assert Account._recover_hash(message.digest(31337, MARKET), signature=twin) == Account.from_key(KEY).address
    with pytest.raises(SignatureError, match="lower half"):
        message.recover(twin, 31337, MARKET)
    for bad, text in [(signature[:64], "65 bytes"), (signature[:64] + bytes([29]), "v must be 27 or 28"),
                      (bytes(32) + signature[32:], "out of range")]:
        with pytest.raises(SignatureError, match=text):
            message.recover(bad, 31337, MARKET)
