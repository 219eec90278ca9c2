"""The PostgreSQL sink: a batch's events, headers, derived balances and checkpoint commit in
ONE transaction (P1), bulk-written with COPY; rollbacks delete exactly what is above the
common ancestor and rebuild the balances they touched, in one transaction too.

The checkpoint row is locked (``FOR UPDATE``) and compared with what the batch was built on,
so two writers of one chain can never interleave: the loser's batch is refused, not merged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import structlog

from indexer import catalogue, failpoints, metrics, rewards
from indexer.catalogue import BASE_COLUMNS
from indexer.db import CLIENT_DATA_ERRORS, CONNECTION_ERRORS, Conn, Q, quote_ident
from indexer.decode import EVENT_TABLE_NAMES, Event, Undecodable
from indexer.errors import DatabaseUnavailable, NotLeader, Retryable
from indexer.types import BlockHeader

log = structlog.get_logger()

QUARANTINE_COLUMNS = (*BASE_COLUMNS, "topics", "data", "reason")
BLOCK_COLUMNS = ("chain_id", "number", "hash", "parent_hash", "timestamp")
BALANCE_TABLES = catalogue.BALANCE_TABLES  # the events reward_balances folds


# Per event table: its COPY column list, its rows in COPY text format, and how many.
CopyData = dict[str, tuple[tuple[str, ...], bytes, int]]


class CheckpointMoved(Retryable):
    """The checkpoint changed under us (another writer or a rollback); rebuild the batch."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one commit writes; built by the follower from verified RPC data."""

    chain_id: int
    from_block: int
    to_block: int
    parent: tuple[int, str | None]  # the checkpoint this batch extends
    head: BlockHeader  # header of to_block: the new checkpoint
    headers: Sequence[BlockHeader]
    events: Sequence[Event]
    quarantined: Sequence[Undecodable] = ()
    finalized: int = -1
    header_by_number: dict[int, BlockHeader] = field(default_factory=dict)
    # The events' COPY data (``copy_data``), when made ahead by the loader: a commit holds the
    # only transaction of its chain, and PostgreSQL waited ~15 ms per 10,000 events while
    # the commit built it. None: ``write_rows`` builds it.
    copy: CopyData | None = None


@dataclass(frozen=True, slots=True)
class CommitResult:
    rows: dict[str, int]
    elapsed_ms: float


_SPECIAL_TABLES = frozenset({"other_events", "pusher_changes"})


def _ts(header: BlockHeader | None) -> datetime | None:
    return datetime.fromtimestamp(header.timestamp, UTC) if header is not None else None


def event_row(chain_id: int, ev: Event, header: BlockHeader | None) -> tuple[Any, ...]:
    """The table row of a decoded event (base columns, then the event's columns)."""
    return _event_row(chain_id, ev, _ts(header))


def _event_row(chain_id: int, ev: Event, block_time: datetime | None) -> tuple[Any, ...]:
    """``event_row`` with the block time already made: a batch makes it once per block, not
    once per log (thousands of logs share a block in a backfill)."""
    lg = ev.log
    spec = ev.spec
    if spec.table not in _SPECIAL_TABLES:  # the common case, in one tuple
        return (
            chain_id,
            lg.block_number,
            lg.block_hash,
            block_time,
            lg.tx_hash,
            lg.log_index,
            lg.address,
            *ev.values,
        )
    base = (
        chain_id,
        lg.block_number,
        lg.block_hash,
        block_time,
        lg.tx_hash,
        lg.log_index,
        lg.address,
    )
    if spec.table == "other_events":
        args = {p.name: _json_arg(v) for p, v in zip(spec.params, ev.values, strict=True)}
        return (*base, spec.name, orjson.dumps(args).decode())
    if spec.table == "pusher_changes":
        return (*base, ev.values[0], spec.name == "PusherAuthorized")
    return (*base, *ev.values)


def _json_arg(value: Any) -> Any:
    """An `other_events` argument for JSON: integers as decimal strings (a uint256 exceeds
    JSON's and orjson's 64-bit range), inside arrays and tuples too."""
    if isinstance(value, bool) or not isinstance(value, int | list):
        return value
    if isinstance(value, list):
        return [_json_arg(v) for v in value]
    return str(value)


