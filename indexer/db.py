"""The one database layer: pools, the named queries, and schema migration.

Every SQL statement lives in ``indexer/sql/*.sql`` under a ``-- name: x`` header (like
procrastinate's loader); ``schema.sql`` at the repository root is idempotent DDL applied under
an advisory lock. Rows of the event tables are written with COPY by the sink.
"""

from __future__ import annotations

import importlib.resources
import re
import secrets
from pathlib import Path
from typing import TypeAlias

import asyncpg
import asyncpg.pool

from indexer.errors import DatabaseUnavailable, Retryable, SchemaVersionError
from indexer.log import mask_url

SCHEMA_VERSION = 4  # 2: meta.nonce_salt, batch count/total/evidence/lease, amount < 2^256;
# 3: the rewardsync_api schema (enqueue_reward, reward_status, wallet_overview, sync_status);
# 4: reconcile_cursor (the incremental reconciler's place)
# Package data (schema.sql at the top of the repository links here): found by an installed wheel.
_PACKAGE = Path(str(importlib.resources.files("indexer")))
SCHEMA_PATH = _PACKAGE / "schema.sql"
SQL_DIR = _PACKAGE / "sql"
MIGRATE_LOCK_KEY = 0x7265_7761_7264  # "reward": one advisory lock for schema changes
CONNECT_TIMEOUT_S = 10.0
STATEMENT_TIMEOUT_MS = 60_000

Conn: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(sql_dir: Path = SQL_DIR) -> dict[str, str]:
    """Named statements of every ``indexer/sql/*.sql``; a name may be defined only once."""
    out: dict[str, str] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        parts = _NAME.split(path.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in out:
                raise ValueError(f"query {name!r} defined twice ({path.name})")
            lines = [ln for ln in body.strip().splitlines() if not ln.startswith("--")]
            out[name] = "\n".join(lines).strip().rstrip(";")
    return out


Q: dict[str, str] = load_queries()

# Errors that mean "the connection or server went away"; the caller retries the whole batch.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)

# What a task retries at its next round (P7): the RPC's and the database's transient faults.
TRANSIENT_FAULTS: tuple[type[BaseException], ...] = (Retryable, *CONNECTION_ERRORS)

# asyncpg's client-side encoding errors (a value the column's codec cannot take): DataError
# for a query argument, a bare OverflowError inside COPY. The first subclasses InterfaceError,
# so it matches CONNECTION_ERRORS too: both are bad data, never a lost connection, and every
# handler catches them first (retrying would loop forever, crashing would loop the restarts).
CLIENT_DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions._base.DataError,
    OverflowError,
)


async def create_pool(dsn: str, *, app: str = "indexer", size: int = 4) -> asyncpg.Pool:
    """A pool whose sessions carry a statement timeout and an application name."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=STATEMENT_TIMEOUT_MS / 1000,
            server_settings={
                "application_name": app,
                "statement_timeout": str(STATEMENT_TIMEOUT_MS),
                "idle_in_transaction_session_timeout": str(STATEMENT_TIMEOUT_MS),
            },
        )
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to {mask_url(dsn)}: {_short(exc)}") from exc
    except asyncpg.exceptions.InvalidCatalogNameError as exc:
        raise DatabaseUnavailable(f"database does not exist: {mask_url(dsn)}") from exc
    assert pool is not None
    return pool


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


async def current_version(con: Conn) -> int | None:
    """Schema version of the database, None when it was never migrated."""
    if not await con.fetchval(Q["has_schema_table"]):
        return None
    value = await con.fetchval(Q["schema_version"])
    return int(value) if value is not None else None


async def migrate(dsn: str, *, roles: bool = False) -> int:
    """Apply schema.sql under an advisory lock; refuses a database at a newer version. With
    ``roles``, also create the API's group roles and their grants (``api_roles``)."""
    try:
        con = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to {mask_url(dsn)}: {_short(exc)}") from exc
    try:
        await con.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK_KEY)
        try:
            found = await current_version(con)
            if found is not None and found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"database is at schema version {found}, newer than this build's "
                    f"{SCHEMA_VERSION}: upgrade rewardsync instead of migrating down"
                )
            async with con.transaction():
                await con.execute(SCHEMA_PATH.read_text())
                # Written once: later migrations keep it (ON CONFLICT DO NOTHING).
                await con.execute(Q["init_meta"], "nonce_salt", "0x" + secrets.token_hex(32))
                await con.execute(Q["record_schema_version"], SCHEMA_VERSION)
                if roles:
                    await con.execute(Q["api_roles"])
        finally:
            await con.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK_KEY)
    finally:
        await con.close()
    return SCHEMA_VERSION


async def check_version(pool: asyncpg.Pool) -> None:
    """Refuse to run against a database at another schema version (a clear, fatal error)."""
    async with pool.acquire() as con:
        found = await current_version(con)
    if found is None:
        raise SchemaVersionError("database has no rewardsync schema: run `indexer migrate`")
    if found != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"database is at schema version {found}, this build needs {SCHEMA_VERSION}"
            + (": run `indexer migrate`" if found < SCHEMA_VERSION else "")
        )


async def nonce_salt(con: Conn) -> bytes:
    """This database's batch-nonce salt (see ``meta`` in schema.sql)."""
    value = await con.fetchval(Q["meta_value"], "nonce_salt")
    if value is None:
        raise SchemaVersionError("database has no nonce salt: run `indexer migrate`")
    return bytes.fromhex(str(value)[2:])


def quote_ident(name: str) -> str:
    """Quote an identifier that comes from the static table registry."""
    return '"' + name.replace('"', '""') + '"'
