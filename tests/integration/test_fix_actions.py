"""Each fix action of ``reconcile --fix`` applied on its own to a real PostgreSQL: the rows it
changes, and the resolution it reports.

``Fixer.apply`` runs one action in an open transaction; the actions that need the node
(``RefetchEvents``, ``RefetchRange``) are applied on a real anvil in
``tests/e2e/test_fix_refetch.py``. No action here talks to a node: the client points at a
closed port, so one that tried would fail the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from indexer.checkpoint import CheckpointStore
from indexer.config import ChainSettings
from indexer.decode import AbiRegistry
from indexer.fixes import (
    Acknowledge,
    FailBatch,
    Finding,
    Fixer,
    FollowBatch,
    RecomputeBalance,
    RecordPush,
    SettleBatch,
    UnsettleBatch,
)
from indexer.rpc import RpcClient
from indexer.settlement import Verdict
from indexer.types import BlockHeader
from indexer.watch import Watchlist

pytestmark = [pytest.mark.pg]

CID = 7
BANK, TOKEN, WALLET = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20
CONTRACT, CAMPAIGN = "0x" + "dd" * 20, "0x" + "ee" * 32
TX, HASH = "0x" + "01" * 32, "0x" + "02" * 32
B = BlockHeader(100, HASH, "0x" + "03" * 32, 5_000)


def _chain() -> ChainSettings:
    return ChainSettings(
        name="t",
        chain_id=CID,
        rpc_urls=("http://127.0.0.1:9",),
        confirmations=0,
        max_reorg_depth=3,
        poll_interval_s=1.0,
        batch_blocks=100,
        finality="depth",
        contracts=(),
        multicall3=None,
    )


Apply = Callable[[Finding, dict[int, Verdict] | None], Awaitable[str | None]]


@pytest.fixture
async def env(db_dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, Apply]]:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    rpc = RpcClient(["http://127.0.0.1:9"], max_attempts=1)
    watch = Watchlist({}, (), AbiRegistry(), CheckpointStore(pool, CID))
    fixer = Fixer(pool, _chain(), rpc, watch, lock_key=1, start_block=0)

    async def apply(f: Finding, judged: dict[int, Verdict] | None = None) -> str | None:
        async with pool.acquire() as con, con.transaction():
            return await fixer.apply(con, f, B, judged or {})

    try:
        yield pool, apply
    finally:
        await rpc.close()
        await pool.close()


async def _batch(con: Any, status: str, nonce: str, **cols: Any) -> int:
    names = ["chain_id", "bank", "campaign_id", "token", "nonce", "status", *cols]
    values = [CID, BANK, CAMPAIGN, TOKEN, nonce, status, *cols.values()]
    marks = ", ".join(f"${i + 1}" for i in range(len(values)))
    sql = f"INSERT INTO reward_batches ({', '.join(names)}) VALUES ({marks}) RETURNING id"
    return int(await con.fetchval(sql, *values))


async def _reward(con: Any, key: str, status: str, batch_id: int | None, **cols: Any) -> int:
    names = ["chain_id", "bank", "campaign_id", "token", "wallet", "amount", "external_key"]
    values: list[Any] = [CID, BANK, CAMPAIGN, TOKEN, WALLET, 10, key]
    names += ["status", "batch_id", *cols]
    values += [status, batch_id, *cols.values()]
    marks = ", ".join(f"${i + 1}" for i in range(len(values)))
    sql = f"INSERT INTO rewards ({', '.join(names)}) VALUES ({marks}) RETURNING id"
    return int(await con.fetchval(sql, *values))


def nonce(n: int) -> str:
    return "0x" + f"{n:064x}"


def finding(fix: Any, kind: str = "status_mismatch", subject: str = "s") -> Finding:
    return Finding(kind, subject, "chain", "db", fix)


async def test_recompute_balance_takes_the_events_sums(
    env: tuple[asyncpg.Pool, Apply],
) -> None:
    pool, apply = env
    async with pool.acquire() as con:
        for i, amount in enumerate((5, 7)):
            await con.execute(
                "INSERT INTO reward_added (chain_id, block_number, block_hash, tx_hash, "
                "log_index, contract, token, wallet, emitter, amount) "
                "VALUES ($1, 10, $2, $3, $4, $5, $6, $7, $8, $9)",
                CID, HASH, TX, i, CONTRACT, TOKEN, WALLET, BANK, amount,
            )  # fmt: skip
        await con.execute(
            "INSERT INTO reward_balances (chain_id, contract, token, wallet, added, claimed) "
            "VALUES ($1, $2, $3, $4, 99, 1)",
            CID, CONTRACT, TOKEN, WALLET,
        )  # fmt: skip
    action = await apply(finding(RecomputeBalance(CONTRACT, TOKEN, WALLET, events_wrong=False)))
    assert action == "fixed: reward_balances recomputed from events"
    row = await pool.fetchrow("SELECT added, claimed, pending FROM reward_balances")
    assert (row["added"], row["claimed"], row["pending"]) == (12, 0, 12)


async def test_settle_batch_reconciles_it_and_confirms_its_rewards(
    env: tuple[asyncpg.Pool, Apply],
) -> None:
    pool, apply = env
    async with pool.acquire() as con:
        bid = await _batch(con, "failed", nonce(1), error="expired")
        rid = await _reward(con, "k1", "pushed", bid)
        requeued = await _reward(con, "k2", "pending", None, error=f"requeued: batch {bid} expired")
        other = await _reward(con, "k3", "pending", None)
    action = await apply(finding(SettleBatch(bid, 90, TX)))
    assert action == "fixed: batch reconciled, RewardsPushed at block 90"
    batch = await pool.fetchrow("SELECT * FROM reward_batches WHERE id = $1", bid)
    assert (batch["status"], batch["block_number"], batch["tx_hash"], batch["error"]) == (
        "reconciled", 90, TX, None,
    )  # fmt: skip
    rows = {r["id"]: r for r in await pool.fetch("SELECT * FROM rewards")}
    assert [(rows[i]["status"], rows[i]["batch_id"]) for i in (rid, requeued)] == [
        ("confirmed", bid),
        ("confirmed", bid),  # requeued when the batch was wrongly failed: back to it
    ]
    assert rows[rid]["confirmed_block"] == 90
    assert (rows[other]["status"], rows[other]["batch_id"]) == ("pending", None)


async def test_unsettle_batch_before_its_deadline_puts_it_back_in_flight(
    env: tuple[asyncpg.Pool, Apply],
) -> None:
    pool, apply = env
    async with pool.acquire() as con:
        bid = await _batch(con, "confirmed", nonce(2), block_number=80, deadline=B.timestamp + 1)
        rid = await _reward(con, "k1", "confirmed", bid, confirmed_block=80)
    action = await apply(finding(UnsettleBatch(bid, B.timestamp + 1), "missing_on_chain"))
    assert action == "fixed: no RewardsPushed on chain: batch pending, rewards pushed"
    batch = await pool.fetchrow("SELECT status, block_number, error FROM reward_batches")
    assert (batch["status"], batch["block_number"]) == ("pending", None)
    assert batch["error"] == f"reconcile: no RewardsPushed at or below block {B.number}"
    reward = await pool.fetchrow("SELECT status, confirmed_block FROM rewards WHERE id = $1", rid)
    assert (reward["status"], reward["confirmed_block"]) == ("pushed", None)


async def test_unsettle_and_fail_past_the_deadline_are_the_chain_judges(
    env: tuple[asyncpg.Pool, Apply],
) -> None:
    """Past its deadline a batch is failed or confirmed only by the judge's verdict (read from
    the bank at a final block); with no verdict nothing changes and the row stays open."""
    pool, apply = env
    async with pool.acquire() as con:
        bid = await _batch(con, "confirmed", nonce(3), block_number=80, deadline=B.timestamp - 1)
        pid = await _batch(con, "pending", nonce(4), deadline=B.timestamp - 1)
    unsettle = finding(UnsettleBatch(bid, B.timestamp - 1), "missing_on_chain")
    assert await apply(unsettle) is None
    assert await apply(finding(FailBatch(pid))) is None
    assert await apply(finding(FailBatch(pid)), {pid: Verdict(pid, "waiting", "not final")}) is None
    statuses = [
        r["status"] for r in await pool.fetch("SELECT status FROM reward_batches ORDER BY id")
    ]
    assert statuses == ["confirmed", "pending"]  # untouched: the judge did not decide
    failed = Verdict(pid, "failed", "nonce unused at block 100")
    assert await apply(finding(FailBatch(pid)), {pid: failed}) == (
        "fixed by the chain judge: failed (nonce unused at block 100)"
    )


async def test_record_push_records_a_batch_made_outside_the_database(
    env: tuple[asyncpg.Pool, Apply],
) -> None:
    pool, apply = env
    event = {
        "contract": BANK,
        "campaign_id": CAMPAIGN,
        "token": TOKEN,
        "nonce": nonce(5),
        "tx_hash": TX,
        "block_number": 70,
        "count": 3,
        "total_amount": 30,
    }
    action = await apply(finding(RecordPush(event), "missing_in_db"))
    assert action == "fixed: batch recorded as reconciled (RewardsPushed at block 70)"
    assert await apply(finding(RecordPush(event), "missing_in_db")) is not None  # idempotent
    rows = await pool.fetch("SELECT * FROM reward_batches")
    assert len(rows) == 1
    r = rows[0]
    assert (r["status"], r["evidence"], r["block_number"], r["reward_count"]) == (
        "reconciled", "reconciler", 70, 3,
    )  # fmt: skip
    assert (r["nonce"], r["tx_hash"], r["total_amount"]) == (nonce(5), TX, 30)


@pytest.mark.parametrize(
    ("batch_status", "reward_status", "keeps_batch"),
    [("pending", "pushed", True), ("failed", "pending", False)],
)
async def test_follow_batch_gives_a_reward_its_batchs_state(
    env: tuple[asyncpg.Pool, Apply], batch_status: str, reward_status: str, keeps_batch: bool
) -> None:
    pool, apply = env
    async with pool.acquire() as con:
        bid = await _batch(con, batch_status, nonce(6))
        rid = await _reward(con, "k1", "confirmed", bid, confirmed_block=50)
    assert await apply(finding(FollowBatch(rid))) == "fixed: reward status follows its batch"
    r = await pool.fetchrow("SELECT status, batch_id, confirmed_block FROM rewards")
    assert (r["status"], r["batch_id"], r["confirmed_block"]) == (
        reward_status, bid if keeps_batch else None, None,
    )  # fmt: skip


async def test_acknowledge_closes_the_direct_credit_with_its_reason(
    env: tuple[asyncpg.Pool, Apply],
) -> None:
    pool, apply = env
    subject = f"direct:{CID}:{TX}:{WALLET}:{TOKEN}"
    async with pool.acquire() as con:
        for s in (subject, "other"):
            await con.execute(
                "INSERT INTO discrepancies (chain_id, kind, subject) "
                "VALUES ($1, 'missing_in_db', $2)",
                CID, s,
            )  # fmt: skip
    action = await apply(finding(Acknowledge(WALLET), "missing_in_db", subject))
    assert action == f"acknowledged: credited directly by pusher {WALLET}, no batch to record"
    rows = await pool.fetch("SELECT subject, resolution FROM discrepancies ORDER BY id")
    assert [(r["subject"], r["resolution"]) for r in rows] == [(subject, action), ("other", None)]


def test_the_tests_above_cover_every_database_action() -> None:
    """A new fix action needs its own direct test here (or, if it needs the node, in
    tests/e2e/test_fix_refetch.py)."""
    from indexer import fixes  # noqa: PLC0415

    covered = {
        RecomputeBalance, SettleBatch, UnsettleBatch, FailBatch, RecordPush, FollowBatch,
        Acknowledge, fixes.RefetchEvents, fixes.RefetchRange,
    }  # fmt: skip
    assert set(fixes.Fix.__args__) == covered  # type: ignore[attr-defined]
