"""The sink's last lines of defence (issue 14), against a real PostgreSQL: a deposed leader
cannot halt the chain (``set_halted`` is fenced like every write), and a value asyncpg cannot
encode is bad data that halts after a few tries, never a lost connection retried forever."""

from __future__ import annotations

import asyncpg
import pytest

from indexer import db
from indexer.driver import PERSISTENT_FAULTS
from indexer.errors import DatabaseUnavailable, NotLeader
from indexer.sink import Batch, PostgresSink
from indexer.types import BlockHeader

pytestmark = pytest.mark.pg

CHAIN = 31337
KEY = 0x7273_0000_0000_7A69


async def _checkpoint(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as con:
        await con.execute(
            "INSERT INTO checkpoints (chain_id, block_number, block_hash, start_block) "
            "VALUES ($1, -1, NULL, 0)",
            CHAIN,
        )


async def test_a_deposed_leader_cannot_halt_the_chain(db_dsn: str) -> None:
    """The fence names a backend that no longer holds the writer lock: set_halted raises
    NotLeader and the halt is not written; the holder of the lock can halt."""
    pool = await db.create_pool(db_dsn)
    try:
        await _checkpoint(pool)
        sink = PostgresSink(pool, CHAIN, "local")
        holder = await asyncpg.connect(db_dsn)
        try:
            assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", KEY)
            sink.fence = (holder.get_server_pid() + 100_000, KEY)  # not the holder
            with pytest.raises(NotLeader):
                await sink.set_halted("deep reorg seen by the old leader")
            async with pool.acquire() as con:
                assert await con.fetchval("SELECT halted_reason FROM checkpoints") is None
            sink.fence = (holder.get_server_pid(), KEY)
            await sink.set_halted("real halt")
            async with pool.acquire() as con:
                assert await con.fetchval("SELECT halted_reason FROM checkpoints") == "real halt"
        finally:
            await holder.close()
    finally:
        await pool.close()


async def test_a_value_asyncpg_cannot_encode_is_bad_data_not_connection_loss(
    db_dsn: str,
) -> None:
    """A header number past BIGINT (what the RPC edge now refuses) reaching a commit:
    asyncpg's client-side DataError comes out as itself, not DatabaseUnavailable, and the
    follower counts it as a persistent fault (halt after a few tries, not a retry loop)."""
    pool = await db.create_pool(db_dsn)
    try:
        await _checkpoint(pool)
        sink = PostgresSink(pool, CHAIN, "local")
        head = BlockHeader(2**64, "0x" + "ab" * 32, "0x" + "ac" * 32, 1_700_000_000)
        batch = Batch(
            chain_id=CHAIN,
            from_block=0,
            to_block=0,
            parent=(-1, None),
            head=head,
            headers=[head],
            events=[],
        )
        with pytest.raises(db.CLIENT_DATA_ERRORS) as caught:
            await sink.commit(batch)
        assert not isinstance(caught.value, DatabaseUnavailable)
        assert isinstance(caught.value, PERSISTENT_FAULTS)
        async with pool.acquire() as con:
            assert await con.fetchval("SELECT block_number FROM checkpoints") == -1
    finally:
        await pool.close()
