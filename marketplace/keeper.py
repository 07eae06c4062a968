"""Keeper: pushes deals over their deadlines. Settles completed deals whose challenge window has
passed (batched settleMany) and claims refunds for deals never started by their deadline.

It reads candidates only from the indexer's confirmed view (DealRow), re-checks each on chain
right before acting, and never queues a deal that an unfinished keeper transaction already
covers. The contract is the final judge: a stale action reverts or is skipped, never doubles.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from marketplace.chain.gateway import ChainGateway
from marketplace.chain.sender import TxSender
from marketplace.db.models import ChainTx, DealRow, TxState
from marketplace.db.session import session_scope
from marketplace.signing import DealStatus, SettlementRule

log = logging.getLogger(__name__)

KEEPER_KINDS = ("settle_many", "claim_refund")


@dataclass
class KeeperPass:
    settles_queued: int = 0
    refunds_queued: int = 0


class Keeper:
    def __init__(self, engine: Engine, gateway: ChainGateway, sender: TxSender, *, max_batch_size: int = 50):
        self.engine = engine
        self.gateway = gateway
        self.sender = sender
        self.max_batch_size = max_batch_size

    @cached_property
    def challenge_window(self) -> int:
        return self.gateway.read("ComputeMarket", "challengeWindow")

    def tick(self) -> KeeperPass:
        now = self.gateway.timestamp()
        result = KeeperPass()
        with Session(self.engine) as session:
            pending = self._pending_deal_ids(session)
            completed = session.exec(
                select(DealRow).where(DealRow.status == int(DealStatus.COMPLETED)).order_by(DealRow.deal_id)
            ).all()
            unstarted = session.exec(
                select(DealRow).where(DealRow.status == int(DealStatus.OPEN), DealRow.start_deadline < now)
                .order_by(DealRow.deal_id)
            ).all()
        settle_candidates = [
            row.deal_id for row in completed
            if row.deal_id not in pending
            and row.completed_at is not None and row.completed_at + self.challenge_window <= now
        ]
        refund_candidates = [row.deal_id for row in unstarted if row.deal_id not in pending]
        # Every candidate's on-chain state in one round trip (not one getDeal per deal).
        on_chain = dict(zip(settle_candidates + refund_candidates,
                            self.gateway.get_deals(settle_candidates + refund_candidates), strict=True))
        to_settle = [deal_id for deal_id in settle_candidates if self._settleable(on_chain[deal_id], now)]
        to_refund = [deal_id for deal_id in refund_candidates if self._refundable(on_chain[deal_id], now)]
        with session_scope(self.engine) as session:
            for start in range(0, len(to_settle), self.max_batch_size):
                batch = to_settle[start:start + self.max_batch_size]
                self.sender.enqueue(session, "settle_many", {"deal_ids": batch})
                result.settles_queued += len(batch)
            for deal_id in to_refund:
                self.sender.enqueue(session, "claim_refund", {"deal_id": deal_id})
                result.refunds_queued += 1
        if result.settles_queued or result.refunds_queued:
            log.info("keeper queued %d settlements, %d refunds", result.settles_queued, result.refunds_queued)
        return result

    def _settleable(self, deal: dict[str, Any], now: int) -> bool:
        rule = SettlementRule((deal["flags"] >> 1) & 3)
        return (
            deal["status"] == DealStatus.COMPLETED
            and rule == SettlementRule.CHALLENGE_WINDOW
            and deal["completedAt"] + self.challenge_window <= now
        )

    @staticmethod
    def _refundable(deal: dict[str, Any], now: int) -> bool:
        return deal["status"] == DealStatus.OPEN and now > deal["startDeadline"]

    def _pending_deal_ids(self, session: Session) -> set[int]:
        """Deals an unfinished keeper transaction already covers."""
        pending: set[int] = set()
        rows = session.exec(
            select(ChainTx).where(ChainTx.kind.in_(KEEPER_KINDS), ChainTx.state.in_([TxState.QUEUED, TxState.SIGNED]))
        ).all()
        for tx in rows:
            payload = json.loads(tx.payload)
            pending.update(payload.get("deal_ids", []))
            if "deal_id" in payload:
                pending.add(payload["deal_id"])
        return pending
