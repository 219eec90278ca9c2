"""ChainFollower against ScriptedChain on a real PostgreSQL: a Hypothesis property test in the
spirit of Chainlink's ``SynchronizedWithGeth``.

A random sequence of chain operations (mine, reorg within the repairable window, rollback,
a lagging node, stale replay of an earlier range, duplicated logs, a commit whose reply is
lost and that is delivered a second time, a restart of the follower) runs against a follower
built like ``indexer/runtime.py`` builds it. After every operation ``step()`` is driven until it
returns NOTHING_NEW (or WAITING when the node is behind the checkpoint), and the stored chain
must equal the scripted canonical chain: checkpoint, headers, event rows (``reward_added``
and ``quarantine``), nothing above the checkpoint, and ``reward_balances`` = the fold of the
canonical RewardAdded amounts. Every rollback must land exactly on the common ancestor and be
no deeper than ``max_reorg_depth``; a WAITING drive must have changed nothing.

Each example uses a fresh chain id in the test's database, so examples never see each other's
rows. Failures print a reproduction blob (``@reproduce_failure``) and the falsifying example.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from indexer import db
from indexer.checkpoint import CheckpointStore
from indexer.decode import AbiRegistry
from indexer.errors import DatabaseUnavailable, Retryable
from indexer.follower import ChainFollower
from indexer.rpc import RpcClient
from indexer.sink import Batch, CheckpointMoved, CommitResult, PostgresSink
from indexer.types import FollowerSpec, Step, StepResult
from tests.fakes.chain import (
    CONTRACT,
    ScriptedChain,
    ScriptedRpc,
    is_reward_added,
    reward_fields,
)

pytestmark = pytest.mark.pg

ABI_NAME = "MultiTokenPushPull"
ABI = json.loads((Path(__file__).resolve().parents[2] / "abis" / f"{ABI_NAME}.json").read_text())[
    "abi"
]
MAX_STEPS = 400  # per drive; a drive that needs more is a livelock
MAX_RETRIES = 20  # Retryable errors per drive (each injected fault costs one)
_chain_ids = itertools.count(900_001)


# ---- operations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    max_reorg_depth: int
    batch_blocks: int
    max_log_range: int | None
    finality: str  # "tag" or "depth"
    finalized_depth: int | None  # the node's finalized tag, head - k (None: unsupported)
    start_block: int
    initial_blocks: int


@dataclass(frozen=True)
class Mine:
    k: int
    logs: int


@dataclass(frozen=True)
class Reorg:
    depth: int
    length: int
    logs: int


@dataclass(frozen=True)
class Rollback:
    k: int


@dataclass(frozen=True)
class Lag:
    """Mine, then the node reports a head ``lag`` blocks lower (same hashes); then recovers."""

    lag: int
    mine: int


@dataclass(frozen=True)
class StaleReplay:
    """A same-height reorg while the node may answer a range with an earlier (stale) answer."""

    depth: int


@dataclass(frozen=True)
class DuplicateLogs:
    """Mine; the next ranges carry one log twice (must be rejected, then refetched)."""

    k: int


@dataclass(frozen=True)
class DuplicateCommit:
    """Mine; the next commit is delivered twice and its reply is lost."""

    k: int


@dataclass(frozen=True)
class Restart:
    """A new follower on the same database (offline-reorg check on its first step)."""


Op = Mine | Reorg | Rollback | Lag | StaleReplay | DuplicateLogs | DuplicateCommit | Restart

PARAMS = st.builds(
    Params,
    max_reorg_depth=st.integers(2, 8),
    batch_blocks=st.integers(1, 6),
    max_log_range=st.none() | st.integers(1, 5),
    finality=st.sampled_from(["depth", "tag"]),
    finalized_depth=st.none() | st.integers(1, 10),
    start_block=st.sampled_from([0, 1, 3]),
    initial_blocks=st.integers(0, 12),
)
OPS = st.lists(
    st.one_of(
        st.builds(Mine, k=st.integers(1, 6), logs=st.integers(0, 3)),
        st.builds(Reorg, depth=st.integers(1, 8), length=st.integers(1, 9), logs=st.integers(0, 3)),
        st.builds(Rollback, k=st.integers(1, 5)),
        st.builds(Lag, lag=st.integers(1, 5), mine=st.integers(0, 4)),
        st.builds(StaleReplay, depth=st.integers(1, 6)),
        st.builds(DuplicateLogs, k=st.integers(1, 4)),
        st.builds(DuplicateCommit, k=st.integers(1, 4)),
        st.just(Restart()),
    ),
    min_size=1,
    max_size=12,
)


# ---- the database side ------------------------------------------------------------------


class FlakySink(PostgresSink):
    """A sink whose next ``lose_replies`` commits are committed, delivered a second time
    (which must be refused), and then reported to the follower as failed."""

    lose_replies = 0
    refused = 0

    async def commit(self, batch: Batch) -> CommitResult:
        result = await super().commit(batch)
        if not self.lose_replies:
            return result
        self.lose_replies -= 1
        try:
            await super().commit(batch)
        except CheckpointMoved:
            self.refused += 1
        else:
            raise AssertionError(f"batch {batch.from_block}-{batch.to_block} committed twice")
        raise DatabaseUnavailable("commit reply lost (test)")


@dataclass
class Stored:
    """Everything the follower wrote for one chain id."""

    checkpoint: tuple[int, str | None, int | None, str | None]
    blocks: dict[int, tuple[str, str, int]]
    rewards: dict[tuple[int, int], tuple[Any, ...]]
    quarantine: dict[tuple[int, int], tuple[Any, ...]]
    other_events: int
    balances: dict[tuple[str, str, str], tuple[int, int]]
    reorgs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.checkpoint[0]


async def read_stored(pool: asyncpg.Pool, chain_id: int) -> Stored:
    async with pool.acquire() as con:
        cp = await con.fetchrow(
            "SELECT block_number, block_hash, finalized_block, halted_reason FROM checkpoints "
            "WHERE chain_id = $1",
            chain_id,
        )
        assert cp is not None, "no checkpoint row"
        blocks = await con.fetch(
            "SELECT number, hash, parent_hash, timestamp FROM blocks WHERE chain_id = $1",
            chain_id,
        )
        rewards = await con.fetch(
            "SELECT block_number, log_index, block_hash, tx_hash, contract, token, wallet, "
            "emitter, amount, extract(epoch FROM block_time)::bigint AS t FROM reward_added "
            "WHERE chain_id = $1",
            chain_id,
        )
        quarantine = await con.fetch(
            "SELECT block_number, log_index, block_hash, tx_hash, contract, topics, data "
            "FROM quarantine WHERE chain_id = $1",
            chain_id,
        )
        other = await con.fetchval(
            "SELECT count(*) FROM other_events WHERE chain_id = $1", chain_id
        )
        balances = await con.fetch(
            "SELECT contract, token, wallet, added, claimed FROM reward_balances "
            "WHERE chain_id = $1",
            chain_id,
        )
        reorgs = await con.fetch(
            "SELECT depth, common_ancestor FROM reorgs WHERE chain_id = $1 ORDER BY id", chain_id
        )
    return Stored(
        checkpoint=(
            cp["block_number"],
            cp["block_hash"],
            cp["finalized_block"],
            cp["halted_reason"],
        ),
        blocks={r["number"]: (r["hash"], r["parent_hash"], r["timestamp"]) for r in blocks},
        rewards={(r[0], r[1]): (*r[2:8], int(r[8]), r[9]) for r in rewards},
        quarantine={(r[0], r[1]): (r[2], r[3], r[4], tuple(r[5]), r[6]) for r in quarantine},
        other_events=int(other),
        balances={(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in balances},
        reorgs=[(r[0], r[1]) for r in reorgs],
    )


# ---- the world: chain, node, follower ---------------------------------------------------


@dataclass
class World:
    params: Params
    pool: asyncpg.Pool
    chain_id: int
    chain: ScriptedChain
    rpc: ScriptedRpc
    sink: FlakySink
    follower: ChainFollower
    trace: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, params: Params, pool: asyncpg.Pool, chain_id: int) -> World:
        chain = ScriptedChain()
        rpc = ScriptedRpc(
            chain,
            max_log_range=params.max_log_range,
            finalized_depth=params.finalized_depth,
        )
        sink = FlakySink(pool, chain_id, f"prop{chain_id}")
        world = cls(params, pool, chain_id, chain, rpc, sink, cast(ChainFollower, None))
        world.restart()
        return world

    def restart(self) -> None:
        """A follower built like runtime.open_chain builds it (a new registry too)."""
        p = self.params
        registry = AbiRegistry()
        registry.add_abi(ABI_NAME, ABI)
        registry.bind(CONTRACT, ABI_NAME)
        spec = FollowerSpec(
            name=f"prop{self.chain_id}",
            chain_id=self.chain_id,
            start_block=p.start_block,
            max_reorg_depth=p.max_reorg_depth,
            batch_blocks=p.batch_blocks,
            finality=p.finality,
            addresses={CONTRACT: ABI_NAME},
        )
        self.follower = ChainFollower(
            spec,
            cast(RpcClient, self.rpc),
            CheckpointStore(self.pool, self.chain_id),
            self.sink,
            registry,
        )

    def floor(self) -> int:
        """The lowest block a reorg may keep (start_block - 1: even the first indexed block may
        be replaced; never genesis): no block the follower could have seen as finalized, nor
        one beyond ``max_reorg_depth`` of any checkpoint, ever changes."""
        p, top = self.params, self.chain.max_head
        floor = max(p.start_block - 1, 0, top - p.max_reorg_depth)
        if p.finality == "tag" and p.finalized_depth is not None:
            floor = max(floor, top - p.finalized_depth)
        return floor

    # ---- driving ----------------------------------------------------------------------

    async def drive(self) -> StepResult:
        """Step until NOTHING_NEW / WAITING / HALTED; check every rollback on the way."""
        retries = 0
        for _ in range(MAX_STEPS):
            before = await read_stored(self.pool, self.chain_id)
            try:
                result = await self.follower.step()
            except Retryable as exc:
                retries += 1
                self.trace.append(f"  retry {type(exc).__name__}: {exc}")
                assert retries <= MAX_RETRIES, "too many retries: " + "\n".join(self.trace)
                continue
            self.trace.append(f"  {result.step.value} {result.first}..{result.last}")
            if result.step is Step.REWOUND:
                self._check_rewind(before, result)
            if result.step in (Step.NOTHING_NEW, Step.WAITING, Step.HALTED):
                return result
        raise AssertionError(f"no quiescence in {MAX_STEPS} steps:\n" + "\n".join(self.trace))

    def _check_rewind(self, before: Stored, result: StepResult) -> None:
        """A rollback lands on the newest stored block the node still agrees with."""
        assert result.last is not None
        top = min(before.number, self.rpc.visible_head)
        agreed = [
            n
            for n, (h, _, _) in before.blocks.items()
            if n <= top and n <= self.chain.head and self.chain.hash(n) == h
        ]
        # With no stored block canonical, the ancestor is the block before start_block.
        expected = max(agreed, default=self.params.start_block - 1)
        assert result.last == expected, f"rewound to {result.last}, ancestor {expected}"
        assert before.number - result.last <= self.params.max_reorg_depth

    async def settle(self, label: str) -> None:
        """Drive to quiescence and check the stored chain against the canonical one."""
        self.trace.append(f"{label}: head {self.chain.head}, node head {self.rpc.visible_head}")
        before = await read_stored(self.pool, self.chain_id)
        result = await self.drive()
        assert result.step is not Step.HALTED, "halted:\n" + "\n".join(self.trace)
        after = await read_stored(self.pool, self.chain_id)
        if result.step is Step.WAITING:
            # the node is behind the checkpoint: nothing rolled back, nothing written
            assert after.number > self.rpc.visible_head
            assert after == before, "a WAITING drive changed the database"
            for n, (h, _, _) in after.blocks.items():
                if n <= self.rpc.visible_head:
                    assert h == self.chain.hash(n), f"stored block {n} is not canonical"
            return
        expected = max(self.rpc.visible_head, self.params.start_block - 1)
        assert after.number == expected, "\n".join(self.trace)
        self.check_equal(after)

    def check_equal(self, stored: Stored) -> None:
        """The stored chain equals the canonical chain up to the checkpoint."""
        p, chain = self.params, self.chain
        cp, cp_hash, finalized, halted = stored.checkpoint
        assert halted is None
        if cp < p.start_block:
            assert cp_hash is None
        else:
            assert cp_hash == chain.hash(cp), f"checkpoint {cp} is not canonical"
        # headers: canonical, none above the checkpoint, contiguous above the finalized height
        for n, (h, parent, ts) in stored.blocks.items():
            assert p.start_block <= n <= cp, f"stored block {n} outside {p.start_block}..{cp}"
            header = chain.header(n)
            assert header is not None
            assert (h, parent, ts) == (header.hash, header.parent_hash, header.timestamp), n
        lowest = p.start_block if finalized is None else max(finalized + 1, p.start_block)
        missing = [n for n in range(lowest, cp + 1) if n not in stored.blocks]
        assert not missing, f"headers missing above finalized {finalized}: {missing}"
        if cp >= p.start_block:
            assert cp in stored.blocks
        # events: exactly the canonical logs of the watched contract in [start, cp]
        logs = chain.logs(p.start_block, cp, [CONTRACT])
        rewards = {}
        quarantine = {}
        for lg in logs:
            base = (lg.block_hash, lg.tx_hash, lg.address)
            if is_reward_added(lg):
                ts = chain.blocks[lg.block_number].timestamp
                rewards[lg.key] = (*base, *reward_fields(lg), ts)
            else:
                quarantine[lg.key] = (*base, lg.topics, lg.data)
        assert stored.rewards == rewards
        assert stored.quarantine == quarantine
        assert stored.other_events == 0
        # derived: balances = fold of the canonical RewardAdded amounts
        fold: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for lg in logs:
            if is_reward_added(lg):
                token, wallet, _emitter, amount = reward_fields(lg)
                if amount:  # zero-amount events alone make no balance row
                    fold[(lg.address, token, wallet)][0] += amount
        assert stored.balances == {k: (v[0], v[1]) for k, v in fold.items()}

    # ---- operations -------------------------------------------------------------------

    def _room(self) -> int:
        return self.chain.head - self.floor()

    async def apply(self, op: Op) -> None:
        chain, rpc = self.chain, self.rpc
        if isinstance(op, Mine):
            chain.mine(op.k, op.logs)
        elif isinstance(op, Reorg):
            depth = min(op.depth, self._room())
            if depth < 1:
                chain.mine(1, op.logs)
            else:
                chain.reorg(depth, op.length, op.logs)
        elif isinstance(op, Rollback):
            k = min(op.k, self._room())
            if k >= 1:
                chain.rollback(k)
            op = Rollback(k)
        elif isinstance(op, Lag):
            chain.mine(op.mine, 1)
            rpc.lag = op.lag
            await self.settle(repr(op))
            rpc.lag = 0
        elif isinstance(op, StaleReplay):
            depth = min(op.depth, self._room())
            if depth >= 1:
                chain.reorg(depth, depth, 2)
            rpc.replay_stale = 2
        elif isinstance(op, DuplicateLogs):
            chain.mine(op.k, 3)
            rpc.duplicate_logs = 2
        elif isinstance(op, DuplicateCommit):
            chain.mine(op.k, 1)
            self.sink.lose_replies = 1
        else:
            self.restart()
        await self.settle(repr(op))
        rpc.replay_stale = rpc.duplicate_logs = self.sink.lose_replies = 0

    async def heal(self) -> None:
        """End of a sequence: grow the chain past the checkpoint; all must agree."""
        self.rpc.lag = 0
        stored = await read_stored(self.pool, self.chain_id)
        self.chain.mine(max(stored.number - self.chain.head, 0) + 1, 1)
        await self.settle("heal")
        final = await read_stored(self.pool, self.chain_id)
        assert final.number == self.chain.head


async def run_example(dsn: str, params: Params, ops: list[Op]) -> World:
    chain_id = next(_chain_ids)
    pool = await db.create_pool(dsn, size=2)
    try:
        world = World.build(params, pool, chain_id)
        await world.follower.store.ensure(params.start_block)
        with capture_logs():
            world.chain.mine(params.initial_blocks, 2)
            await world.settle("initial")
            for op in ops:
                await world.apply(op)
            await world.heal()
        return world
    finally:
        await pool.close()


@settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "40")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(params=PARAMS, ops=OPS)
def test_follower_matches_scripted_chain(db_dsn: str, params: Params, ops: list[Op]) -> None:
    world = asyncio.run(run_example(db_dsn, params, ops))
    for outcome in ("rewound", "waiting", "retry"):
        n = sum(line.lstrip().startswith(outcome) for line in world.trace)
        event(f"{outcome}: {min(n, 3)}{'+' if n >= 3 else ''}")
    event(f"stale answers served: {world.rpc.replayed > 0}")


# ---- directed cases ---------------------------------------------------------------------


async def test_every_fault_at_once(db_dsn: str) -> None:
    """A fixed sequence touching every operation, so a plain run covers each code path."""
    params = Params(4, 3, 2, "tag", 6, 1, 10)
    ops: list[Op] = [
        Mine(3, 2),
        Reorg(2, 2, 3),
        Reorg(3, 6, 1),
        Rollback(2),
        Mine(1, 1),
        Rollback(3),
        Mine(5, 2),
        Lag(3, 2),
        StaleReplay(2),
        DuplicateLogs(2),
        DuplicateCommit(4),
        Restart(),
        Reorg(4, 1, 2),
        Mine(2, 0),
    ]
    world = await run_example(db_dsn, params, ops)
    assert world.rpc.calls["get_range"] > 0
    assert world.sink.refused == 1
    assert any("InvalidRpcData" in line for line in world.trace)


@pytest.mark.parametrize("finality", ["depth", "tag"])
async def test_reorg_and_growth_past_finality_between_polls(db_dsn: str, finality: str) -> None:
    """Caught up at 10; the node reorgs 9-10 (depth 2 <= 4) and reaches 16 before the next
    poll, so blocks 11-12 are at or below its finalized height (16 - 4): that range is fetched
    sparse, without headers to link it to the checkpoint, so the follower must check the
    node's hash at the checkpoint first (it used not to, and kept the orphaned 9-10)."""
    params = Params(4, 3, None, finality, 4 if finality == "tag" else None, 1, 10)
    pool = await db.create_pool(db_dsn, size=2)
    try:
        world = World.build(params, pool, next(_chain_ids))
        await world.follower.store.ensure(params.start_block)
        with capture_logs():
            world.chain.mine(10, 2)
            await world.settle("initial")
            world.chain.reorg(2, 8, 2)
            await world.settle("reorg 2 and grow to 16")
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("finality", "finalized_depth", "depth", "length", "reason"),
    [
        ("depth", None, 5, 5, "max_reorg_depth"),  # same height, one deeper than allowed
        ("depth", None, 7, 9, "max_reorg_depth"),  # deeper, and the fork is longer
        ("tag", None, 5, 2, "max_reorg_depth"),  # deeper, and the fork is shorter
        ("tag", 2, 3, 3, "finalized"),  # within the depth but across the finalized block
    ],
)
async def test_unsafe_reorg_halts_and_deletes_nothing(
    db_dsn: str, finality: str, finalized_depth: int | None, depth: int, length: int, reason: str
) -> None:
    params = Params(4, 3, None, finality, finalized_depth, 1, 0)
    pool = await db.create_pool(db_dsn, size=2)
    try:
        world = World.build(params, pool, next(_chain_ids))
        await world.follower.store.ensure(params.start_block)
        with capture_logs() as logs:
            world.chain.mine(14, 2)
            await world.settle("initial")
            before = await read_stored(pool, world.chain_id)
            world.chain.reorg(depth, length, 3)
            result = await world.drive()
            assert result.step is Step.HALTED
            after = await read_stored(pool, world.chain_id)
            assert after.checkpoint[3] is not None
            assert reason in after.checkpoint[3]
            assert after.checkpoint[:3] == before.checkpoint[:3]
            after.checkpoint = before.checkpoint
            assert after == before, "a halt deleted or wrote rows"
            # halted stays halted, and still touches nothing
            world.chain.mine(3, 1)
            assert (await world.follower.step()).step is Step.HALTED
            again = await read_stored(pool, world.chain_id)
            again.checkpoint = before.checkpoint
            assert again == before
        assert world.follower.halted
        assert any(e["event"] == "chain_halted" for e in logs)
        assert not any(e["event"] == "reorg_detected" for e in logs)
    finally:
        await pool.close()


