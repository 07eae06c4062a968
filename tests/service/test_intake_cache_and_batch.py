"""Intake's remembered chain state (refreshed from events, never the reason to refuse) and the
batch endpoint (each order judged alone, deals sent together), on a real anvil."""

from __future__ import annotations

import socket

import pytest
import requests
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from marketplace.api.app import create_app
from marketplace.api.schemas import BatchOut
from marketplace.chain.gateway import ChainUnavailable
from marketplace.client import MarketClient
from marketplace.db.models import ChainTx, MatchRow
from marketplace.orderbook import SignatureWorkers
from marketplace.service import MarketService

from devnet_market import (  # noqa: I001 - tests/service is on sys.path under pytest
    PROVIDER, PROVIDER_2, TRAINER, TRAINER_2, USDC, DevnetMarket, json_message, service_settings,
)

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def env(anvil, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("intake-cache")
    market = DevnetMarket.deploy(anvil, workdir)
    service = MarketService(service_settings(market, workdir, rate_limit_per_minute=60))
    service.book.load()
    market.stake(PROVIDER, 500 * USDC)
    market.fund_vault(TRAINER, 1_000 * USDC)
    with TestClient(create_app(service)) as client:
        yield market, service, client


def post(client, path, order, signature):
    return client.post(path, json={"order": json_message(order), "signature": signature})


# ───────────── remembered state ─────────────


def test_cache__withdrawal_seen_by_poll__next_request_refused(env):
    market, service, client = env
    cache = service.book.chain_state
    market.fund_vault(TRAINER_2, 10 * USDC)
    request = market.request(TRAINER_2, maxPricePerGpuHour=USDC, gpuCount=1, minHours=4)  # needs 4 USDC
    assert post(client, "/requests", request, market.sign(request, TRAINER_2)).status_code == 201
    remembered = cache.intake_state(offer=False, owner=request.trainer, token=request.token)
    assert remembered.cached and remembered.vault_balance == 10 * USDC

    market.send(TRAINER_2, market.market.functions.withdraw(market.usdc.address, 9 * USDC))
    # Until the event is polled the remembered balance stands (the contract would refuse the deal)…
    assert cache.intake_state(offer=False, owner=request.trainer, token=request.token).vault_balance == 10 * USDC
    assert cache.poll() >= 1
    # …after it, the next order is judged on the balance read from the chain again.
    after = cache.intake_state(offer=False, owner=request.trainer, token=request.token)
    assert not after.cached and after.vault_balance == 1 * USDC
    again = market.request(TRAINER_2, maxPricePerGpuHour=USDC, gpuCount=1, minHours=4)
    response = post(client, "/requests", again, market.sign(again, TRAINER_2))
    assert response.status_code == 422 and response.json()["error"] == "insufficient_funds", response.text


def test_cache__stale_low_balance__never_refuses_after_a_deposit(env):
    market, service, client = env
    cache = service.book.chain_state
    empty = market.request(PROVIDER_2, gpuCount=1, minHours=1)  # PROVIDER_2 has no vault balance yet
    assert post(client, "/requests", empty, market.sign(empty, PROVIDER_2)).status_code == 422
    assert cache.intake_state(offer=False, owner=empty.trainer, token=empty.token).vault_balance == 0

    market.fund_vault(PROVIDER_2, 100 * USDC)  # not polled: memory still says 0
    assert cache.intake_state(offer=False, owner=empty.trainer, token=empty.token).vault_balance == 0
    funded = market.request(PROVIDER_2, gpuCount=1, minHours=1)
    response = post(client, "/requests", funded, market.sign(funded, PROVIDER_2))
    assert response.status_code == 201, response.text


def test_cache__counter_incremented__old_counter_refused_new_accepted(env):
    market, service, client = env
    first = market.offer(PROVIDER)
    assert post(client, "/offers", first, market.sign(first, PROVIDER)).status_code == 201
    market.send(PROVIDER, market.market.functions.incrementCounter())
    service.book.chain_state.poll()
    stale = market.offer(PROVIDER, counter=0)
    response = post(client, "/offers", stale, market.sign(stale, PROVIDER))
    assert response.status_code == 422 and response.json()["field"] == "counter", response.text
    current = market.offer(PROVIDER, counter=1)
    assert post(client, "/offers", current, market.sign(current, PROVIDER)).status_code == 201


def test_cache__event_while_a_read_is_in_flight__value_not_remembered(env, request):
    market, service, _ = env
    cache = service.book.chain_state
    owner, token = market.address(TRAINER), market.usdc.address
    cache.poll()
    cache.clear()
    gateway = service.gateway
    read_with_time = gateway.read_with_time

    def racing(reads):
        result = read_with_time(reads)  # reads the balance, then a deposit lands and is polled
        market.fund_vault(TRAINER, 1 * USDC)
        cache.poll()
        return result

    gateway.read_with_time = racing
    request.addfinalizer(lambda: setattr(gateway, "read_with_time", read_with_time))
    cache.intake_state(offer=False, owner=owner, token=token)
    gateway.read_with_time = read_with_time
    assert not cache.intake_state(offer=False, owner=owner, token=token).cached


# ───────────── POST /orders/batch ─────────────


def test_batch__mixed_orders__each_judged_alone_and_deals_sent_together(env):
    market, service, client = env
    offers = [market.offer(PROVIDER, counter=1, gpuModel=2, vramGb=24, pricePerGpuHour=(2 + i) * USDC,
                           capacityGpuHours=8)
              for i in range(2)]
    requests = [market.request(TRAINER, gpuModel=2, minVramGb=16, maxPricePerGpuHour=5 * USDC) for _ in range(2)]
    expired = market.offer(PROVIDER, counter=1, expiry=market.now() - 1)
    forged = market.request(TRAINER, gpuModel=2, minVramGb=16)

    def item(side, order, signer):
        return {"side": side, "order": json_message(order), "signature": market.sign(order, signer)}

    body = {"orders": [
        item("offer", offers[0], PROVIDER), item("offer", offers[1], PROVIDER), item("offer", expired, PROVIDER),
        item("request", forged, TRAINER_2), item("request", requests[0], TRAINER),
        item("request", requests[1], TRAINER), item("offer", offers[0], PROVIDER),
    ]}
    before = client.get("/orders").json()["total"]
    response = client.post("/orders/batch", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 422, 401, 201, 201, 409], results
    assert results[2]["field"] == "expiry" and results[3]["error"] == "invalid_signature"
    assert "already submitted" in results[6]["message"]
    # The answer is built by hand (no model per order): it must be exactly BatchOut's documented shape.
    assert response.json() == BatchOut.model_validate_json(response.content).model_dump(mode="json")
    assert response.json()["accepted"] == 4 and client.get("/orders").json()["total"] == before + 4
    # Each request fills the cheapest offer left (8 GPU-hours each); both pairings go out in one openDeals.
    assert [(m["offer_hash"], m["request_hash"]) for m in results[4]["matches"] + results[5]["matches"]] == [
        ("0x" + offers[0].struct_hash().hex(), "0x" + requests[0].struct_hash().hex()),
        ("0x" + offers[1].struct_hash().hex(), "0x" + requests[1].struct_hash().hex()),
    ]
    with Session(service.engine) as session:
        tx_ids = {m.tx_id for m in session.exec(select(MatchRow).where(MatchRow.request_hash.in_(
            ["0x" + r.struct_hash().hex() for r in requests]))).all()}
        assert len(tx_ids) == 1 and session.get(ChainTx, tx_ids.pop()).kind == "open_deals"


@pytest.mark.parametrize(("body", "field"), [
    ({"orders": []}, "orders"),
    ({"orders": [{"side": "bid", "order": {}, "signature": "0x"}]}, "orders.0.side"),
    ({"orders": [{"side": "offer", "order": {}, "signature": "0x"}] * 201}, "orders"),
])
def test_batch__malformed_body__422_and_nothing_stored(env, body, field):
    _, _, client = env
    before = client.get("/orders").json()["total"]
    response = client.post("/orders/batch", json=body)
    assert response.status_code == 422 and response.json()["field"] == field, response.text
    assert client.get("/orders").json()["total"] == before


def test_batch__more_orders_than_the_ip_limit_allows__429_and_nothing_stored(env):
    market, _, client = env
    offers = [market.offer(PROVIDER, counter=1) for _ in range(61)]  # the limit here is 60 per minute
    before = client.get("/orders").json()["total"]
    response = client.post("/orders/batch", json={"orders": [
        {"side": "offer", "order": json_message(o), "signature": market.sign(o, PROVIDER)} for o in offers]})
    assert response.status_code == 429 and "exceed the limit" in response.json()["message"], response.text
    assert client.get("/orders").json()["total"] == before


def test_client__submit_batch__typed_per_order_results(env):
    market, _, client = env
    api = MarketClient("http://testserver", transport=client._transport)
    offer = market.offer(PROVIDER, counter=1, gpuModel=2, vramGb=24)
    result = api.submit_batch([
        {"side": "offer", "order": json_message(offer), "signature": market.sign(offer, PROVIDER)},
        {"side": "offer", "order": json_message(offer), "signature": market.sign(offer, PROVIDER)},
    ])
    assert (result.accepted, result.rejected) == (1, 1)
    assert result.results[0].hash == "0x" + offer.struct_hash().hex()
    assert (result.results[1].status, result.results[1].error) == (409, "conflict")  # same order again
    assert api.order(result.results[0].hash).status == "open"


def test_batch__through_signature_workers__same_verdicts(env, request):
    market, service, client = env
    workers = SignatureWorkers(1)
    service.book.signature_workers = workers
    request.addfinalizer(lambda: (setattr(service.book, "signature_workers", None), workers.close()))
    offers = [market.offer(PROVIDER, counter=1, gpuModel=2, vramGb=24, salt=9_000 + i) for i in range(20)]
    items = [{"side": "offer", "order": json_message(o), "signature": market.sign(o, PROVIDER)} for o in offers]
    items[5]["signature"] = market.sign(offers[5], TRAINER)  # signed by someone else
    items[6]["order"] = {**items[6]["order"], "vramGb": True}  # bool where an integer belongs
    body = client.post("/orders/batch", json={"orders": items}).json()
    assert [r["status"] for r in body["results"]] == [201] * 5 + [401, 422] + [201] * 13
    assert body["results"][6]["field"] == "vramGb"
    assert [r["hash"] for r in body["results"] if r["status"] == 201] == [
        "0x" + o.struct_hash().hex() for i, o in enumerate(offers) if i not in (5, 6)]


def test_node_down__health_says_so_intake_503_loops_resume_when_it_returns(env):
    market, service, client = env
    provider = service.gateway.w3.provider
    real_node = provider.endpoint_uri
    offer = market.offer(PROVIDER, counter=1, gpuModel=2, vramGb=24, salt=77_000)
    before = client.get("/orders").json()["total"]
    with socket.socket() as probe:  # a port nothing listens on: connection refused, as for a dead node
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    provider.endpoint_uri = f"http://127.0.0.1:{dead_port}"
    try:
        assert client.get("/health").json()["status"] == "chain-unreachable"
        service.book.chain_state.clear()  # nothing remembered: this order needs the chain
        response = post(client, "/offers", offer, market.sign(offer, PROVIDER))
        assert response.status_code == 503 and response.json()["error"] == "unavailable", response.text
        assert "no node answers" in response.json()["message"]
        with pytest.raises((ChainUnavailable, requests.ConnectionError)):
            service.run_once()
    finally:
        provider.endpoint_uri = real_node
    assert client.get("/orders").json()["total"] == before  # nothing stored half-way
    service.run_once()  # the loops work again
    assert client.get("/health").json()["status"] in ("ok", "degraded")
    assert post(client, "/offers", offer, market.sign(offer, PROVIDER)).status_code == 201


def test_batch__owners_not_remembered__their_state_read_in_one_round_trip(env, request):
    market, service, client = env
    provider = service.gateway.w3.provider
    batches: list[list[str]] = []
    send_batch = provider.make_batch_request

    def counted(requests):
        batches.append([method for method, _ in requests])
        return send_batch(requests)

    provider.make_batch_request = counted
    request.addfinalizer(lambda: setattr(provider, "make_batch_request", send_batch))
    service.book.chain_state.clear()
    orders = [market.request(owner, gpuModel=2, minVramGb=16, maxPricePerGpuHour=USDC, salt=88_000 + i)
              for i, owner in enumerate((TRAINER, PROVIDER_2, TRAINER))]
    body = client.post("/orders/batch", json={"orders": [
        {"side": "request", "order": json_message(o), "signature": market.sign(o, index)}
        for o, index in zip(orders, (TRAINER, PROVIDER_2, TRAINER))]}).json()
    assert [r["status"] for r in body["results"]] == [201, 201, 201], body
    # token, and each owner's counter and vault balance: one batch with chain time, not one per owner
    assert batches == [["eth_getBlockByNumber"] + ["eth_call"] * 5]
