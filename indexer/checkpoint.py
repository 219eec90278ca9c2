"""Reads of a chain's progress: the checkpoint, stored headers, discovered banks.

Writes go through the sink, inside the batch transaction; this module only reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from indexer.db import Q, quote_ident
from indexer.types import BlockHeader


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Highest committed block (``number`` = start - 1 and ``hash`` None before the first)."""

    number: int
    hash: str | None
    finalized: int | None
    halted_reason: str | None
    start_block: int


class CheckpointStore:
    """Per-chain progress as stored in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, chain_id: int) -> None:
        self.pool = pool
        self.chain_id = chain_id

    async def ensure(self, start_block: int) -> Checkpoint:
        """Create the checkpoint row of a new chain, then load it."""
        async with self.pool.acquire() as con:
            await con.execute(Q["ensure_checkpoint"], self.chain_id, start_block)
        return await self.load()

    async def load(self) -> Checkpoint:
        async with self.pool.acquire() as con:
            row = await con.fetchrow(Q["load_checkpoint"], self.chain_id)
        if row is None:
            raise LookupError(f"no checkpoint for chain {self.chain_id}")
        return Checkpoint(
            number=row["block_number"],
            hash=row["block_hash"],
            finalized=row["finalized_block"],
            halted_reason=row["halted_reason"],
            start_block=row["start_block"],
        )

    async def recent(self, at_or_below: int, k: int) -> list[BlockHeader]:
        """Up to ``k`` stored headers at or below a height, newest first."""
        async with self.pool.acquire() as con:
            rows = await con.fetch(Q["recent_blocks"], self.chain_id, at_or_below, k)
        return [BlockHeader(r["number"], r["hash"], r["parent_hash"], r["timestamp"]) for r in rows]

    async def hash_at(self, number: int) -> str | None:
        async with self.pool.acquire() as con:
            value = await con.fetchval(Q["block_hash_at"], self.chain_id, number)
        return str(value) if value is not None else None

    async def factory_children(
        self, table: str, column: str, factories: list[str], event: str, parameter: str
    ) -> list[tuple[str, int]]:
        """Addresses made by ``factories`` (creation block), oldest first: ``column`` of their
        creation events in ``table``, or, when those events land in ``other_events``, the
        ``parameter`` of their JSON args."""
        if table == "other_events":
            sql = (
                "SELECT args->>$4 AS child, block_number FROM other_events "
                "WHERE chain_id = $1 AND contract = ANY($2) AND event = $3 "
                "ORDER BY block_number, log_index"
            )
            args: tuple[object, ...] = (self.chain_id, factories, event, parameter)
        else:
            sql = (
                f"SELECT {quote_ident(column)} AS child, block_number FROM {quote_ident(table)} "
                "WHERE chain_id = $1 AND contract = ANY($2) ORDER BY block_number, log_index"
            )
            args = (self.chain_id, factories)
        async with self.pool.acquire() as con:
            rows = await con.fetch(sql, *args)
        return [(str(r["child"]), r["block_number"]) for r in rows if r["child"]]