def quarantine_row(chain_id: int, bad: Undecodable, header: BlockHeader | None) -> tuple[Any, ...]:
    lg = bad.log
    return (
        chain_id,
        lg.block_number,
        lg.block_hash,
        _ts(header),
        lg.tx_hash,
        lg.log_index,
        lg.address,
        list(lg.topics),
        lg.data,
        bad.reason[:1000],
    )


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_field(value: Any) -> str:
    """One row value in COPY text format: what PostgreSQL's input function of the column
    reads back as exactly that value (NULL is ``\\N``; backslash, tab and newlines escaped)."""
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def event_lines(
    chain_id: int, events: Sequence[Event], hb: dict[int, BlockHeader]
) -> dict[str, tuple[tuple[str, ...], list[str]]]:
    """``events`` per table as COPY text lines (the columns of ``event_row``, each
    through ``copy_field``), with each table's column list.

    Text rather than asyncpg's binary records: the profile of a 200,000-event backfill had
    22% of the indexer's CPU in encoding records, while PostgreSQL, on
    the other core, parses text cheaply. A line is made from a prefix shared by the logs of
    one transaction and, for events whose values are all integers and lowercase hex (every
    reward table), ``str`` of each value; other events go through ``copy_field``."""
    out: dict[str, tuple[tuple[str, ...], list[str]]] = {}
    plain: dict[int, bool] = {}  # id(spec) -> text_safe; specs outlive this call
    times: dict[int, str] = {}
    block, tx, block_hash, prefix = -1, "", "", ""
    for ev in events:
        lg, spec = ev.log, ev.spec
        if lg.block_number != block or lg.tx_hash != tx or lg.block_hash != block_hash:
            block, tx, block_hash = lg.block_number, lg.tx_hash, lg.block_hash
            when = times.get(block)
            if when is None:
                when = times[block] = copy_field(_ts(hb.get(block)))
            prefix = f"{chain_id}\t{block}\t{block_hash}\t{when}\t{tx}\t"
        safe = plain.get(id(spec))
        if safe is None:
            safe = plain[id(spec)] = spec.table not in _SPECIAL_TABLES and spec.text_safe
        if safe:
            body = "\t".join(map(str, ev.values))
        else:
            body = "\t".join([copy_field(v) for v in _event_row(chain_id, ev, None)[7:]])
        entry = out.get(spec.table)
        if entry is None:
            entry = out[spec.table] = ((*BASE_COLUMNS, *spec.columns), [])
        entry[1].append(f"{prefix}{lg.log_index}\t{lg.address}\t{body}\n")
    return out


def copy_data(
    chain_id: int, events: Sequence[Event], header_by_number: dict[int, BlockHeader]
) -> CopyData:
    """The COPY data of ``events`` per table (``event_lines``, encoded), ready to send."""
    return {
        table: (columns, "".join(lines).encode(), len(lines))
        for table, (columns, lines) in event_lines(chain_id, events, header_by_number).items()
    }


def join_copy(first: CopyData, second: CopyData) -> CopyData:
    """The COPY data of two consecutive ranges as one (a commit group)."""
    joined = dict(first)
    for table, (columns, data, n) in second.items():
        if table in joined:
            _cols, before, m = joined[table]
            joined[table] = (columns, before + data, m + n)
        else:
            joined[table] = (columns, data, n)
    return joined


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    """COPY data as an async iterable: asyncpg reads a file-like source in a worker thread
    and takes ``bytes`` for a path (``os.fspath``)."""
    yield data


async def write_rows(con: Conn, batch: Batch) -> dict[str, int]:
    """COPY a batch's headers, events and quarantined logs; rows written per table."""
    written: dict[str, int] = {}
    blocks = [(batch.chain_id, h.number, h.hash, h.parent_hash, h.timestamp) for h in batch.headers]
    if blocks:
        await con.copy_records_to_table("blocks", records=blocks, columns=BLOCK_COLUMNS)
    prepared = batch.copy
    if prepared is None:
        prepared = copy_data(batch.chain_id, batch.events, batch.header_by_number)
    for table, (columns, data, nrows) in prepared.items():
        await con.copy_to_table(table, source=_chunks(data), columns=columns, format="text")
        written[table] = nrows
    if batch.quarantined:
        hb = batch.header_by_number
        rows = [
            quarantine_row(batch.chain_id, q, hb.get(q.log.block_number)) for q in batch.quarantined
        ]
        await con.copy_records_to_table("quarantine", records=rows, columns=QUARANTINE_COLUMNS)
        written["quarantine"] = len(rows)
    return written


async def rebuild_balances(con: Conn, chain_id: int, keys: Iterable[tuple[str, str, str]]) -> None:
    """Recompute the reward_balances of (contract, token, wallet) ``keys`` from the events:
    the one way to settle balances after event rows were deleted or inserted outside a commit
    (rollback, verify --repair, reconcile --fix). Keys sorted: a stable lock order."""
    ordered = sorted(set(keys))
    if not ordered:
        return
    args = ([k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered])
    await con.execute(Q["delete_balances"], chain_id, *args)
    await con.execute(Q["rebuild_balances"], chain_id, *args)


