"""The sink writes events as COPY text lines: each line must be ``copy_field`` of every column
of ``event_row`` (the row verify compares with), and PostgreSQL must read back exactly those
values, hostile strings included."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from indexer.decode import AbiRegistry, Event
from indexer.sink import Batch, copy_field, event_lines, event_row, write_rows
from indexer.types import BlockHeader, RawLog
from tests.procs import ROOT

pytestmark = pytest.mark.pg

CHAIN = 31337
MTPP = "0x" + "11" * 20
CHAMA = "0x" + "33" * 20
TOKEN, USER = "0x" + "aa" * 20, "0x" + "bb" * 20
HEADER = BlockHeader(7, "0x" + "ab" * 32, "0x" + "ac" * 32, 1_700_000_000)
NAMES = [
    "plain",
    "tab\there",
    "new\nline\r\n",
    "back\\slash \\N \\.",
    "\\.",
    "ünïcødé ✓ 'quote' \"double\"",
    "",
]
# An ABI of our own: a bool (indexed and not), text and an array, which no project event has.
ODD_ABI = [
    {
        "type": "event",
        "name": "Odd",
        "anonymous": False,
        "inputs": [
            {"name": "flag", "type": "bool", "indexed": True},
            {"name": "on", "type": "bool", "indexed": False},
            {"name": "note", "type": "string", "indexed": False},
            {"name": "ids", "type": "uint256[]", "indexed": False},
        ],
    }
]
ODD = "0x" + "44" * 20


def _word(value: str | int) -> str:
    if isinstance(value, int):
        return "0x" + value.to_bytes(32, "big").hex()
    return "0x" + "00" * 12 + value[2:]


def _topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


def _log(index: int, address: str, topics: list[str], data: bytes) -> RawLog:
    return RawLog(
        7,
        HEADER.hash,
        "0x" + f"{index // 3:064x}",
        0,
        index,
        address,
        tuple(topics),
        "0x" + data.hex(),
    )


def _events() -> list[Event]:
    reg = AbiRegistry()
    for name, address in (("MultiTokenPushPull", MTPP), ("ChamaSavings", CHAMA)):
        reg.add_abi(name, json.loads((ROOT / "abis" / f"{name}.json").read_text())["abi"])
        reg.bind(address, name)
    reg.add_abi("Odd", ODD_ABI)
    reg.bind(ODD, "Odd")
    logs = [
        _log(
            0,
            MTPP,
            [
                _topic("RewardAdded(address,address,address,uint256)"),
                _word(TOKEN),
                _word(USER),
                _word(USER),
            ],
            encode(["uint256"], [2**256 - 1]),
        ),
        _log(1, MTPP, [_topic("PusherAuthorized(address)"), _word(USER)], b""),
        _log(
            2,
            MTPP,
            [
                _topic("RoleGranted(bytes32,address,address)"),
                "0x" + "00" * 32,
                _word(USER),
                _word(TOKEN),
            ],
            b"",
        ),
        _log(
            3,
            ODD,
            [_topic("Odd(bool,bool,string,uint256[])"), _word(1)],
            encode(["bool", "string", "uint256[]"], [False, "a\tb\\c", [1, 2**200]]),
        ),
    ]
    for i, name in enumerate(NAMES):
        logs.append(
            _log(
                10 + i,
                CHAMA,
                [_topic("ChamaCreated(uint256,string,address,uint256)"), _word(i), _word(USER)],
                encode(["string", "uint256"], [name, 10**18]),
            )
        )
    events = [reg.decode(lg) for lg in logs]
    assert all(isinstance(e, Event) for e in events), events
    return [e for e in events if isinstance(e, Event)]


def _batch(events: list[Event]) -> Batch:
    return Batch(
        chain_id=CHAIN,
        from_block=7,
        to_block=7,
        parent=(6, None),
        head=HEADER,
        headers=[HEADER],
        events=events,
        header_by_number={7: HEADER},
    )


def test_event_lines_are_copy_field_of_event_row() -> None:
    """Fast lines (reward tables) and generic lines agree with the reference encoding."""
    events = _events()
    batch = _batch(events)
    tables = event_lines(batch.chain_id, batch.events, batch.header_by_number)
    got = {line for _cols, lines in tables.values() for line in lines}
    want = {"\t".join(copy_field(v) for v in event_row(CHAIN, e, HEADER)) + "\n" for e in events}
    assert got == want
    assert sum(len(lines) for _c, lines in tables.values()) == len(events)
    assert all(line.count("\n") == 1 for line in got)  # newlines inside values are escaped


def test_copy_text_round_trips_through_postgresql(db_dsn: str) -> None:
    """Every stored row equals ``event_row`` of its event, hostile strings included."""
    events = _events()

    async def go() -> dict[tuple[str, int], tuple[Any, ...]]:
        con = await asyncpg.connect(db_dsn)
        try:
            async with con.transaction():
                written = await write_rows(con, _batch(events))
            assert sum(n for t, n in written.items() if t != "blocks") == len(events)
            stored: dict[tuple[str, int], tuple[Any, ...]] = {}
            for table in sorted({e.spec.table for e in events}):
                for r in await con.fetch(f"SELECT * FROM {table} ORDER BY log_index"):
                    stored[(table, r["log_index"])] = tuple(r.values())
            return stored
        finally:
            await con.close()

    stored = asyncio.run(go())
    for e in events:
        row = stored[(e.spec.table, e.log.log_index)]
        want = event_row(CHAIN, e, HEADER)
        if e.spec.table == "other_events":  # args is JSONB: compare the documents
            row, want = (*row[:8], json.loads(row[8])), (*want[:8], json.loads(want[8]))
        assert row[: len(want)] == want, e.spec.name
    names = [stored[("chamas", 10 + i)][8] for i in range(len(NAMES))]
    assert names == NAMES
