"""``loads_answer`` (the regex path for large log answers) is a cache of the exact path:
for any answer, the logs ``parse_logs`` makes of what it returns are those it makes of
``orjson.loads`` (or both refuse), the rest of the answer is the same, and well-formed node
answers do take the fast path."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.errors import InvalidRpcData
from indexer.rpcdata import loads_answer, parse_logs
from indexer.types import RawLog

ANVIL_ORDER = [
    "address",
    "topics",
    "data",
    "blockHash",
    "blockNumber",
    "blockTimestamp",
    "transactionHash",
    "transactionIndex",
    "logIndex",
    "removed",
]
GETH_ORDER = [
    "address",
    "topics",
    "data",
    "blockNumber",
    "transactionHash",
    "transactionIndex",
    "blockHash",
    "logIndex",
    "removed",
]
HEADER = {"number": "0x2", "hash": "0x" + "ab" * 32}


def _node_log(i: int, order: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "address": "0x" + "5f" * 20,
        "topics": ["0x" + "2f" * 32, "0x" + f"{i:064x}"],
        "data": "0x" + f"{i * 7:064x}",
        "blockHash": "0x" + "ab" * 32,
        "blockNumber": hex(2 + i // 100),
        "blockTimestamp": "0x6b15ade4",
        "transactionHash": "0x" + f"{i:064x}",
        "transactionIndex": hex(i % 100),
        "logIndex": hex(i),
        "removed": False,
    }
    return {k: fields[k] for k in order}


def _batch(logs: Any) -> list[dict[str, Any]]:
    return [
        {"jsonrpc": "2.0", "id": 0, "result": logs},
        {"jsonrpc": "2.0", "id": 1, "result": HEADER},
    ]


def _parsed(doc: Any) -> tuple[list[RawLog] | None, Any]:
    """The logs parse_logs makes of the first result (None: refused) and the rest."""
    try:
        logs: list[RawLog] | None = parse_logs(doc[0]["result"])
    except (InvalidRpcData, TypeError):
        logs = None
    return logs, doc[1:]


NEAR_MISSES: dict[str, list[Any]] = {
    "address": ["0x" + "5F" * 20, "0x" + "5f" * 19, "0x" + "5f" * 21, None],
    "topics": [[], ["0x" + "2F" * 32], ["0x" + "2f" * 32] * 5, ["0x" + "2f" * 31], [1], "0x"],
    "data": ["0x", "0xabc", "0xABCD", "0x" + "00" * 100, "ab", None],
    "blockHash": ["0x" + "AB" * 32, "0x" + "ab" * 31, "0x" + "ag" * 32],
    "blockNumber": ["0x0002", "0x", "0x" + "f" * 15, "0x" + "7" * 16, "0x" + "f" * 16, "0xA", 2],
    "blockTimestamp": ["0X1", None, "0x" + "1" * 17],
    "transactionIndex": ["0x00", None, "0xG"],
    "logIndex": ["0x" + "1" * 15, "0x" + "8" + "0" * 15, "-0x1"],
    "removed": [True, None, "false"],
}


@st.composite
def _answers(draw: st.DrawFn) -> bytes:
    """Node-like answers (one key order, canonical values), some with one near miss: a
    field spoiled, dropped or added, or one log in another key order."""
    order = draw(st.sampled_from([ANVIL_ORDER, GETH_ORDER, sorted(ANVIL_ORDER)]))
    n = draw(st.integers(1, 6))
    logs: list[Any] = [_node_log(draw(st.integers(0, 400)), order) for _ in range(n)]
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        i = draw(st.integers(0, n - 1))
        if not isinstance(logs[i], dict):
            continue
        how = draw(st.sampled_from(["spoil", "spoil", "drop", "extra", "reorder", "whole"]))
        if how == "spoil":
            field = draw(st.sampled_from(sorted(NEAR_MISSES)))
            logs[i][field] = draw(st.sampled_from(NEAR_MISSES[field]))
        elif how == "drop":
            del logs[i][draw(st.sampled_from(sorted(logs[i])))]
        elif how == "extra":
            logs[i]["note"] = "0x1"
        elif how == "reorder":
            keys = draw(st.permutations(sorted(logs[i])))
            logs[i] = {k: logs[i][k] for k in keys}
        else:
            logs[i] = draw(st.sampled_from([None, [], "0x", 5]))
    batch = _batch(logs)
    if draw(st.integers(0, 9)) == 0:
        return json.dumps(batch).encode()  # with spaces: not the compact form
    return orjson.dumps(batch)


@settings(max_examples=500, deadline=None)
@given(_answers())
def test_loads_answer_gives_what_the_exact_path_gives(payload: bytes) -> None:
    assert _parsed(loads_answer(payload, min_size=0)) == _parsed(orjson.loads(payload))


def test_node_answers_take_the_fast_path_in_either_key_order() -> None:
    for order in (ANVIL_ORDER, GETH_ORDER):
        payload = orjson.dumps(_batch([_node_log(i, order) for i in range(300)]))
        doc = loads_answer(payload)
        assert len(payload) > 64 * 1024
        assert all(type(lg) is RawLog for lg in doc[0]["result"])
        assert doc[1:] == orjson.loads(payload)[1:]
        assert _parsed(doc) == _parsed(orjson.loads(payload))


def test_an_odd_log_sends_the_whole_array_the_exact_way() -> None:
    logs = [_node_log(i, ANVIL_ORDER) for i in range(300)]
    logs[150]["data"] = "0xABCD"  # uppercase: the exact path lowers it
    payload = orjson.dumps(_batch(logs))
    doc = loads_answer(payload)
    assert isinstance(doc[0]["result"][0], dict)
    assert parse_logs(doc[0]["result"])[150].data == "0xabcd"


def test_a_placeholder_planted_by_a_node_is_not_replaced() -> None:
    logs = [_node_log(i, ANVIL_ORDER) for i in range(300)]
    payload = orjson.dumps([*_batch(logs), {"jsonrpc": "2.0", "id": 2, "result": "x:0"}])
    doc = loads_answer(payload)
    assert doc[2]["result"] == "x:0"
    assert len(doc[0]["result"]) == 300
