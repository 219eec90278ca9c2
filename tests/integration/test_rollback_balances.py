"""A rollback takes the deleted reward events off ``reward_balances`` by subtraction (no rescan
of the event tables), against a real PostgreSQL: after rolling back to each height of a
random history of credits, claims and zero-amount events, the balances equal the fold of the
events that remain, rows whose events are all gone (or were all zero) are deleted, and the
balances of the rows kept are exactly those of a database that never saw the rolled-back
blocks."""

from __future__ import annotations

import random
from collections import defaultdict

import asyncpg
import pytest

from indexer import db
from indexer.db import Q
from indexer.sink import PostgresSink

pytestmark = pytest.mark.pg

CHAIN = 31337
MTPP = "0x" + "ab" * 20
TOKENS = ["0x" + "01" * 20, "0x" + "02" * 20]
WALLETS = ["0x" + f"{i:040x}" for i in range(1, 7)]
HASH = "0x" + "11" * 32


async def _events(con: asyncpg.Connection, seed: int, blocks: int) -> None:
    """A random history: per block a few RewardAdded (some of amount 0) and claims, committed
    block by block with the sink's own balance query, as commits do."""
    rng = random.Random(seed)
    await con.execute(
        "INSERT INTO checkpoints (chain_id, block_number, block_hash, start_block) "
        "VALUES ($1, $2, $3, 1)",
        CHAIN,
        blocks,
        HASH,
    )
    credited: dict[tuple[str, str], int] = defaultdict(int)
    for block in range(1, blocks + 1):
        for index in range(rng.randint(0, 4)):
            token, wallet = rng.choice(TOKENS), rng.choice(WALLETS)
            if rng.random() < 0.3 and credited[(token, wallet)] > 0:
                amount = rng.randint(1, credited[(token, wallet)])
                credited[(token, wallet)] -= amount
                await con.execute(
                    "INSERT INTO reward_claimed VALUES ($1, $2, $3, now(), $3, $4, $5, $6, $7, $8)",
                    CHAIN, block, HASH, index, MTPP, token, wallet, amount,
                )  # fmt: skip
            else:
                amount = rng.choice([0, rng.randint(1, 1000)])
                credited[(token, wallet)] += amount
                await con.execute(
                    "INSERT INTO reward_added "
                    "VALUES ($1, $2, $3, now(), $3, $4, $5, $6, $7, $5, $8)",
                    CHAIN, block, HASH, index, MTPP, token, wallet, amount,
                )  # fmt: skip
        await con.fetch(Q["add_balances"], CHAIN, block, block, 101)


async def _balances(con: asyncpg.Connection) -> dict[tuple[str, str], tuple[int, int]]:
    rows = await con.fetch("SELECT token, wallet, added, claimed FROM reward_balances")
    return {(r["token"], r["wallet"]): (int(r["added"]), int(r["claimed"])) for r in rows}


async def _fold(con: asyncpg.Connection) -> dict[tuple[str, str], tuple[int, int]]:
    """The balances from scratch: a row while something was credited or claimed."""
    fold: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for col, table in ((0, "reward_added"), (1, "reward_claimed")):
        for r in await con.fetch(f"SELECT token, wallet, amount FROM {table}"):
            if r["amount"]:
                fold[(r["token"], r["wallet"])][col] += int(r["amount"])
    return {k: (v[0], v[1]) for k, v in fold.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_rollback_subtracts_the_deleted_events_from_the_balances(
    db_dsn: str, seed: int
) -> None:
    blocks = 12
    pool = await db.create_pool(db_dsn)
    try:
        async with pool.acquire() as con:
            await _events(con, seed, blocks)
            assert await _balances(con) == await _fold(con)
        sink = PostgresSink(pool, CHAIN, "local")
        emptied = 0
        for ancestor in range(blocks - 1, -1, -3):
            before = None
            async with pool.acquire() as con:
                before = await _balances(con)
            await sink.rewind_to(
                (ancestor, HASH), kind="rewind", depth=3, old_hash=None, new_hash=None
            )
            async with pool.acquire() as con:
                after = await _balances(con)
                assert after == await _fold(con), f"seed {seed}, rolled back to {ancestor}"
                assert (
                    await con.fetchval(
                        "SELECT count(*) FROM reward_added WHERE block_number > $1", ancestor
                    )
                    == 0
                )
            emptied += len(before.keys() - after.keys())
        assert emptied > 0  # some rows went with their last events
    finally:
        await pool.close()
