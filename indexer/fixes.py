"""What ``reconcile --fix`` does about each finding: one typed action per kind of fix, and the
fixer that applies them ("the chain wins").

Events missing from the tables are fetched first (RPC outside any transaction); batches a fix
would fail go to the chain judge (only the bank's ``isNonceUsed`` at a final block may fail a
batch, P4); then every change is made in ONE transaction holding the checkpoint row, so the
follower's commits and rollbacks wait for it rather than interleave.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from indexer.config import ChainSettings
from indexer.crosscheck import refetch as refetch_range
from indexer.db import Conn, Q
from indexer.rpc import RpcClient
from indexer.settlement import Judge, Verdict
from indexer.sink import rebuild_balances
from indexer.types import BlockHeader
from indexer.verify import expected_rows, insert_rows, stored_rows, table_columns
from indexer.watch import Watchlist

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class RecomputeBalance:
    """reward_balances of one (contract, token, wallet) recomputed from the events (after
    refetching the contract's missing events when the events themselves disagree)."""

    contract: str
    token: str
    wallet: str
    events_wrong: bool


@dataclass(frozen=True, slots=True)
class RefetchEvents:
    """The contract's events at or below B that no table holds, fetched and inserted."""

    contract: str


@dataclass(frozen=True, slots=True)
class RefetchRange:
    """A final range fetched again and repaired (``range_incomplete``)."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class SettleBatch:
    """The batch is reconciled at its RewardsPushed's block, its rewards confirmed."""

    batch_id: int
    block: int
    tx_hash: str


@dataclass(frozen=True, slots=True)
class UnsettleBatch:
    """No RewardsPushed on chain: pending again, unless its deadline passed (the judge)."""

    batch_id: int
    deadline: int | None


@dataclass(frozen=True, slots=True)
class FailBatch:
    """Left to the chain judge: failed and re-queued only if the nonce is unused at F."""

    batch_id: int


@dataclass(frozen=True, slots=True)
class RecordPush:
    """A RewardsPushed made outside this database, recorded as a reconciled batch."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FollowBatch:
    """A confirmed reward whose batch is not: the reward's status follows its batch."""

    reward_id: int


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """Credited straight through MultiTokenPushPull by a pusher that is no bank: noted."""

    emitter: str


Fix = (
    RecomputeBalance
    | RefetchEvents
    | RefetchRange
    | SettleBatch
    | UnsettleBatch
    | FailBatch
    | RecordPush
    | FollowBatch
    | Acknowledge
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One disagreement; ``fix`` says what ``--fix`` would do about it (None: nothing)."""

    kind: str
    subject: str
    expected: str  # what the chain says
    actual: str  # what the database says
    fix: Fix | None = None


class Fixer:
    """Applies findings' fixes for one chain at block B (see the module docstring)."""

    def __init__(  # noqa: PLR0913 (the chain context; the rest keyword-only)
        self,
        pool: asyncpg.Pool,
        chain: ChainSettings,
        rpc: RpcClient,
        watch: Watchlist,
        *,
        lock_key: int,
        start_block: int,
    ) -> None:
        self.pool = pool
        self.chain = chain
        self.rpc = rpc
        self.watch = watch
        self.lock_key = lock_key
        self.start_block = start_block

    async def fix(self, findings: Sequence[Finding], header: BlockHeader) -> dict[str, str]:
        """Make the database agree with the chain at B; returns subject -> action taken."""
        refetch: dict[str, list[str]] = defaultdict(list)
        for f in findings:
            if isinstance(f.fix, RefetchEvents) or (
                isinstance(f.fix, RecomputeBalance) and f.fix.events_wrong
            ):
                refetch[f.fix.contract].append(f.subject)
        missing = {a: await self.missing_rows(a, header.number) for a in sorted(refetch)}
        judged = await self._judge(findings, header)
        actions: dict[str, str] = {}
        async with self.pool.acquire() as con, con.transaction():
            await con.execute(Q["rc_lock"], self.lock_key)
            await con.fetchrow(Q["lock_checkpoint"], self.chain.chain_id)
            columns = table_columns(self.watch.registry)
            for address, rows in missing.items():  # rows that differ stay for verify
                n = await insert_rows(con, self.chain.chain_id, rows, columns)
                if n:
                    log.warning("reconcile_refetched", chain=self.chain.name, inserted=n)
                for s in refetch[address]:
                    actions[s] = f"fixed: {n} missing event(s) of {address} refetched"
            for f in findings:
                action = await self.apply(con, f, header, judged)
                if action is not None:
                    actions[f.subject] = action
        log.info("reconcile_fixed", chain=self.chain.name, actions=len(actions))
        return actions

    async def _judge(self, findings: Sequence[Finding], header: BlockHeader) -> dict[int, Verdict]:
        """Batches a fix would fail (or unsettle past their deadline) go to the chain judge."""
        ids = [
            f.fix.batch_id
            for f in findings
            if isinstance(f.fix, FailBatch)
            or (
                isinstance(f.fix, UnsettleBatch)
                and f.fix.deadline is not None
                and f.fix.deadline < header.timestamp
            )
        ]
        if not ids:
            return {}
        return await Judge(self.pool, self.rpc, self.chain).settle(ids)

    async def apply(  # noqa: PLR0911 (one return per kind of fix)
        self, con: Conn, f: Finding, header: BlockHeader, judged: dict[int, Verdict]
    ) -> str | None:
        """Apply ``f``'s fix in the open transaction ``con``; the resolution, or None when
        nothing was done (the discrepancy stays open)."""
        chain_id = self.chain.chain_id
        fix = f.fix
        if isinstance(fix, RecomputeBalance):
            await rebuild_balances(con, chain_id, [(fix.contract, fix.token, fix.wallet)])
            return "fixed: reward_balances recomputed from events" + (
                " after refetching the missing events" if fix.events_wrong else ""
            )
        if isinstance(fix, SettleBatch):
            await con.execute(Q["rc_settle_batch"], fix.batch_id, fix.block, fix.tx_hash)
            await con.execute(Q["rc_confirm_batch_rewards"], fix.batch_id, fix.block)
            return f"fixed: batch reconciled, RewardsPushed at block {fix.block}"
        if isinstance(fix, UnsettleBatch):
            if fix.deadline is not None and fix.deadline < header.timestamp:
                return judged_resolution(judged.get(fix.batch_id))
            await con.execute(Q["rc_unsettle_batch"], fix.batch_id, header.number)
            await con.execute(Q["rc_unconfirm_batch_rewards"], fix.batch_id)
            return "fixed: no RewardsPushed on chain: batch pending, rewards pushed"
        if isinstance(fix, FailBatch):
            return judged_resolution(judged.get(fix.batch_id))
        if isinstance(fix, RecordPush):
            e = fix.event
            await con.execute(
                Q["rc_record_push"],
                chain_id,
                e["contract"],
                e["campaign_id"],
                e["token"],
                e["nonce"],
                e["tx_hash"],
                e["block_number"],
                int(e["count"]),
                e["total_amount"],
            )
            return (
                f"fixed: batch recorded as reconciled (RewardsPushed at block {e['block_number']})"
            )
        if isinstance(fix, FollowBatch):
            await con.execute(Q["rc_reward_follow_batch"], fix.reward_id)
            return "fixed: reward status follows its batch"
        if isinstance(fix, Acknowledge):
            resolution = (
                f"acknowledged: credited directly by pusher {fix.emitter}, no batch to record"
            )
            for row in await con.fetch(Q["rc_open"], chain_id):
                if (row["kind"], row["subject"]) == (f.kind, f.subject):
                    await con.execute(Q["rc_resolve"], row["id"], resolution)
            return resolution
        return None  # RefetchEvents: done above; RefetchRange: by every run, before fixes

    async def refetch_ranges(self, findings: Sequence[Finding]) -> dict[str, str]:
        """Each ``RefetchRange`` fetched again through the chain's client and repaired (every
        run does this, fix or not: it is the chain's own data)."""
        actions: dict[str, str] = {}
        for f in findings:
            if not isinstance(f.fix, RefetchRange):
                continue
            changed = await refetch_range(
                self.pool,
                self.rpc,
                self.chain,
                self.watch.registry,
                (f.fix.first, f.fix.last),
                addresses=self.watch.addresses(),
            )
            actions[f.subject] = "fixed: range fetched again" if changed else "refetched"
        return actions

    async def missing_rows(self, address: str, last: int) -> list[tuple[str, tuple[Any, ...]]]:
        """Canonical rows of ``address``'s events at or below ``last`` that no table holds at
        their chain position (refetched from the node; ``last`` is final, so they stay)."""
        first = self.start_block
        await self.watch.ensure_loaded()
        registry = self.watch.registry
        columns = table_columns(registry)
        expected, _ = await expected_rows(
            rpc=self.rpc,
            registry=registry,
            chain_id=self.chain.chain_id,
            first=first,
            last=last,
            addresses=[address],
        )
        stored = await stored_rows(self.pool, self.chain.chain_id, first, last, columns)
        return [
            (table, row)
            for key, (table, row) in sorted(expected.items())
            if key not in stored and table in columns
        ]


def judged_resolution(verdict: Verdict | None) -> str | None:
    """The resolution of a fix the chain judge decided (None: it waits, the row stays open)."""
    if verdict is None or verdict.verdict in ("waiting", "no_log"):
        return None
    return f"fixed by the chain judge: {verdict.verdict} ({verdict.detail})"
