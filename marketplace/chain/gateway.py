"""The only door to the node: contract handles from the deployment registry, reads, and logs.

web3.py only (no Ape in the service). RPC calls that fail for transport reasons are retried
with backoff; a call the contract reverts is not retried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_abi.grammar import TupleType
from eth_abi.grammar import parse as parse_abi_type
from hexbytes import HexBytes
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential
from web3 import HTTPProvider, Web3
from web3._utils.method_formatters import receipt_formatter
from web3.contract import Contract
from web3.datastructures import AttributeDict
from web3.exceptions import (
    BadFunctionCallOutput,
    BlockNotFound,
    ContractCustomError,
    ContractLogicError,
    TransactionNotFound,
    Web3RPCError,
)

from marketplace.chain import gas
from marketplace.registry import Registry
from marketplace.signing import checksum_address

MARKET = "ComputeMarket"
STAKING = "ProviderStaking"
REWARDS = "RewardPool"
CREDIT = "ComputeCredit"
INDEXED_CONTRACTS = (MARKET, STAKING, REWARDS)
# Calls per JSON-RPC batch: geth refuses batches over 1,000 calls by default.
_BATCH_LIMIT = 500


class ChainUnavailable(Exception):
    """The node does not answer (after retries)."""


_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)

_transport_retry = retry(
    retry=retry_if_exception_type(_TRANSPORT_ERRORS),
    wait=wait_exponential(multiplier=0.2, max=3),
    stop=stop_after_attempt(5),
    reraise=True,
)


@_transport_retry
def _retried(fn):
    return fn()


@dataclass(frozen=True)
class DecodedLog:
    contract: str
    name: str
    args: dict[str, Any]
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int


class ChainGateway:
    def __init__(self, rpc_url: str, registry: Registry, *, timeout: float = 10.0):
        self.rpc_url = rpc_url
        self.w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        # web3's "validation" middleware asks the node for its chain id around every eth_call and
        # transaction (7 of the 11.5 round trips an order's intake made, see BENCHMARKS.md); the
        # id is read once here (chain_id) and every transaction we build carries it explicitly.
        self.w3.middleware_onion.remove("validation")
        self.registry = registry
        self._readers: dict[tuple[str, str, int], _Reader] = {}  # (contract, function, arity) → encoder/decoder

    # ───────────────────────────── contracts ─────────────────────────────

    @cached_property
    def chain_id(self) -> int:
        return self._call(lambda: self.w3.eth.chain_id)

    def contract(self, name: str) -> Contract:
        return self._contracts[name]

    @cached_property
    def _contracts(self) -> dict[str, Contract]:
        contracts = {}
        for name, deployment in self.registry.deployments(self.chain_id).items():
            contracts[name] = self.w3.eth.contract(address=Web3.to_checksum_address(deployment.address), abi=deployment.abi)
        self.registry.get(self.chain_id, MARKET)  # fail early with a clear message if not deployed
        return contracts

    @property
    def market(self) -> Contract:
        return self.contract(MARKET)

    @property
    def staking(self) -> Contract:
        return self.contract(STAKING)

    @property
    def rewards(self) -> Contract:
        return self.contract(REWARDS)

    def deploy_block(self, name: str) -> int:
        return self.registry.get(self.chain_id, name).block_number

    def token_contract(self, address: str) -> Contract:
        """Any settlement token, through ComputeCredit's ABI: a superset of ERC-20 + EIP-2612
        (and its `mint(address,uint256)` is the devnet mocks' faucet signature too)."""
        abi = self.registry.get(self.chain_id, CREDIT).abi
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)

    # ───────────────────────────── reads ─────────────────────────────

    def _call(self, fn):
        """`fn()` with transport retries; a node that still does not answer is ChainUnavailable
        (the API answers 503 for it, the CLIs one line)."""
        try:
            return _retried(fn)
        except _TRANSPORT_ERRORS as exc:
            raise ChainUnavailable(f"no node answers at {self.rpc_url}: {exc.__class__.__name__}") from None

    def read(self, name: str, function: str, *args: Any, block: int | str = "latest") -> Any:
        """A view call, with the same result web3's `contract.functions.f(*args).call()` gives.

        The ABI work is done once per function (selector, types): web3 re-validates the whole
        ABI and hashes every function's signature on each call, ~10 ms of CPU, which made
        chain reads most of an order's intake cost (BENCHMARKS.md, service section)."""
        reader = self._reader(name, function, len(args))
        if reader.fallback:  # overloaded name: let web3 pick by argument types
            fn = getattr(self.contract(name).functions, function)(*args)
            return self._call(lambda: fn.call(block_identifier=block))
        call = {"to": reader.address, "data": reader.encode(args)}
        return reader.decode(self._call(lambda: self.w3.eth.call(call, block)))

    def call_data(self, name: str, function: str, *args: Any) -> str:
        """0x calldata of `function(*args)` on contract `name` (a view or a transaction), encoded with
        the cached selector and types: web3's per-call ABI walk was a fifth of the service's CPU when
        it sent batched openDeals (bench/service, end to end)."""
        reader = self._reader(name, function, len(args))
        if reader.fallback:  # overloaded name: let web3 pick by argument types
            return getattr(self.contract(name).functions, function)(*args)._encode_transaction_data()
        return reader.encode(args)

    def _reader(self, name: str, function: str, arity: int) -> _Reader:
        reader = self._readers.get((name, function, arity))
        if reader is None:
            reader = self._readers[(name, function, arity)] = _Reader.of(self.contract(name), function, arity)
        return reader

    def read_with_time(self, reads: Sequence[tuple[str, str, tuple[Any, ...]]]) -> tuple[int, list[Any]]:
        """The latest block's timestamp and several view calls in one JSON-RPC batch (one round
        trip instead of one each: an order's intake checks). Falls back to one call at a time on
        a node that refuses batches, or for an overloaded function."""
        batched = self._batched_reads(reads, "latest", with_head=True)
        if batched is not None:
            head, results = batched
            return int(head["timestamp"], 16), results
        return self.timestamp(), [self.read(name, function, *args) for name, function, args in reads]

    def read_many(self, reads: Sequence[tuple[str, str, tuple[Any, ...]]], block: int | str = "latest") -> list[Any]:
        """Several view calls `(contract, function, args)` at one block in one JSON-RPC batch;
        each result equals `read`'s. Falls back to one call at a time on a node that refuses
        batches, for an overloaded function, or if any call fails (so a revert raises as in `read`)."""
        if not reads:
            return []
        batched = self._batched_reads(reads, block, with_head=False)
        if batched is not None:
            return batched[1]
        return [self.read(name, function, *args, block=block) for name, function, args in reads]

    def _batched_reads(self, reads: Sequence[tuple[str, str, tuple[Any, ...]]], block: int | str, *,
                       with_head: bool) -> tuple[dict[str, Any] | None, list[Any]] | None:
        """The view calls at `block` (after the latest block's raw header if `with_head`) as one
        batch, decoded; None when they must go one at a time."""
        readers = [self._reader(name, function, len(args)) for name, function, args in reads]
        if any(r.fallback for r in readers):  # overloaded name: only web3 can pick the function
            return None
        tag = hex(block) if isinstance(block, int) else block
        calls = [("eth_getBlockByNumber", ["latest", False])] if with_head else []
        calls += [("eth_call", [{"to": r.address, "data": r.encode(args)}, tag])
                  for r, (_, _, args) in zip(readers, reads, strict=True)]
        results = self._batch(calls)
        if results is None:
            return None
        head = results.pop(0) if with_head else None
        return head, [r.decode(bytes.fromhex(raw[2:])) for r, raw in zip(readers, results, strict=True)]

    def _batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any] | None:
        """Raw results of JSON-RPC calls sent as batches (one round trip per _BATCH_LIMIT calls), in
        order; None if the node refused a batch or any call in it failed."""
        results: list[Any] = []
        for start in range(0, len(calls), _BATCH_LIMIT):
            chunk = list(calls[start:start + _BATCH_LIMIT])
            try:
                responses = self._call(lambda chunk=chunk: self.w3.provider.make_batch_request(chunk))
            except requests.HTTPError:  # a node without batch support may answer 4xx/5xx
                return None
            if not (isinstance(responses, list) and len(responses) == len(chunk)
                    and all("result" in r for r in responses)):
                return None
            results += [r["result"] for r in responses]
        return results

    def block_number(self) -> int:
        return int(self._rpc("eth_blockNumber", []), 16)

    def get_block(self, number: int | str) -> dict[str, Any]:
        """A block's header fields the service uses (`_header`); BlockNotFound if the chain has none."""
        header = _header(self._rpc("eth_getBlockByNumber", [hex(number) if isinstance(number, int) else number, False]))
        if header is None:
            raise BlockNotFound(f"block {number!r} not found")
        return header

    def _rpc(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC call without web3's formatters (they were a tenth of the loops' CPU): its raw
        result; Web3RPCError if the node answered with an error."""
        response = self._call(lambda: self.w3.provider.make_request(method, params))
        if "error" in response:
            error = response["error"]
            raise Web3RPCError(str(error.get("message", error) if isinstance(error, dict) else error),
                               rpc_response=response)
        return response["result"]

    def timestamp(self) -> int:
        return int(self.get_block("latest")["timestamp"])

    def gas_limit(self, call: dict[str, Any]) -> int:
        """A gas limit (`gas.gas_limit`'s headroom included) that carries `call` ({from, to,
        data}) on the pending state, from two or three executions: eth_createAccessList for the gas
        it uses, then eth_call with the limit made from that (or twice it: a call may need more gas
        than it uses -- openDeals keeps a reserve per pairing, 63/64 forwarding). anvil's
        eth_estimateGas binary-searches over many executions (an openDeals of 50 pairings: 230-460
        ms against 21-26 ms for one here), twice the chain work of sending it. If neither limit
        carries the call, or the node lacks the method, eth_estimateGas decides, and raises as web3
        does when the call would fail (the contract's custom error)."""
        params = {"from": call["from"], "to": call["to"], "data": call["data"]}
        try:
            result = self._rpc("eth_createAccessList", [params, "pending"])
        except Web3RPCError:
            result = None
        if isinstance(result, dict) and not result.get("error") and "gasUsed" in result:
            limit = gas.gas_limit(int(result["gasUsed"], 16))
            for attempt in (limit, 2 * limit):  # twice as much covers openDeals' reserve for one pairing
                try:
                    self._rpc("eth_call", [{**params, "gas": hex(attempt)}, "pending"])
                    return attempt
                except Web3RPCError:
                    continue
        return gas.gas_limit(self._call(lambda: self.w3.eth.estimate_gas(call)))

    def get_deal(self, deal_id: int) -> dict[str, Any]:
        return self._deal(self.read(MARKET, "getDeal", deal_id))

    def get_deals(self, deal_ids: Sequence[int], block: int | str = "latest") -> list[dict[str, Any]]:
        """`get_deal` of several deals in one round trip (the keeper's re-checks)."""
        return [self._deal(d) for d in self.read_many([(MARKET, "getDeal", (i,)) for i in deal_ids], block)]

    def _deal(self, values: Sequence[Any]) -> dict[str, Any]:
        """getDeal's struct as a dict keyed by the ABI's field names."""
        return dict(zip(self._deal_fields, values, strict=True))

    @cached_property
    def _deal_fields(self) -> list[str]:
        return [item["name"] for item in self._output_components("getDeal")]

    def _output_components(self, function: str) -> list[dict[str, Any]]:
        for item in self.market.abi:
            if item.get("type") == "function" and item["name"] == function:
                return item["outputs"][0]["components"]
        raise KeyError(function)

    def vault_balance(self, account: str, token: str) -> int:
        return self.read(MARKET, "balanceOf", Web3.to_checksum_address(account), Web3.to_checksum_address(token))

    def free_stake(self, provider: str, token: str) -> int:
        return self.read(STAKING, "freeStake", Web3.to_checksum_address(provider), Web3.to_checksum_address(token))

    def counter_of(self, owner: str) -> int:
        return self.read(MARKET, "counterOf", Web3.to_checksum_address(owner))

    def is_settlement_token(self, token: str) -> bool:
        return self.read(MARKET, "isSettlementToken", Web3.to_checksum_address(token))

    def order_state(self, order_hash: str) -> tuple[int, bool]:
        return tuple(self.read(MARKET, "orderState", bytes.fromhex(order_hash.removeprefix("0x"))))

    def order_states(self, order_hashes: Sequence[str], block: int | str = "latest") -> list[tuple[int, bool]]:
        """`order_state` of several orders at one block in one round trip."""
        reads = [(MARKET, "orderState", (bytes.fromhex(h.removeprefix("0x")),)) for h in order_hashes]
        return [tuple(state) for state in self.read_many(reads, block)]

    def receipts(self, tx_hashes: Sequence[str]) -> list[Any]:
        """Receipts of several transactions in one round trip, each as web3's
        `get_transaction_receipt` gives it; None for one not mined (yet)."""
        results = self._batch([("eth_getTransactionReceipt", [h]) for h in tx_hashes])
        if results is None:
            return [self._one_receipt(h) for h in tx_hashes]
        return [None if r is None else AttributeDict.recursive(receipt_formatter(r)) for r in results]

    def _one_receipt(self, tx_hash: str) -> Any:
        try:
            return self._call(lambda: self.w3.eth.get_transaction_receipt(tx_hash))
        except TransactionNotFound:
            return None

    def get_blocks(self, numbers: Sequence[int]) -> list[Any]:
        """Several blocks (without transactions) in one round trip, each as `get_block` gives it;
        None for a number the chain does not have."""
        results = self._batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        if results is None:
            return [self._one_block(n) for n in numbers]
        return [_header(r) for r in results]

    def _one_block(self, number: int) -> Any:
        try:
            return self.get_block(number)
        except BlockNotFound:
            return None

    # ───────────────────────────── logs ─────────────────────────────

    @cached_property
    def _event_decoders(self) -> dict[bytes, _EventDecoder]:
        """topic0 → decoder, for every event of the indexed contracts."""
        decoders: dict[bytes, _EventDecoder] = {}
        for name in INDEXED_CONTRACTS:
            for item in self.contract(name).abi:
                if item.get("type") == "event" and not item.get("anonymous"):
                    decoder = _EventDecoder.of(name, item)
                    decoders[decoder.topic] = decoder
        return decoders

    def raw_logs(self, from_block: int, to_block: int, addresses: Sequence[str]) -> list[dict[str, Any]]:
        """Undecoded logs of `addresses` in [from_block, to_block] (what the intake cache needs), as
        `_log` shapes them."""
        raw = self._rpc("eth_getLogs", [{"fromBlock": hex(from_block), "toBlock": hex(to_block),
                                         "address": list(addresses)}])
        return [_log(entry) for entry in raw]

    def get_logs(self, from_block: int, to_block: int) -> list[DecodedLog]:
        """Decoded events of the indexed contracts in [from_block, to_block], in chain order."""
        raw = self.raw_logs(from_block, to_block, [self.contract(name).address for name in INDEXED_CONTRACTS])
        decoded = []
        for log in raw:
            decoder = self._event_decoders.get(log["topics"][0]) if log["topics"] else None
            if decoder is None:
                continue
            decoded.append(
                DecodedLog(
                    contract=decoder.contract,
                    name=decoder.name,
                    args=decoder.decode(log["topics"], log["data"]),
                    block_number=log["blockNumber"],
                    block_hash=log["blockHash"],
                    tx_hash=log["transactionHash"],
                    log_index=log["logIndex"],
                )
            )
        decoded.sort(key=lambda d: (d.block_number, d.log_index))
        return decoded

    def receipt_events(self, receipt: Any, contract: str, event: str) -> list[dict[str, Any]]:
        """Args of a contract's `event`s in a receipt (from `receipts`), in log order."""
        address = self.contract(contract).address.lower()
        found = []
        for log in receipt["logs"]:
            if _hex(log["address"]).lower() != address or not log["topics"]:
                continue
            topics = [_bytes(t) for t in log["topics"]]
            decoder = self._event_decoders.get(topics[0])
            if decoder is not None and decoder.name == event and decoder.contract == contract:
                found.append(decoder.decode(topics, _bytes(log["data"])))
        return found


@dataclass(frozen=True)
class _EventDecoder:
    """One event's topic and decoder, built once from its ABI; decodes as web3's `process_log`
    does (checksummed addresses; a dynamic indexed value is its topic, the keccak of the value),
    then `_plain` (bytes as 0x hex)."""

    contract: str
    name: str
    topic: bytes
    topic_args: tuple[tuple[str, str, bool], ...]  # indexed (name, type, dynamic: the topic is its hash)
    data_names: tuple[str, ...]
    data_types: tuple[str, ...]

    @classmethod
    def of(cls, contract: str, item: dict[str, Any]) -> _EventDecoder:
        types = [_abi_type(i) for i in item["inputs"]]
        topic = bytes(Web3.keccak(text=f"{item['name']}({','.join(types)})"))
        indexed = tuple((i["name"], t, parse_abi_type(t).is_dynamic)
                        for i, t in zip(item["inputs"], types, strict=True) if i["indexed"])
        data = [(i["name"], t) for i, t in zip(item["inputs"], types, strict=True) if not i["indexed"]]
        return cls(contract, item["name"], topic, indexed, tuple(n for n, _ in data), tuple(t for _, t in data))

    def decode(self, topics: Sequence[bytes], data: bytes) -> dict[str, Any]:
        if len(topics) != len(self.topic_args) + 1:
            raise ValueError(f"{self.contract}.{self.name}: {len(topics) - 1} indexed topics, "
                             f"the ABI has {len(self.topic_args)}")
        args: dict[str, Any] = {}
        for (name, type_, dynamic), topic in zip(self.topic_args, topics[1:], strict=True):
            args[name] = topic if dynamic else _normaliser(type_)(abi_decode((type_,), topic)[0])
        values = abi_decode(self.data_types, data)
        for name, type_, value in zip(self.data_names, self.data_types, values, strict=True):
            args[name] = _normaliser(type_)(value)
        return _plain(args)


@cache
def _normaliser(type_: str) -> Callable[[Any], Any]:
    """How a decoded value of `type_` becomes what web3 returns (its BASE_RETURN_NORMALIZERS:
    addresses checksummed, in tuples and arrays too; arrays become lists), built once per type
    instead of web3's per-call walk of the ABI."""
    return _walker(parse_abi_type(type_))


def _walker(abi_type: Any) -> Callable[[Any], Any]:
    if abi_type.is_array:
        item = _walker(abi_type.item_type)
        return lambda values: [item(v) for v in values]
    if isinstance(abi_type, TupleType):
        parts = [_walker(component) for component in abi_type.components]
        return lambda values: tuple(part(v) for part, v in zip(parts, values, strict=True))
    return checksum_address if abi_type.base == "address" else (lambda value: value)


def _bytes(value: Any) -> bytes:
    return bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)