async def test_commit_groups_keep_balances_equal_at_every_checkpoint(db_dsn: str) -> None:
    """Below the finalized block a range already loaded ahead is committed with the one
    before it (``follower._group``): such a commit spans more blocks than one range may
    (``batch_blocks``). At every checkpoint the balances are the fold of the stored events,
    and at the end the store equals the scripted chain."""
    params = Params(4, 3, None, "tag", 2, 1, 0)
    pool = await db.create_pool(db_dsn, size=2)
    try:
        world = World.build(params, pool, next(_chain_ids))
        await world.follower.store.ensure(params.start_block)
        widths: list[int] = []
        with capture_logs():
            world.chain.mine(60, 2)
            for _ in range(MAX_STEPS):
                result = await world.follower.step()
                if result.step is not Step.ADVANCED:
                    break
                assert result.first is not None
                assert result.last is not None
                widths.append(result.last - result.first + 1)
                stored = await read_stored(pool, world.chain_id)
                fold: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
                for (block, _index), row in stored.rewards.items():
                    assert block <= stored.number
                    contract, token, wallet, amount = row[2], row[3], row[4], row[6]
                    if amount:
                        fold[(contract, token, wallet)][0] += amount
                assert stored.balances == {k: (v[0], v[1]) for k, v in fold.items()}
            await world.settle("caught up")
    finally:
        await pool.close()
    assert max(widths) > params.batch_blocks, widths  # at least one commit was a group
    assert sum(widths) == 60
