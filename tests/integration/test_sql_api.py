"""The backend's SQL API (rewardsync_api, schema version 3) against a real PostgreSQL:
enqueue_reward validates each argument with one clear error, accepts mixed-case hex, is
idempotent on external_key and refuses the same key with other values; reward_status,
wallet_overview and sync_status read what the tables hold."""

from __future__ import annotations

import re

import asyncpg
import pytest

pytestmark = pytest.mark.pg

BANK = "0x" + "Ab" * 20
CAMPAIGN = "0x" + "cd" * 32
TOKEN = "0x" + "Ef" * 20
WALLET = "0x" + "12" * 20


async def enqueue(
    con: asyncpg.Connection, key: str, amount: int = 5, **kw: object
) -> asyncpg.Record:
    args = {"chain_id": 31337, "bank": BANK, "campaign_id": CAMPAIGN, "token": TOKEN,
            "wallet": WALLET, "amount": amount, "external_key": key} | kw  # fmt: skip
    row = await con.fetchrow(
        "SELECT * FROM rewardsync_api.enqueue_reward($1, $2, $3, $4, $5, $6, $7)",
        *args.values(),
    )
    assert row is not None
    return row


async def test_enqueue_reward_is_idempotent_and_validates(db_dsn: str) -> None:
    con = await asyncpg.connect(db_dsn)
    try:
        first = await enqueue(con, "order-1")
        assert first["status"] == "pending"
        again = await enqueue(con, "order-1")
        assert again["id"] == first["id"]  # same key, same values: the same reward
        stored = await con.fetchrow(
            "SELECT bank, token, wallet FROM rewards WHERE id = $1", first["id"]
        )
        assert dict(stored) == {"bank": BANK.lower(), "token": TOKEN.lower(), "wallet": WALLET}
        with pytest.raises(asyncpg.UniqueViolationError, match="already queued with other values"):
            await enqueue(con, "order-1", amount=6)
        bad = {
            "bank": ("0x123", "bank is not a 20-byte 0x address"),
            "campaign_id": ("0x" + "cd" * 31, "campaign_id is not a 32-byte 0x value"),
            "token": ("nope", "token is not a 20-byte 0x address"),
            "wallet": ("0x" + "zz" * 20, "wallet is not a 20-byte 0x address"),
            "amount": (2**256, "amount must be an integer in 1 .. 2^256-1"),
            "external_key": ("", "external_key must not be empty"),
            "chain_id": (0, "chain_id must be a positive integer"),
        }
        for field, (value, message) in bad.items():
            with pytest.raises(asyncpg.InvalidParameterValueError, match=re.escape(message)):
                await enqueue(con, f"bad-{field}", **{field: value})
        assert await con.fetchval("SELECT count(*) FROM rewards") == 1
    finally:
        await con.close()


async def test_reward_status_wallet_overview_and_sync_status_read_the_tables(db_dsn: str) -> None:
    con = await asyncpg.connect(db_dsn)
    try:
        queued = await enqueue(con, "order-2", amount=7)
        failed = await enqueue(con, "order-3", amount=11)
        await con.execute(
            "UPDATE rewards SET status = 'failed', error = 'InsufficientBudget' WHERE id = $1",
            failed["id"],
        )
        await con.execute(
            "INSERT INTO reward_balances (chain_id, contract, token, wallet, added, claimed) "
            "VALUES (31337, $1, $2, $3, 100, 40)",
            "0x" + "99" * 20,
            TOKEN.lower(),
            WALLET,
        )
        status = await con.fetchrow("SELECT * FROM rewardsync_api.reward_status('order-2')")
        assert (status["id"], status["status"], status["amount"]) == (queued["id"], "pending", 7)
        (row,) = await con.fetch(
            "SELECT * FROM rewardsync_api.wallet_overview($1)", WALLET.upper().replace("0X", "0x")
        )
        assert (
            row["claimable"],
            row["claimed"],
            row["in_flight"],
            row["queued"],
            row["failed"],
        ) == (60, 40, 0, 7, 11)
        assert row["last_error"] == "InsufficientBudget"

        # in flight until the batch's RewardsPushed is indexed; then the amount is claimable
        # (in reward_balances) and no longer counted in flight as well
        pushed = await enqueue(con, "order-4", amount=13)
        nonce = "0x" + "77" * 32
        batch = await con.fetchval(
            "INSERT INTO reward_batches (chain_id, bank, campaign_id, token, nonce, status) "
            "VALUES (31337, $1, $2, $3, $4, 'pending') RETURNING id",
            BANK.lower(),
            CAMPAIGN,
            TOKEN.lower(),
            nonce,
        )
        await con.execute(
            "UPDATE rewards SET status = 'pushed', batch_id = $2 WHERE id = $1", pushed["id"], batch
        )
        overview = "SELECT in_flight FROM rewardsync_api.wallet_overview($1)"
        assert await con.fetchval(overview, WALLET) == 13
        await con.execute(
            "INSERT INTO rewards_pushed VALUES (31337, 9, $1, now(), $1, 0, $2, $3, $4, $5, 13, 1)",
            "0x" + "aa" * 32,
            BANK.lower(),
            CAMPAIGN,
            TOKEN.lower(),
            nonce,
        )
        assert await con.fetchval(overview, WALLET) == 0
        await con.execute(
            "INSERT INTO checkpoints (chain_id, block_number, block_hash, start_block, "
            "halted_reason) VALUES (31337, 5, NULL, 0, 'reorg deeper than max_reorg_depth')"
        )
        sync = await con.fetchrow("SELECT * FROM rewardsync_api.sync_status")
        assert (sync["chain_id"], sync["checkpoint"], sync["halted_reason"]) == (
            31337,
            5,
            "reorg deeper than max_reorg_depth",
        )
    finally:
        await con.close()


