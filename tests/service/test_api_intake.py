"""The API's intake and reads against a real chain: every bad input gets a 4xx that says what is
wrong, and nothing is stored or matched for it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from web3.middleware import Web3Middleware

from marketplace.api.app import create_app
from marketplace.client import MarketClient
from marketplace.errors import InvalidInput, InvalidSignature, NotFound
from marketplace.service import MarketService
from marketplace.signing import CancelOrder, ProviderProfile

from devnet_market import (  # noqa: I001 - tests/service is on sys.path under pytest
    ANVIL_KEYS, PROVIDER, PROVIDER_2, SPONSOR, TRAINER, TRAINER_2, USDC, DevnetMarket, json_message, service_settings,
)

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def env(anvil, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("api")
    market = DevnetMarket.deploy(anvil, workdir)
    service = MarketService(service_settings(market, workdir))
    service.book.load()
    market.stake(PROVIDER, 500 * USDC)
    market.fund_vault(TRAINER, 1_000 * USDC)
    with TestClient(create_app(service)) as client:
        yield market, service, client


def submit(client, path, order, signature, **extra):
    return client.post(path, json={"order": order, "signature": signature, **extra})


def order_count(client) -> int:
    return client.get("/orders").json()["total"]


def assert_rejected(response, status, error, field=None, *, text=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    if field is not None:
        assert body["field"] == field, body
    if text is not None:
        assert text in body["message"], body


def test_submit_offer__valid__stored_open_with_its_hash(env):
    market, _, client = env
    offer = market.offer(gpuModel=1, vramGb=24)
    response = submit(client, "/offers", json_message(offer), market.sign(offer, PROVIDER))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["order"]["hash"] == "0x" + offer.struct_hash().hex()
    assert body["order"]["status"] == "open" and body["matches"] == []
    assert client.get(f"/orders/{body['order']['hash']}").json()["order"]["pricePerGpuHour"] == str(2 * USDC)


@pytest.mark.parametrize(
    ("mutate", "field", "text"),
    [
        (lambda m: {**m, "gpuCount": True}, "gpuCount", "must be an integer"),
        (lambda m: {**m, "pricePerGpuHour": 2.5}, "pricePerGpuHour", "must be an integer"),
        (lambda m: {**m, "pricePerGpuHour": "-1"}, "pricePerGpuHour", "non-negative"),
        (lambda m: {**m, "gpuCount": 70_000}, "gpuCount", "uint16"),
        (lambda m: {**m, "provider": "0x1234"}, "provider", "address"),
        (lambda m: {**m, "surprise": 1}, "surprise", "unknown field"),
        (lambda m: {k: v for k, v in m.items() if k != "expiry"}, "expiry", "missing"),
    ],
)
def test_submit_offer__malformed_field__422_naming_the_field(env, mutate, field, text):
    market, _, client = env
    before = order_count(client)
    offer = market.offer()
    response = submit(client, "/offers", mutate(json_message(offer)), market.sign(offer, PROVIDER))
    assert_rejected(response, 422, "invalid_input", field, text=text)
    assert order_count(client) == before


def test_submit_offer__unknown_gpu_model__422(env):
    market, _, client = env
    offer = market.offer(gpuModel=999)
    assert_rejected(submit(client, "/offers", json_message(offer), market.sign(offer, PROVIDER)), 422, "invalid_input",
                    text="gpu_model")


def test_submit_offer__signed_by_someone_else__401(env):
    market, _, client = env
    offer = market.offer()
    assert_rejected(submit(client, "/offers", json_message(offer), market.sign(offer, TRAINER)), 401,
                    "invalid_signature")


def test_submit_offer__signature_for_another_chain__401(env):
    market, _, client = env
    offer = market.offer()
    other_chain = "0x" + offer.sign(ANVIL_KEYS[PROVIDER], 1, market.market.address).hex()
    assert_rejected(submit(client, "/offers", json_message(offer), other_chain), 401, "invalid_signature")


def test_submit_offer__malformed_signature__422(env):
    market, _, client = env
    offer = market.offer()
    assert_rejected(submit(client, "/offers", json_message(offer), "0x1234"), 422, "invalid_input", "signature")


def test_submit_offer__expired__422(env):
    market, _, client = env
    offer = market.offer(expiry=market.now() - 1)
    assert_rejected(submit(client, "/offers", json_message(offer), market.sign(offer, PROVIDER)), 422,
                    "invalid_input", "expiry")


def test_submit_offer__stale_counter__422(env):
    market, _, client = env
    offer = market.offer(counter=5)
    assert_rejected(submit(client, "/offers", json_message(offer), market.sign(offer, PROVIDER)), 422,
                    "invalid_input", "counter")


def test_submit_offer__token_not_whitelisted__422(env):
    market, _, client = env
    offer = market.offer(token=market.contract("ComputeCredit").address)
    assert_rejected(submit(client, "/offers", json_message(offer), market.sign(offer, PROVIDER)), 422,
                    "invalid_input", "token")


def test_submit_offer__provider_without_collateral__422_insufficient_funds(env):
    market, _, client = env
    offer = market.offer(PROVIDER_2)
    assert_rejected(submit(client, "/offers", json_message(offer), market.sign(offer, PROVIDER_2)), 422,
                    "insufficient_funds", text="stake more")


def test_submit_request__empty_vault__422_insufficient_funds(env):
    market, _, client = env
    request = market.request(TRAINER_2)
    assert_rejected(submit(client, "/requests", json_message(request), market.sign(request, TRAINER_2)), 422,
                    "insufficient_funds", text="deposit more")


def test_submit_request__job_spec_not_matching_hash__422(env):
    market, _, client = env
    request = market.request()
    response = submit(client, "/requests", json_message(request), market.sign(request, TRAINER),
                      job_spec={"type": "hash-chain", "seed": "x"})
    assert_rejected(response, 422, "invalid_input", "job_spec")


def test_submit_order__twice__409(env):
    market, _, client = env
    offer = market.offer(gpuModel=2, vramGb=24)
    body = (json_message(offer), market.sign(offer, PROVIDER))
    assert submit(client, "/offers", *body).status_code == 201
    assert_rejected(submit(client, "/offers", *body), 409, "conflict")


def test_cancel__owner_signed__order_cancelled_and_never_matched(env):
    market, service, client = env
    offer = market.offer(gpuModel=4, vramGb=48)
    order_hash = submit(client, "/offers", json_message(offer), market.sign(offer, PROVIDER)).json()["order"]["hash"]
    signature = "0x" + CancelOrder(orderHash=order_hash).sign(
        ANVIL_KEYS[PROVIDER], market.w3.eth.chain_id, market.market.address).hex()
    response = client.post(f"/orders/{order_hash}/cancel", json={"signature": signature})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    request = market.request(gpuModel=4, minVramGb=48)
    matched = submit(client, "/requests", json_message(request), market.sign(request, TRAINER)).json()["matches"]
    assert matched == []


def test_cancel__not_the_owner__401_and_order_stays_open(env):
    market, _, client = env
    offer = market.offer(gpuModel=5, vramGb=48)
    order_hash = submit(client, "/offers", json_message(offer), market.sign(offer, PROVIDER)).json()["order"]["hash"]
    signature = "0x" + CancelOrder(orderHash=order_hash).sign(
        ANVIL_KEYS[TRAINER], market.w3.eth.chain_id, market.market.address).hex()
    assert_rejected(client.post(f"/orders/{order_hash}/cancel", json={"signature": signature}), 401,
                    "invalid_signature")
    assert client.get(f"/orders/{order_hash}").json()["status"] == "open"


def test_list_orders__filters_and_pagination(env):
    market, _, client = env
    owner = market.address(PROVIDER)
    page = client.get("/orders", params={"side": "offer", "owner": owner, "limit": 1}).json()
    assert page["limit"] == 1 and len(page["items"]) == 1 and page["total"] >= 2
    assert all(item["owner"] == owner for item in page["items"])
    assert_rejected(client.get("/orders", params={"limit": 1000}), 422, "invalid_input")
    assert_rejected(client.get("/orders", params={"owner": "nope"}), 422, "invalid_input")


def test_reads__unknown_ids__404(env):
    _, _, client = env
    assert_rejected(client.get("/orders/0x" + "00" * 32), 404, "not_found")
    assert_rejected(client.get("/deals/424242"), 404, "not_found")
    assert_rejected(client.get("/deals", params={"status": "bogus"}), 422, "invalid_input", "status")


def test_rate_limit__burst_beyond_limit__429(env, tmp_path):
    market, service, _ = env
    strict = MarketService(service_settings(market, tmp_path, rate_limit_per_minute=2))
    with TestClient(create_app(strict)) as client:
        offer = market.offer()
        codes = [submit(client, "/offers", json_message(offer), "0x12").status_code for _ in range(3)]
    assert codes == [422, 422, 429]


def test_provider_registration__signed_profile__visible_with_stake(env):
    market, _, client = env
    profile = ProviderProfile(provider=market.address(PROVIDER), name="nordic-hydro-1", endpoint="")
    signature = "0x" + profile.sign(ANVIL_KEYS[PROVIDER], market.w3.eth.chain_id, market.market.address).hex()
    response = client.post("/providers", json={"profile": profile.message(), "signature": signature})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["registered"] and body["name"] == "nordic-hydro-1"
    assert body["stakes"][market.usdc.address]["staked"] == str(500 * USDC)
    forged = "0x" + profile.sign(ANVIL_KEYS[SPONSOR], market.w3.eth.chain_id, market.market.address).hex()
    assert_rejected(client.post("/providers", json={"profile": profile.message(), "signature": forged}), 401,
                    "invalid_signature")


def test_health_metrics_and_openapi(env):
    market, _, client = env
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["chain_id"] == market.w3.eth.chain_id
    assert "market_orders_submitted_total" in client.get("/metrics").text
    spec = client.get("/openapi.json").json()
    assert {"/offers", "/requests", "/deals/{deal_id}", "/market/stats", "/health"} <= set(spec["paths"])


def test_client__typed_errors_and_results(env):
    market, _, client = env
    api = MarketClient("http://testserver", transport=client._transport)
    assert api.health().status == "ok"
    with pytest.raises(NotFound):
        api.order("0x" + "00" * 32)
    offer = market.offer()
    with pytest.raises(InvalidSignature):
        api.submit_offer(json_message(offer), market.sign(offer, TRAINER))
    with pytest.raises(InvalidInput):
        api.submit_offer({**json_message(offer), "gpuCount": True}, market.sign(offer, PROVIDER))
    assert api.stats().open_offers >= 1


def test_async_client__same_answers_as_the_api(env):
    import asyncio

    import httpx

    from marketplace.client import AsyncMarketClient

    market, service, client = env

    async def scenario():
        transport = httpx.ASGITransport(app=client.app)
        async with AsyncMarketClient("http://testserver", transport=transport) as api:
            health = await api.health()
            with pytest.raises(NotFound):
                await api.deal(424242)
            offer = market.offer(gpuModel=6, vramGb=40)
            submitted = await api.submit_offer(json_message(offer), market.sign(offer, PROVIDER))
            offers = await api.orders(side="offer", limit=5)
            return health, offers, submitted

    health, offers, submitted = asyncio.run(scenario())
    assert health.status == "ok" and submitted.order.hash in {o.hash for o in offers.items}
    assert submitted.order.hash == "0x" + offer_hash_of(submitted)


def offer_hash_of(submitted) -> str:
    from marketplace.orderbook import parse_typed
    from marketplace.signing import Offer

    return parse_typed(Offer, submitted.order.order).struct_hash().hex()


def test_submit_offer__chain_round_trips__one_batch_then_none_and_never_the_chain_id(env, request):
    """An order's chain checks (time, token, counter, collateral) travel in one JSON-RPC batch, the
    next order of the same owner is checked against what that batch read (no round trip), and the
    chain id is read once per gateway (web3's validation middleware used to ask for it around every
    call: 7 of an order's 11.5 round trips)."""
    market, service, client = env
    assert service.gateway.chain_id == market.w3.eth.chain_id  # read once, as any first order does
    single: list[str] = []
    batches: list[list[str]] = []

    class Counting(Web3Middleware):
        def wrap_make_request(self, make_request):
            def counted(method, params):
                single.append(method)
                return make_request(method, params)
            return counted

    provider = service.gateway.w3.provider
    make_batch_request = provider.make_batch_request

    def counted_batch(requests):
        batches.append([method for method, _ in requests])
        return make_batch_request(requests)

    service.gateway.w3.middleware_onion.add(Counting, name="counting")
    request.addfinalizer(lambda: service.gateway.w3.middleware_onion.remove("counting"))
    provider.make_batch_request = counted_batch
    request.addfinalizer(lambda: setattr(provider, "make_batch_request", make_batch_request))
    service.book.chain_state.clear()
    offer = market.offer(gpuModel=2, vramGb=24)
    response = submit(client, "/offers", json_message(offer), market.sign(offer, PROVIDER))
    assert response.status_code == 201, response.text
    assert batches == [["eth_getBlockByNumber"] + ["eth_call"] * 4] and single == []

    again = market.offer(gpuModel=2, vramGb=24)
    response = submit(client, "/offers", json_message(again), market.sign(again, PROVIDER))
    assert response.status_code == 201, response.text
    assert len(batches) == 1 and single == []


def test_submit__more_concurrent_writers_than_threads_and_pooled_connections__all_answered(env):
    """Regression: a handler's DB session used to live until its response was serialised, which
    needs a worker thread; with every thread queued on the order book's lock and the lock's holder
    waiting for a pooled connection, the service wedged (bench/service at concurrency 64). Here the
    worker threads are cut to 2 so that 40 writers exceed them and the 15 pooled connections."""
    market, service, _ = env
    orders = [market.offer(gpuModel=3, vramGb=24, salt=salt) for salt in range(10**6, 10**6 + 40)]
    bodies = [{"order": json_message(o), "signature": market.sign(o, PROVIDER)} for o in orders]
    with TestClient(create_app(service)) as client:
        client.portal.call(lambda: setattr(anyio.to_thread.current_default_thread_limiter(), "total_tokens", 2))
        with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
            started = time.monotonic()
            statuses = list(pool.map(lambda body: client.post("/offers", json=body).status_code, bodies))
            elapsed = time.monotonic() - started
    assert statuses == [201] * len(bodies)
    # The pool's 30 s timeout is what used to end the wedge (with 500s); well below it now.
    assert elapsed < 25, elapsed
