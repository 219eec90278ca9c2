"""`indexer migrate` and the schema-version gate, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
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


# Every CHECK of the schema's tables, as PostgreSQL prints it back.
CHECKS = (
    "SELECT c.oid, t.relname, c.conname, pg_get_constraintdef(c.oid) AS def FROM pg_constraint c "
    "JOIN pg_class t ON t.oid = c.conrelid WHERE c.contype = 'c' "
    "AND t.relnamespace = 'public'::regnamespace ORDER BY t.relname, c.conname"
)


# The hex CHECKs the daemon's bulk tables carried before they were dropped (schema.sql says why):
# (column, hex digits) per table.
OLD_BULK_CHECKS: dict[str, list[tuple[str, int]]] = {
    "blocks": [("hash", 64), ("parent_hash", 64)],
    "product_banks": [("product_id", 64), ("bank", 40), ("owner", 40)],
    "reward_added": [("token", 40), ("wallet", 40), ("emitter", 40)],
    "reward_claimed": [("token", 40), ("wallet", 40)],
    "pusher_changes": [("pusher", 40)],
    "funds_deposited": [("token", 40), ("depositor", 40)],
    "funds_withdrawn": [("token", 40), ("recipient", 40)],
    "campaign_budgets": [("campaign_id", 64), ("token", 40)],
    "campaign_deactivations": [("campaign_id", 64)],
    "rewards_pushed": [("campaign_id", 64), ("token", 40), ("nonce", 64)],
    "chamas": [("creator", 40)],
    "chama_members": [("member", 40)],
    "contributions": [("contributor", 40)],
    "payouts": [("recipient", 40)],
    "reward_balances": [("token", 40), ("wallet", 40)],
}


def _old_schema() -> str:
    """schema.sql as it was before the rtrim form: regex hex CHECKs (on the bulk tables too)
    and no upgrade blocks."""
    text = db.SCHEMA_PATH.read_text()
    ddl = text.split("\nDO $$\nDECLARE", 1)[0]  # the upgrade blocks come last, views after
    assert "pg_get_constraintdef" in text.split("\nDO $$\nDECLARE", 1)[1]
    old, n = re.subn(
        r"(?<=\()octet_length\((\w+)\) = (42|66) AND rtrim\(\1, '0123456789abcdef'\) = '0x'",
        lambda m: f"{m[1]} ~ '^0x[0-9a-f]{{{int(m[2]) - 2}}}$'",
        ddl,
    )
    assert n == 11  # the queue, the batches and the checkpoints keep theirs
    added = [
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_{col}_check "
        f"CHECK ({col} ~ '^0x[0-9a-f]{{{d}}}$');"
        for table, cols in OLD_BULK_CHECKS.items()
        for col, d in cols
    ]
    return old + "\n" + "\n".join(added) + "\n"


def test_migrate_upgrades_regex_hex_checks(empty_dsn: str, db_dsn: str) -> None:
    """A database migrated with the regex hex CHECKs on every table (and holding rows) ends
    with exactly the constraints of a fresh one (rtrim form where they stay, none on the bulk
    tables, every other CHECK kept); a second migrate leaves every constraint untouched."""

    async def apply_old() -> None:
        con = await asyncpg.connect(empty_dsn)
        try:
            await con.execute(_old_schema())
        finally:
            await con.close()

    asyncio.run(apply_old())
    db_fetch(empty_dsn, "INSERT INTO schema_version (version) VALUES ($1)", db.SCHEMA_VERSION)
    db_fetch(
        empty_dsn,
        "INSERT INTO reward_batches (chain_id, bank, campaign_id, token) VALUES (1, $1, $2, $1)",
        "0x" + "ab" * 20,
        "0x" + "cd" * 32,
    )
    before = db_fetch(empty_dsn, CHECKS)
    assert sum(" ~ '^0x[0-9a-f]{" in r["def"] for r in before) == 38
    others = [r["def"] for r in before if "~" not in r["def"]]  # amounts, statuses: they stay

    asyncio.run(db.migrate(empty_dsn))
    upgraded = db_fetch(empty_dsn, CHECKS)
    assert not [r["def"] for r in upgraded if "~" in r["def"]]
    assert not [
        r for r in upgraded if r["relname"] in OLD_BULK_CHECKS and "0123456789abcdef" in r["def"]
    ]
    assert [r["def"] for r in upgraded if "0123456789abcdef" not in r["def"]] == others
    fresh = db_fetch(db_dsn, CHECKS)
    assert [tuple(r)[1:] for r in upgraded] == [tuple(r)[1:] for r in fresh]

    asyncio.run(db.migrate(empty_dsn))
    again = db_fetch(empty_dsn, CHECKS)
    assert [tuple(r) for r in again] == [tuple(r) for r in upgraded]  # same oids: untouched
    assert db_fetch(empty_dsn, "SELECT count(*) AS n FROM reward_batches")[0]["n"] == 1


BALANCE_INDEXES = (
    "SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def "
    "FROM pg_index WHERE indrelid = 'reward_balances'::regclass ORDER BY 1"
)


def test_migrate_makes_the_balance_key_wallet_first(empty_dsn: str, db_dsn: str) -> None:
    """A database made with the key (chain_id, contract, token, wallet) and a wallet index,
    holding a balance, ends with the fresh schema's one wallet-first key and keeps the row."""
    db_fetch(empty_dsn, "SELECT 1")
    asyncio.run(db.migrate(empty_dsn))
    db_fetch(
        empty_dsn,
        "ALTER TABLE reward_balances DROP CONSTRAINT reward_balances_pkey, "
        "ADD PRIMARY KEY (chain_id, contract, token, wallet)",
    )
    db_fetch(empty_dsn, "CREATE INDEX reward_balances_wallet ON reward_balances (wallet)")
    db_fetch(
        empty_dsn,
        "INSERT INTO reward_balances (chain_id, contract, token, wallet, added) "
        "VALUES (1, $1, $1, $1, 5)",
        "0x" + "ab" * 20,
    )
    assert len(db_fetch(empty_dsn, BALANCE_INDEXES)) == 2

    asyncio.run(db.migrate(empty_dsn))
    upgraded = [tuple(r) for r in db_fetch(empty_dsn, BALANCE_INDEXES)]
    assert upgraded == [tuple(r) for r in db_fetch(db_dsn, BALANCE_INDEXES)]
    assert upgraded[0][1].endswith("(wallet, chain_id, contract, token)")
    assert db_fetch(empty_dsn, "SELECT pending FROM reward_balances")[0]["pending"] == 5
