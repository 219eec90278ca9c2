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
- a batch whose deadline is below the time of a finalized block and whose event is nowhere
  in the indexed chain can never land (the contract checks ``block.timestamp <= deadline``):
  it fails and its rewards return to pending, to be batched again under a new nonce (P4).
"""

from __future__ import annotations

import structlog

from indexer import metrics
from indexer.db import Conn, Q

log = structlog.get_logger()


async def on_commit(
    con: Conn, chain_id: int, chain: str, *, checkpoint: int, confirmations: int, finalized: int
) -> None:
    """Confirm and expire batches after a batch of events is written (same transaction)."""
    rows = await con.fetch(Q["confirm_batches"], chain_id, checkpoint - confirmations)
    if rows:
        ids = [r["id"] for r in rows]
        await con.execute(Q["confirm_rewards"], ids)
        metrics.REWARD_BATCH_TRANSITIONS.labels(chain, "confirmed").inc(len(ids))
        log.info("batches_confirmed", batches=ids)
    if finalized < 0 or checkpoint < finalized:
        return  # absence of an event is only known up to what is indexed
    final_time = await con.fetchval(Q["finalized_time"], chain_id, finalized)
    if final_time is None:
        return
    expired = await con.fetch(Q["expire_batches"], chain_id, final_time, finalized)
    if expired:
        ids = [r["id"] for r in expired]
        await con.execute(Q["requeue_rewards"], ids)
        metrics.REWARD_BATCH_TRANSITIONS.labels(chain, "failed").inc(len(ids))
        log.warning("batches_expired", batches=ids, finalized=finalized)


async def on_rollback(con: Conn, chain_id: int, chain: str, *, ancestor: int) -> None:
    """Move batches confirmed above the common ancestor back to pending (same transaction)."""
    rows = await con.fetch(Q["unconfirm_batches"], chain_id, ancestor)
    if rows:
        ids = [r["id"] for r in rows]
        await con.execute(Q["unconfirm_rewards"], ids)
        metrics.REWARD_BATCH_TRANSITIONS.labels(chain, "pending").inc(len(ids))
        log.warning("batches_unconfirmed", batches=ids, ancestor=ancestor)
