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
with (the common ancestor, ``indexer.reorg``) and rolls back to it. An ancestor below the
finalized height seen at commit time is a finality violation, a depth above
``max_reorg_depth`` a too-deep reorg: both halt the chain (nothing deleted) until
``indexer rewind``.

Below the finalized block a range needs only the headers of blocks that carry logs (time and
hash) and of its last block.
"""

from __future__ import annotations

import time

import structlog

from indexer import metrics
from indexer.checkpoint import Checkpoint, CheckpointStore
from indexer.decode import AbiRegistry
from indexer.errors import FinalityViolation, ReorgTooDeep
from indexer.loader import GROUP_RANGES, PREFETCH_DEPTH, Fetched, RangeLoader
from indexer.reorg import NodeBehind, find_ancestor
from indexer.rpc import RpcClient
from indexer.sink import Batch, PostgresSink
from indexer.types import FollowerSpec, Step, StepResult
from indexer.watch import Watchlist

log = structlog.get_logger()


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
        self.behind = NodeBehind(spec.name, rpc)
        self.watch = Watchlist(spec.addresses, spec.factories, registry, store)
        self.loader = RangeLoader(
            spec.name,
            rpc,
            self.watch,
            registry,
            spec.batch_blocks,
            chain_id=spec.chain_id,
            topics_above=spec.topics_above,
        )
        self.head = -1
        self.finalized = -1
        self.checkpoint = -1
        self.halted = False
        self._nrpc = 0

    @property
    def nrpc(self) -> int:
        """RPC requests of the current step (the loader's included)."""
        return self._nrpc + self.loader.nrpc

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

    async def _check_tip(self, cp: Checkpoint, head: int) -> StepResult | None:
        """Same-height reorgs, offline reorgs and lagging nodes, before fetching forward."""
        if head < cp.number:
            self._nrpc += 1
            node = await self.rpc.header(head)
            ours = await self.store.hash_at(head)
            if node is None or ours is None or node.hash == ours:
                self.behind.observe(cp.number, head)
                return StepResult(Step.WAITING, last=cp.number)
            return await self._rollback(cp, head)
        self.behind.clear()
        if head == cp.number or not self._tip_verified or cp.number < self.finalized:
            self._nrpc += 1
            node = await self.rpc.header(cp.number)
            if node is None:
                return StepResult(Step.WAITING, last=cp.number)
            if node.hash != cp.hash:
                return await self._rollback(cp, head)
            self._tip_verified = True
        return None

    def _end(self, head: int) -> int:
        """The last block this follower goes to now: the head, or a backfill's end."""
        return head if self.spec.until_block is None else min(head, self.spec.until_block)

    def _plan(self, first: int, head: int, *, sized: bool = True) -> tuple[int, bool]:
        """The last block of the range starting at ``first``, and whether it needs the full
        header chain (above the finalized block) or only sparse headers (at or below it).
        ``sized=False``: the furthest that range may end (a prefetched range was sized by the
        span of its time, which may have shrunk by a block since)."""
        span = min(self.loader.span, self.spec.batch_blocks) if sized else self.spec.batch_blocks
        end = self._end(head)
        if sized:
            span = drain_span(span, end - first + 1)
        last = min(end, first + span - 1)
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
        fetched = await self.loader.take_prefetch(
            first, self._plan(first, head, sized=False)[0], full
        )
        if fetched is None:
            fetched = await self.loader.fetch(first, last, full)
        last = fetched.last
        if full and cp.hash is not None and fetched.headers[first].parent_hash != cp.hash:
            self._tip_verified = False
            return await self._rollback(cp, head)
        self.loader.adapt_span(fetched)
        if not full:
            fetched = await self._group(fetched, head)
            last = fetched.last
        self._start_prefetch(last + 1, head)
        batch = fetched.batch(self.spec.chain_id, (cp.number, cp.hash), self.finalized)
        result = await self.sink.commit(batch)
        self._tip_verified = True
        self.checkpoint = last
        nrows = sum(result.rows.values())
        self._committed(batch, head, nrows, full, time.perf_counter() - started)
        return StepResult(Step.ADVANCED, first=first, last=last, rows=nrows)

    async def _group(self, fetched: Fetched, head: int) -> Fetched:
        """``fetched`` joined by the ranges after it that are loaded already (up to
        GROUP_RANGES in all, sparse: at or below the finalized block), committed as one:
        the balances of the group are derived once, and the commits that PostgreSQL waits
        between are fewer. Only what is ready is taken; nothing waits for it. Not within two
        spans of the end: the last commits stay small (``drain_span``), PostgreSQL writes
        them alone."""
        end = self._end(head)
        for _ in range(GROUP_RANGES - 1):
            first = fetched.last + 1
            if draining(self.loader.span, end - first + 1) or not self.loader.next_ready(first):
                break
            bound = self._plan(first, head, sized=False)[0]
            after = await self.loader.take_prefetch(first, bound, False)
            if after is None:
                break
            self.loader.adapt_span(after)
            fetched = fetched.joined(after)
        return fetched

    def _committed(self, batch: Batch, head: int, nrows: int, full: bool, elapsed_s: float) -> None:
        """Metrics and the log line of one commit."""
        name = self.spec.name
        if batch.quarantined:
            metrics.QUARANTINED.labels(name).inc(len(batch.quarantined))
        metrics.CHECKPOINT_BLOCK.labels(name).set(batch.to_block)
        metrics.CHECKPOINT_TIME.labels(name).set(batch.head.timestamp)
        metrics.LAG_BLOCKS.labels(name).set(max(head - batch.to_block, 0))
        log.info(
            "batch_committed",
            first=batch.from_block,
            last=batch.to_block,
            hash=batch.head.hash,
            nrows=nrows,
            nrpc=self.nrpc,
            elapsed_ms=round(elapsed_s * 1000, 1),
            full_headers=full,
        )

    def _start_prefetch(self, first: int, head: int) -> None:
        """Load the next ranges while this one commits (``indexer.loader``: two ahead at or
        below the finalized block, one above), each planned from where the one before it
        ends."""
        until = self.spec.until_block
        for _ in range(PREFETCH_DEPTH):
            if first > head or (until is not None and first > until):
                return
            planned = self.loader.start_prefetch(first, *self._plan(first, head))
            if planned is None:
                return
            first = planned + 1

    async def close(self) -> None:
        """Cancel work in flight (the prefetch); the follower can be used again after."""
        await self.loader.drop_prefetch()

    # ---- reorgs -------------------------------------------------------------------------

    async def _rollback(self, cp: Checkpoint, head: int) -> StepResult:
        """Roll back to the common ancestor (``indexer.reorg``), or halt when that is unsafe."""
        await self.loader.drop_prefetch()
        found = await find_ancestor(self.rpc, self.store, cp, head, self.spec.max_reorg_depth)
        self._nrpc += found.requests
        if found.unsafe is not None or found.ancestor is None:
            assert found.unsafe is not None
            return await self._halt(found.unsafe)
        ancestor = found.ancestor
        depth = cp.number - ancestor.number
        deleted = await self.sink.rewind_to(
            (ancestor.number, ancestor.hash or None),
            kind="reorg",
            depth=depth,
            old_hash=cp.hash,
            new_hash=found.new_tip,
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
            new_hash=found.new_tip,
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


DRAIN_MIN_FRACTION = 8  # the smallest draining range: this fraction of the span


def drain_span(span: int, remaining: int) -> int:
    """The span of the next range when ``remaining`` blocks are left to the target (the head,
    or a backfill's end): within two spans of it, half of what remains, down to an eighth of
    the span. Ranges are loaded ahead while earlier ones commit, so when the last one is
    decoded the database still has those in flight to write, alone; halved ranges make that
    tail a few small commits instead of two or three full ones."""
    if draining(span, remaining):
        return max(span // DRAIN_MIN_FRACTION, 1, -(-remaining // 2))
    return span


def draining(span: int, remaining: int) -> bool:
    """Whether ``remaining`` blocks to the target are within two spans of it: ranges there
    are halved (``drain_span``) and not grouped (``ChainFollower._group``)."""
    return remaining <= 2 * span
