"""``python -m bench --explain``: the plans of the queries the daemon runs per commit, per
rollback and per reconcile run, on a database the size of a mature reward platform.

The tables are filled by SQL (``generate_series``), not from a chain: a plan depends on the
sizes and the statistics, not on where the rows came from. Default size: 1,000,000
RewardAdded to 1,000,000 distinct wallets over 50,000 blocks from 5,000 banks, 100,000
claims, 1,000,000 queued rewards in 20,000 batches. Each query is run under ``EXPLAIN
(ANALYZE, BUFFERS, FORMAT JSON)`` inside a transaction that is rolled back (the writes leave
nothing), and the table flags every sequential scan of a table holding more than
``LARGE_ROWS`` rows: in a hot path that is a finding. The sizes per million events close the
report (README "Table sizes").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from indexer import db
from indexer.db import Q
from indexer.sink import rollback_balances_sql

LARGE_ROWS = 10_000
CID = 1
PUSHPULL = "0x" + "ab" * 20
TOKENS = ["0x" + f"{i:040x}" for i in (0xA1, 0xA2, 0xA3)]
EVENTS_PER_BLOCK = 20


def _fill(events: int, banks: int) -> list[str]:
    """SQL that fills a migrated database (see the module docstring)."""
    blocks = events // EVENTS_PER_BLOCK
    h = "'0x' || md5({0}::text) || md5('h' || {0}::text)"  # a 32-byte hash of an integer
    addr = "'0x' || lpad(to_hex({0}), 40, '0')"
    bank = addr.format(f"(1000000000 + ({{0}}) % {banks})")
    ev_base = (
        f"{CID}, g / {EVENTS_PER_BLOCK} + 1, {h.format(f'(g / {EVENTS_PER_BLOCK} + 1)')}, "
        f"now(), {h.format('(g + 7777777)')}, g % {EVENTS_PER_BLOCK}, '{PUSHPULL}'"
    )
    token = f"(ARRAY{TOKENS})[1 + g % 3]"
    return [
        f"INSERT INTO blocks (chain_id, number, hash, parent_hash, timestamp) "
        f"SELECT {CID}, n, {h.format('n')}, {h.format('(n - 1)')}, 1700000000 + n "
        f"FROM generate_series(1, {blocks + 1}) n",
        f"INSERT INTO reward_added SELECT {ev_base}, {token}, {addr.format('g')}, "
        f"{bank.format('g')}, 1000 + g FROM generate_series(0, {events - 1}) g",
        f"INSERT INTO reward_claimed SELECT {ev_base}, "
        f"{token}, {addr.format('g')}, 500 FROM generate_series(0, {events - 1}, 10) g",
        "INSERT INTO reward_balances (chain_id, contract, token, wallet, added, claimed) "
        "SELECT chain_id, contract, token, wallet, sum(a), sum(c) FROM ("
        " SELECT chain_id, contract, token, wallet, amount AS a, 0 AS c FROM reward_added"
        " UNION ALL SELECT chain_id, contract, token, wallet, 0, amount FROM reward_claimed"
        ") e GROUP BY 1, 2, 3, 4",
        f"INSERT INTO product_banks (chain_id, block_number, block_hash, tx_hash, log_index, "
        f"contract, product_id, bank, owner) "
        f"SELECT {CID}, 1, {h.format('1')}, {h.format('g')}, g, '0x' || repeat('f', 40), "
        f"{h.format('g')}, {bank.format('g')}, {addr.format('g')} "
        f"FROM generate_series(0, {banks - 1}) g",
        f"INSERT INTO reward_batches (chain_id, bank, campaign_id, token, nonce, deadline, "
        f"status, block_number, reward_count, total_amount) "
        f"SELECT {CID}, {bank.format('g')}, {h.format('0')}, '{TOKENS[0]}', "
        f"{h.format('(g + 99000000)')}, 2000000000, "
        f"CASE WHEN g % 100 = 0 THEN 'pending' ELSE 'confirmed' END, "
        f"CASE WHEN g % 100 = 0 THEN NULL ELSE 1 + g % {blocks} END, 50, 50000 "
        f"FROM generate_series(1, {events // 50}) g",
        f"INSERT INTO rewards (chain_id, bank, campaign_id, token, wallet, amount, external_key, "
        f"status, batch_id) "
        f"SELECT {CID}, b.bank, b.campaign_id, b.token, {addr.format('(g + 5000000)')}, 1000, "
        f"'k' || g, CASE WHEN b.status = 'pending' THEN 'pushed' ELSE 'confirmed' END, b.id "
        f"FROM generate_series(0, {events - 1}) g JOIN reward_batches b ON b.id = 1 + g / 50",
        f"INSERT INTO rewards (chain_id, bank, campaign_id, token, wallet, amount, external_key) "
        f"SELECT {CID}, {bank.format('g')}, {h.format('0')}, '{TOKENS[0]}', "
        f"{addr.format('(g + 9000000)')}, 1000, 'q' || g FROM generate_series(0, 4999) g",
        f"INSERT INTO checkpoints (chain_id, block_number, block_hash, start_block, "
        f"finalized_block) VALUES ({CID}, {blocks + 1}, {h.format(blocks + 1)}, 0, {blocks - 63})",
        "ANALYZE",
    ]


@dataclass(frozen=True, slots=True)
class Probe:
    """One query as the daemon runs it: where (per commit, rollback, reconcile, API), and
    its arguments on the filled database."""

    where: str
    name: str
    sql: str
    args: tuple[Any, ...]


def probes(events: int) -> list[Probe]:
    tip = events // EVENTS_PER_BLOCK + 1
    wallets = ["0x" + f"{g:040x}" for g in range(events - 40, events)]
    contracts, tokens = [PUSHPULL] * len(wallets), [TOKENS[g % 3] for g in range(40)]
    keys = (contracts, tokens, wallets)
    # (repair paths) rebuild runs after delete_balances in one transaction; each probe is
    # rolled back alone, so it rebuilds keys that hold no row (the plan is the same)
    fresh = (contracts, tokens, ["0x" + f"{g + 50_000_000:040x}" for g in range(40)])
    return [
        Probe("commit", "lock_checkpoint", Q["lock_checkpoint"], (CID,)),
        Probe("commit", "add_balances", Q["add_balances"], (CID, tip - 1, tip, 101)),
        Probe(
            "commit",
            "update_checkpoint",
            Q["update_checkpoint"],
            (CID, tip, "0x" + "1" * 64, tip - 64),
        ),
        Probe("commit", "confirm_batches", Q["confirm_batches"], (CID, tip - 12)),
        Probe("commit", "confirm_rewards", Q["confirm_rewards"], ([1, 2, 3],)),
        Probe(
            "rollback",
            "rollback reward_added",
            rollback_balances_sql("reward_added"),
            (CID, tip - 3),
        ),
        Probe("rollback", "delete_zero_balances", Q["delete_zero_balances"], (CID, *keys)),
        Probe("rollback", "delete_blocks_above", Q["delete_blocks_above"], (CID, tip - 3)),
        Probe("rollback", "unconfirm_batches", Q["unconfirm_batches"], (CID, tip - 3)),
        Probe("repair", "delete_balances", Q["delete_balances"], (CID, *keys)),
        Probe("repair", "rebuild_balances", Q["rebuild_balances"], (CID, *fresh)),
        Probe("reorg walk", "recent_blocks", Q["recent_blocks"], (CID, tip, 64)),
        Probe(
            "reconcile (near the limit)",
            "rc_balance_keys_over",
            Q["rc_balance_keys_over"],
            (CID, [PUSHPULL], 50_000),
        ),
        Probe(
            "reconcile", "rc_touched_upto", Q["rc_touched_upto"], (CID, tip - 600, tip - 64, 47_500)
        ),
        Probe(
            "reconcile",
            "rc_touched_keys",
            Q["rc_touched_keys"],
            (CID, tip - 600, tip - 64, [PUSHPULL]),
        ),
        Probe(
            "reconcile",
            "rc_sample_keys",
            Q["rc_sample_keys"],
            (CID, "0x5", "", "", [PUSHPULL], 2500),
        ),
        Probe("reconcile", "rc_stored_at", Q["rc_stored_at"], (CID, *keys, tip - 64)),
        Probe("reconcile", "rc_batch_state", Q["rc_batch_state"], (CID, tip - 64)),
        Probe("reconcile", "rc_unrecorded_pushes", Q["rc_unrecorded_pushes"], (CID, tip - 64)),
        Probe("reconcile (full)", "rc_direct_rewards", Q["rc_direct_rewards"], (CID, tip - 64)),
        Probe(
            "reconcile",
            "rc_direct_rewards_in",
            Q["rc_direct_rewards_in"],
            (CID, tip - 600, tip - 64),
        ),
        Probe("reconcile", "rc_confirmed_rewards_astray", Q["rc_confirmed_rewards_astray"], (CID,)),
        Probe(
            "reconcile (once a cycle)",
            "rc_totals_stored_at",
            Q["rc_totals_stored_at"],
            (CID, [PUSHPULL], tip - 64),
        ),
        Probe("api", "wallet_balances", "SELECT * FROM wallet_balances($1)", (wallets[0],)),
    ]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


async def _explain(con: asyncpg.Connection, probe: Probe, sizes: dict[str, int]) -> str:
    tx = con.transaction()
    await tx.start()
    try:
        started = time.perf_counter()
        raw = await con.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {probe.sql}", *probe.args
        )
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        await tx.rollback()
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    seq = sorted(
        {
            n["Relation Name"]
            for n in _nodes(plan)
            if n.get("Node Type") == "Seq Scan"
            and sizes.get(n.get("Relation Name", ""), 0) > LARGE_ROWS
        }
    )
    scans = sorted(
        {
            f"{n['Node Type'].replace(' Scan', '')}:{n.get('Index Name') or n['Relation Name']}"
            for n in _nodes(plan)
            if "Relation Name" in n
        }
    )
    verdict = "SEQ SCAN of " + ", ".join(seq) if seq else "ok"
    return (
        f"  {probe.where:<24} {probe.name:<28} {elapsed:>9.1f} ms  {verdict:<32} "
        f"{' '.join(scans)[:90]}"
    )


async def run(dsn_admin: str, dsn_of: Any, events: int = 1_000_000, banks: int = 5_000) -> str:
    """Fill a fresh database and explain every probe; the report as text."""
    name = "bench_explain"
    admin = await asyncpg.connect(dsn_admin)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    dsn = dsn_of(name)
    await db.migrate(dsn)
    con = await asyncpg.connect(dsn)
    lines = []
    try:
        started = time.perf_counter()
        for sql in _fill(events, banks):
            await con.execute(sql)
        lines.append(
            f"explain: {events:,} RewardAdded to {events:,} wallets from {banks:,} banks, "
            f"{events // 10:,} claims, {events:,} rewards in {events // 50:,} batches "
            f"(filled in {time.perf_counter() - started:.0f} s)"
        )
        sizes = {
            r["relname"]: int(r["n"])
            for r in await con.fetch(
                "SELECT relname, reltuples::bigint AS n FROM pg_class WHERE relkind = 'r'"
            )
        }
        lines.append(f"  {'where':<24} {'query':<28} {'time':>12}  {'verdict':<32} scans")
        for probe in probes(events):
            lines.append(await _explain(con, probe, sizes))
        per_m = 1_000_000 / events
        lines.append("table sizes per million events (heap + indexes + TOAST):")
        for table in ("reward_added", "reward_claimed", "reward_balances", "blocks", "rewards"):
            total = await con.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
            lines.append(f"  {table:<18} {total * per_m / 2**20:8.0f} MB ({sizes[table]:,} rows)")
    finally:
        await con.close()
    return "\n".join(lines)


def main(dsn_admin: str, dsn_of: Any, events: int) -> str:
    return asyncio.run(run(dsn_admin, dsn_of, events))
