"""The indexer against a real anvil: exact projections, idempotence, confirmations, full resync
and reorgs (anvil_reorg, and a devnet reverted under it)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session, select
from web3.logs import DISCARD

from marketplace.chain.gateway import ChainGateway
from marketplace.db.models import ChainCursor, ChainEvent, DealRow, IndexedBlock, OrderRow, OrderStatus
from marketplace.db.session import session_scope
from marketplace.indexer import CURSOR_NAME, Indexer, IndexerError
from marketplace.registry import Registry
from marketplace.signing import DealStatus

from devnet_market import RpcCount  # noqa: I001 - tests/service is on sys.path under pytest

pytestmark = pytest.mark.anvil

USDC = 10**6
PRICE = 2 * USDC  # the driver's default ask per GPU-hour
ESCROW = PRICE * 2 * 2  # 2 GPUs × 2 hours
COLLATERAL = ESCROW * 2000 // 10_000  # deployed collateral ratio: 20 %
FEE_BPS = 100  # deployed protocol fee: 1 %
CHALLENGE_WINDOW = 3600


def gross(seconds: int) -> int:
    return PRICE * 2 * seconds // 3600


# ───────────────────────────── helpers ─────────────────────────────


def dump(engine) -> dict[str, Any]:
    """What the indexer derives, minus storage details (row ids, which block hashes it kept)."""
    with Session(engine) as session:
        events = session.exec(select(ChainEvent).order_by(ChainEvent.block_number, ChainEvent.log_index)).all()
        deals = session.exec(select(DealRow).order_by(DealRow.deal_id)).all()
        orders = session.exec(select(OrderRow).order_by(OrderRow.hash)).all()
        cursor = session.get(ChainCursor, CURSOR_NAME)
        return {
            "events": [e.model_dump(exclude={"id"}) for e in events],
            "deals": [d.model_dump() for d in deals],
            "orders": [(o.hash, o.filled, o.status) for o in orders],
            "cursor": (cursor.block_number, cursor.block_hash) if cursor else None,
        }


def deals_by_id(engine) -> dict[int, DealRow]:
    with Session(engine) as session:
        return {row.deal_id: row for row in session.exec(select(DealRow)).all()}


def orders_by_hash(engine) -> dict[str, OrderRow]:
    with Session(engine) as session:
        return {row.hash: row for row in session.exec(select(OrderRow)).all()}


def event_args(market, receipt, name: str) -> dict[str, Any]:
    (event,) = getattr(market.market.events, name)().process_receipt(receipt, errors=DISCARD)
    return dict(event["args"])


@pytest.fixture
def rescan(make_db, gateway, add_orders):
    """A fresh DB holding the same order book, fully indexed from scratch: the reference state."""

    def rescan(*orders, confirmations: int = 0, chunk_size: int = 2000) -> dict[str, Any]:
        engine = make_db()
        add_orders(*orders, engine=engine)
        Indexer(gateway, engine, confirmations=confirmations, chunk_size=chunk_size).poll()
        return dump(engine)

    return rescan


@pytest.fixture
def lifecycles(market, add_orders):
    """Four deals driven to every kind of end, plus an on-chain cancel and a counter increment.
    Returns the orders (also stored in the service's book), deal ids and the decisive receipts."""
    market.fund(market.trainer, 1000 * USDC)
    market.fund(market.trainer2, 1000 * USDC)
    market.stake(market.provider, 1000 * USDC)
    offer = market.offer()
    cancelled_offer = market.offer(pricePerGpuHour=5 * USDC)
    request_full = market.request(totalHours=2)  # filled completely by its one deal
    request_refund = market.request()
    request_abort = market.request()
    request_resolve = market.request(market.trainer2)
    request_stale = market.request(market.trainer2)  # dies by the counter increment
    orders = (offer, cancelled_offer, request_full, request_refund, request_abort, request_resolve, request_stale)
    add_orders(*orders)

    settled = market.open_deal(offer, request_full)
    refunded = market.open_deal(offer, request_refund)
    aborted = market.open_deal(offer, request_abort)
    resolved = market.open_deal(offer, request_resolve)
    for deal_id in (settled, aborted, resolved):
        market.start(deal_id)
    market.increase_time(1000)
    withdrawn = market.withdraw_accrued(settled)
    market.increase_time(2000)
    market.complete(settled, 3000)
    market.complete(resolved, 2500)
    abort_receipt = market.abort(aborted)
    market.dispute(resolved, market.trainer2)
    resolve_receipt = market.resolve(resolved, 1200, True)
    market.cancel(cancelled_offer)
    market.increment_counter(market.trainer2)
    market.increase_time(5000)  # past the challenge window and the refund's start deadline
    refund_receipt = market.claim_refund(refunded)
    settle_receipt = market.settle(settled)
    return {
        "orders": orders, "offer": offer, "cancelled_offer": cancelled_offer, "request_full": request_full,
        "request_refund": request_refund, "request_resolve": request_resolve, "request_stale": request_stale,
        "settled": settled, "refunded": refunded, "aborted": aborted, "resolved": resolved,
        "withdrawn": withdrawn, "settle": settle_receipt, "refund": refund_receipt,
        "abort": abort_receipt, "resolve": resolve_receipt,
    }


# ───────────────────────────── projections and idempotence ─────────────────────────────


def test_poll__every_deal_end__deals_match_chain_and_events_to_the_unit(market, gateway, engine, lifecycles):
    indexer = Indexer(gateway, engine, confirmations=0)
    applied = indexer.poll()

    on_chain = gateway.get_logs(indexer.origin() + 1, market.head())
    assert applied == len(on_chain) > 0
    assert indexer.cursor().block_number == market.head()
    deals = deals_by_id(engine)
    assert set(deals) == {1, 2, 3, 4}
    for deal_id, row in deals.items():
        chain = market.deal(deal_id)
        assert (row.provider, row.buyer, row.token) == (chain["provider"], chain["buyer"], chain["token"])
        assert (int(row.price_per_gpu_hour), row.gpu_count, row.deal_hours) == (PRICE, 2, 2)
        assert (row.escrow, row.collateral) == (str(ESCROW), str(COLLATERAL))
        assert row.start_deadline == chain["startDeadline"]
        assert row.status == chain["status"]
        assert row.started_at == (chain["startedAt"] or None)
        assert row.completed_at == (chain["completedAt"] or None)

    settled = deals[lifecycles["settled"]]
    accrued = event_args(market, lifecycles["withdrawn"], "AccruedWithdrawn")
    final = event_args(market, lifecycles["settle"], "DealSettled")
    assert settled.status == DealStatus.SETTLED
    assert (settled.used_seconds, settled.result_hash) == (3000, "0x" + "ab" * 32)
    assert int(settled.provider_paid) == accrued["amount"] + final["providerPaid"] == gross(3000) - gross(3000) // 100
    assert settled.buyer_refund == str(final["buyerRefund"]) == str(ESCROW - gross(3000))
    assert int(settled.fee) == gross(3000) * FEE_BPS // 10_000 > final["fee"]  # includes the withdrawal's fee

    refunded = deals[lifecycles["refunded"]]
    assert refunded.status == DealStatus.REFUNDED
    assert (refunded.buyer_refund, refunded.collateral_slashed) == (str(ESCROW), str(COLLATERAL))
    assert (refunded.provider_paid, refunded.fee) == ("0", "0")

    aborted = deals[lifecycles["aborted"]]
    args = event_args(market, lifecycles["abort"], "DealAborted")
    elapsed = market.deal(lifecycles["aborted"])["usedSeconds"]
    assert aborted.status == DealStatus.ABORTED
    assert (aborted.provider_paid, aborted.buyer_refund, aborted.fee) == (
        str(args["providerPaid"]), str(args["buyerRefund"]), str(args["fee"]))
    assert int(aborted.fee) == gross(elapsed) * FEE_BPS // 10_000

    resolved = deals[lifecycles["resolved"]]
    args = event_args(market, lifecycles["resolve"], "DealResolved")
    assert resolved.status == DealStatus.RESOLVED
    assert (resolved.provider_paid, resolved.buyer_refund, resolved.fee, resolved.collateral_slashed) == (
        str(gross(1200) - gross(1200) // 100), str(ESCROW - gross(1200)), str(gross(1200) // 100), str(COLLATERAL))
    assert (int(resolved.provider_paid), int(resolved.fee)) == (args["providerPaid"], args["fee"])

    for row in (settled, aborted, resolved):
        assert int(row.provider_paid) + int(row.buyer_refund) + int(row.fee) == ESCROW


def test_poll__order_events__book_rows_filled_and_cancelled_from_confirmed_events(gateway, engine, lifecycles):
    Indexer(gateway, engine, confirmations=0).poll()

    orders = orders_by_hash(engine)
    offer = orders[lifecycles["offer"].hash]
    assert (offer.filled, offer.status) == (4 * 2 * 2, OrderStatus.OPEN)  # 4 deals × 2 GPUs × 2 h
    assert (orders[lifecycles["request_full"].hash].filled, orders[lifecycles["request_full"].hash].status) == (
        2, OrderStatus.FILLED)
    assert (orders[lifecycles["request_refund"].hash].filled, orders[lifecycles["request_refund"].hash].status) == (
        2, OrderStatus.OPEN)
    assert orders[lifecycles["cancelled_offer"].hash].status == OrderStatus.CANCELLED
    assert orders[lifecycles["request_stale"].hash].status == OrderStatus.CANCELLED  # counter 0 < 1
    assert orders[lifecycles["request_resolve"].hash].status == OrderStatus.CANCELLED


def test_poll__twice_and_after_rewinding_the_cursor__nothing_applied_twice(market, gateway, engine, lifecycles):
    indexer = Indexer(gateway, engine, confirmations=0, chunk_size=7)
    assert indexer.poll() > 0
    first = dump(engine)

    assert indexer.poll() == 0
    assert dump(engine) == first

    # Re-read every block (as after a crash between reading and the cursor write): all skipped.
    with session_scope(engine) as session:
        cursor = session.get(ChainCursor, CURSOR_NAME)
        block = gateway.get_block(indexer.origin())
        cursor.block_number, cursor.block_hash = indexer.origin(), "0x" + bytes(block["hash"]).hex()
    assert indexer.poll() == 0
    assert dump(engine) == first


def test_poll__events_in_many_blocks__their_blocks_read_in_one_round_trip(devnet, engine, lifecycles):
    gateway = ChainGateway(devnet.url, Registry.load(devnet.registry_path))
    rpc = RpcCount(gateway)
    indexer = Indexer(gateway, engine, confirmations=0)
    indexer.poll()  # starts the cursor at the origin block (one-off reads)
    with session_scope(engine) as session:  # as after a crash between reading and the cursor write
        cursor = session.get(ChainCursor, CURSOR_NAME)
        origin = gateway.get_block(indexer.origin())
        cursor.block_number, cursor.block_hash = indexer.origin(), "0x" + bytes(origin["hash"]).hex()
    start, end = indexer.origin() + 1, devnet.w3.eth.block_number
    event_blocks = {e.block_number for e in gateway.get_logs(start, end)}
    assert len(event_blocks) > 10

    rpc.clear()
    indexer.poll()
    # head, cursor check, logs; then the chunk's ends, and its event blocks with the end re-checked.
    assert rpc.methods(rpc.single) == ["eth_blockNumber", "eth_getBlockByNumber", "eth_getLogs"]
    assert [len(batch) for batch in rpc.batches] == [2, len(event_blocks - {start, end}) + 1]


# ───────────────────────────── confirmations ─────────────────────────────


def test_poll__two_confirmations__event_applied_only_once_two_blocks_deep(market, gateway, engine, add_orders):
    market.fund(market.trainer, 100 * USDC)
    market.stake(market.provider, 100 * USDC)
    deal_id = market.open_deal(market.offer(), market.request())
    indexer = Indexer(gateway, engine, confirmations=2)
    market.mine(2)
    indexer.poll()
    assert deals_by_id(engine)[deal_id].status == DealStatus.OPEN

    started_block = market.start(deal_id)["blockNumber"]
    indexer.poll()
    assert indexer.cursor().block_number == started_block - 2
    assert deals_by_id(engine)[deal_id].status == DealStatus.OPEN
    market.mine()
    assert indexer.poll() == 0
    assert deals_by_id(engine)[deal_id].status == DealStatus.OPEN

    market.mine()
    assert indexer.poll() == 1
    assert indexer.cursor().block_number == started_block
    assert deals_by_id(engine)[deal_id].status == DealStatus.RUNNING


# ───────────────────────────── resync ─────────────────────────────


def test_resync__same_chain__reproduces_the_db_exactly_also_in_a_new_db(gateway, engine, lifecycles, rescan):
    indexer = Indexer(gateway, engine, confirmations=0)
    indexer.poll()
    incremental = dump(engine)

    assert indexer.resync() == len(incremental["events"])
    assert dump(engine) == incremental
    assert rescan(*lifecycles["orders"], chunk_size=16) == incremental


# ───────────────────────────── reorgs ─────────────────────────────


@pytest.fixture
def settled_then_reopened(market, add_orders):
    """A deal completed and settled, then a second deal opened that fills its request."""
    market.fund(market.trainer, 100 * USDC)
    market.stake(market.provider, 100 * USDC)
    offer, first, second, replacement = (market.offer(), market.request(), market.request(totalHours=2),
                                         market.request(totalHours=3))
    add_orders(offer, first, second, replacement)
    deal_id = market.open_deal(offer, first)
    market.start(deal_id)
    market.increase_time(3000)
    market.complete(deal_id, 2000)
    market.increase_time(CHALLENGE_WINDOW + 1)
    settle = market.settle(deal_id)
    reopened = market.open_deal(offer, second)
    assert market.head() == settle["blockNumber"] + 1
    return {"orders": (offer, first, second, replacement), "deal": deal_id, "settle": settle,
            "reopened": reopened}


def test_reorg__applied_blocks_replaced__rolls_back_to_the_fork_and_equals_a_rescan(
        market, gateway, engine, settled_then_reopened, rescan):
    s = settled_then_reopened
    offer, _, second, replacement = s["orders"]
    indexer = Indexer(gateway, engine, confirmations=0)
    indexer.poll()
    assert deals_by_id(engine)[s["deal"]].status == DealStatus.SETTLED
    assert orders_by_hash(engine)[second.hash].status == OrderStatus.FILLED

    # The settle and the second deal's block are replaced: no settle, deal 2 now fills another request.
    market.reorg(2, [(market.tx(market.open_call(offer, replacement, 3), market.matcher), 1)])
    indexer.poll()

    assert indexer.reorgs == 1
    assert dump(engine) == rescan(*s["orders"])
    deals = deals_by_id(engine)
    assert deals[s["deal"]].status == DealStatus.COMPLETED
    assert (deals[s["deal"]].provider_paid, deals[s["deal"]].fee) == ("0", "0")
    assert (deals[s["reopened"]].request_hash, deals[s["reopened"]].deal_hours) == (replacement.hash, 3)
    orders = orders_by_hash(engine)
    assert (orders[second.hash].filled, orders[second.hash].status) == (0, OrderStatus.OPEN)
    assert (orders[replacement.hash].filled, orders[replacement.hash].status) == (3, OrderStatus.FILLED)
    with Session(engine) as session:
        assert session.exec(select(ChainEvent).where(ChainEvent.tx_hash == s["settle"]["transactionHash"].to_0x_hex())
                            ).first() is None


def test_reorg__shallower_than_confirmations__replaced_events_never_applied(
        market, gateway, engine, settled_then_reopened, rescan):
    s = settled_then_reopened
    indexer = Indexer(gateway, engine, confirmations=3)
    indexer.poll()
    assert deals_by_id(engine)[s["deal"]].status == DealStatus.COMPLETED  # the settle is not 3 deep yet

    market.reorg(2)  # the settle and the second deal vanish
    market.mine(3)
    indexer.poll()

    assert indexer.reorgs == 0
    assert dump(engine) == rescan(*s["orders"], confirmations=3)
    assert deals_by_id(engine)[s["deal"]].status == DealStatus.COMPLETED
    assert s["reopened"] not in deals_by_id(engine)
    with Session(engine) as session:
        assert session.exec(select(ChainEvent).where(ChainEvent.name == "DealSettled")).first() is None


def test_reorg__devnet_reverted_below_sparse_block_hashes__walks_back_and_equals_a_rescan(
        market, devnet, gateway, engine, add_orders, rescan):
    market.fund(market.trainer, 100 * USDC)
    market.stake(market.provider, 100 * USDC)
    offer, request = market.offer(), market.request()
    add_orders(offer, request)
    market.open_deal(offer, request)
    snapshot = devnet.rpc("evm_snapshot")
    market.mine(30)
    market.start(1)
    market.mine(30)
    indexer = Indexer(gateway, engine, confirmations=0, chunk_size=10, keep_blocks=0)
    indexer.poll()
    assert deals_by_id(engine)[1].status == DealStatus.RUNNING
    with Session(engine) as session:  # only the hashes of the origin, event blocks and the cursor are kept
        kept = set(session.exec(select(IndexedBlock.number)).all())
        event_blocks = set(session.exec(select(ChainEvent.block_number)).all())
    assert kept == {indexer.origin(), market.head()} | event_blocks

    assert devnet.rpc("evm_revert", [snapshot]) is True  # a shorter chain: the cursor block is gone
    market.increase_time(3 * 3600)
    market.claim_refund(1)
    indexer.poll()

    assert indexer.reorgs == 1
    assert dump(engine) == rescan(offer, request)
    assert deals_by_id(engine)[1].status == DealStatus.REFUNDED


@pytest.mark.parametrize("replacement", ["another_deal", "empty_block"])
def test_reorg__during_a_chunk_read__chunk_is_reread_from_one_chain(
        replacement, market, gateway, engine, add_orders, rescan):
    """The head block changes after the indexer fetched it and before it reads the logs. Another
    deal there is caught by the logs' block hashes, an emptied block by re-reading the chunk's
    last block: either way the chunk is read again, never written from two chains."""
    market.fund(market.trainer, 100 * USDC)
    market.stake(market.provider, 100 * USDC)
    offer, request, other = market.offer(), market.request(), market.request(totalHours=3)
    add_orders(offer, request, other)
    market.open_deal(offer, request)
    txs = [(market.tx(market.open_call(offer, other, 3), market.matcher), 0)] if replacement == "another_deal" else []
    real_get_logs = gateway.get_logs
    calls = []

    def get_logs_racing_a_reorg(start: int, end: int):
        calls.append((start, end))
        if len(calls) == 1:
            market.reorg(1, txs)
        return real_get_logs(start, end)

    gateway.get_logs = get_logs_racing_a_reorg
    indexer = Indexer(gateway, engine, confirmations=0)
    indexer.poll()

    assert len(calls) == 2
    assert indexer.reorgs == 0
    assert dump(engine) == rescan(offer, request, other)
    deals = deals_by_id(engine)
    if replacement == "another_deal":
        assert (deals[1].request_hash, deals[1].deal_hours) == (other.hash, 3)
    else:
        assert deals == {}


def test_poll__cursor_moved_by_another_writer__raises_and_writes_nothing(market, gateway, engine):
    indexer = Indexer(gateway, engine, confirmations=0)
    indexer.poll()
    market.fund(market.trainer, USDC)
    before = dump(engine)
    real_get_logs = gateway.get_logs

    def get_logs_while_another_indexer_writes(start: int, end: int):
        with session_scope(engine) as session:
            session.get(ChainCursor, CURSOR_NAME).block_number += 1
        return real_get_logs(start, end)

    gateway.get_logs = get_logs_while_another_indexer_writes
    with pytest.raises(IndexerError, match="only one indexer"):
        indexer.poll()
    after = dump(engine)
    assert (after["events"], after["deals"]) == (before["events"], before["deals"])
