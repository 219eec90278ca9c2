"""The chain follower: one ``step()`` moves a chain's checkpoint forward and says what it did.

Like Shovel's ``Converge``: read the local (number, hash), ask the node for its head, load at
most ``batch_blocks`` blocks, check that they extend what is stored, commit data and progress
in one transaction (the sink), return an outcome. Loading a range (fetch, verify, decode,
prefetch) is ``indexer.loader``'s, what is watched ``indexer.watch``'s, and the loop around the
step ``indexer.driver``'s (sleep on nothing new, back off on ``Retryable``, halt on faults that
keep coming back).

Reorgs. Above the finalized block the full parent-linked header chain is kept; a range fetched
there must start on the stored tip (parent hash) or it is a reorg. When caught up, every poll
re-checks the node's hash at the checkpoint height (anvil's ``anvil_reorg`` keeps the height).
A node whose head is below the checkpoint but agrees on the hash at its head is lagging: wait.
On a mismatch the follower walks down the stored headers to the newest one the node agrees
with (the common ancestor) and rolls back to it. An ancestor below the finalized height seen
at commit time is a finality violation, a depth above ``max_reorg_depth`` a too-deep reorg:
both halt the chain (nothing deleted) until ``indexer rewind``.

Below the finalized block a range needs only the headers of blocks that carry logs (time and
hash) and of its last block.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import structlog

from indexer import metrics
from indexer.checkpoint import Checkpoint, CheckpointStore
from indexer.decode import AbiRegistry
from indexer.errors import (
    FinalityViolation,
    InvalidRpcData,
    ReorgTooDeep,
)
from indexer.loader import RangeLoader
from indexer.rpc import RpcClient
from indexer.sink import Batch, PostgresSink
from indexer.types import BlockHeader
from indexer.watch import FactoryWatch, Watchlist

log = structlog.get_logger()

ANCESTOR_CHUNK = 16  # node headers fetched per round of the common-ancestor walk
NODE_BEHIND_FAILOVER_S = 10.0  # a head below our checkpoint this long: try another endpoint


class Step(enum.Enum):
    """What one step did; the driver decides sleep / continue / stop from it."""

    ADVANCED = "advanced"
    NOTHING_NEW = "nothing_new"
    WAITING = "waiting"  # the node is behind us: wait, never roll back
    REWOUND = "rewound"
    HALTED = "halted"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class StepResult:
    step: Step
    first: int | None = None
    last: int | None = None
    rows: int = 0


@dataclass(frozen=True, slots=True)
class FollowerSpec:
    """What a follower needs from the configuration of its chain."""

    name: str
    chain_id: int
    start_block: int
    max_reorg_depth: int
    batch_blocks: int
    finality: str  # "tag": the node's finalized block when it has one; "depth": head - depth
    addresses: dict[str, str]  # static address -> ABI name
    factories: tuple[FactoryWatch, ...] = ()
    until_block: int | None = None


class ChainFollower:
    """Follows one chain into PostgreSQL; ``step()`` is the whole algorithm."""

    def __init__(
        self,
        spec: FollowerSpec,
        rpc: RpcClient,
        store: CheckpointStore,
        sink: PostgresSink,
        registry: AbiRegistry,
    ) -> None:
        self.spec = spec
        self.rpc = rpc
        self.store = store
        self.sink = sink
        self.registry = registry
        self._tip_verified = False
        self._behind_since: float | None = None
        self.watch = Watchlist(spec.addresses, spec.factories, registry, store)
        self.loader = RangeLoader(spec.name, rpc, self.watch, registry, spec.batch_blocks)
        self.head = -1
        self.finalized = -1
        self.checkpoint = -1
        self.halted = False
        self._nrpc = 0

    @property
    def nrpc(self) -> int:
        """RPC requests of the current step (the loader's included)."""
        return self._nrpc + self.loader.nrpc

    def watched(self) -> list[str]:
        """Every address the follower reads now (see ``indexer.watch``)."""
        return self.watch.addresses()

    async def load_children(self) -> None:
        """Load the factory-made contracts if no step did yet (for readers of the follower's
        view, such as the reconciler; never reloads under a running step)."""
        await self.watch.ensure_loaded()

    # ---- the step -----------------------------------------------------------------------

    async def step(self) -> StepResult:
        """Advance, wait, or roll back by one unit of work; raises only Retryable or Fatal."""
        structlog.contextvars.bind_contextvars(chain=self.spec.name)
        self._nrpc = self.loader.nrpc = 0
        await self.watch.ensure_loaded()
        cp = await self.store.ensure(self.spec.start_block)
        self.checkpoint = cp.number
        metrics.CHECKPOINT_BLOCK.labels(self.spec.name).set(cp.number)
        if cp.halted_reason:
            self.set_health(halted=True)
            return StepResult(Step.HALTED)
        self.set_health(halted=False)
        until = self.spec.until_block
        if until is not None and cp.number >= until:
            return StepResult(Step.DONE, last=cp.number)
        head = await self._call_block_number()
        self.head = head
        self.finalized = await self._finalized(head)
        metrics.HEAD_BLOCK.labels(self.spec.name).set(head)
        metrics.FINALIZED_BLOCK.labels(self.spec.name).set(self.finalized)
        metrics.LAG_BLOCKS.labels(self.spec.name).set(max(head - cp.number, 0))
        if cp.hash is not None:
            early = await self._check_tip(cp, head)
            if early is not None:
                return early
        if head <= cp.number:
            return StepResult(Step.NOTHING_NEW, last=cp.number)
        return await self._advance(cp, head)

    async def _call_block_number(self) -> int:
        self._nrpc += 1
        return await self.rpc.block_number()

    async def _finalized(self, head: int) -> int:
        if self.spec.finality == "tag":
            self._nrpc += 1
            header = await self.rpc.header("finalized")
            if header is not None:
                return min(header.number, head)
        return max(head - self.spec.max_reorg_depth, -1)

    def _node_behind(self, checkpoint: int, head: int) -> StepResult:
        """The node's head is below what we committed, on the same chain (a lagging backend, a
        restarted node): nothing to roll back, so wait, with ``indexer_node_behind_blocks``
        for the alert; after ``NODE_BEHIND_FAILOVER_S`` move to another endpoint if any."""
        now = time.monotonic()
        if self._behind_since is None:
            self._behind_since = now
        behind_s = now - self._behind_since
        metrics.NODE_BEHIND.labels(self.spec.name).set(checkpoint - head)
        moved = False
        if behind_s >= NODE_BEHIND_FAILOVER_S:
            moved = self.rpc.demote_current("behind_checkpoint")
            self._behind_since = now
        log.info(
            "node_behind",
            head=head,
            checkpoint=checkpoint,
            behind_s=round(behind_s, 1),
            failover=moved,
        )
        return StepResult(Step.WAITING, last=checkpoint)

    async def _check_tip(self, cp: Checkpoint, head: int) -> StepResult | None:
        """Same-height reorgs, offline reorgs and lagging nodes, before fetching forward."""
        if head < cp.number:
            self._nrpc += 1
            node = await self.rpc.header(head)
            ours = await self.store.hash_at(head)
            if node is None or ours is None or node.hash == ours:
                return self._node_behind(cp.number, head)
            return await self._rollback(cp, head)
        self._behind_since = None
        metrics.NODE_BEHIND.labels(self.spec.name).set(0)
        if head == cp.number or not self._tip_verified or cp.number < self.finalized:
            self._nrpc += 1
            node = await self.rpc.header(cp.number)
            if node is None:
                return StepResult(Step.WAITING, last=cp.number)
            if node.hash != cp.hash:
                return await self._rollback(cp, head)
            self._tip_verified = True
        return None

    def _plan(self, first: int, head: int) -> tuple[int, bool]:
        """The last block of the range starting at ``first``, and whether it needs the full
        header chain (above the finalized block) or only sparse headers (at or below it)."""
        last = min(head, first + min(self.loader.span, self.spec.batch_blocks) - 1)
        if self.spec.until_block is not None:
            last = min(last, self.spec.until_block)
        full = last > self.finalized
        if full and first <= self.finalized:
            last, full = self.finalized, False  # the final part first, sparse
        return last, full

    async def _advance(self, cp: Checkpoint, head: int) -> StepResult:
        started = time.perf_counter()
        first = cp.number + 1
        last, full = self._plan(first, head)
        if not full and cp.hash is not None and (cp.finalized is None or cp.number > cp.finalized):
            # The tip was stored above the finality of its time and a sparse range does not
            # link to it: check it explicitly, once, before leaving the reorg window.
            self._nrpc += 1
            node = await self.rpc.header(cp.number)
            if node is None:
                return StepResult(Step.WAITING, last=cp.number)
            if node.hash != cp.hash:
                return await self._rollback(cp, head)
        fetched = await self.loader.take_prefetch(first, last, full)
        if fetched is None:
            fetched = await self.loader.fetch(first, last, full)
        last = fetched.last
        if full and cp.hash is not None and fetched.headers[first].parent_hash != cp.hash:
            self._tip_verified = False
            return await self._rollback(cp, head)
        self.loader.adapt_span(fetched)
        self._start_prefetch(last + 1, head)
        batch = Batch(
            chain_id=self.spec.chain_id,
            from_block=first,
            to_block=last,
            parent=(cp.number, cp.hash),
            head=fetched.headers[last],
            headers=(
                [fetched.headers[n] for n in range(first, last + 1)]
                if full
                else [fetched.headers[n] for n in sorted(fetched.headers)]
            ),
            events=fetched.events,
            quarantined=fetched.quarantined,
            finalized=self.finalized,
            header_by_number=fetched.headers,
        )
        result = await self.sink.commit(batch)
        self._tip_verified = True
        self.checkpoint = last
        nrows = sum(result.rows.values())
        if fetched.quarantined:
            metrics.QUARANTINED.labels(self.spec.name).inc(len(fetched.quarantined))
        metrics.CHECKPOINT_BLOCK.labels(self.spec.name).set(last)
        metrics.CHECKPOINT_TIME.labels(self.spec.name).set(batch.head.timestamp)
        metrics.LAG_BLOCKS.labels(self.spec.name).set(max(head - last, 0))
        log.info(
            "batch_committed",
            first=first,
            last=last,
            hash=batch.head.hash,
            nrows=nrows,
            nrpc=self.nrpc,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
            full_headers=full,
        )
        return StepResult(Step.ADVANCED, first=first, last=last, rows=nrows)

    def _start_prefetch(self, first: int, head: int) -> None:
        """Load the next range while this one commits (``indexer.loader``)."""
        if first > head or (self.spec.until_block is not None and first > self.spec.until_block):
            return
        self.loader.start_prefetch(first, *self._plan(first, head))

    async def close(self) -> None:
        """Cancel work in flight (the prefetch); the follower can be used again after."""
        await self.loader.drop_prefetch()

    # ---- reorgs -------------------------------------------------------------------------

    async def _rollback(self, cp: Checkpoint, head: int) -> StepResult:
        """Find the common ancestor and roll back to it, or halt when that is unsafe."""
        await self.loader.drop_prefetch()
        floor = cp.number - self.spec.max_reorg_depth
        stored = [
            h
            for h in await self.store.recent(cp.number, self.spec.max_reorg_depth + 1)
            if h.number >= floor
        ]
        ancestor: BlockHeader | None = None
        new_tip: str | None = None
        candidates = [h for h in stored if h.number <= head]
        for i in range(0, len(candidates), ANCESTOR_CHUNK):
            chunk = candidates[i : i + ANCESTOR_CHUNK]
            self._nrpc += 1
            node = await self.rpc.headers([h.number for h in chunk])
            if new_tip is None and cp.number in node:
                new_tip = node[cp.number].hash
            match = next((h for h in chunk if node[h.number].hash == h.hash), None)
            if match is not None:
                ancestor = match
                break
        if ancestor is None and cp.start_block - 1 >= floor:
            # Every indexed block is replaced, the first one included: the common ancestor
            # is the block before start_block, which we never stored.
            ancestor = BlockHeader(cp.start_block - 1, "", "", 0)
        if ancestor is None:
            return await self._halt(
                ReorgTooDeep(
                    f"reorg deeper than max_reorg_depth={self.spec.max_reorg_depth}: no stored "
                    f"block in {floor}..{cp.number} is canonical; run `indexer rewind`"
                )
            )
        depth = cp.number - ancestor.number
        if depth == 0:
            # The node's own header of our tip agrees with us, yet the range it served does
            # not link to it (a broken parent hash): bad data, not a reorg.
            raise InvalidRpcData(
                f"range after block {cp.number} does not link to the node's own header of it"
            )
        if cp.finalized is not None and ancestor.number < cp.finalized:
            return await self._halt(
                FinalityViolation(
                    f"block {ancestor.number + 1} changed but {cp.finalized} was finalized; "
                    "run `indexer rewind` after checking the node"
                )
            )
        deleted = await self.sink.rewind_to(
            (ancestor.number, ancestor.hash or None),
            kind="reorg",
            depth=depth,
            old_hash=cp.hash,
            new_hash=new_tip,
            expect=(cp.number, cp.hash),
        )
        metrics.REORGS.labels(self.spec.name).inc()
        metrics.REORG_DEPTH.labels(self.spec.name).observe(depth)
        metrics.CHECKPOINT_BLOCK.labels(self.spec.name).set(ancestor.number)
        log.warning(
            "reorg_detected",
            depth=depth,
            common_ancestor=ancestor.number,
            old_checkpoint=cp.number,
            old_hash=cp.hash,
            new_hash=new_tip,
            deleted=deleted,
        )
        self._tip_verified = True
        await self.watch.reload()
        return StepResult(Step.REWOUND, last=ancestor.number)

    async def _halt(self, error: ReorgTooDeep | FinalityViolation) -> StepResult:
        await self.sink.set_halted(str(error))
        self.set_health(halted=True)
        log.error("chain_halted", reason=str(error), kind=type(error).__name__)
        return StepResult(Step.HALTED)

    def set_health(self, *, halted: bool) -> None:
        """The halted flag, indexer_halted and indexer_healthy (the driver halts too)."""
        self.halted = halted
        metrics.HALTED.labels(self.spec.name).set(1 if halted else 0)
        metrics.HEALTHY.labels(self.spec.name).set(0 if halted else 1)
