"""The service's per-deal chain reads go in one JSON-RPC batch on a real anvil: the openDeals receipt
handler reads every opened order's fill at the receipt's block at once, the keeper re-checks every
candidate deal at once, and the results are what the chain says."""

from __future__ import annotations

import time

import pytest
from sqlmodel import Session, select
from web3 import Web3

from marketplace.db.models import ChainTx, MatchRow, MatchState, OrderRow, OrderSide, TxState
from marketplace.service import MarketService
from marketplace.signing import DealStatus

from devnet_market import (  # noqa: I001 - tests/service is on sys.path under pytest
    HOUR, PROVIDER, TRAINER, USDC, DevnetMarket, RpcCount, json_message, service_settings,
)

pytestmark = pytest.mark.anvil

CHALLENGE_WINDOW = 600
DEALS = 3
ORDER_STATE = Web3.keccak(text="orderState(bytes32)")[:4]
GET_DEAL = Web3.keccak(text="getDeal(uint256)")[:4]


@pytest.fixture(scope="module")
def env(anvil, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("round-trips")
    market = DevnetMarket.deploy(anvil, workdir, challenge_window=CHALLENGE_WINDOW)
    service = MarketService(service_settings(market, workdir, matching_mode="batch"))
    rpc = RpcCount(service.gateway)
    market.stake(PROVIDER, 500 * USDC)
    market.fund_vault(TRAINER, 1_000 * USDC)
    service.book.load()
    return market, service, rpc


def pump_until_confirmed(service: MarketService) -> None:
    """anvil may answer a broadcast a moment before its block is mined: later passes finalise the rest."""
    for _ in range(50):
        with Session(service.engine) as session:
            if all(tx.state == TxState.CONFIRMED for tx in session.exec(select(ChainTx))):
                return
        time.sleep(0.05)
        service.sender.pump()


def test_open_then_settle__per_deal_reads_in_one_batch_each__state_equals_the_chain(env):
    market, service, rpc = env
    # One offer and three requests: the offer is in every deal, its fill is still read once.
    offer = market.offer(PROVIDER)
    service.book.submit(OrderSide.OFFER, json_message(offer), market.sign(offer, PROVIDER))
    for _ in range(DEALS):
        request = market.request(TRAINER)
        service.book.submit(OrderSide.REQUEST, json_message(request), market.sign(request, TRAINER))
    assert len(service.book.run_batch().deals) == DEALS

    rpc.clear()
    service.sender.pump()  # openDeals: signed, sent, receipt handled
    pump_until_confirmed(service)
    state_reads = [b for b in rpc.batches if rpc.views(b, ORDER_STATE)]
    assert rpc.views(rpc.single, ORDER_STATE) == 0
    assert [rpc.views(b, ORDER_STATE) for b in state_reads] == [1 + DEALS]  # distinct orders, one round trip
    with Session(service.engine) as session:
        (tx,) = session.exec(select(ChainTx).where(ChainTx.kind == "open_deals")).all()
        matches = session.exec(select(MatchRow)).all()
        orders = session.exec(select(OrderRow)).all()
        block = state_reads[0][0][1][1]
        assert block == hex(tx.block_number)
        assert [m.state for m in matches] == [MatchState.OPENED] * DEALS
        for row in orders:
            assert row.filled == service.gateway.order_state(row.hash)[0] > 0
        deal_ids = [m.deal_id for m in matches]

    for deal_id in deal_ids:
        market.send(PROVIDER, market.market.functions.startDeal(deal_id))
    market.warp(4 * HOUR)
    for deal_id in deal_ids:
        market.send(PROVIDER, market.market.functions.completeDeal(deal_id, 4 * HOUR, "0x" + "cd" * 32))
    service.indexer.poll()
    market.warp(CHALLENGE_WINDOW)

    rpc.clear()
    assert service.keeper.tick().settles_queued == DEALS
    assert rpc.views(rpc.single, GET_DEAL) == 0
    assert [rpc.views(b, GET_DEAL) for b in rpc.batches] == [DEALS]
    rpc.clear()
    assert service.keeper.tick().settles_queued == 0  # covered by the queued settleMany: nothing read
    assert rpc.views(rpc.single, GET_DEAL) == 0 and rpc.batches == []

    service.sender.pump()
    pump_until_confirmed(service)
    assert [service.gateway.get_deal(d)["status"] for d in deal_ids] == [DealStatus.SETTLED] * DEALS


def test_sender__one_transaction_per_deal__node_nonce_and_fees_once__receipts_in_one_batch(env, tmp_path):
    market, _, _ = env
    service = MarketService(service_settings(market, tmp_path, matching_mode="batch", max_batch_size=1))
    rpc = RpcCount(service.gateway)
    service.book.load()
    offer = market.offer(PROVIDER, gpuModel=7)
    service.book.submit(OrderSide.OFFER, json_message(offer), market.sign(offer, PROVIDER))
    for _ in range(DEALS):
        request = market.request(TRAINER, gpuModel=7)
        service.book.submit(OrderSide.REQUEST, json_message(request), market.sign(request, TRAINER))
    assert len(service.book.run_batch().deals) == DEALS

    rpc.clear()
    service.sender.pump()
    single = rpc.methods(rpc.single)
    assert single.count("eth_createAccessList") == single.count("eth_sendRawTransaction") == DEALS
    assert "eth_estimateGas" not in single  # gas sized from executions, not anvil's binary search
    assert single.count("eth_getTransactionCount") == single.count("eth_maxPriorityFeePerGas") == 1
    assert "eth_getTransactionReceipt" not in single
    assert [rpc.methods(b).count("eth_getTransactionReceipt") for b in rpc.batches if
            "eth_getTransactionReceipt" in rpc.methods(b)] == [DEALS]
    pump_until_confirmed(service)
    with Session(service.engine) as session:
        txs = session.exec(select(ChainTx).order_by(ChainTx.nonce)).all()
        assert [tx.state for tx in txs] == [TxState.CONFIRMED] * DEALS
        assert [tx.nonce for tx in txs] == list(range(txs[0].nonce, txs[0].nonce + DEALS))
        assert [m.state for m in session.exec(select(MatchRow)).all()] == [MatchState.OPENED] * DEALS

    rpc.clear()
    service.sender.pump()  # nothing queued or in flight: no request at all
    assert rpc.single == [] and rpc.batches == []


def test_sender__node_gone_while_sizing_gas__transaction_stays_queued_and_goes_out_later(env, tmp_path, monkeypatch):
    """A node that stops answering is not a verdict on the transaction: it stays queued (its
    pairings reserved) and the next pass sends it. It was marked failed, which released them."""
    from marketplace.chain.gateway import ChainUnavailable

    market, _, _ = env
    service = MarketService(service_settings(market, tmp_path, matching_mode="batch"))
    service.book.load()
    offer, request = market.offer(PROVIDER, gpuModel=7), market.request(TRAINER, gpuModel=7)
    service.book.submit(OrderSide.OFFER, json_message(offer), market.sign(offer, PROVIDER))
    service.book.submit(OrderSide.REQUEST, json_message(request), market.sign(request, TRAINER))
    assert len(service.book.run_batch().deals) == 1

    def node_gone(call):
        raise ChainUnavailable(f"no node answers at {market.devnet.url}")

    monkeypatch.setattr(service.gateway, "gas_limit", node_gone)
    with pytest.raises(ChainUnavailable):
        service.sender.pump()
    with Session(service.engine) as session:
        assert [tx.state for tx in session.exec(select(ChainTx)).all()] == [TxState.QUEUED]
        assert [m.state for m in session.exec(select(MatchRow)).all()] == [MatchState.PROPOSED]
    monkeypatch.undo()
    service.sender.pump()
    pump_until_confirmed(service)
    with Session(service.engine) as session:
        assert [tx.state for tx in session.exec(select(ChainTx)).all()] == [TxState.CONFIRMED]
        assert [m.state for m in session.exec(select(MatchRow)).all()] == [MatchState.OPENED]
