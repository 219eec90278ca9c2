"""The invariant checker shared by every scenario (the test harness of the README's Guarantees).

It reads the chain through anvil's own JSON-RPC (not the project's client) and the database
through a plain connection, so a bug in the indexer's RPC or decoding path cannot hide itself.

- INV-CANON: for every block in [start, checkpoint] the stored event keys (block, log index,
  block hash, tx hash, contract) equal eth_getLogs of the watched contracts; every stored
  header equals the node's canonical header.
- INV-UNIQ: no chain position appears twice across the event tables.
- INV-CKPT: checkpoint hash = stored header = node's; no rows above it; headers contiguous and
  parent-linked over the stored window above the finalized height.
- INV-DERIVED: reward_balances = fold of reward_added/reward_claimed, and pending = the
  contract's getPendingAmount at the checkpoint block.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from typing import Any

import asyncpg
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from indexer import catalogue
from tests.procs import Anvil

EVENT_TABLES = (*catalogue.TABLES, "other_events", "quarantine")
BANK_CREATED = "0x" + keccak(text="ProductBankCreated(bytes32,address,address)").hex()


def _fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        con = await asyncpg.connect(dsn)
        try:
            return list(await con.fetch(sql, *args))
        finally:
            await con.close()

    return asyncio.run(go())


def db_fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one query on a fresh connection (for tests)."""
    return _fetch(dsn, sql, *args)


def checkpoint(dsn: str, chain_id: int = 31337) -> tuple[int, str | None]:
    rows = _fetch(
        dsn, "SELECT block_number, block_hash FROM checkpoints WHERE chain_id=$1", chain_id
    )
    assert rows, "no checkpoint row"
    return rows[0]["block_number"], rows[0]["block_hash"]


def watched_addresses(node: Anvil, static: list[str], factory: str | None, upto: int) -> list[str]:
    """Static addresses plus every bank the factory created on the canonical chain."""
    out = [a.lower() for a in static]
    if factory:
        logs = node.rpc(
            "eth_getLogs",
            [
                {
                    "fromBlock": "0x0",
                    "toBlock": hex(upto),
                    "address": factory,
                    "topics": [BANK_CREATED],
                }
            ],
        )
        out += ["0x" + lg["topics"][2][-40:] for lg in logs]
    return out


def stored_keys(dsn: str, chain_id: int = 31337) -> list[tuple[int, int, str, str, str, str]]:
    keys: list[tuple[int, int, str, str, str, str]] = []
    for table in EVENT_TABLES:
        rows = _fetch(
            dsn,
            f"SELECT block_number, log_index, block_hash, tx_hash, contract "
            f"FROM {table} WHERE chain_id = $1",
            chain_id,
        )
        keys += [
            (r["block_number"], r["log_index"], r["block_hash"], r["tx_hash"], r["contract"], table)
            for r in rows
        ]
    return keys


def assert_canonical(
    dsn: str,
    node: Anvil,
    static: list[str],
    factory: str | None,
    chain_id: int = 31337,
    start: int = 0,
) -> int:
    """INV-CANON + INV-UNIQ + INV-CKPT; returns the number of events compared."""
    number, hash_ = checkpoint(dsn, chain_id)
    stored = stored_keys(dsn, chain_id)
    positions = [(k[0], k[1]) for k in stored]
    assert len(positions) == len(set(positions)), "INV-UNIQ: a position is stored twice"
    above = [k for k in stored if k[0] > number]
    assert not above, f"INV-CKPT: rows above the checkpoint {number}: {above[:3]}"
    if number < start:
        assert not stored
        return 0
    node_hash = node.rpc("eth_getBlockByNumber", [hex(number), False])["hash"]
    assert hash_ == node_hash, f"INV-CKPT: checkpoint {number} hash {hash_} != node {node_hash}"
    addresses = watched_addresses(node, static, factory, number)
    logs = node.rpc(
        "eth_getLogs", [{"fromBlock": hex(start), "toBlock": hex(number), "address": addresses}]
    )
    expected = sorted(
        (
            int(lg["blockNumber"], 16),
            int(lg["logIndex"], 16),
            lg["blockHash"],
            lg["transactionHash"],
            lg["address"].lower(),
        )
        for lg in logs
    )
    got = sorted(k[:5] for k in stored)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    extra_tables = Counter(k[5] for k in stored if k[:5] in set(extra))
    assert not missing, f"INV-CANON: {len(missing)} missing: {missing[:3]}"
    assert not extra, (
        f"INV-CANON: {len(missing)} missing, {len(extra)} extra (by table "
        f"{dict(extra_tables)}); missing {missing[:3]} extra {extra[:3]}"
    )
    _assert_headers(dsn, node, chain_id, number)
    return len(expected)


