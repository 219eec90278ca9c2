"""The ScriptedChain fake itself: hash scheme, parent links, reorg, rollback, RPC knobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.decode import AbiRegistry, Event, Undecodable
from indexer.errors import LaggingNode
from tests.fakes.chain import (
    CONTRACT,
    UNWATCHED,
    ScriptedChain,
    ScriptedRpc,
    block_hash,
    is_reward_added,
    parse_hash,
    reward_fields,
)

ABI = Path(__file__).resolve().parents[2] / "abis" / "MultiTokenPushPull.json"


def _linked(chain: ScriptedChain) -> None:
    for prev, block in zip(chain.blocks, chain.blocks[1:], strict=False):
        assert block.number == prev.number + 1
        assert block.parent_hash == prev.hash
        assert block.timestamp > prev.timestamp
        assert all(lg.block_hash == block.hash for lg in block.logs)


def test_hash_scheme() -> None:
    h = block_hash(17, 3)
    assert len(h) == 66
    assert h == "0x0000000000000003" + "00" * 16 + "0000000000000011"
    assert parse_hash(h) == (17, 3)
    assert block_hash(17, 3) != block_hash(17, 4) != block_hash(16, 3)


def test_mine_links_blocks() -> None:
    chain = ScriptedChain()
    chain.mine(5, logs_per_block=3)
    assert chain.head == 5
    assert [parse_hash(b.hash) for b in chain.blocks] == [(n, 1) for n in range(6)]
    _linked(chain)
    assert all(len(b.logs) == 3 for b in chain.blocks[1:])
    assert [lg.log_index for lg in chain.blocks[2].logs] == [0, 1, 2]


def test_reorg_keeps_height_and_changes_logs() -> None:
    chain = ScriptedChain()
    chain.mine(6, logs_per_block=4)
    before = {b.number: b for b in chain.blocks}
    replaced = chain.reorg(3, logs_per_block=4)
    assert [b.number for b in replaced] == [4, 5, 6]
    assert chain.head == 6
    _linked(chain)
    assert all(chain.blocks[n] is before[n] for n in range(4))
    for n in (4, 5, 6):
        assert parse_hash(chain.hash(n)) == (n, 2)
        old = {(lg.log_index, lg.data) for lg in before[n].logs}
        new = {(lg.log_index, lg.data) for lg in chain.blocks[n].logs}
        assert old != new


def test_reorg_to_a_longer_or_shorter_fork() -> None:
    chain = ScriptedChain()
    chain.mine(6)
    chain.reorg(2, length=5)
    assert chain.head == 9
    chain.reorg(4, length=1)
    assert chain.head == 6
    _linked(chain)
    assert parse_hash(chain.hash(6)) == (6, 3)
    assert parse_hash(chain.hash(5)) == (5, 2)
    assert parse_hash(chain.hash(4)) == (4, 1)


def test_rollback_then_mine_starts_a_new_fork() -> None:
    chain = ScriptedChain()
    chain.mine(8, logs_per_block=1)
    dropped = chain.rollback(3)
    assert [b.number for b in dropped] == [6, 7, 8]
    assert chain.head == 5
    assert chain.max_head == 8
    chain.mine(4)
    assert chain.head == 9
    _linked(chain)
    assert parse_hash(chain.hash(6))[1] != dropped[0].fork


def test_invalid_operations() -> None:
    chain = ScriptedChain()
    chain.mine(2)
    with pytest.raises(ValueError, match="cannot reorg"):
        chain.reorg(3)
    with pytest.raises(ValueError, match="cannot roll back"):
        chain.rollback(3)
    with pytest.raises(ValueError, match="at least one block"):
        chain.reorg(1, length=0)


def test_logs_decode_with_the_real_abi() -> None:
    chain = ScriptedChain()
    chain.mine(30, logs_per_block=3)
    registry = AbiRegistry()
    registry.add_abi("MultiTokenPushPull", json.loads(ABI.read_text())["abi"])
    registry.bind(CONTRACT, "MultiTokenPushPull")
    watched = chain.logs(0, chain.head, [CONTRACT])
    assert len(chain.logs(0, chain.head)) > len(watched)
    assert all(lg.address == CONTRACT for lg in watched)
    kinds = {"reward": 0, "quarantine": 0}
    for lg in watched:
        out = registry.decode(lg)
        if is_reward_added(lg):
            assert isinstance(out, Event)
            assert out.spec.table == "reward_added"
            assert out.values == reward_fields(lg)
            kinds["reward"] += 1
        else:
            assert isinstance(out, Undecodable)
            kinds["quarantine"] += 1
    assert all(kinds.values())
    assert any(lg.address == UNWATCHED for lg in chain.logs(0, chain.head))


async def test_rpc_serves_the_canonical_chain() -> None:
    chain = ScriptedChain()
    chain.mine(10, logs_per_block=2)
    rpc = ScriptedRpc(chain)
    assert await rpc.block_number() == 10
    assert await rpc.header(4) == chain.header(4)
    assert await rpc.header(11) is None
    assert await rpc.header("finalized") is None
    rpc.finalized_depth = 3
    finalized = await rpc.header("finalized")
    assert finalized is not None
    assert finalized.number == 7
    full = await rpc.get_range(3, 6, [CONTRACT], full_headers=True)
    assert sorted(full.headers) == [3, 4, 5, 6]
    assert full.logs == chain.logs(3, 6, [CONTRACT])
    sparse = await rpc.get_range(3, 6, [CONTRACT], full_headers=False)
    assert sorted(sparse.headers) == [6]
    assert (await rpc.headers([2, 5])).keys() == {2, 5}


async def test_rpc_knobs() -> None:
    chain = ScriptedChain()
    chain.mine(10, logs_per_block=3)
    rpc = ScriptedRpc(chain, max_log_range=3)
    capped = await rpc.get_range(2, 9, [CONTRACT], full_headers=True)
    assert (capped.from_block, capped.to_block) == (2, 4)

    rpc.lag = 4
    assert await rpc.block_number() == 6
    assert await rpc.header(7) is None
    assert await rpc.header(6) == chain.header(6)
    with pytest.raises(LaggingNode):
        await rpc.headers([5, 8])
    with pytest.raises(LaggingNode):
        await rpc.get_range(6, 7, [CONTRACT], full_headers=False)
    rpc.lag = 0

    rpc.duplicate_logs = 1
    dup = await rpc.get_range(5, 7, [CONTRACT], full_headers=True)
    assert len(dup.logs) == len({lg.key for lg in dup.logs}) + 1
    again = await rpc.get_range(5, 7, [CONTRACT], full_headers=True)
    assert len(again.logs) == len({lg.key for lg in again.logs})

    old = await rpc.get_range(8, 10, [CONTRACT], full_headers=True)
    chain.reorg(2)
    rpc.replay_stale = 1
    stale = await rpc.get_range(8, 10, [CONTRACT], full_headers=True)
    assert stale is old
    assert stale.headers[10] != chain.header(10)
    fresh = await rpc.get_range(8, 10, [CONTRACT], full_headers=True)
    assert fresh.headers[10] == chain.header(10)
    assert rpc.replayed == 1
