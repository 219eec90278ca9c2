"""The rewards lifecycle, driven by indexed events inside the follower's own transactions.

Statuses. ``rewards``: pending (queued, no batch) → pushed (in a batch) → confirmed | failed.
``reward_batches``: draft (nonce and deadline fixed, not signed) → pending (signed raw
transaction recorded before broadcast) → confirmed | failed; ``reconciled`` is set by the
reconciler's ``--fix``.

Transitions (each in the transaction that commits the events or the rollback, so the queue
never disagrees with the indexed chain):
- a batch whose ``RewardsPushed(nonce)`` is indexed at least ``confirmations`` deep becomes
  confirmed, whoever sent it, its rewards too (with ``confirmed_block``);
- a rollback that removes that event moves the batch back to pending, its rewards to pushed;
- nothing here fails a batch: the absence of an event in our tables proves nothing (the bank
  may not be indexed, a backend may have answered a range incompletely). Failing a batch and
  re-queueing its rewards is the chain judge's decision (``indexer/settlement.py``), taken
  from the bank's ``isNonceUsed`` at a final block past the deadline.
"""

from __future__ import annotations

import structlog

from indexer import metrics
from indexer.db import Conn, Q

log = structlog.get_logger()


async def on_commit(
    con: Conn, chain_id: int, chain: str, *, checkpoint: int, confirmations: int
) -> None:
    """Confirm batches after a batch of events is written (same transaction)."""
    rows = await con.fetch(Q["confirm_batches"], chain_id, checkpoint - confirmations)
    if rows:
        ids = [r["id"] for r in rows]
        await con.execute(Q["confirm_rewards"], ids)
        metrics.REWARD_BATCH_TRANSITIONS.labels(chain, "confirmed").inc(len(ids))
        log.info("batches_confirmed", batches=ids)


async def on_rollback(con: Conn, chain_id: int, chain: str, *, ancestor: int) -> None:
    """Move batches confirmed above the common ancestor back to pending (same transaction)."""
    rows = await con.fetch(Q["unconfirm_batches"], chain_id, ancestor)
    if rows:
        ids = [r["id"] for r in rows]
        await con.execute(Q["unconfirm_rewards"], ids)
        metrics.REWARD_BATCH_TRANSITIONS.labels(chain, "pending").inc(len(ids))
        log.warning("batches_unconfirmed", batches=ids, ancestor=ancestor)
