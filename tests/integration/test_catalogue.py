"""The event catalogue (indexer/catalogue.py) equals schema.sql: every typed table has the base
columns then the event's own, in order, and the primary key (chain_id, block_number,
log_index); every event's signature is in the project's ABIs with the same indexed flags."""

from __future__ import annotations

import json

import asyncpg
import pytest

from indexer import catalogue
from indexer.config import DEFAULT_ABI_DIR
from indexer.decode import compile_event

pytestmark = pytest.mark.pg


async def test_catalogue_tables_equal_the_schema(db_dsn: str) -> None:
    con = await asyncpg.connect(db_dsn)
    try:
        for table in (*catalogue.TABLES, "other_events", "quarantine"):
            columns = [
                r["column_name"]
                for r in await con.fetch(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                    table,
                )
            ]
            assert columns[: len(catalogue.BASE_COLUMNS)] == list(catalogue.BASE_COLUMNS), table
            pk = await con.fetchval(
                "SELECT array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum)) "
                "FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
                table,
            )
            assert list(pk) == ["chain_id", "block_number", "log_index"], table
            if table in catalogue.TABLES:
                own = {e.columns for e in catalogue.EVENTS if e.table == table}
                assert len(own) == 1, table
                assert columns[len(catalogue.BASE_COLUMNS) :] == list(own.pop()), table
    finally:
        await con.close()


def test_catalogue_events_are_the_abis_events() -> None:
    """Each catalogue event is declared by one of abis/ with the same shape, so a log of it
    decodes into its table."""
    shapes = set()
    for path in sorted(DEFAULT_ABI_DIR.glob("*.json")):
        for entry in json.loads(path.read_text())["abi"]:
            spec = compile_event(path.stem, entry)
            if spec is not None:
                shapes.add(
                    (
                        spec.signature,
                        tuple(p.indexed for p in spec.params),
                        tuple(p.name for p in spec.params),
                    )
                )
    for e in catalogue.EVENTS:
        assert (e.signature, e.indexed, e.params) in shapes, e.signature