def _header(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """The header fields the service reads, typed as web3's `get_block` types them."""
    if raw is None:
        return None
    base_fee = raw.get("baseFeePerGas")
    return {"number": int(raw["number"], 16), "hash": HexBytes(raw["hash"]), "parentHash": HexBytes(raw["parentHash"]),
            "timestamp": int(raw["timestamp"], 16), "baseFeePerGas": None if base_fee is None else int(base_fee, 16)}


def _log(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw log with its numbers as ints, topics and data as bytes, hashes as 0x hex."""
    return {"address": raw["address"], "topics": [bytes.fromhex(t[2:]) for t in raw["topics"]],
            "data": bytes.fromhex(raw["data"][2:]), "blockNumber": int(raw["blockNumber"], 16),
            "blockHash": raw["blockHash"], "transactionHash": raw["transactionHash"],
            "logIndex": int(raw["logIndex"], 16)}


def revert_reason(exc: Exception) -> str:
    """A readable reason for a failed call: the custom error's data or the message."""
    if isinstance(exc, ContractCustomError):
        return f"custom error {exc.data if isinstance(exc.data, str) else exc.args[0]}"
    if isinstance(exc, ContractLogicError):
        return str(exc.message or exc)
    return f"{exc.__class__.__name__}: {exc}"


@dataclass(frozen=True)
class _Reader:
    """One view function's calldata encoder and result decoder, built once from its ABI."""

    address: str
    selector: bytes
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    fallback: bool = False

    @classmethod
    def of(cls, contract: Contract, function: str, arity: int) -> _Reader:
        items = [i for i in contract.abi if i.get("type") == "function" and i["name"] == function
                 and len(i["inputs"]) == arity]
        if len(items) != 1:
            if not items:
                raise AttributeError(f"{function} with {arity} arguments is not in this contract's ABI")
            return cls(contract.address, b"", (), (), fallback=True)
        item = items[0]
        inputs = tuple(_abi_type(i) for i in item["inputs"])
        selector = Web3.keccak(text=f"{function}({','.join(inputs)})")[:4]
        return cls(contract.address, bytes(selector), inputs, tuple(_abi_type(o) for o in item["outputs"]))

    def encode(self, args: tuple[Any, ...]) -> str:
        return "0x" + (self.selector + abi_encode(self.input_types, args)).hex()

    def decode(self, raw: bytes) -> Any:
        """Decoded and normalised exactly as web3's `call()` does (checksummed addresses, …)."""
        try:
            values = abi_decode(self.output_types, bytes(raw))
        except DecodingError as exc:
            raise BadFunctionCallOutput(f"could not decode the result of {self.output_types} from {bytes(raw).hex()!r}"
                                        ) from exc
        normalized = [_normaliser(t)(v) for t, v in zip(self.output_types, values, strict=True)]
        return normalized[0] if len(normalized) == 1 else normalized


def _abi_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return param["type"]


def _hex(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    text = str(value)
    return text if text.startswith("0x") else "0x" + text


def _plain(value: Any) -> Any:
    """JSON-safe: bytes → 0x hex, big ints stay ints (the DB layer stringifies amounts)."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
