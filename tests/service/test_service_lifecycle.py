"""The service end to end on a real anvil: signed orders through the API → match → deal opened on
chain → started → completed → settled by the keeper; a no-show refunded; verification pass/fail."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.orderbook import job_spec_hash
from marketplace.service import MarketService
from marketplace.signing import DealStatus, SettlementRule

from devnet_market import (  # noqa: I001 - tests/service is on sys.path under pytest
    HOUR, PROVIDER, PROVIDER_2, TRAINER, TRAINER_2, USDC, DevnetMarket, json_message, service_settings,
)

pytestmark = pytest.mark.anvil

CHALLENGE_WINDOW = 600
HASH_JOB = {"type": "hash-chain", "seed": "deal", "iterations": 1000}


@pytest.fixture(scope="module")
def env(anvil, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("service")
    market = DevnetMarket.deploy(anvil, workdir, challenge_window=CHALLENGE_WINDOW)
    service = MarketService(service_settings(market, workdir))
    service.book.load()
    with TestClient(create_app(service)) as client:
        market.stake(PROVIDER, 500 * USDC)
        market.stake(PROVIDER_2, 500 * USDC)
        market.fund_vault(TRAINER, 1_000 * USDC)
        market.fund_vault(TRAINER_2, 1_000 * USDC)
        yield market, service, client


def post_offer(market, client, index=PROVIDER, **overrides):
    offer = market.offer(index, **overrides)
    response = client.post("/offers", json={"order": json_message(offer), "signature": market.sign(offer, index)})
    return offer, response


def post_request(market, client, index=TRAINER, job_spec=None, **overrides):
    if job_spec is not None:
        overrides["jobSpecHash"] = job_spec_hash(job_spec)
    request = market.request(index, **overrides)
    body = {"order": json_message(request), "signature": market.sign(request, index)}
    if job_spec is not None:
        body["job_spec"] = job_spec
    return request, client.post("/requests", json=body)


def open_through_api(market, service, client, *, gpu_model, provider=PROVIDER, trainer=TRAINER, job_spec=None,
                     **request_overrides):
    """Each test trades its own GPU model, so the shared book never pairs it with another test's leftovers."""
    _, offer_response = post_offer(market, client, provider, gpuModel=gpu_model)
    assert offer_response.status_code == 201, offer_response.text
    _, response = post_request(market, client, trainer, job_spec=job_spec, gpuModel=gpu_model, **request_overrides)
    assert response.status_code == 201, response.text
    matches = response.json()["matches"]
    assert len(matches) == 1 and matches[0]["state"] == "proposed"
    service.run_once()
    match = client.get(f"/orders/{response.json()['order']['hash']}/matches").json()[0]
    assert match["state"] == "opened", match
    return match["deal_id"]


def test_lifecycle__offer_and_request_through_api__deal_settles_and_everyone_is_paid(env):
    market, service, client = env
    provider, treasury = market.address(PROVIDER), market.market.functions.treasury().call()
    vault = market.market.functions
    provider_before = vault.balanceOf(provider, market.usdc.address).call()
    treasury_before = vault.balanceOf(treasury, market.usdc.address).call()

    deal_id = open_through_api(market, service, client, gpu_model=8)
    deal = client.get(f"/deals/{deal_id}").json()
    assert deal["status"] == "open" and deal["on_chain"]["status"] == "open"
    escrow = 2 * USDC * 2 * 4  # the offer's ask × 2 GPUs × 4 h
    assert int(deal["escrow"]) == escrow

    market.send(PROVIDER, vault.startDeal(deal_id))
    market.warp(4 * HOUR)
    market.send(PROVIDER, vault.completeDeal(deal_id, 4 * HOUR, "0x" + "cd" * 32))
    service.run_once()
    assert client.get(f"/deals/{deal_id}").json()["status"] == "completed"

    market.warp(CHALLENGE_WINDOW)
    service.run_once()  # keeper queues settleMany; the second sender pass sends it
    service.run_once()  # the indexer sees DealSettled
    deal = client.get(f"/deals/{deal_id}").json()
    assert deal["status"] == "settled"
    fee = escrow * 100 // 10_000
    assert vault.balanceOf(provider, market.usdc.address).call() - provider_before == escrow - fee
    assert vault.balanceOf(treasury, market.usdc.address).call() - treasury_before == fee
    assert (int(deal["provider_paid"]), int(deal["fee"]), int(deal["buyer_refund"])) == (escrow - fee, fee, 0)
    rewards = market.contract("RewardPool").functions
    epoch = rewards.currentEpoch().call()
    assert rewards.weightOf(epoch, provider).call() >= 2 * 4 * HOUR * 12_000 // 10_000  # green offer: 1.2x
    assert [e["name"] for e in deal["events"]] == ["DealOpened", "DealStarted", "DealCompleted", "DealSettled"]


def test_no_show__provider_never_starts__keeper_refunds_buyer_with_collateral(env):
    market, service, client = env
    trainer = market.address(TRAINER_2)
    deal_id = open_through_api(market, service, client, gpu_model=7, provider=PROVIDER_2, trainer=TRAINER_2)
    wallet_before = market.usdc.functions.balanceOf(trainer).call()
    deal = client.get(f"/deals/{deal_id}").json()

    market.warp(deal["start_deadline"] - market.now() + 1)
    service.run_once()
    service.run_once()

    deal = client.get(f"/deals/{deal_id}").json()
    assert deal["status"] == "refunded"
    assert int(deal["collateral_slashed"]) == int(deal["collateral"]) > 0
    assert market.usdc.functions.balanceOf(trainer).call() - wallet_before == int(deal["collateral"])


@pytest.mark.parametrize("honest", [True, False])
def test_verification__attestation_rule__verifier_reruns_job_and_settles_or_slashes(env, honest):
    market, service, client = env
    from marketplace import jobs

    spec = {**HASH_JOB, "seed": f"verify-{honest}"}
    deal_id = open_through_api(market, service, client, gpu_model=9 if honest else 10, job_spec=spec,
                               settlementRule=int(SettlementRule.ATTESTATION))
    vault = market.market.functions
    market.send(PROVIDER, vault.startDeal(deal_id))
    market.warp(HOUR)
    result = jobs.run(spec).result_hash if honest else "0x" + "66" * 32
    market.send(PROVIDER, vault.completeDeal(deal_id, HOUR, result))
    service.run_once()  # indexer: completed; verifier re-runs the job and queues its attestation
    service.run_once()  # the attestation lands and is indexed

    deal = client.get(f"/deals/{deal_id}").json()
    on_chain = vault.getDeal(deal_id).call()
    if honest:
        assert deal["status"] == "settled" and on_chain[1] == DealStatus.SETTLED
    else:
        assert deal["status"] == "resolved" and on_chain[1] == DealStatus.RESOLVED
        assert int(deal["collateral_slashed"]) > 0 and int(deal["provider_paid"]) == 0
