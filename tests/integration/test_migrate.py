"""`indexer migrate` and the schema-version gate, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from indexer import db
from indexer.errors import SchemaVersionError
from tests.checks import db_fetch
from tests.harness import indexer
from tests.procs import PgCluster

pytestmark = pytest.mark.pg


def _config(tmp_path: Path, dsn: str) -> Path:
    path = tmp_path / "indexer.toml"
    path.write_text(f'[database]\nurl = "{dsn}"\n')
    return path


@pytest.fixture
def empty_dsn(pg_cluster: PgCluster) -> str:
    """A database with no schema at all."""
    name = f"empty_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        con = await asyncpg.connect(pg_cluster.dsn())
        await con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await con.execute(f'CREATE DATABASE "{name}"')
        await con.close()

    asyncio.run(create())
    return pg_cluster.dsn(name)


def test_migrate_is_idempotent_and_concurrent_safe(empty_dsn: str) -> None:
    """Two migrations at once and a third afterwards leave one schema at one version."""

    async def go() -> None:
        await asyncio.gather(db.migrate(empty_dsn), db.migrate(empty_dsn))
        await db.migrate(empty_dsn)

    asyncio.run(go())
    rows = db_fetch(empty_dsn, "SELECT version FROM schema_version")
    assert [r["version"] for r in rows] == [db.SCHEMA_VERSION]


def test_migrate_cli_refuses_newer_schema(tmp_path: Path, db_dsn: str) -> None:
    """A database at a newer schema version: migrate exits 2 with one clear line."""
    db_fetch(db_dsn, "INSERT INTO schema_version (version) VALUES (99)")
    out = indexer(_config(tmp_path, db_dsn), "migrate")
    assert out.code == 2
    assert "schema version 99, newer than this build's" in out.stderr


def test_run_refuses_unmigrated_database(tmp_path: Path, empty_dsn: str) -> None:
    """`run` against a database without the schema exits 2 and says to migrate."""
    out = indexer(_config(tmp_path, empty_dsn), "run", "--exit-when-caught-up", "--no-http")
    assert out.code == 2
    assert "run `indexer migrate`" in out.stderr


def test_check_version_rejects_other_versions(db_dsn: str) -> None:
    """The gate used by every command refuses an older or newer schema."""

    async def go() -> None:
        pool = await db.create_pool(db_dsn)
        try:
            await db.check_version(pool)
            async with pool.acquire() as con:
                await con.execute("INSERT INTO schema_version (version) VALUES (1000)")
            with pytest.raises(SchemaVersionError, match="1000"):
                await db.check_version(pool)
        finally:
            await pool.close()

    asyncio.run(go())


def test_migrate_cli_ok_twice(tmp_path: Path, db_dsn: str) -> None:
    """`indexer migrate` on a migrated database succeeds and changes nothing."""
    cfg = _config(tmp_path, db_dsn)
    assert indexer(cfg, "migrate").code == 0
    assert indexer(cfg, "migrate").code == 0
    rows = db_fetch(db_dsn, "SELECT count(*) AS n FROM schema_version")
    assert rows[0]["n"] == 1