async def test_api_roles_reach_the_api_and_nothing_else(db_dsn: str) -> None:
    """`migrate --roles`: a login role in rewardsync_backend queues and reads through the API
    and is refused the internal tables; one in rewardsync_reader cannot queue."""
    from indexer import db  # noqa: PLC0415

    await db.migrate(db_dsn, roles=True)
    admin = await asyncpg.connect(db_dsn)
    suffix = db_dsn.rsplit("/", 1)[1]
    backend, reader = f"app_{suffix}", f"ro_{suffix}"
    try:
        await admin.execute(f"CREATE ROLE {backend} LOGIN IN ROLE rewardsync_backend")
        await admin.execute(f"CREATE ROLE {reader} LOGIN IN ROLE rewardsync_reader")
        base = db_dsn.replace("postgres@", "{}@", 1)
        app = await asyncpg.connect(base.format(backend))
        try:
            row = await enqueue(app, "order-roles")
            assert row["status"] == "pending"
            assert (
                await app.fetchval("SELECT status FROM rewardsync_api.reward_status('order-roles')")
                == "pending"
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.fetch("SELECT * FROM public.rewards")
        finally:
            await app.close()
        ro = await asyncpg.connect(base.format(reader))
        try:
            assert await ro.fetch("SELECT * FROM rewardsync_api.wallet_overview($1)", WALLET)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await enqueue(ro, "order-ro")
        finally:
            await ro.close()
    finally:
        await admin.execute(f"DROP OWNED BY {backend}; DROP OWNED BY {reader}")
        await admin.execute(f"DROP ROLE {backend}; DROP ROLE {reader}")
        await admin.close()


async def _event(
    con: asyncpg.Connection, table: str, block: int, index: int, **cols: object
) -> None:
    """One synthetic event row (base columns filled in)."""
    names = ["chain_id", "block_number", "block_hash", "tx_hash", "log_index", "contract", *cols]
    values = [31337, block, "0x" + "aa" * 32, "0x" + "bb" * 32, index, BANK.lower(), *cols.values()]
    marks = ", ".join(f"${i + 1}" for i in range(len(values)))
    await con.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", *values)


async def test_campaign_budgets_and_chama_views_follow_the_events(db_dsn: str) -> None:
    """remaining = last allocation - what was pushed after it; pushed in all, queued and
    deactivation; chama members, contributions, payouts, round and completion per chama and
    per member."""
    con = await asyncpg.connect(db_dsn)
    try:
        token = TOKEN.lower()
        await _event(con, "campaign_budgets", 10, 0, campaign_id=CAMPAIGN, token=token, budget=100)
        await _event(con, "rewards_pushed", 11, 0, campaign_id=CAMPAIGN, token=token,
                     nonce="0x" + "01" * 32, total_amount=30, count=2)  # fmt: skip
        await _event(con, "campaign_budgets", 12, 0, campaign_id=CAMPAIGN, token=token, budget=50)
        await _event(con, "rewards_pushed", 13, 0, campaign_id=CAMPAIGN, token=token,
                     nonce="0x" + "02" * 32, total_amount=20, count=1)  # fmt: skip
        await enqueue(con, "budget-q", amount=9)
        row = await con.fetchrow("SELECT * FROM rewardsync_api.campaign_budgets")
        assert (row["remaining"], row["pushed"], row["queued"], row["uncapped"]) == (
            30,
            50,
            9,
            False,
        )
        assert row["deactivated"] is False
        await _event(con, "campaign_deactivations", 14, 0, campaign_id=CAMPAIGN)
        assert await con.fetchval("SELECT deactivated FROM rewardsync_api.campaign_budgets")

        a, b = "0x" + "a1" * 20, "0x" + "b2" * 20
        await _event(con, "chamas", 20, 0, chama_id=1, name="Umoja", creator=a,
                     contribution_amount=5)  # fmt: skip
        await _event(con, "chama_members", 20, 1, chama_id=1, member=a)
        await _event(con, "chama_members", 21, 0, chama_id=1, member=b)
        await _event(con, "contributions", 22, 0, chama_id=1, contributor=a, amount=5, timestamp=1)
        await _event(con, "contributions", 22, 1, chama_id=1, contributor=b, amount=5, timestamp=1)
        await _event(con, "payouts", 23, 0, chama_id=1, recipient=a, amount=10, cycle_number=1)
        chama = await con.fetchrow("SELECT * FROM rewardsync_api.chama_stats")
        assert (chama["members"], chama["contributed"], chama["paid_out"]) == (2, 10, 10)
        assert (chama["current_round"], chama["completed"]) == (2, False)
        members = {
            r["member"]: (r["contributed"], r["received"])
            for r in await con.fetch("SELECT * FROM rewardsync_api.chama_member_stats")
        }
        assert members == {a: (5, 10), b: (5, 0)}
    finally:
        await con.close()