def rollback_balances_sql(table: str) -> str:
    """Delete ``table``'s (reward_added or reward_claimed) rows above $2 and take their sums
    off reward_balances, in one statement. The first row carries the count deleted (``n``);
    the others are the keys left with nothing added and nothing claimed (their rows go)."""
    column = catalogue.BALANCE_COLUMN[table]
    return f"""
WITH gone AS (
    DELETE FROM {quote_ident(table)} WHERE chain_id = $1 AND block_number > $2
    RETURNING contract, token, wallet, amount
), d AS (
    SELECT contract, token, wallet, sum(amount) AS s FROM gone GROUP BY contract, token, wallet
), up AS (
    UPDATE reward_balances b SET {column} = b.{column} - d.s
    FROM d
    WHERE b.wallet = d.wallet AND b.chain_id = $1 AND b.contract = d.contract
      AND b.token = d.token
    RETURNING b.contract, b.token, b.wallet, b.added, b.claimed
)
SELECT 0 AS k, NULL::text AS contract, NULL::text AS token, NULL::text AS wallet,
       (SELECT count(*) FROM gone) AS n
UNION ALL
SELECT 1, contract, token, wallet, NULL FROM up WHERE added = 0 AND claimed = 0
ORDER BY k
"""


NOTIFY_MAX_WALLETS = 100  # NOTIFY payloads must stay under 8000 bytes


def _notify_payload(  # noqa: PLR0913 (the payload fields, keyword-only)
    chain_id: int,
    kind: str,
    *,
    first: int,
    last: int,
    tables: list[str],
    wallets: list[str] | None = None,
) -> str:
    """What subscribers get: the range, the tables touched and the wallets whose balances
    changed (``wallets_truncated`` when there were more than 100; the 100 listed are then
    any of them, not the first in order)."""
    body: dict[str, object] = {
        "chain_id": chain_id,
        "kind": kind,
        "from": first,
        "to": last,
        "tables": tables,
    }
    if wallets is not None:
        body["wallets"] = wallets[:NOTIFY_MAX_WALLETS]
        body["wallets_truncated"] = len(wallets) > NOTIFY_MAX_WALLETS
    return orjson.dumps(body).decode()


