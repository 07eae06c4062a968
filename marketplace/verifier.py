"""Verifier: re-runs a sample of completed deterministic jobs and signs an EIP-712 attestation
over (dealId, resultHash, passed). Passing settles the deal; failing resolves it against the
provider (refund plus slashed collateral). Deals whose buyer chose the Attestation rule are always
checked; others are sampled at `sample_rate`, chosen by a hash of the deal id so a restart picks
the same sample.
"""

from __future__ import annotations

import json
import logging

from eth_utils import keccak
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from marketplace import jobs
from marketplace.chain.gateway import ChainGateway
from marketplace.chain.sender import TxSender
from marketplace.db.models import DealRow, JobReceiptRow, JobSpecRow
from marketplace.db.session import session_scope
from marketplace.signing import Attestation, DealStatus, SettlementRule

log = logging.getLogger(__name__)


class Verifier:
    def __init__(self, engine: Engine, gateway: ChainGateway, sender: TxSender, private_key: bytes, *,
                 sample_rate: float = 1.0, job_timeout: float = 120.0):
        self.engine = engine
        self.gateway = gateway
        self.sender = sender
        self._key = private_key
        self.sample_rate = sample_rate
        self.job_timeout = job_timeout

    def sampled(self, deal_id: int) -> bool:
        draw = int.from_bytes(keccak(deal_id.to_bytes(32, "big"))[:8], "big") / 2**64
        return draw < self.sample_rate

    def tick(self) -> int:
        """Verify what is due; returns how many attestations were queued."""
        # Completed deals not yet verified whose job spec we hold (else there is nothing to re-run), in
        # one query: a lookup per deal made every loop pass cost ~1 ms per deal awaiting settlement.
        verified = select(JobReceiptRow.deal_id).where(JobReceiptRow.deal_id == DealRow.deal_id).exists()
        with Session(self.engine) as session:
            candidates = session.exec(
                select(DealRow, JobSpecRow).join(JobSpecRow, JobSpecRow.hash == DealRow.job_spec_hash)
                .where(DealRow.status == int(DealStatus.COMPLETED), ~verified).order_by(DealRow.deal_id)
            ).all()
        queued = 0
        chain_deals = self.gateway.get_deals([row.deal_id for row, _ in candidates])  # one round trip
        for (row, spec_row), chain_deal in zip(candidates, chain_deals, strict=True):
            if chain_deal["status"] != DealStatus.COMPLETED:
                continue
            rule = SettlementRule((chain_deal["flags"] >> 1) & 3)
            if rule != SettlementRule.ATTESTATION and not self.sampled(row.deal_id):
                continue
            reported = "0x" + bytes(chain_deal["resultHash"]).hex()
            try:
                expected = jobs.run_isolated(json.loads(spec_row.spec), timeout=self.job_timeout).result_hash
            except (jobs.JobSpecError, RuntimeError) as exc:
                log.warning("deal %s: cannot re-run job: %s", row.deal_id, exc)
                continue
            passed = expected == reported
            signature = Attestation(dealId=row.deal_id, resultHash=reported, passed=passed).sign(
                self._key, self.gateway.chain_id, self.gateway.market.address
            )
            with session_scope(self.engine) as session:
                tx = self.sender.enqueue(session, "settle_with_attestation", {
                    "deal_id": row.deal_id, "result_hash": reported, "passed": passed,
                    "signature": "0x" + signature.hex(),
                })
                session.add(JobReceiptRow(deal_id=row.deal_id, result_hash=reported, expected_hash=expected,
                                          passed=passed, signature="0x" + signature.hex(), tx_id=tx.id))
            log.info("deal %s verified: %s", row.deal_id, "passed" if passed else "FAILED")
            queued += 1
        return queued
