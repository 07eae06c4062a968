"""openDeals against a pairing whose ERC-1271 signer burns all the gas it is forwarded.

SignatureChecker forwards all but 1/64 of the gas to `isValidSignature`. Were each `this.openDeal`
given all the batch's gas, one such pairing would starve every later one and revert the batch (an
order that costs the griefer nothing: an eth_call can be answered honestly and the mined call not).
openDeals therefore caps each pairing's gas, so the griefing pairing fails alone.
"""

from __future__ import annotations

import pytest

from marketplace.signing import Offer


@pytest.fixture
def griefer(project, admin):
    return admin.deploy(project.GasGriefing1271Wallet)


def _pairing(offer: Offer, request, sign, provider, trainer):
    return (offer.as_tuple(), sign(offer, provider), request.as_tuple(), sign(request, trainer), request.totalHours)


def test_open_deals__gas_burning_1271_signer_first__fails_alone_and_honest_pairing_opens(
    market, make_offer, make_request, sign, provider, trainer, matcher, funded, griefer
):
    evil = _pairing(make_offer(), make_request(trainer=griefer.address), sign, provider, trainer)
    honest_request = make_request()
    honest = _pairing(make_offer(), honest_request, sign, provider, trainer)

    receipt = market.openDeals([evil, honest], sender=matcher, gas=3_000_000)

    assert [f.index for f in receipt.decode_logs(market.DealOpenFailed)] == [0]
    [opened] = receipt.decode_logs(market.DealOpened)
    assert opened.requestHash == honest_request.struct_hash()
