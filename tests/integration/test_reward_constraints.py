"""The rewards queue refuses bad rows itself (issue 4 item 1): a backend's buggy insert fails
loudly at the database instead of becoming a reward that the pusher would try to pay."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.checks import db_fetch

pytestmark = pytest.mark.pg

WALLET = "0x" + "11" * 20
GOOD: dict[str, Any] = {
    "chain_id": 31337,
    "bank": "0x" + "22" * 20,
    "campaign_id": "0x" + "33" * 32,
    "token": "0x" + "44" * 20,
    "wallet": WALLET,
    "amount": 5,
    "external_key": "order-1",
}


def _insert(dsn: str, **overrides: Any) -> None:
    """The README's one-statement queue insert, idempotent by external_key."""
    row = {**GOOD, **overrides}

    async def go() -> None:
        con = await asyncpg.connect(dsn)
        try:
            await con.execute(
                "INSERT INTO rewards (chain_id, bank, campaign_id, token, wallet, amount, "
                "external_key, status) VALUES ($1, $2, $3, $4, $5, $6, $7, "
                "COALESCE($8, 'pending'))",
                row["chain_id"],
                row["bank"],
                row["campaign_id"],
                row["token"],
                row["wallet"],
                row["amount"],
                row["external_key"],
                row.get("status"),
            )
        finally:
            await con.close()

    asyncio.run(go())


def test_reward_constraints_accept_a_good_row(db_dsn: str) -> None:
    """A well-formed reward is queued as pending (the baseline the refusals are measured by)."""
    _insert(db_dsn)
    [row] = db_fetch(db_dsn, "SELECT status, batch_id FROM rewards")
    assert (row["status"], row["batch_id"]) == ("pending", None)


@pytest.mark.parametrize("amount", [0, -1])
def test_reward_constraints_refuse_non_positive_amount(db_dsn: str, amount: int) -> None:
    """A zero or negative amount would push nothing (or underflow) on chain: refused."""
    with pytest.raises(asyncpg.CheckViolationError):
        _insert(db_dsn, amount=amount)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("wallet", "0x" + "AB" * 20),  # mixed case: addresses are stored lowercase
        ("wallet", "0x" + "11" * 19),  # too short
        ("wallet", "11" * 20),  # no 0x
        ("bank", "0xnot-an-address-at-all-000000000000000000"),
        ("token", ""),
        ("campaign_id", "0x" + "33" * 31),
    ],
)
def test_reward_constraints_refuse_malformed_hex(db_dsn: str, column: str, value: str) -> None:
    """A malformed address or id never matches an event row, so the reward could never be
    confirmed: refused."""
    with pytest.raises(asyncpg.CheckViolationError):
        _insert(db_dsn, **{column: value})


def test_reward_constraints_refuse_unknown_status(db_dsn: str) -> None:
    """Only the lifecycle's statuses exist, so a typo cannot hide a reward from the pusher."""
    with pytest.raises(asyncpg.CheckViolationError):
        _insert(db_dsn, status="done")


def test_reward_constraints_refuse_duplicate_external_key(db_dsn: str) -> None:
    """A retried backend insert with the same external_key cannot queue a second payment."""
    _insert(db_dsn)
    with pytest.raises(asyncpg.UniqueViolationError):
        _insert(db_dsn, amount=7)
    assert [r["amount"] for r in db_fetch(db_dsn, "SELECT amount FROM rewards")] == [5]


def test_reward_constraints_refuse_bad_batch_status(db_dsn: str) -> None:
    """A reward batch status outside draft..reconciled is refused too."""

    async def go() -> None:
        con = await asyncpg.connect(db_dsn)
        try:
            await con.execute(
                "INSERT INTO reward_batches (chain_id, bank, campaign_id, token, status) "
                "VALUES (1, $1, $2, $3, 'sent')",
                GOOD["bank"],
                GOOD["campaign_id"],
                GOOD["token"],
            )
        finally:
            await con.close()

    with pytest.raises(asyncpg.CheckViolationError):
        asyncio.run(go())


def test_wallet_balances_reads_one_wallet(db_dsn: str) -> None:
    """wallet_balances(wallet) answers pending, claimed and total per token in one query,
    whatever the case of the address it is given."""
    db_fetch(
        db_dsn,
        "INSERT INTO reward_balances (chain_id, contract, token, wallet, added, claimed) "
        "VALUES (1, 'c', $1, $2, 10, 4), (1, 'c', $3, $2, 3, 0), (1, 'c', $1, $4, 9, 9)",
        GOOD["token"],
        WALLET,
        "0x" + "55" * 20,
        "0x" + "66" * 20,
    )
    rows = db_fetch(db_dsn, "SELECT * FROM wallet_balances($1)", WALLET.upper().replace("X", "x"))
    got = [(r["token"], r["pending"], r["claimed"], r["total"]) for r in rows]
    assert got == [(GOOD["token"], 6, 4, 10), ("0x" + "55" * 20, 3, 0, 3)]
