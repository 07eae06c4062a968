"""The service's one transaction sender: an outbox in the DB, persistent nonces, crash recovery.

Every transaction goes through three durable steps:
  1. QUEUED   – written by whoever wants it sent, in the same DB transaction as the state that
                caused it (a match, a settlement decision), so intent is never lost or duplicated;
  2. SIGNED   – nonce chosen and the raw signed transaction stored *before* broadcast, so after a
                crash the very same bytes (same hash, same nonce) are broadcast again;
  3. CONFIRMED / FAILED – once its receipt is `confirmations` blocks deep.
Nonces are taken from the DB (max + 1, or the node's count if something else used the key), so
they stay contiguous across restarts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from eth_account import Account
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from web3.exceptions import TransactionNotFound, Web3RPCError

from marketplace.chain.gateway import MARKET, ChainGateway, ChainUnavailable, revert_reason
from marketplace.db.models import ChainTx, TxState
from marketplace.db.session import session_scope

log = logging.getLogger(__name__)

ReceiptHandler = Callable[[Session, ChainTx, Any], None]


class TxSender:
    def __init__(self, gateway: ChainGateway, engine: Engine, private_key: bytes, *, confirmations: int = 0):
        self.gateway = gateway
        self.engine = engine
        self._account = Account.from_key(private_key)
        self.address = self._account.address
        self.confirmations = confirmations
        self._handlers: dict[str, ReceiptHandler] = {}

    def on_receipt(self, kind: str, handler: ReceiptHandler) -> None:
        """Run `handler(session, tx, receipt)` in the DB transaction that finalises a `kind` tx."""
        self._handlers[kind] = handler

    # ───────────────────────────── outbox ─────────────────────────────

    def enqueue(self, session: Session, kind: str, payload: dict[str, Any]) -> ChainTx:
        tx = ChainTx(kind=kind, payload=json.dumps(payload, sort_keys=True), sender=self.address)
        session.add(tx)
        session.flush()  # assigns tx.id inside the caller's transaction
        return tx

    def pump(self) -> int:
        """One pass: resend what was signed, sign and send what is queued, finalise receipts.
        Returns how many transactions reached a final state."""
        self._broadcast_signed()
        self._sign_queued()
        return self._finalise()

    # ───────────────────────────── steps ─────────────────────────────

    def _sign_queued(self) -> None:
        with Session(self.engine) as session:
            queued = session.exec(
                select(ChainTx).where(ChainTx.state == TxState.QUEUED, ChainTx.sender == self.address).order_by(ChainTx.id)
            ).all()
            ids = [tx.id for tx in queued]
        if not ids:
            return
        # Read once per pass, not per transaction: the node's nonce (our own transactions of this
        # pass are counted from the DB) and EIP-1559 fees (web3's default: tip + 2 × base fee, which
        # stays valid through several full blocks of base-fee rises).
        chain_nonce = self.gateway.w3.eth.get_transaction_count(self.address, "pending")
        tip = self.gateway.w3.eth.max_priority_fee
        fees = {"maxPriorityFeePerGas": tip,
                "maxFeePerGas": tip + 2 * self.gateway.get_block("latest")["baseFeePerGas"]}
        for tx_id in ids:
            with session_scope(self.engine) as session:
                tx = session.get(ChainTx, tx_id)
                if tx is None or tx.state != TxState.QUEUED:
                    continue
                call = {"from": self.address, "to": self.gateway.market.address,
                        "data": self.call_data(tx.kind, json.loads(tx.payload))}
                try:
                    gas = self.gateway.gas_limit(call)
                except ChainUnavailable:
                    raise  # not a verdict on the transaction: the pass fails, the next one retries
                except Exception as exc:  # the contract would revert: never spend a nonce on it
                    tx.state = TxState.FAILED
                    tx.error = revert_reason(exc)[:500]
                    tx.updated_at = datetime.now(UTC)
                    self._run_handler(session, tx, None)
                    log.warning("tx %s (%s) would revert: %s", tx.id, tx.kind, tx.error)
                    continue
                nonce = self._next_nonce(session, chain_nonce)
                signed = self._account.sign_transaction(
                    {"to": call["to"], "data": call["data"], "value": 0, "nonce": nonce, "gas": gas,
                     "chainId": self.gateway.chain_id, "type": 2, **fees}
                )
                tx.nonce = nonce
                tx.raw_tx = "0x" + bytes(signed.raw_transaction).hex()
                tx.tx_hash = "0x" + bytes(signed.hash).hex()
                tx.state = TxState.SIGNED
                tx.updated_at = datetime.now(UTC)
            # Committed before broadcast: a crash from here on resends these exact bytes.
            self._broadcast(tx)

    def _broadcast_signed(self) -> None:
        with Session(self.engine) as session:
            signed = session.exec(
                select(ChainTx).where(ChainTx.state == TxState.SIGNED, ChainTx.sender == self.address).order_by(ChainTx.nonce)
            ).all()
        for tx, receipt in zip(signed, self.gateway.receipts([tx.tx_hash for tx in signed]), strict=True):
            if receipt is None:
                self._broadcast(tx)

    def _broadcast(self, tx: ChainTx) -> None:
        try:
            self.gateway.w3.eth.send_raw_transaction(tx.raw_tx)
        except (Web3RPCError, ValueError) as exc:
            message = str(exc).lower()
            if "already known" in message or "already imported" in message:
                return  # pending in the node's pool: the same as a successful send
            if "nonce too low" in message:
                return  # mined already (or replaced): _finalise decides from the receipt
            log.warning("broadcast of tx %s failed: %s", tx.id, exc)

    def _finalise(self) -> int:
        finalised = 0
        with Session(self.engine) as session:
            signed = session.exec(
                select(ChainTx.id, ChainTx.tx_hash)
                .where(ChainTx.state == TxState.SIGNED, ChainTx.sender == self.address)
            ).all()
        if not signed:
            return 0
        head = self.gateway.block_number()
        receipts = self.gateway.receipts([tx_hash for _, tx_hash in signed])  # after head: never deeper than it says
        mined = cache(lambda: self.gateway.w3.eth.get_transaction_count(self.address, "latest"))  # once per pass
        for (tx_id, _), receipt in zip(signed, receipts, strict=True):
            with session_scope(self.engine) as session:
                tx = session.get(ChainTx, tx_id)
                if receipt is None:
                    if self._nonce_consumed_by_other(tx, mined):
                        # Our nonce was used by a different transaction: requeue the intent.
                        tx.state = TxState.FAILED
                        tx.error = "replaced: nonce used by another transaction"
                        self._run_handler(session, tx, None)
                    continue
                if receipt["blockNumber"] > head - self.confirmations:
                    continue  # not deep enough yet
                tx.block_number = receipt["blockNumber"]
                tx.state = TxState.CONFIRMED if receipt["status"] == 1 else TxState.FAILED
                if receipt["status"] != 1:
                    tx.error = "reverted on chain"
                tx.updated_at = datetime.now(UTC)
                self._run_handler(session, tx, receipt if receipt["status"] == 1 else None)
                finalised += 1
        return finalised

    def _run_handler(self, session: Session, tx: ChainTx, receipt: Any) -> None:
        handler = self._handlers.get(tx.kind)
        if handler is not None:
            handler(session, tx, receipt)

    # ───────────────────────────── helpers ─────────────────────────────

    def _next_nonce(self, session: Session, from_chain: int) -> int:
        highest = session.exec(select(func.max(ChainTx.nonce)).where(ChainTx.sender == self.address)).one()
        from_db = 0 if highest is None else highest + 1
        return max(from_db, from_chain)

    def _nonce_consumed_by_other(self, tx: ChainTx, mined: Callable[[], int]) -> bool:
        if mined() <= tx.nonce:
            return False
        try:
            self.gateway.w3.eth.get_transaction(tx.tx_hash)
            return False  # ours is known; its receipt will come
        except TransactionNotFound:
            return True

    def call_data(self, kind: str, payload: dict[str, Any]) -> str:
        """The market calldata of an outbox transaction."""
        market = MARKET
        if kind == "open_deals":
            return self.gateway.call_data(market, "openDeals", [_match_tuple(m) for m in payload["matches"]])
        if kind == "settle_many":
            return self.gateway.call_data(market, "settleMany", payload["deal_ids"])
        if kind == "claim_refund":
            return self.gateway.call_data(market, "claimRefund", payload["deal_id"])
        if kind == "settle_with_attestation":
            return self.gateway.call_data(
                market, "settleWithAttestation", payload["deal_id"], bytes.fromhex(payload["result_hash"][2:]),
                payload["passed"], bytes.fromhex(payload["signature"][2:]),
            )
        raise ValueError(f"unknown transaction kind {kind!r}")


def _match_tuple(match: dict[str, Any]) -> tuple:
    from marketplace.signing import Offer, Request

    offer = Offer(**_ints(match["offer"], Offer))
    request = Request(**_ints(match["request"], Request))
    return (
        _contract_tuple(offer),
        bytes.fromhex(match["offer_signature"][2:]),
        _contract_tuple(request),
        bytes.fromhex(match["request_signature"][2:]),
        match["deal_hours"],
    )


def _ints(message: dict[str, Any], cls: Any) -> dict[str, Any]:
    """Typed-data messages travel with big ints as decimal strings; restore the ints."""
    types = dict(cls.TYPES)
    return {k: int(v) if types[k].startswith("uint") and isinstance(v, str) else v for k, v in message.items()}


def _contract_tuple(order: Any) -> tuple:
    return tuple(
        bytes.fromhex(v[2:]) if t == "bytes32" else v for (_, t), v in zip(order.TYPES, order.as_tuple(), strict=True)
    )
