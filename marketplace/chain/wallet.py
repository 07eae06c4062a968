"""A user's wallet on the chain: sign EIP-712 messages and send contract calls, one at a time.

The CLIs and the provider agent write to the chain only through `Wallet.send`, which

  1. simulates the call (eth_estimateGas) and, if the contract would revert, raises
     `TransactionReverted` with the custom error decoded from the deployment's ABIs — so a
     transaction that cannot succeed is never signed, let alone sent;
  2. builds it (pending nonce, the node's EIP-1559 fees, estimated gas + headroom), has the
     `Signer` sign it, broadcasts it and waits for its receipt.

A `Signer` is anything that holds a key: `KeySigner` wraps an eth-account private key; the Ape
scripts adapt Ape accounts (test accounts, encrypted keyfiles) to the same two methods.

    wallet = Wallet(gateway, KeySigner(private_key))
    wallet.send(gateway.market.functions.deposit(token, amount), action="deposit")
    signature = wallet.sign_typed(offer.typed_data(gateway.chain_id, gateway.market.address))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import keccak, to_checksum_address
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError, TimeExhausted, Web3RPCError

from marketplace.chain.gas import gas_limit
from marketplace.chain.gateway import ChainGateway
from marketplace.errors import InsufficientFunds, MarketError, ServiceUnavailable

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
PANIC_CODES = {0x01: "assertion failed", 0x11: "arithmetic overflow or underflow", 0x12: "division by zero",
               0x21: "invalid enum value", 0x32: "array index out of bounds", 0x41: "out of memory"}
# Errors that mean "not enough money": exit code 3, like the service's InsufficientFunds.
FUNDS_ERRORS = {"ComputeMarketInsufficientBalance", "ProviderStakingInsufficientFreeStake",
                "ERC20InsufficientBalance", "ERC20InsufficientAllowance"}


class TransactionReverted(MarketError):
    """The contract refuses the call (found by simulation before sending, or by the receipt)."""

    exit_code = 5
    code = "reverted"

    def __init__(self, message: str, *, error_name: str | None = None, args: dict[str, Any] | None = None,
                 tx_hash: str | None = None):
        super().__init__(message)
        self.error_name = error_name
        self.error_args = args or {}
        self.tx_hash = tx_hash


class FundsReverted(TransactionReverted, InsufficientFunds):
    """A revert that means a balance, stake or allowance is too small."""

    exit_code = 3


# ───────────────────────────── signers ─────────────────────────────


class Signer(Protocol):
    """What a wallet needs from whoever holds the key."""

    @property
    def address(self) -> str: ...

    def sign_message(self, message: SignableMessage) -> bytes:
        """65-byte r‖s‖v signature of an EIP-191/EIP-712 signable message."""

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        """The raw signed transaction for a web3-style transaction dict."""


class KeySigner:
    """A private key in memory (eth-account)."""

    def __init__(self, private_key: bytes | str):
        self._account = Account.from_key(private_key)

    @property
    def address(self) -> str:
        return self._account.address

    def sign_message(self, message: SignableMessage) -> bytes:
        return bytes(self._account.sign_message(message).signature)

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        return bytes(self._account.sign_transaction(tx).raw_transaction)


# ───────────────────────────── revert decoding ─────────────────────────────


@dataclass(frozen=True)
class _ErrorAbi:
    contract: str
    name: str
    types: tuple[str, ...]
    names: tuple[str, ...]


class RevertDecoder:
    """Custom-error selectors of every contract in the deployment → readable one-liners."""

    def __init__(self, abis: dict[str, list[dict[str, Any]]]):
        self._errors: dict[bytes, _ErrorAbi] = {}
        for contract, abi in abis.items():
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = tuple(_abi_type(i) for i in item.get("inputs", []))
                selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
                self._errors.setdefault(selector, _ErrorAbi(
                    contract, item["name"], types, tuple(i.get("name") or f"arg{n}" for n, i in enumerate(item["inputs"]))))

    @classmethod
    def for_gateway(cls, gateway: ChainGateway) -> RevertDecoder:
        deployments = gateway.registry.deployments(gateway.chain_id)
        return cls({name: d.abi for name, d in deployments.items()})

    def decode(self, data: bytes) -> tuple[str | None, dict[str, Any], str]:
        """(error name, args, one-line description) of revert data."""
        if not data:
            return None, {}, "reverted without a reason"
        selector, body = data[:4], data[4:]
        if selector == ERROR_STRING_SELECTOR:
            try:
                (reason,) = abi_decode(["string"], body)
                return "Error", {"reason": reason}, reason
            except Exception:  # noqa: BLE001 - malformed data: fall through to hex
                pass
        if selector == PANIC_SELECTOR:
            try:
                (code,) = abi_decode(["uint256"], body)
                return "Panic", {"code": code}, f"panic: {PANIC_CODES.get(code, hex(code))}"
            except Exception:  # noqa: BLE001
                pass
        known = self._errors.get(selector)
        if known is None:
            return None, {}, f"reverted with unknown error data 0x{data.hex()}"
        try:
            values = abi_decode(list(known.types), body)
        except Exception:  # noqa: BLE001
            return known.name, {}, f"{known.name}(<undecodable arguments>)"
        args = {n: _plain(v, t) for n, t, v in zip(known.names, known.types, values, strict=True)}
        shown = ", ".join(f"{k}={_show(v)}" for k, v in args.items())
        return known.name, args, f"{known.name}({shown})"

    def from_exception(self, exc: Exception) -> tuple[str | None, dict[str, Any], str]:
        data = revert_data(exc)
        if data is not None:
            return self.decode(data)
        if isinstance(exc, ContractLogicError) and exc.message:
            return None, {}, str(exc.message).removeprefix("execution reverted: ")
        return None, {}, f"{exc.__class__.__name__}: {exc}"


def revert_data(exc: Exception) -> bytes | None:
    """The raw revert data carried by a web3 exception, if any."""
    candidates: list[Any] = []
    if isinstance(exc, (ContractCustomError, ContractPanicError, ContractLogicError)):
        candidates.append(getattr(exc, "data", None))
    if isinstance(exc, Web3RPCError):
        rpc = getattr(exc, "rpc_response", None) or {}
        candidates.append((rpc.get("error") or {}).get("data"))
    candidates.extend(a for a in getattr(exc, "args", ()) if isinstance(a, str))
    for value in candidates:
        if isinstance(value, dict):
            value = value.get("data")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str) and value.startswith("0x"):
            try:
                return bytes.fromhex(value[2:])
            except ValueError:
                continue
    return None


def _abi_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + param["type"][5:]
    return param["type"]


def _plain(value: Any, abi_type: str = "") -> Any:
    if abi_type == "address" and isinstance(value, str):
        return to_checksum_address(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _show(value: Any) -> str:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 66:
        return value[:10] + "…"
    return str(value)


# ───────────────────────────── the wallet ─────────────────────────────


@dataclass
class Sent:
    """A mined, successful transaction."""

    action: str
    tx_hash: str
    block_number: int
    gas_used: int
    receipt: Any


class Wallet:
    """One account's view of the chain: typed-data signatures and transactions."""

    def __init__(self, gateway: ChainGateway, signer: Signer, *, receipt_timeout: float = 120.0,
                 on_sent: Callable[[str, str], None] | None = None,
                 waiting: Callable[[str], AbstractContextManager[Any]] | None = None):
        self.gateway = gateway
        self.signer = signer
        self.receipt_timeout = receipt_timeout
        self.on_sent = on_sent  # called with (action, tx hash) right after broadcast
        self.waiting = waiting or (lambda _text: nullcontext())  # e.g. a spinner while the receipt is awaited
        self._decoder: RevertDecoder | None = None

    @property
    def address(self) -> str:
        return to_checksum_address(self.signer.address)

    @property
    def w3(self):
        return self.gateway.w3

    @property
    def decoder(self) -> RevertDecoder:
        if self._decoder is None:
            self._decoder = RevertDecoder.for_gateway(self.gateway)
        return self._decoder

    # ───────────── signatures ─────────────

    def sign_typed(self, typed_data: dict[str, Any]) -> str:
        """0x-hex EIP-712 signature over a full typed-data message (types, domain, message)."""
        return "0x" + bytes(self.signer.sign_message(encode_typed_data(full_message=typed_data))).hex()

    def sign_order(self, order: Any) -> str:
        """Sign a marketplace.signing type (Offer, Request, CancelOrder, ProviderProfile) for this market."""
        return self.sign_typed(order.typed_data(self.gateway.chain_id, self.gateway.market.address))

    # ───────────── transactions ─────────────

    def nonce(self, block: str = "pending") -> int:
        return self.gateway._call(lambda: self.w3.eth.get_transaction_count(self.address, block))

    def simulate(self, call: Any, *, action: str = "transaction") -> int:
        """Gas the call needs; raises TransactionReverted (decoded) if the contract would refuse it.

        Simulated on the *pending* block: its timestamp is the one the transaction will be mined
        with, which matters for deadlines and metering (a node that does not mine between
        transactions, like anvil, still answers `latest` with the last block's old timestamp)."""
        try:
            return call.estimate_gas({"from": self.address}, block_identifier="pending")
        except (ContractCustomError, ContractLogicError, ContractPanicError) as exc:
            raise self._reverted(exc, action) from None
        except (Web3RPCError, ValueError) as exc:
            if revert_data(exc) is not None:
                raise self._reverted(exc, action) from None
        try:  # a node without a pending block: simulate on the latest one
            return call.estimate_gas({"from": self.address})
        except (ContractCustomError, ContractLogicError, ContractPanicError, Web3RPCError, ValueError) as exc:
            raise self._reverted(exc, action) from None

    def send(self, call: Any, *, action: str = "transaction") -> Sent:
        """Simulate, sign, broadcast and wait: the mined receipt, or a one-line error."""
        gas = self.simulate(call, action=action)
        for attempt in range(3):
            tx = call.build_transaction({
                "from": self.address, "nonce": self.nonce(), "gas": gas_limit(gas),
                "chainId": self.gateway.chain_id,
            })
            raw = self.signer.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(raw)
                break
            except Web3RPCError as exc:
                text = str(exc).lower()
                if ("nonce too low" in text or "replacement transaction" in text) and attempt < 2:
                    time.sleep(0.2)  # another process used this account meanwhile: take the next nonce
                    continue
                raise ServiceUnavailable(f"{action}: the node refused the transaction: {exc}") from None
        hex_hash = "0x" + bytes(tx_hash).hex()
        if self.on_sent is not None:
            self.on_sent(action, hex_hash)
        try:
            with self.waiting(f"{action}: waiting for {hex_hash[:12]}… to be mined"):
                receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout,
                                                                   poll_latency=0.2)
        except TimeExhausted:
            raise ServiceUnavailable(
                f"{action}: transaction {hex_hash} was not mined within {self.receipt_timeout:.0f}s; "
                "check the node and look the hash up later"
            ) from None
        if receipt["status"] != 1:
            raise TransactionReverted(f"{action} reverted on chain (tx {hex_hash}); nothing changed",
                                      tx_hash=hex_hash)
        return Sent(action, hex_hash, receipt["blockNumber"], receipt["gasUsed"], receipt)

    def _reverted(self, exc: Exception, action: str) -> MarketError:
        name, args, text = self.decoder.from_exception(exc)
        if name is None and revert_data(exc) is None and not isinstance(exc, ContractLogicError):
            message = str(exc)
            if "insufficient funds" in message.lower():
                return InsufficientFunds(f"{action}: {self.address} has too little ETH to pay for gas")
            return ServiceUnavailable(f"{action}: the node refused to simulate the call: {message[:300]}")
        cls = FundsReverted if name in FUNDS_ERRORS else TransactionReverted
        return cls(f"{action} would revert: {text}", error_name=name, args=args)
