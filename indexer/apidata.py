"""What the HTTP API reads and writes, as JSON-ready values: every statement is a named query
of ``sql/api.sql`` (mostly the ``rewardsync_api`` schema, so the SQL and HTTP APIs agree).

JSON shapes: amounts are decimal strings (uint256 does not fit a JSON number), addresses are
EIP-55 checksummed, hashes and campaign ids lowercase hex, times ISO 8601. Input addresses may
be lowercase or checksummed; mixed case must be a valid checksum (PostgreSQL cannot check it).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
from eth_utils.address import to_checksum_address

from indexer.db import Conn, Q

ADDRESS_COLUMNS = frozenset({"token", "bank", "wallet", "contract", "creator", "member"})
HEX_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
HISTORY_LIMIT = 100
HISTORY_MAX_LIMIT = 500
RECENT_ROWS = 20


class ApiError(Exception):
    """A request the API refuses: the HTTP status and one clear message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_address(text: str | None, field: str) -> str:
    """A 20-byte hex address, lowercase; mixed case must be a valid EIP-55 checksum."""
    if text is None or not HEX_ADDRESS.fullmatch(text):
        raise ApiError(400, f"{field} is not a 20-byte 0x address")
    low, digits = text.lower(), text[2:]
    mixed = digits not in (digits.lower(), digits.upper())
    if mixed and to_checksum_address(low) != text:
        raise ApiError(400, f"{field} has mixed case but is not a valid EIP-55 checksum")
    return low


def parse_int(text: str | None, field: str, *, minimum: int = 0) -> int | None:
    """An optional integer query parameter (None when absent)."""
    if text is None or text == "":
        return None
    if not re.fullmatch(r"-?\d{1,30}", text) or int(text) < minimum:
        raise ApiError(400, f"{field} must be an integer >= {minimum}")
    return int(text)


def json_value(column: str, value: Any) -> Any:
    """One column's value as the API shows it."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return str(int(value)) if value == value.to_integral_value() else str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if column in ADDRESS_COLUMNS and isinstance(value, str) and HEX_ADDRESS.fullmatch(value):
        return to_checksum_address(value)
    if isinstance(value, list):
        return [json_value(column, v) for v in value]
    return value


def json_row(row: asyncpg.Record, *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A record as a JSON object (see ``json_value``)."""
    return {k: json_value(k, v) for k, v in row.items() if k not in drop}


@dataclass(frozen=True, slots=True)
class HistoryCursor:
    """Where a history page ends: the last item's block, log index and chain."""

    block: int
    log_index: int
    chain_id: int

    def encode(self) -> str:
        return f"{self.block}.{self.log_index}.{self.chain_id}"

    @classmethod
    def decode(cls, text: str) -> HistoryCursor:
        m = re.fullmatch(r"(\d{1,19})\.(\d{1,19})\.(\d{1,19})", text)
        if m is None:
            raise ApiError(400, "cursor is not one this API returned")
        return cls(int(m[1]), int(m[2]), int(m[3]))


async def wallet_overview(con: Conn, wallet: str) -> dict[str, Any]:
    """Per chain and token: claimable on chain, claimed, in flight, queued, failed."""
    rows = await con.fetch(Q["api_wallet_overview"], wallet)
    return {"wallet": to_checksum_address(wallet), "balances": [json_row(r) for r in rows]}


async def wallet_history(
    con: Conn, wallet: str, *, cursor: str | None, chain_id: int | None, limit: int
) -> dict[str, Any]:
    """One page of a wallet's reward events, newest first; ``next_cursor`` None on the last."""
    after = HistoryCursor.decode(cursor) if cursor else None
    rows = await con.fetch(
        Q["api_wallet_history"],
        wallet,
        None if after is None else after.block,
        None if after is None else after.log_index,
        None if after is None else after.chain_id,
        chain_id,
        limit + 1,
    )
    items = [history_item(r) for r in rows[:limit]]
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = HistoryCursor(last["block_number"], last["log_index"], last["chain_id"]).encode()
    return {"wallet": to_checksum_address(wallet), "items": items, "next_cursor": nxt}


def history_item(row: asyncpg.Record) -> dict[str, Any]:
    """One history row: ``batch_id`` and ``external_keys`` only on ``pushed`` items."""
    return json_row(row, drop=() if row["kind"] == "pushed" else ("batch_id", "external_keys"))


