"""The service-only EIP-712 types hash exactly as eth-account does (strings as their keccak)."""

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from marketplace.signing import Attestation, CancelOrder, ProviderProfile

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