class PostgresSink:
    """Writes of one chain. Every public method is one transaction, retried by the caller."""

    def __init__(
        self, pool: asyncpg.Pool, chain_id: int, chain: str = "", *, confirmations: int = 0
    ) -> None:
        self.pool = pool
        self.chain_id = chain_id
        self.chain = chain or str(chain_id)
        self.confirmations = confirmations
        # Fencing (P8): when set, every write transaction first checks that the backend
        # ``pid`` still holds advisory lock ``key``; a writer that lost its lock cannot commit.
        self.fence: tuple[int, int] | None = None

    async def _check_fence(self, con: Conn) -> None:
        if self.fence is None:
            return
        pid, key = self.fence
        if not await con.fetchval(Q["holds_writer_lock"], pid, key):
            raise NotLeader("this process no longer holds the chain's writer lock")

    async def commit(self, batch: Batch) -> CommitResult:
        """Commit a batch atomically; raises CheckpointMoved if the checkpoint is not its parent."""
        started = time.perf_counter()
        try:
            await failpoints.hit("sink.before_begin")
            async with self.pool.acquire() as con, con.transaction():
                await self._check_fence(con)
                await self._check_parent(con, batch.parent)
                rows = await write_rows(con, batch)
                await failpoints.hit("sink.after_events")
                wallets = await self._apply_balances(con, batch, rows)
                await con.execute(
                    Q["update_checkpoint"],
                    self.chain_id,
                    batch.head.number,
                    batch.head.hash,
                    batch.finalized,
                )
                await rewards.on_commit(
                    con,
                    self.chain_id,
                    self.chain,
                    checkpoint=batch.head.number,
                    confirmations=self.confirmations,
                )
                payload = _notify_payload(
                    self.chain_id,
                    "commit",
                    first=batch.from_block,
                    last=batch.to_block,
                    tables=sorted(rows),
                    wallets=wallets,
                )
                await con.execute(Q["notify"], payload)
                await failpoints.hit("sink.after_checkpoint")
        except CLIENT_DATA_ERRORS:
            raise
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(
                f"commit of {batch.from_block}-{batch.to_block} failed: {type(exc).__name__}"
            ) from exc
        await failpoints.hit("sink.after_commit")
        elapsed = time.perf_counter() - started
        metrics.BATCH_COMMIT_SECONDS.labels(self.chain).observe(elapsed)
        for table, n in rows.items():
            metrics.EVENTS_WRITTEN.labels(self.chain, table).inc(n)
        return CommitResult(rows=rows, elapsed_ms=round(elapsed * 1000, 1))

    async def _check_parent(self, con: Conn, parent: tuple[int, str | None]) -> None:
        row = await con.fetchrow(Q["lock_checkpoint"], self.chain_id)
        if row is None or (row["block_number"], row["block_hash"]) != parent:
            found = None if row is None else (row["block_number"], row["block_hash"])
            raise CheckpointMoved(f"checkpoint is {found}, batch was built on {parent}")
        if row["halted_reason"]:
            raise CheckpointMoved(f"chain is halted: {row['halted_reason']}")

    async def _apply_balances(self, con: Conn, batch: Batch, rows: dict[str, int]) -> list[str]:
        """Add the batch's reward events to reward_balances, aggregated in PostgreSQL from the
        rows just written (the profile had 10% of a backfill in building and encoding Python
        deltas); returns the wallets whose balances changed (for NOTIFY)."""
        if not rows.keys() & {"reward_added", "reward_claimed"}:
            return []
        found = await con.fetch(
            Q["add_balances"],
            self.chain_id,
            batch.from_block,
            batch.to_block,
            NOTIFY_MAX_WALLETS + 1,  # one more than listed: the payload says it was truncated
        )
        return sorted(r["wallet"] for r in found)

    async def rewind_to(  # noqa: PLR0913 (what the reorgs row records, keyword-only)
        self,
        ancestor: BlockHeader | tuple[int, str | None],
        *,
        kind: str,
        depth: int,
        old_hash: str | None,
        new_hash: str | None,
        expect: tuple[int, str | None] | None = None,
        reset_finality: bool = False,
    ) -> dict[str, int]:
        """Delete everything above ``ancestor`` and move the checkpoint there, atomically.

        ``expect`` (the checkpoint the caller saw) guards against racing another writer.
        Returns rows deleted per table."""
        number, hash_ = (
            (ancestor.number, ancestor.hash) if isinstance(ancestor, BlockHeader) else ancestor
        )
        try:
            async with self.pool.acquire() as con, con.transaction():
                await self._check_fence(con)
                row = await con.fetchrow(Q["lock_checkpoint"], self.chain_id)
                if row is None:
                    raise CheckpointMoved("no checkpoint")
                if expect is not None and (row["block_number"], row["block_hash"]) != expect:
                    raise CheckpointMoved(f"checkpoint moved to {row['block_number']}")
                deleted = await self._delete_above(con, number)
                await rewards.on_rollback(con, self.chain_id, self.chain, ancestor=number)
                await failpoints.hit("sink.rewind_after_delete")
                await con.execute(Q["update_checkpoint"], self.chain_id, number, hash_, -1)
                if reset_finality:
                    await con.execute(Q["reset_finalized"], self.chain_id, number)
                await con.execute(
                    Q["insert_reorg"], self.chain_id, depth, number, old_hash, new_hash, kind
                )
                await con.execute(
                    Q["notify"],
                    _notify_payload(
                        self.chain_id,
                        "rollback",
                        first=number + 1,
                        last=row["block_number"],
                        tables=sorted(deleted),
                    ),
                )
        except CLIENT_DATA_ERRORS:
            raise
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"rewind to {number} failed: {type(exc).__name__}") from exc
        return deleted

    async def _delete_above(self, con: Conn, number: int) -> dict[str, int]:
        """Delete every row above ``number``; the balances lose exactly what the deleted
        reward events had added (no rescan of the event tables: at a million events a
        rebuild from them cost seconds per rolled-back block, bench/explain.py)."""
        deleted: dict[str, int] = {}
        emptied: set[tuple[str, str, str]] = set()
        for table in EVENT_TABLE_NAMES:
            ident = quote_ident(table)
            if table in BALANCE_TABLES:
                rows = await con.fetch(rollback_balances_sql(table), self.chain_id, number)
                count = int(rows[0]["n"])
                emptied.update((r["contract"], r["token"], r["wallet"]) for r in rows[1:])
            else:
                status = await con.execute(
                    f"DELETE FROM {ident} WHERE chain_id = $1 AND block_number > $2",
                    self.chain_id,
                    number,
                )
                count = int(status.split()[-1])
            if count:
                deleted[table] = count
        await con.execute(Q["delete_blocks_above"], self.chain_id, number)
        if emptied:
            ordered = sorted(emptied)
            await con.execute(
                Q["delete_zero_balances"],
                self.chain_id,
                [k[0] for k in ordered],
                [k[1] for k in ordered],
                [k[2] for k in ordered],
            )
        return deleted

    async def set_halted(self, reason: str | None) -> None:
        """Record (or clear) a halt; nothing else is touched. Fenced like every write: a
        deposed leader (its lock lost while it met the fault) cannot halt the new leader's chain."""
        async with self.pool.acquire() as con, con.transaction():
            await self._check_fence(con)
            await con.execute(Q["set_halted"], self.chain_id, reason)
