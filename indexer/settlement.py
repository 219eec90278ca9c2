"""The chain judge: whether a batch was paid is read from the bank itself, never inferred
from the absence of a row in our tables (P4).

A batch is settled only from the contract's own state at a FINAL block F (the node's
``finalized`` block with ``finality = "tag"``, else head - ``max_reorg_depth``), read through the
one RPC client with every call pinned to F's hash:

- ``isNonceUsed(nonce)`` false at F and the batch's deadline below F's timestamp: no later block
  can accept it (the bank checks ``block.timestamp <= deadline`` and block times only grow), so
  the batch **fails** and its rewards go back to the queue, to be batched under a new nonce;
- ``isNonceUsed(nonce)`` true at F: the batch's ``RewardsPushed`` is looked up on chain
  (``eth_getLogs`` on the bank, filtered by the nonce topic, from the block the batch was made
  at). When its campaign, token, count and total are the batch's own, the batch is **confirmed
  from the chain** (``evidence = 'chain'``, block and transaction of the log); if our tables
  lack that event a ``missing_in_db`` discrepancy tells the operator the index is incomplete.
  When they differ, someone else's batch used that nonce: ours can never land, so it fails and
  its rewards are re-queued, and a ``nonce_collision`` discrepancy is recorded (already
  resolved: the action is taken). When no log is found (a node that pruned its logs), nothing
  changes: never paid twice, the operator is told by a warning and a metric;
- otherwise (unused, deadline not passed at F) the batch waits.

Candidates are open batches (draft, pending) whose deadline is below F's time, whose receipt
was mined at or below F, or whose last attempt was refused with ``NonceAlreadyUsed``; the
reconciler hands over the batches it wants failed or unsettled. RPC calls run outside any
database transaction; each verdict is one short transaction guarded by the batch's status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg
import structlog
from eth_utils.crypto import keccak

from indexer import metrics
from indexer.config import ChainSettings
from indexer.db import Conn, Q
from indexer.rpc import RpcClient
from indexer.types import BlockHeader, RawLog

log = structlog.get_logger()

IS_NONCE_USED: Final = keccak(text="isNonceUsed(bytes32)")[:4]
REWARDS_PUSHED: Final = (
    "0x" + keccak(text="RewardsPushed(bytes32,address,bytes32,uint256,uint256)").hex()
)
BATCHES_PER_ROUND: Final = 200


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the chain said about one batch, and what was done."""

    batch_id: int
    verdict: str  # confirmed | failed | collision | waiting | no_log
    detail: str


def batch_subject(chain_id: int, bank: str, nonce: str) -> str:
    """The discrepancy subject of a batch (the reconciler uses the same one)."""
    return f"batch:{chain_id}:{bank}:{nonce}"


