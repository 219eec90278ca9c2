"""``parse_logs`` (the cached fast path) gives exactly what ``parse_log`` gives log by log:
the same RawLogs for good input, an InvalidRpcData for bad input, whatever the mix."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.errors import InvalidRpcData
from indexer.rpcdata import parse_log, parse_logs
from indexer.types import RawLog

HASHES = ["0x" + c * 64 for c in "abc"] + ["0x" + "AB" * 32]  # one uppercase: lowered
ADDRESSES = ["0x" + "11" * 20, "0x" + "Cd" * 20]
BAD: list[Any] = [
    None,
    5,
    [],
    "0x",
    "0xzz",
    "ab" * 33,
    "0x" + "a" * 63,
    "0x" + "a" * 65,
    "0x" + "g" * 64,
    True,
    {"x": 1},
]


def _good_log(draw: st.DrawFn) -> dict[str, Any]:
    n_topics = draw(st.integers(0, 4))
    return {
        "blockNumber": draw(st.sampled_from(["0x1", "0x2", "0xA"])),
        "blockHash": draw(st.sampled_from(HASHES)),
        "transactionHash": draw(st.sampled_from(HASHES)),
        "transactionIndex": draw(st.sampled_from(["0x0", "0x1"])),
        "logIndex": draw(st.sampled_from(["0x0", "0x1", "0x2", "0x3"])),
        "address": draw(st.sampled_from(ADDRESSES)),
        "topics": [draw(st.sampled_from(HASHES)) for _ in range(n_topics)],
        "data": draw(st.sampled_from(["0x", "0x" + "00" * 32, "0xAbCd", "0x" + "ff" * 64])),
        "removed": draw(st.sampled_from([False, False, False, None])),
    }


@st.composite
def _raw_log(draw: st.DrawFn) -> Any:
    log = _good_log(draw)
    if draw(st.integers(0, 4)) == 0:  # spoil one field
        field = draw(st.sampled_from([*sorted(log), "whole"]))
        bad = draw(st.sampled_from(BAD))
        if field == "whole":
            return bad
        if field == "topics" and draw(st.booleans()):
            log["topics"] = [*log["topics"], bad]
        elif draw(st.booleans()):
            del log[field]
        else:
            log[field] = bad
    return log


def _reference(raws: list[Any]) -> list[RawLog] | None:
    try:
        return [parse_log(r) for r in raws]
    except InvalidRpcData:
        return None


@settings(max_examples=400, deadline=None)
@given(st.lists(_raw_log(), max_size=12))
def test_parse_logs_equals_parse_log(raws: list[Any]) -> None:
    want = _reference(raws)
    try:
        got: list[RawLog] | None = parse_logs(raws)
    except InvalidRpcData:
        got = None
    assert got == want
