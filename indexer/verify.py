"""Verification of stored data against the node: refetch a range, compare event by event.

The canonical logs of ``[first, last]`` are fetched and decoded by the same path as the
follower, turned into table rows, and compared with the stored rows by chain position. The
stored block hashes of the range are compared with the node's too. ``verify`` reports;
``repair_range`` (``indexer verify --repair``) makes the database equal to the node over the
range: missing rows inserted, phantom rows deleted, changed rows replaced, wrong stored
headers (and the checkpoint hash) rewritten, and the reward balances of every touched key
rebuilt from the events, all in one transaction under the checkpoint row lock, so that it
cannot interleave with the follower's commits. Only ``[first, min(last, checkpoint)]`` is
repaired, and nothing when the checkpoint moved while the node was being read (run again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from indexer.catalogue import BASE_COLUMNS
from indexer.db import Conn, Q, quote_ident
from indexer.decode import EVENT_TABLE_NAMES, AbiRegistry, Event
from indexer.errors import Retryable
from indexer.rpc import RpcClient
from indexer.sink import (
    BALANCE_TABLES,
    QUARANTINE_COLUMNS,
    event_row,
    quarantine_row,
    rebuild_balances,
)
from indexer.types import BlockHeader


@dataclass(slots=True)
class Diff:
    """Differences between the database and the node over a range."""

    missing: list[tuple[str, int, int]] = field(default_factory=list)  # (table, block, index)
    phantom: list[tuple[str, int, int]] = field(default_factory=list)
    changed: list[tuple[str, int, int]] = field(default_factory=list)
    hashes: list[tuple[int, str, str]] = field(default_factory=list)  # (block, ours, node's)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.phantom or self.changed or self.hashes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "missing": [list(x) for x in self.missing],
            "phantom": [list(x) for x in self.phantom],
            "changed": [list(x) for x in self.changed],
            "hashes": [list(x) for x in self.hashes],
        }


def _norm(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, str) and value.startswith("{"):
        return orjson.loads(value)
    return value


async def expected_rows(  # noqa: PLR0913 (keyword-only: the chain context and the range)
    *,
    rpc: RpcClient,
    registry: AbiRegistry,
    chain_id: int,
    first: int,
    last: int,
    addresses: list[str],
) -> tuple[dict[tuple[int, int], tuple[str, tuple[Any, ...]]], dict[int, BlockHeader]]:
    """Canonical rows of the range keyed by (block, log index), and the headers used."""
    logs = await rpc.get_logs(first, last, addresses)
    headers = await rpc.headers(sorted({lg.block_number for lg in logs})) if logs else {}
    out: dict[tuple[int, int], tuple[str, tuple[Any, ...]]] = {}
    for lg in logs:
        decoded = registry.decode(lg)
        header = headers.get(lg.block_number)
        if isinstance(decoded, Event):
            out[lg.key] = (decoded.spec.table, event_row(chain_id, decoded, header))
        else:
            out[lg.key] = ("quarantine", quarantine_row(chain_id, decoded, header))
    return out, headers


async def stored_rows(
    pool: asyncpg.Pool, chain_id: int, first: int, last: int, columns: dict[str, tuple[str, ...]]
) -> dict[tuple[int, int], tuple[str, tuple[Any, ...]]]:
    """Stored rows of the range in every event table, keyed by (block, log index)."""
    out: dict[tuple[int, int], tuple[str, tuple[Any, ...]]] = {}
    async with pool.acquire() as con:
        for table in EVENT_TABLE_NAMES:
            cols = columns.get(table)
            if cols is None:
                names = await con.fetch(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = $1 ORDER BY ordinal_position",
                    table,
                )
                cols = tuple(r["column_name"] for r in names)
            select = ", ".join(quote_ident(c) for c in cols)
            rows = await con.fetch(
                f"SELECT {select} FROM {quote_ident(table)} "
                "WHERE chain_id = $1 AND block_number BETWEEN $2 AND $3",
                chain_id,
                first,
                last,
            )
            for r in rows:
                out[(r["block_number"], r["log_index"])] = (table, tuple(r.values()))
    return out


async def verify_range(  # noqa: PLR0913 (keyword-only: the chain context and the range)
    *,
    pool: asyncpg.Pool,
    rpc: RpcClient,
    registry: AbiRegistry,
    chain_id: int,
    first: int,
    last: int,
    addresses: list[str],
    table_columns: dict[str, tuple[str, ...]],
) -> Diff:
    """Compare stored events and block hashes of ``[first, last]`` with the node."""
    expected, _headers = await expected_rows(
        rpc=rpc, registry=registry, chain_id=chain_id, first=first, last=last, addresses=addresses
    )
    columns = {**table_columns, "quarantine": QUARANTINE_COLUMNS}
    stored = await stored_rows(pool, chain_id, first, last, columns)
    diff = Diff()
    for key, (table, row) in sorted(expected.items()):
        got = stored.get(key)
        if got is None:
            diff.missing.append((table, *key))
        elif got[0] != table or tuple(map(_norm, got[1])) != tuple(map(_norm, row)):
            diff.changed.append((table, *key))
    for key, (table, _row) in sorted(stored.items()):
        if key not in expected:
            diff.phantom.append((table, *key))
    async with pool.acquire() as con:
        ours = await con.fetch(
            "SELECT number, hash FROM blocks WHERE chain_id = $1 AND number BETWEEN $2 AND $3",
            chain_id,
            first,
            last,
        )
    if ours:
        node = await rpc.headers([r["number"] for r in ours])
        for r in ours:
            if node[r["number"]].hash != r["hash"]:
                diff.hashes.append((r["number"], r["hash"], node[r["number"]].hash))
    return diff


def table_columns(registry: AbiRegistry) -> dict[str, tuple[str, ...]]:
    """Column lists (base + event columns) of every table the registry's events go to."""
    out: dict[str, tuple[str, ...]] = {}
    for spec in registry.specs():
        out.setdefault(spec.table, (*BASE_COLUMNS, *spec.columns))
    return out


