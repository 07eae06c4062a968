"""ChainGateway.read encodes and decodes view calls itself (web3's per-call ABI work was most of
an order's intake cost): its results must equal web3's `contract.functions.f(*args).call()`."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from marketplace.chain.gas import gas_limit
from marketplace.chain.gateway import MARKET, STAKING, ChainGateway, _plain
from marketplace.registry import Registry

from devnet_market import MATCHER, PROVIDER, TRAINER, USDC, DevnetMarket, RpcCount  # noqa: I001

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def chain(anvil, tmp_path_factory):
    market = DevnetMarket.deploy(anvil, tmp_path_factory.mktemp("reads"))
    market.stake(PROVIDER, 300 * USDC)
    market.fund_vault(TRAINER, 70 * USDC)
    return market, ChainGateway(anvil.url, Registry.load(market.registry_path))


def web3_call(market: DevnetMarket, name: str, function: str, *args):
    return getattr(market.contract(name).functions, function)(*args).call()


@pytest.mark.parametrize("name, function, args", [
    (MARKET, "balanceOf", ("trainer", "usdc")),          # one uint256
    (MARKET, "isSettlementToken", ("usdc",)),             # bool
    (MARKET, "treasury", ()),                              # address: checksummed like web3
    (MARKET, "counterOf", ("provider",)),
    (MARKET, "orderState", (b"\x01" * 32,)),              # two outputs
    (STAKING, "positionOf", ("provider", "usdc")),        # four outputs
    (STAKING, "freeStake", ("provider", "usdc")),
])
def test_read__equals_web3s_call(chain, name, function, args):
    market, gateway = chain
    values = {"trainer": market.address(TRAINER), "provider": market.address(PROVIDER), "usdc": market.usdc.address}
    resolved = tuple(values.get(a, a) if isinstance(a, str) else a for a in args)
    ours = gateway.read(name, function, *resolved)
    assert ours == web3_call(market, name, function, *resolved)
    assert type(ours) is type(web3_call(market, name, function, *resolved))


def test_read__struct_output__equals_web3s_call(chain):
    market, gateway = chain
    assert gateway.read(MARKET, "getDeal", 0) == web3_call(market, MARKET, "getDeal", 0)


def test_read__values_match_the_chain_state_set_up(chain):
    market, gateway = chain
    assert gateway.vault_balance(market.address(TRAINER), market.usdc.address) == 70 * USDC
    assert gateway.free_stake(market.address(PROVIDER), market.usdc.address) == 300 * USDC
    assert gateway.is_settlement_token(market.usdc.address) is True


def test_read__unknown_function__attribute_error_naming_it(chain):
    _, gateway = chain
    with pytest.raises(AttributeError, match="noSuchView"):
        gateway.read(MARKET, "noSuchView")



def test_call_data__open_deals_and_settle_many__equal_web3s_encoding(chain):
    """The sender's transactions carry calldata from the cached encoder: byte for byte web3's."""
    market, gateway = chain
    offer, request = market.offer(), market.request()
    pairing = (tuple(bytes.fromhex(v[2:]) if t == "bytes32" else v for (_, t), v in zip(offer.TYPES, offer.as_tuple())),
               bytes.fromhex(market.sign(offer, PROVIDER)[2:]),
               tuple(bytes.fromhex(v[2:]) if t == "bytes32" else v
                     for (_, t), v in zip(request.TYPES, request.as_tuple())),
               bytes.fromhex(market.sign(request, TRAINER)[2:]), 2)
    functions = market.market.functions
    assert gateway.call_data(MARKET, "openDeals", [pairing, pairing]) == \
        functions.openDeals([pairing, pairing])._encode_transaction_data()
    assert gateway.call_data(MARKET, "settleMany", [3, 1]) == functions.settleMany([3, 1])._encode_transaction_data()
    assert gateway.call_data(MARKET, "claimRefund", 7) == functions.claimRefund(7)._encode_transaction_data()


# ───────────── batched reads: read_many, get_deals, order_states, receipts, get_blocks ─────────────


@pytest.fixture(scope="module")
def deals(chain):
    """Two deals opened by the matcher; returns their ids, the orders' hashes and the block
    before the second deal."""
    market, _ = chain
    opened, hashes, before_second = [], [], None
    for _ in range(2):
        offer, request = market.offer(), market.request()
        before_second = market.w3.eth.block_number
        receipt = market.send(MATCHER, market.market.functions.openDeal(
            offer.as_tuple(), market.sign(offer, PROVIDER), request.as_tuple(), market.sign(request, TRAINER), 2))
        (event,) = market.market.events.DealOpened().process_receipt(receipt, errors=DISCARD)
        opened.append(event["args"]["dealId"])
        hashes += ["0x" + offer.struct_hash().hex(), "0x" + request.struct_hash().hex()]
    return opened, hashes, before_second


@pytest.fixture
def counted(chain):
    market, _ = chain
    gateway = ChainGateway(market.devnet.url, Registry.load(market.registry_path))
    return gateway, RpcCount(gateway)


def test_read_many__equals_one_read_each__in_one_round_trip(chain, deals, counted):
    market, _ = chain
    gateway, rpc = counted
    deal_ids, hashes, _ = deals
    reads = [(MARKET, "getDeal", (deal_ids[0],)), (MARKET, "orderState", (bytes.fromhex(hashes[0][2:]),)),
             (MARKET, "balanceOf", (market.address(TRAINER), market.usdc.address)),
             (STAKING, "positionOf", (market.address(PROVIDER), market.usdc.address)), (MARKET, "treasury", ())]
    one_each = [gateway.read(name, function, *args) for name, function, args in reads]
    rpc.clear()
    assert gateway.read_many(reads) == one_each
    assert rpc.single == [] and [rpc.methods(b) for b in rpc.batches] == [["eth_call"] * len(reads)]
    assert gateway.read_many([]) == [] and len(rpc.batches) == 1  # nothing to read: no request


def test_read_many__at_an_earlier_block__reads_that_blocks_state(chain, deals, counted):
    gateway, _ = counted
    _, hashes, before_second = deals
    second_offer, second_request = hashes[2:]
    assert gateway.order_states([second_offer, second_request], block=before_second) == [(0, False), (0, False)]
    assert gateway.order_states([second_offer, second_request]) == [(4, False), (2, False)]
    assert gateway.order_states(hashes, block=before_second) == [tuple(gateway.read(
        MARKET, "orderState", bytes.fromhex(h[2:]), block=before_second)) for h in hashes]


def test_get_deals__equals_get_deal_each__in_one_round_trip(chain, deals, counted):
    market, _ = chain
    gateway, rpc = counted
    deal_ids, _, _ = deals
    one_each = [gateway.get_deal(i) for i in deal_ids]
    rpc.clear()
    assert gateway.get_deals(deal_ids) == one_each
    assert rpc.single == [] and len(rpc.batches) == 1
    assert one_each[0]["provider"] == market.address(PROVIDER) and set(one_each[0]) >= {"status", "completedAt"}


def test_read_many__node_refuses_batches__same_results_one_call_each(chain, deals, counted):
    gateway, rpc = counted
    deal_ids, hashes, _ = deals
    expected = gateway.get_deals(deal_ids) + gateway.order_states(hashes)
    # A node without batch support answers a batch with one error object (geth with batches off).
    gateway.w3.provider.make_batch_request = lambda requests: {"jsonrpc": "2.0", "id": None,
                                                              "error": {"code": -32600, "message": "batch disabled"}}
    rpc.clear()
    assert gateway.get_deals(deal_ids) + gateway.order_states(hashes) == expected
    assert rpc.methods(rpc.single) == ["eth_call"] * (len(deal_ids) + len(hashes))


def test_receipts__equal_web3s_receipt__none_when_unknown(chain, deals, counted):
    market, _ = chain
    gateway, rpc = counted
    head = market.w3.eth.get_block("latest", full_transactions=False)
    known = [market.w3.eth.get_block(n)["transactions"][0] for n in (head["number"] - 1, head["number"])]
    hashes = ["0x" + bytes(h).hex() for h in known] + ["0x" + "00" * 32]
    rpc.clear()
    got = gateway.receipts(hashes)
    assert got[:2] == [market.w3.eth.get_transaction_receipt(h) for h in hashes[:2]] and got[2] is None
    assert [rpc.methods(b) for b in rpc.batches] == [["eth_getTransactionReceipt"] * 3]
    # The handlers decode events from it exactly as from web3's own receipt.
    events = market.market.events.DealOpened().process_receipt(got[1], errors=DISCARD)
    assert [e["args"]["dealId"] for e in events] == [deals[0][1]]
    assert gateway.receipt_events(got[1], MARKET, "DealOpened") == [_plain(dict(e["args"])) for e in events]
    assert gateway.receipt_events(got[1], STAKING, "DealOpened") == []  # another contract's logs: none


def test_get_blocks__equal_get_block__none_beyond_the_head(chain, counted):
    market, _ = chain
    gateway, rpc = counted
    head = market.w3.eth.block_number
    rpc.clear()
    got = gateway.get_blocks([1, head, head + 5])
    assert got[:2] == [gateway.get_block(1), gateway.get_block(head)] and got[2] is None
    assert len(rpc.batches) == 1


def test_get_logs__decoded_as_web3s_process_log(chain, deals):
    """The indexer's events are decoded by the gateway's own per-event decoders (web3's log
    formatters and `process_log` were a sixth of the loops' CPU): the same names and args."""
    from web3 import Web3

    from marketplace.chain.gateway import INDEXED_CONTRACTS, _abi_type

    market, gateway = chain
    head = market.w3.eth.block_number
    events = {}  # topic0 → web3's event object
    for name in INDEXED_CONTRACTS:
        contract = market.contract(name)
        for item in (i for i in contract.abi if i["type"] == "event"):
            topic = Web3.keccak(text=f"{item['name']}({','.join(_abi_type(i) for i in item['inputs'])})")
            events[bytes(topic)] = getattr(contract.events, item["name"])()
    addresses = [market.contract(name).address for name in INDEXED_CONTRACTS]
    theirs = []
    for log in market.w3.eth.get_logs({"fromBlock": 0, "toBlock": head, "address": addresses}):
        data = events[bytes(log["topics"][0])].process_log(log)
        theirs.append((data["event"], _plain(dict(data["args"])), log["blockNumber"], log["logIndex"],
                       "0x" + bytes(log["transactionHash"]).hex(), "0x" + bytes(log["blockHash"]).hex()))
    assert {"Staked", "Deposited", "DealOpened"} <= {name for name, *_ in theirs}  # the set-up's events
    ours = gateway.get_logs(0, head)
    assert [(e.name, e.args, e.block_number, e.log_index, e.tx_hash, e.block_hash) for e in ours] == theirs


def test_get_block__header_fields_equal_web3s(chain):
    market, gateway = chain
    for number in (0, market.w3.eth.block_number):
        theirs = market.w3.eth.get_block(number)
        ours = gateway.get_block(number)
        assert ours == {key: theirs.get(key) for key in ("number", "hash", "parentHash", "timestamp", "baseFeePerGas")}
    assert gateway.block_number() == market.w3.eth.block_number


def _open_deals_call(market):
    offer, request = market.offer(), market.request()
    pairing = (offer.as_tuple(), market.sign(offer, PROVIDER), request.as_tuple(), market.sign(request, TRAINER), 2)
    function = market.market.functions.openDeals([pairing])
    return function, {"from": market.address(MATCHER), "to": market.market.address,
                      "data": function._encode_transaction_data()}


def test_gas_limit__carries_a_call_that_needs_more_than_it_uses(chain, counted):
    """The sender sizes gas from eth_createAccessList + eth_call (anvil's eth_estimateGas runs the
    call many times). openDeals keeps a gas reserve per pairing: one pairing uses ~220k but needs
    ~460k, more than the headroom on what it uses gives; the eth_call catches that and twice the
    limit carries it (regression: the first version sent such a transaction and it reverted)."""
    market, _ = chain
    gateway, rpc = counted
    function, call = _open_deals_call(market)
    rpc.clear()
    limit = gateway.gas_limit(call)
    assert rpc.methods(rpc.single) == ["eth_createAccessList", "eth_call", "eth_call"]
    assert limit >= market.w3.eth.estimate_gas(call)
    with pytest.raises(Exception, match="InsufficientGas|reverted"):  # what the headroom on "used" alone gives
        market.send(MATCHER, function, gas=limit // 2)
    receipt = market.send(MATCHER, function, gas=limit)
    assert receipt["status"] == 1 and receipt["gasUsed"] <= limit


def test_gas_limit__call_that_uses_what_it_needs__no_estimate(chain, counted):
    market, _ = chain
    gateway, rpc = counted
    function = market.market.functions.withdraw(market.usdc.address, 1)
    call = {"from": market.address(TRAINER), "to": market.market.address, "data": function._encode_transaction_data()}
    rpc.clear()
    limit = gateway.gas_limit(call)
    assert rpc.methods(rpc.single) == ["eth_createAccessList", "eth_call"]
    estimate = market.w3.eth.estimate_gas(call)
    assert gas_limit(0.9 * estimate) <= limit <= gas_limit(1.1 * estimate)  # an access list shifts cold costs a little
    receipt = market.send(TRAINER, function, gas=limit)
    assert receipt["status"] == 1 and receipt["gasUsed"] <= limit


def test_gas_limit__call_that_would_revert__raises_the_contracts_error(chain, counted):
    from web3.exceptions import ContractCustomError

    market, _ = chain
    gateway, _ = counted
    data = market.market.functions.withdraw(market.usdc.address, 10**30)._encode_transaction_data()
    with pytest.raises(ContractCustomError):
        gateway.gas_limit({"from": market.address(PROVIDER), "to": market.market.address, "data": data})


def test_gas_limit__node_without_create_access_list__falls_back_to_estimate_gas(chain, counted, monkeypatch):
    from web3.exceptions import Web3RPCError

    market, _ = chain
    gateway, rpc = counted
    data = market.market.functions.withdraw(market.usdc.address, 1)._encode_transaction_data()
    call = {"from": market.address(TRAINER), "to": market.market.address, "data": data}
    real_rpc = gateway._rpc

    def without_access_lists(method, params):
        if method == "eth_createAccessList":
            raise Web3RPCError("the method eth_createAccessList does not exist/is not available")
        return real_rpc(method, params)

    monkeypatch.setattr(gateway, "_rpc", without_access_lists)
    rpc.clear()
    assert gateway.gas_limit(call) == gas_limit(market.w3.eth.estimate_gas(call))
    assert rpc.methods(rpc.single) == ["eth_estimateGas"]