class Judge:
    """Settles the open batches of one chain from the banks' own state at a final block."""

    def __init__(self, pool: asyncpg.Pool, rpc: RpcClient, chain: ChainSettings) -> None:
        self.pool = pool
        self.rpc = rpc
        self.chain = chain

    async def final_header(self) -> BlockHeader | None:
        """The block whose state counts as final (None before the chain is that long)."""
        if self.chain.finality == "tag":
            tagged = await self.rpc.header("finalized")
            if tagged is not None:
                return tagged
        head = await self.rpc.block_number()
        number = head - self.chain.max_reorg_depth
        return await self.rpc.header(number) if number >= 0 else None

    async def settle_due(self) -> list[Verdict]:
        """Judge every open batch that may be settled now."""
        final = await self.final_header()
        if final is None:
            return []
        async with self.pool.acquire() as con:
            rows = await con.fetch(
                Q["judge_candidates"],
                self.chain.chain_id,
                final.timestamp,
                final.number,
                BATCHES_PER_ROUND,
            )
        return await self._judge(rows, final)

    async def settle(self, batch_ids: Sequence[int]) -> dict[int, Verdict]:
        """Judge the given batches whatever their status (the reconciler's requests)."""
        final = await self.final_header()
        if final is None or not batch_ids:
            return {}
        async with self.pool.acquire() as con:
            rows = await con.fetch(Q["judge_batches"], list(batch_ids))
        rows = [r for r in rows if r["status"] != "failed"]  # re-queued: the reconciler's call
        return {v.batch_id: v for v in await self._judge(rows, final)}

    async def _judge(self, rows: Sequence[asyncpg.Record], final: BlockHeader) -> list[Verdict]:
        out = []
        for row in rows:
            verdict = await self._judge_one(row, final)
            metrics.JUDGE_VERDICTS.labels(self.chain.name, verdict.verdict).inc()
            if verdict.verdict != "waiting":
                log.info(
                    "batch_judged",
                    chain=self.chain.name,
                    batch=verdict.batch_id,
                    verdict=verdict.verdict,
                    detail=verdict.detail,
                    final_block=final.number,
                )
            out.append(verdict)
        expired = [v.batch_id for v in out if v.verdict in ("failed", "collision")]
        if expired:
            log.warning("batches_expired", chain=self.chain.name, batches=expired)
        return out

    async def _judge_one(self, row: asyncpg.Record, final: BlockHeader) -> Verdict:
        bid, bank, nonce = int(row["id"]), str(row["bank"]), str(row["nonce"])
        out = await self.rpc.eth_call(bank, IS_NONCE_USED + bytes.fromhex(nonce[2:]), final.hash)
        used = len(out) >= 32 and int.from_bytes(out[-32:], "big") == 1
        if not used:
            if row["deadline"] is None or int(row["deadline"]) >= final.timestamp:
                return Verdict(bid, "waiting", "nonce unused, deadline not passed at a final block")
            detail = (
                f"nonce unused at final block {final.number} (time {final.timestamp}), "
                f"deadline {row['deadline']} passed"
            )
            done = await self._fail(bid, detail, None)
            return Verdict(bid, "failed" if done else "waiting", detail)
        first = int(row["created_block"]) if row["created_block"] is not None else 0
        logs = await self.rpc.find_logs(
            bank, [REWARDS_PUSHED, None, None, nonce], first, final.number
        )
        if not logs and first > 0:  # created_block is a hint; a wider look costs one call
            logs = await self.rpc.find_logs(bank, [REWARDS_PUSHED, None, None, nonce], 0, first)
        if not logs:
            log.warning(
                "batch_nonce_used_without_log",
                chain=self.chain.name,
                batch=bid,
                nonce=nonce,
                final_block=final.number,
            )
            return Verdict(
                bid, "no_log", f"nonce used at block {final.number}, no RewardsPushed found"
            )
        event = logs[0]
        mismatch = _mismatch(row, event)
        if mismatch:
            detail = (
                f"RewardsPushed of nonce {nonce} at block {event.block_number} "
                f"is another batch: {mismatch}"
            )
            done = await self._fail(bid, detail, (event, mismatch))
            return Verdict(bid, "collision" if done else "waiting", detail)
        detail = f"RewardsPushed at block {event.block_number} (tx {event.tx_hash}), final"
        done = await self._confirm(row, event, final)
        return Verdict(bid, "confirmed" if done else "waiting", detail)

    async def _fail(self, bid: int, detail: str, collision: tuple[RawLog, str] | None) -> bool:
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(Q["judge_fail"], bid, detail)
            if row is None:
                return False
            await con.execute(Q["judge_requeue"], bid)
            if collision is not None:
                event, mismatch = collision
                await _discrepancy(
                    con,
                    self.chain.chain_id,
                    kind="nonce_collision",
                    subject=batch_subject(self.chain.chain_id, row["bank"], row["nonce"]),
                    expected="a RewardsPushed with this batch's campaign, token, count and total",
                    actual=mismatch,
                    block=event.block_number,
                    resolution="fixed: batch failed, rewards requeued under a new nonce",
                )
        metrics.REWARD_BATCH_TRANSITIONS.labels(self.chain.name, "failed").inc()
        return True

    async def _confirm(self, row: asyncpg.Record, event: RawLog, final: BlockHeader) -> bool:
        cid = self.chain.chain_id
        async with self.pool.acquire() as con, con.transaction():
            done = await con.fetchval(
                Q["judge_confirm"], row["id"], event.block_number, event.tx_hash
            )
            if done is None:
                return False
            await con.execute(Q["confirm_rewards"], [row["id"]])
            indexed = await con.fetchval(Q["judge_indexed"], cid, row["bank"], row["nonce"])
            if not indexed:
                await _discrepancy(
                    con,
                    cid,
                    kind="missing_in_db",
                    subject=batch_subject(cid, row["bank"], row["nonce"]),
                    expected=f"RewardsPushed at block {event.block_number} (tx {event.tx_hash})",
                    actual="event not in the indexed tables: batch confirmed from the chain",
                    block=final.number,
                )
        metrics.REWARD_BATCH_TRANSITIONS.labels(self.chain.name, "confirmed").inc()
        return True


def _mismatch(row: asyncpg.Record, event: RawLog) -> str:
    """How ``event`` differs from the batch (empty when it is the batch's own payment)."""
    problems = []
    if len(event.topics) != 4 or len(event.data) != 2 + 128:
        return "malformed RewardsPushed"
    campaign, token = event.topics[1], "0x" + event.topics[2][-40:]
    total, count = int(event.data[2:66], 16), int(event.data[66:130], 16)
    if campaign != row["campaign_id"]:
        problems.append(f"campaign {campaign}")
    if token != row["token"]:
        problems.append(f"token {token}")
    if count != int(row["n"]):
        problems.append(f"count {count} (batch {row['n']})")
    if total != int(row["total"] or 0):
        problems.append(f"total {total} (batch {row['total']})")
    return ", ".join(problems)


async def _discrepancy(  # noqa: PLR0913 (the columns of a discrepancy row, keyword-only)
    con: Conn,
    chain_id: int,
    *,
    kind: str,
    subject: str,
    expected: str,
    actual: str,
    block: int,
    resolution: str | None = None,
) -> None:
    """One open row per (chain, kind, subject), or a row closed at once with ``resolution``."""
    await con.execute(
        Q["judge_discrepancy"], chain_id, kind, subject, expected, actual, block, resolution
    )
