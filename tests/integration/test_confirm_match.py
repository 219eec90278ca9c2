"""A RewardsPushed confirms a batch only when it pays what the batch pays (issue 13.5)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from indexer import rewards

pytestmark = [pytest.mark.pg]

BANK, TOKEN, NONCE = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 32
CAMPAIGN = "0x" + "dd" * 32


async def _scenario(dsn: str, count: int, total: int) -> str:
    con = await asyncpg.connect(dsn)
    try:
        bid = await con.fetchval(
            "INSERT INTO reward_batches (chain_id, bank, campaign_id, token, nonce, status, "
            "reward_count, total_amount) VALUES (7, $1, $2, $3, $4, 'pending', 2, 30) "
            "RETURNING id",
            BANK,
            CAMPAIGN,
            TOKEN,
            NONCE,
        )
        await con.execute(
            "INSERT INTO rewards_pushed (chain_id, block_number, block_hash, tx_hash, log_index, "
            "contract, campaign_id, token, nonce, total_amount, count) "
            "VALUES (7, 5, $1, $1, 0, $2, $3, $4, $5, $6, $7)",
            "0x" + "ee" * 32,
            BANK,
            CAMPAIGN,
            TOKEN,
            NONCE,
            total,
            count,
        )
        async with con.transaction():
            await rewards.on_commit(con, 7, "t", checkpoint=10, confirmations=0)
        return str(await con.fetchval("SELECT status FROM reward_batches WHERE id = $1", bid))
    finally:
        await con.close()


@pytest.mark.parametrize(
    ("count", "total", "status"),
    [(2, 30, "confirmed"), (3, 30, "pending"), (2, 31, "pending")],
)
def test_rewards_pushed_confirms_only_a_matching_batch(
    db_dsn: str, count: int, total: int, status: str
) -> None:
    """Same nonce, another count or total: not this batch's payment, no confirmation."""
    assert asyncio.run(_scenario(db_dsn, count, total)) == status
