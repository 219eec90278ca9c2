"""The hex CHECKs (rtrim form, see schema.sql) accept lowercase 0x hex of the exact length only,
like the regex they replace."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.checks import db_fetch

pytestmark = pytest.mark.pg

HEX = "0123456789abcdef" * 4  # 64 digits


def _rows(digits: int) -> list[tuple[str, bool]]:
    """(value, accepted) for a column of ``digits`` hex digits."""
    good = HEX[:digits]
    return [
        ("0x" + good, True),
        ("0x" + good.upper(), False),
        ("0X" + good, False),
        ("0x" + good[:-1], False),
        ("0x" + good + "0", False),
        ("0x" + good[:-1] + "g", False),
        ("0x" + good[:-2] + "é", False),  # octet_length is right, the last character is not hex
        ("0x0x" + good[:-2], False),
        ("0x" + good[:-1] + "\n", False),
    ]


# A valid row per table; the tested column is overridden. The hex CHECKs guard the tables
# other writers touch (the backend's queue and batches); the daemon's bulk tables have none.
ROWS: dict[str, dict[str, Any]] = {
    "reward_batches": {
        "chain_id": 1,
        "bank": "0x" + "cc" * 20,
        "campaign_id": "0x" + "aa" * 32,
        "token": "0x" + "dd" * 20,
    },
}


def _insert(dsn: str, table: str, **overrides: Any) -> None:
    row = {**ROWS[table], **overrides}
    cols = ", ".join(f'"{c}"' for c in row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))

    async def go() -> None:
        con = await asyncpg.connect(dsn)
        try:
            await con.execute(f"INSERT INTO {table} ({cols}) VALUES ({params})", *row.values())
        finally:
            await con.close()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("table", "column", "value", "accepted"),
    [("reward_batches", "token", v, ok) for v, ok in _rows(40)]
    + [("reward_batches", "campaign_id", v, ok) for v, ok in _rows(64)],
)
def test_hex_check_accepts_only_lowercase_hex_of_exact_length(
    db_dsn: str, table: str, column: str, value: str, accepted: bool
) -> None:
    if accepted:
        _insert(db_dsn, table, **{column: value})
        assert db_fetch(db_dsn, f"SELECT {column} FROM {table}")[0][column] == value
    else:
        with pytest.raises(asyncpg.CheckViolationError, match=f"{table}_{column}_check"):
            _insert(db_dsn, table, **{column: value})


def test_hex_check_agrees_with_the_regex(db_dsn: str) -> None:
    """On edge strings of every length around 42 and 66, the rtrim form and the regex agree."""
    samples = [v for d in (40, 64) for v, _ in _rows(d)]
    samples += ["", "0x", "x", "0x" + " " * 40, " 0x" + HEX[:39], "0x" + HEX[:39] + "\u0660"]
    rows = db_fetch(
        db_dsn,
        "SELECT v, v ~ ('^0x[0-9a-f]{' || n || '}$') AS regex, "
        "octet_length(v) = n + 2 AND rtrim(v, '0123456789abcdef') = '0x' AS rtrim "
        "FROM unnest($1::text[]) AS v, (VALUES (40), (64)) AS d(n)",
        samples,
    )
    assert [r["v"] for r in rows if r["regex"] != r["rtrim"]] == []
    assert sum(r["regex"] for r in rows) == 2