async def reward_status(con: Conn, external_key: str) -> dict[str, Any]:
    row = await con.fetchrow(Q["api_reward_status"], external_key)
    if row is None:
        raise ApiError(404, "no reward with this external_key")
    return json_row(row)


async def campaigns(
    con: Conn, *, chain_id: int | None, bank: str | None, campaign_id: str | None
) -> dict[str, Any]:
    rows = await con.fetch(Q["api_campaigns"], chain_id, bank, campaign_id)
    return {"campaigns": [json_row(r) for r in rows]}


async def chamas(con: Conn, chama_id: int, chain_id: int | None) -> dict[str, Any]:
    """Every chama with this id (one per chain and contract), each with its members."""
    found = await con.fetch(Q["api_chamas"], chama_id, chain_id)
    if not found:
        raise ApiError(404, "no chama with this id")
    members = await con.fetch(Q["api_chama_members"], chama_id, chain_id)
    out = []
    for c in found:
        mine = [
            json_row(m, drop=("chain_id", "contract", "chama_id"))
            for m in members
            if (m["chain_id"], m["contract"]) == (c["chain_id"], c["contract"])
        ]
        out.append(json_row(c) | {"member_stats": mine})
    return {"chamas": out}


async def sync_status(con: Conn, live: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The database's view per chain, with what this process knows live (name, head, lag,
    leader) for the chains it runs."""
    rows = await con.fetch(Q["api_sync_status"])
    chains = []
    for r in rows:
        item = json_row(r)
        facts = live.get(r["chain_id"], {})
        head = facts.get("head")
        item |= {
            "name": facts.get("name"),
            "head": head,
            "lag": None if head is None or head < 0 else max(head - r["checkpoint"], 0),
            "leader": facts.get("leader"),
        }
        chains.append(item)
    return {"chains": chains}


async def enqueue(con: Conn, body: object) -> dict[str, Any]:
    """Queue a reward through ``rewardsync_api.enqueue_reward``: each field checked here
    first (EIP-55 included), then by the function (one clear error per bad field)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    fields = ("chain_id", "bank", "campaign_id", "token", "wallet", "amount", "external_key")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiError(400, f"unknown field: {unknown[0]}")
    for name in fields:
        if name not in body:
            raise ApiError(400, f"{name} is missing")
    chain_id, amount, key = body["chain_id"], body["amount"], body["external_key"]
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
        raise ApiError(400, "chain_id must be a positive integer")
    if not isinstance(amount, str) or not re.fullmatch(r"[1-9]\d{0,77}", amount):
        raise ApiError(400, "amount must be a decimal string of a positive integer")
    if not isinstance(key, str) or not key or len(key) > 200:
        raise ApiError(400, "external_key must be a string of 1 to 200 characters")
    campaign = body["campaign_id"]
    if not isinstance(campaign, str) or not re.fullmatch(r"0x[0-9a-fA-F]{64}", campaign):
        raise ApiError(400, "campaign_id is not a 32-byte 0x value")
    addresses = [parse_address(_str(body[n]), n) for n in ("bank", "token", "wallet")]
    try:
        row = await con.fetchrow(
            Q["api_enqueue"],
            chain_id,
            addresses[0],
            campaign.lower(),
            addresses[1],
            addresses[2],
            Decimal(amount),
            key,
        )
    except asyncpg.InvalidParameterValueError as exc:
        raise ApiError(400, exc.args[0] if exc.args else "invalid argument") from exc
    except asyncpg.UniqueViolationError as exc:
        raise ApiError(409, f"external_key {key!r} is already queued with other values") from exc
    assert row is not None
    return {"id": row["id"], "status": row["status"], "external_key": key}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def ops_facts(con: Conn, live: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What the ops page shows: chains, last reorgs, open discrepancies, recent batches."""
    status = await sync_status(con, live)
    reorgs = await con.fetch(Q["api_recent_reorgs"], RECENT_ROWS)
    open_ = await con.fetch(Q["api_open_discrepancies"], RECENT_ROWS)
    batches = await con.fetch(Q["api_recent_batches"], RECENT_ROWS)
    return {
        "chains": status["chains"],
        "reorgs": [json_row(r) for r in reorgs],
        "discrepancies": [json_row(r) for r in open_],
        "batches": [json_row(r) for r in batches],
    }
