"""``loader.Fetched.joined``: two consecutive sparse ranges as one commit group."""

from __future__ import annotations

import pytest

from indexer.loader import Fetched
from indexer.types import BlockHeader, RawLog


def _header(n: int) -> BlockHeader:
    return BlockHeader(number=n, hash=f"0x{n:064x}", parent_hash=f"0x{n - 1:064x}", timestamp=n)


def _log(block: int, index: int) -> RawLog:
    return RawLog(block, f"0x{block:064x}", "0x" + "11" * 32, 0, index, "0x" + "22" * 20, (), "0x")


def _range(first: int, last: int, *, full: bool = False) -> Fetched:
    return Fetched(
        logs=[_log(first, 0), _log(last, 1)],
        first=first,
        last=last,
        full=full,
        headers={first: _header(first), last: _header(last)},
        copy={"reward_added": (("chain_id",), f"{first}\n".encode(), 1)},
    )


def test_joined_spans_both_ranges_in_chain_order() -> None:
    group = _range(10, 14).joined(_range(15, 19))
    assert (group.first, group.last, group.full) == (10, 19, False)
    assert [lg.block_number for lg in group.logs] == [10, 14, 15, 19]
    assert sorted(group.headers) == [10, 14, 15, 19]
    assert group.copy == {"reward_added": (("chain_id",), b"10\n15\n", 2)}
    batch = group.batch(1, (9, "0x" + "00" * 32), finalized=100)
    assert batch.head.number == 19
    assert [h.number for h in batch.headers] == [10, 14, 15, 19]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (_range(10, 14), _range(16, 19)),  # a gap
        (_range(10, 14), _range(14, 19)),  # an overlap
        (_range(10, 14, full=True), _range(15, 19)),  # above the finalized block
    ],
)
def test_joined_refuses_what_is_not_the_next_sparse_range(first: Fetched, second: Fetched) -> None:
    with pytest.raises(ValueError, match="does not follow"):
        first.joined(second)