def _assert_headers(dsn: str, node: Anvil, chain_id: int, number: int) -> None:
    rows = _fetch(
        dsn,
        "SELECT number, hash, parent_hash FROM blocks WHERE chain_id=$1 ORDER BY number",
        chain_id,
    )
    assert rows, "INV-CKPT: no headers stored"
    assert rows[-1]["number"] == number, "INV-CKPT: checkpoint header not stored"
    for r in rows:
        canon = node.rpc("eth_getBlockByNumber", [hex(r["number"]), False])
        assert canon is not None, f"INV-CANON: node has no block {r['number']}"
        assert canon["hash"] == r["hash"], (
            f"INV-CANON: stored header {r['number']} is not canonical"
        )
    fin = _fetch(dsn, "SELECT finalized_block FROM checkpoints WHERE chain_id=$1", chain_id)
    floor = max(fin[0]["finalized_block"] or 0, rows[0]["number"])
    window = [r for r in rows if r["number"] >= floor]
    for a, b in itertools.pairwise(window):
        assert b["number"] == a["number"] + 1, f"INV-CKPT: header gap at {a['number']}"
        assert b["parent_hash"] == a["hash"], f"INV-CKPT: broken link at {b['number']}"


def _call(node: Anvil, to: str, sig: str, types: list[str], args: list[Any], block: int) -> Any:
    data = keccak(text=sig)[:4] + abi_encode(types, args)
    out = node.rpc("eth_call", [{"to": to, "data": "0x" + data.hex()}, hex(block)])
    return abi_decode(["uint256"], bytes.fromhex(out[2:]))[0]


def assert_balances(dsn: str, node: Anvil, mtpp: str, chain_id: int = 31337) -> int:
    """INV-DERIVED: balances = fold of events = the contract's view at the checkpoint."""
    number, _ = checkpoint(dsn, chain_id)
    # A balance row exists while its key's events credit or claim something (zero-amount
    # events alone make none).
    fold: dict[tuple[str, str], int] = defaultdict(int)
    for r in _fetch(
        dsn, "SELECT token, wallet, amount FROM reward_added WHERE chain_id=$1", chain_id
    ):
        if int(r["amount"]):
            fold[(r["token"], r["wallet"])] += int(r["amount"])
    for r in _fetch(
        dsn, "SELECT token, wallet, amount FROM reward_claimed WHERE chain_id=$1", chain_id
    ):
        if int(r["amount"]):
            fold[(r["token"], r["wallet"])] -= int(r["amount"])
    rows = _fetch(
        dsn, "SELECT token, wallet, pending FROM reward_balances WHERE chain_id=$1", chain_id
    )
    stored = {(r["token"], r["wallet"]): int(r["pending"]) for r in rows}
    assert stored == dict(fold), "INV-DERIVED: balances != fold"
    for (token, wallet), pending in stored.items():
        onchain = _call(
            node,
            mtpp,
            "getPendingAmount(address,address)",
            ["address", "address"],
            [token, wallet],
            number,
        )
        assert onchain == pending, f"INV-DERIVED: {wallet} pending {pending} != chain {onchain}"
    return len(stored)