class RepairRaced(Retryable):
    """The checkpoint moved while verify --repair read the node; nothing was changed."""


async def insert_rows(
    con: Conn,
    chain_id: int,
    rows: Sequence[tuple[str, tuple[Any, ...]]],
    columns: Mapping[str, tuple[str, ...]],
    *,
    touched: set[tuple[str, str, str]] | None = None,
) -> int:
    """Insert rows refetched from the node (``expected_rows``: (table, row)) and rebuild the
    balances they touch: the one write path of events outside the follower's commit (verify
    --repair, reconcile --fix), inside the caller's transaction. A stored row at the same
    position is never changed (a repair deletes it first). With ``touched``, the balance keys
    are added to it and the caller rebuilds them, once with its own. Returns rows inserted."""
    keys: set[tuple[str, str, str]] = set() if touched is None else touched
    inserted = 0
    for table, row in rows:
        cols = columns[table]
        names = ", ".join(quote_ident(c) for c in cols)
        params = ", ".join(f"${i + 1}" for i in range(len(cols)))
        status = await con.execute(
            f"INSERT INTO {quote_ident(table)} ({names}) VALUES ({params}) ON CONFLICT DO NOTHING",
            *row,
        )
        n = int(status.split()[-1])  # "INSERT 0 n"
        inserted += n
        if n and table in BALANCE_TABLES:
            values = dict(zip(cols, row, strict=True))
            keys.add((values["contract"], values["token"], values["wallet"]))
    if touched is None:
        await rebuild_balances(con, chain_id, keys)
    return inserted


async def repair_range(  # noqa: PLR0913 (keyword-only: the chain context, the range and the mode)
    *,
    pool: asyncpg.Pool,
    rpc: RpcClient,
    registry: AbiRegistry,
    chain_id: int,
    first: int,
    last: int,
    addresses: list[str],
    table_columns: dict[str, tuple[str, ...]],
    final_only: bool = False,
) -> Diff:
    """Make the stored rows and headers of ``[first, last]`` equal to the node's; returns the
    differences found (and fixed). Raises RepairRaced if the checkpoint moved meanwhile, or,
    with ``final_only`` (a live follower moves the checkpoint all the time), if the range
    is not final any more: rows of a final range change only here."""
    async with pool.acquire() as con:
        cp = await con.fetchrow(Q["load_checkpoint"], chain_id)
    if cp is None or cp["block_number"] < first:
        return Diff()
    if final_only and (cp["finalized_block"] is None or cp["finalized_block"] < last):
        return Diff()
    last = min(last, cp["block_number"])
    seen = (cp["block_number"], cp["block_hash"])
    expected, _ = await expected_rows(
        rpc=rpc, registry=registry, chain_id=chain_id, first=first, last=last, addresses=addresses
    )
    columns = {**table_columns, "quarantine": QUARANTINE_COLUMNS}
    diff = await verify_range(
        pool=pool,
        rpc=rpc,
        registry=registry,
        chain_id=chain_id,
        first=first,
        last=last,
        addresses=addresses,
        table_columns=table_columns,
    )
    if diff.clean:
        return diff
    node = await rpc.headers([b for b, _ours, _theirs in diff.hashes]) if diff.hashes else {}
    async with pool.acquire() as con, con.transaction():
        row = await con.fetchrow(Q["lock_checkpoint"], chain_id)
        if row is None:
            raise RepairRaced("the checkpoint is gone")
        if final_only:
            if row["finalized_block"] is None or row["finalized_block"] < last:
                raise RepairRaced(f"block {last} is not final any more")
        elif (row["block_number"], row["block_hash"]) != seen:
            raise RepairRaced("the checkpoint moved during verify --repair; run it again")
        touched: set[tuple[str, str, str]] = set()
        for _table, block, index in [*diff.phantom, *diff.changed]:
            for table in EVENT_TABLE_NAMES:  # the row may sit in another table than expected
                ident = quote_ident(table)
                extra = ", token, wallet" if table in BALANCE_TABLES else ""
                gone = await con.fetch(
                    f"DELETE FROM {ident} WHERE chain_id = $1 AND block_number = $2 "
                    f"AND log_index = $3 RETURNING contract{extra}",
                    chain_id,
                    block,
                    index,
                )
                if table in BALANCE_TABLES:
                    touched.update((r["contract"], r["token"], r["wallet"]) for r in gone)
        wanted = [expected[(block, index)] for _t, block, index in [*diff.missing, *diff.changed]]
        await insert_rows(con, chain_id, wanted, columns, touched=touched)
        for block, _ours, _theirs in diff.hashes:
            header = node[block]
            await con.execute(
                "UPDATE blocks SET hash = $3, parent_hash = $4, timestamp = $5 "
                "WHERE chain_id = $1 AND number = $2",
                chain_id,
                block,
                header.hash,
                header.parent_hash,
                header.timestamp,
            )
            if block == row["block_number"]:
                await con.execute(
                    "UPDATE checkpoints SET block_hash = $2 WHERE chain_id = $1",
                    chain_id,
                    header.hash,
                )
        await rebuild_balances(con, chain_id, touched)
    return diff
