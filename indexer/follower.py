"""The chain follower: one ``step()`` moves a chain's checkpoint forward and says what it did.

Like Shovel's ``Converge``: read the local (number, hash), ask the node for its head, load at
most ``batch_blocks`` blocks, check that they extend what is stored, commit data and progress
in one transaction (the sink), return an outcome. The driver loop (``run_follower``) sleeps on
nothing new, backs off on ``Retryable``, stops on done or halt.

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

import asyncio
import contextlib
import enum
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import structlog

from indexer import metrics
from indexer.checkpoint import Checkpoint, CheckpointStore
from indexer.db import CLIENT_DATA_ERRORS, CONNECTION_ERRORS
from indexer.decode import AbiRegistry, Event, EventSpec, Undecodable, column_name
from indexer.errors import (
    FinalityViolation,
    InvalidRpcData,
    LaggingNode,
    NotLeader,
    RangeLimitError,
    ReorgTooDeep,
    Retryable,
)
from indexer.rpc import RpcClient
from indexer.sink import Batch, PostgresSink
from indexer.types import BlockHeader, RawLog

log = structlog.get_logger()

ANCESTOR_CHUNK = 16  # node headers fetched per round of the common-ancestor walk
TARGET_LOGS_PER_RANGE = 20_000  # bounds memory: at most two ranges of about this many logs
BLOOM_RETRIES = 3  # empty answers for a block whose bloom admits our contracts, asked again
BLOOM_RETRY_S = 0.05  # pause before the 2nd and 3rd asks (busy blocks' blooms give false
# positives often, so this stays short: it sits on the follow latency)
INITIAL_SPAN_BLOCKS = 64  # the first range is small; it doubles while ranges stay light
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


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
class FactoryWatch:
    """Children of a factory: the factory ABI's event whose ``parameter`` is a new address."""

    factory_abi: str
    event: str
    parameter: str
    child_abi: str


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


@dataclass(slots=True)
class _Fetched:
    logs: list[RawLog] = field(default_factory=list)
    first: int = 0
    last: int = 0
    full: bool = False
    headers: dict[int, BlockHeader] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    quarantined: list[Undecodable] = field(default_factory=list)


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
        self._banks_loaded = False
        self._children: set[str] = set()
        self._child_since: dict[str, int] = {}  # child -> block of its creation event
        self.head = -1
        self.finalized = -1
        self.checkpoint = -1
        self.halted = False
        self._prefetch: asyncio.Task[_Fetched] | None = None
        self._span = min(spec.batch_blocks, INITIAL_SPAN_BLOCKS)
        self.nrpc = 0
        # (ABI, event) -> parameter naming the child: one dict lookup per decoded log
        # (factory ABI, creation event) -> (address parameter, the children's ABI)
        self._child_param = {
            (fw.factory_abi, fw.event): (fw.parameter, fw.child_abi) for fw in spec.factories
        }

    # ---- set-up -------------------------------------------------------------------------

    async def _load_children(self) -> None:
        """(Re)bind the factory-made contracts the database knows (after start or rollback):
        for every configured factory, the addresses its creation events carry, read from the
        table those events are stored in (their own table, or ``other_events``), each bound to
        that factory's child ABI. Rollbacks delete creation events, so this is what is left."""
        self._children = set()
        self._child_since = {}
        for fw in self.spec.factories:
            spec = self._creation_spec(fw)
            factories = sorted(a for a, n in self.spec.addresses.items() if n == fw.factory_abi)
            if spec is None or not factories:
                continue
            column = "args" if spec.table == "other_events" else column_name(fw.parameter)
            for address, block in await self.store.factory_children(
                spec.table, column, factories, spec.name, fw.parameter
            ):
                self.registry.bind(address, fw.child_abi)
                self._children.add(address)
                self._child_since.setdefault(address, block)
        self._banks_loaded = True

    def _creation_spec(self, fw: FactoryWatch) -> EventSpec | None:
        """The compiled creation event of factory ``fw``."""
        for spec in self.registry.specs():
            if spec.contract == fw.factory_abi and spec.name == fw.event:
                return spec
        return None

    def _watched(self) -> list[str]:
        return sorted(set(self.spec.addresses) | self._children)

    def watched(self) -> list[str]:
        """Every address the follower reads now: configured, and factory-made once loaded."""
        return self._watched()

    async def load_children(self) -> None:
        """Load the factory-made contracts if no step did yet (for readers of the follower's
        view, such as the reconciler; never reloads under a running step)."""
        if not self._banks_loaded:
            await self._load_children()

    # ---- the step -----------------------------------------------------------------------

    async def step(self) -> StepResult:
        """Advance, wait, or roll back by one unit of work; raises only Retryable or Fatal."""
        structlog.contextvars.bind_contextvars(chain=self.spec.name)
        self.nrpc = 0
        if not self._banks_loaded:
            await self._load_children()
        cp = await self.store.ensure(self.spec.start_block)
        self.checkpoint = cp.number
        metrics.CHECKPOINT_BLOCK.labels(self.spec.name).set(cp.number)
        if cp.halted_reason:
            self._set_health(halted=True)
            return StepResult(Step.HALTED)
        self._set_health(halted=False)
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
        self.nrpc += 1
        return await self.rpc.block_number()

    async def _finalized(self, head: int) -> int:
        if self.spec.finality == "tag":
            self.nrpc += 1
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
            self.nrpc += 1
            node = await self.rpc.header(head)
            ours = await self.store.hash_at(head)
            if node is None or ours is None or node.hash == ours:
                return self._node_behind(cp.number, head)
            return await self._rollback(cp, head)
        self._behind_since = None
        metrics.NODE_BEHIND.labels(self.spec.name).set(0)
        if head == cp.number or not self._tip_verified or cp.number < self.finalized:
            self.nrpc += 1
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
        last = min(head, first + min(self._span, self.spec.batch_blocks) - 1)
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
            self.nrpc += 1
            node = await self.rpc.header(cp.number)
            if node is None:
                return StepResult(Step.WAITING, last=cp.number)
            if node.hash != cp.hash:
                return await self._rollback(cp, head)
        fetched = await self._take_prefetch(first, last, full)
        if fetched is None:
            fetched = await self._fetch(first, last, full)
        last = fetched.last
        if full and cp.hash is not None and fetched.headers[first].parent_hash != cp.hash:
            self._tip_verified = False
            return await self._rollback(cp, head)
        self._adapt_span(fetched)
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

    # ---- pipelining ---------------------------------------------------------------------
    # Range k+1 is fetched and decoded while range k commits. Commits stay strictly in order:
    # a prefetched range is used only by the step whose checkpoint it extends, and goes
    # through the same checks (parent link) as a fresh one; anything else drops it. At most
    # two ranges are in memory, each sized to about TARGET_LOGS_PER_RANGE logs.

    async def _fetch(self, first: int, last: int, full: bool) -> _Fetched:
        """Logs and headers of one range, verified and decoded (no database access)."""
        self.nrpc += 1
        rng = await self.rpc.get_range(first, last, self._watched(), full_headers=full)
        fetched = _Fetched(
            logs=list(rng.logs),
            headers=dict(rng.headers),
            first=first,
            last=rng.to_block,
            full=full,
        )
        self._check_addresses(fetched.logs, self._watched())
        _check_order(fetched.logs)
        await self._decode_all(fetched, fetched.last)
        await self._fill_headers(fetched)
        await self._check_blooms(fetched)
        return fetched

    async def _check_blooms(self, fetched: _Fetched) -> None:
        """Above the finalized block, where a load-balanced node may lag: a block whose bloom
        admits a watched contract of which the node returned no log may be a lagging backend's
        empty answer. Those blocks' logs are asked for again (at once, then after short
        pauses, BLOOM_RETRIES times); logs that show up mean the range was incomplete
        (LaggingNode: fetch it all again). Blooms have false positives (an address can also be
        a topic), so an answer that stays empty is accepted. Final blocks are not checked: no
        backend lags that far."""
        if not fetched.full:
            return
        present: dict[int, set[str]] = {}
        for lg in fetched.logs:
            present.setdefault(lg.block_number, set()).add(lg.address)
        watched = self._watched()
        since = self._child_since  # a child is watched from its creation on, not before

        def absent(number: int) -> list[str]:
            seen = present.get(number, ())
            return [a for a in watched if a not in seen and since.get(a, -1) <= number]

        doubtful = sorted(
            number
            for number, header in fetched.headers.items()
            if header.logs_bloom is not None and header.may_have_logs_of(absent(number))
        )
        for attempt in range(BLOOM_RETRIES if doubtful else 0):
            await asyncio.sleep(BLOOM_RETRY_S * attempt)  # at once, then a short pause
            self.nrpc += 1
            found = await self.rpc.get_logs(doubtful[0], doubtful[-1], watched)
            for lg in found:
                if lg.block_number in doubtful and lg.address in absent(lg.block_number):
                    raise LaggingNode(
                        f"block {lg.block_number}: logs missing from the first answer"
                    )
        if doubtful:
            log.info("bloom_false_positive_accepted", blocks=doubtful)

    def _start_prefetch(self, first: int, head: int) -> None:
        if self._prefetch is not None or first > head:
            return
        if self.spec.until_block is not None and first > self.spec.until_block:
            return
        last, full = self._plan(first, head)
        self._prefetch = asyncio.create_task(self._fetch(first, last, full), name="prefetch")

    async def _take_prefetch(self, first: int, last: int, full: bool) -> _Fetched | None:
        """The prefetched range if it starts at ``first`` in the same mode and stays within
        ``last``'s bounds; else None (and it is dropped)."""
        task, self._prefetch = self._prefetch, None
        if task is None:
            return None
        try:
            fetched = await task
        except Exception:  # its error, if any, repeats on the fresh fetch that follows
            await self._forget_children()
            return None
        if fetched.first == first and fetched.full == full and fetched.last <= last:
            return fetched
        await self._forget_children()
        return None

    async def _drop_prefetch(self) -> None:
        task, self._prefetch = self._prefetch, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await self._forget_children()

    async def _forget_children(self) -> None:
        """Unbind every child and load what the database knows: after a rollback (creations
        undone) or a dropped prefetch (children bound but never committed)."""
        for address in self._children:
            self.registry.unbind(address)
        await self._load_children()

    async def close(self) -> None:
        """Cancel work in flight (the prefetch); the follower can be used again after."""
        await self._drop_prefetch()

    def _adapt_span(self, fetched: _Fetched) -> None:
        """Size the next range for about TARGET_LOGS_PER_RANGE logs (bounded memory)."""
        blocks = fetched.last - fetched.first + 1
        n = len(fetched.logs)
        if n > TARGET_LOGS_PER_RANGE:
            self._span = max(1, blocks * TARGET_LOGS_PER_RANGE // n)
        elif blocks >= self._span:  # a full range, lighter than the target: grow toward it
            grown = 2 * self._span if n == 0 else blocks * TARGET_LOGS_PER_RANGE // n
            self._span = min(self.spec.batch_blocks, 2 * self._span, max(self._span, grown))

    # ---- fetching and decoding ----------------------------------------------------------

    @staticmethod
    def _check_addresses(logs: Sequence[RawLog], watched: Sequence[str]) -> None:
        allowed = set(watched)
        for lg in logs:
            if lg.address not in allowed:
                raise InvalidRpcData(f"log from unrequested address at block {lg.block_number}")

    async def _decode_all(self, fetched: _Fetched, last: int) -> None:
        """Decode, discovering factory children; their logs from creation on join the batch."""
        n_ranged = len(fetched.logs)  # one get_range: ordered and duplicate-free (rpc checks)
        pending = list(fetched.logs)
        while pending:
            new_children: dict[str, int] = {}
            for lg in pending:
                out = self.registry.decode(lg)
                if isinstance(out, Undecodable):
                    fetched.quarantined.append(out)
                    continue
                fetched.events.append(out)
                child = self._child_of(out)
                if child is not None and child[0] not in self._children:
                    self.registry.bind(child[0], child[1])
                    self._children.add(child[0])
                    self._child_since[child[0]] = lg.block_number
                    new_children.setdefault(child[0], lg.block_number)
            pending = []
            if new_children:
                found = await self._logs_of(
                    sorted(new_children), min(new_children.values()), last, fetched
                )
                # one request for all new children: keep each one's logs from its own
                # creation block on (its constructor's logs share that block)
                pending = [lg for lg in found if lg.block_number >= new_children[lg.address]]
                fetched.logs.extend(pending)
        if len(fetched.logs) > n_ranged:  # children's logs were appended: restore chain order
            if len({(lg.block_number, lg.log_index) for lg in fetched.logs}) < len(fetched.logs):
                raise InvalidRpcData("the node returned one log position twice")
            fetched.events.sort(key=lambda e: (e.log.block_number, e.log.log_index))
            fetched.quarantined.sort(key=lambda q: (q.log.block_number, q.log.log_index))

    def _child_of(self, ev: Event) -> tuple[str, str] | None:
        """(address, child ABI) when ``ev`` is a configured factory's creation event."""
        found = self._child_param.get((ev.spec.contract, ev.spec.name))
        if found is None:
            return None
        value = ev.args().get(found[0])
        return (value, found[1]) if isinstance(value, str) else None

    async def _logs_of(
        self, addresses: list[str], first: int, last: int, fetched: _Fetched
    ) -> list[RawLog]:
        """Logs of new children over [first, last], each sub-range checked against our headers
        (its last header must equal the one already fetched, so one chain answered both)."""
        out: list[RawLog] = []
        start = first
        while start <= last:
            self.nrpc += 1
            rng = await self.rpc.get_range(start, last, addresses, full_headers=False)
            known = fetched.headers.get(rng.to_block)
            end = rng.headers.get(rng.to_block)
            if known is not None and end is not None and known.hash != end.hash:
                raise InvalidRpcData(f"block {rng.to_block} changed while fetching")
            if known is None and end is not None:
                fetched.headers[rng.to_block] = end
            self._check_addresses(rng.logs, addresses)
            out.extend(rng.logs)
            start = rng.to_block + 1
        return out

    async def _fill_headers(self, fetched: _Fetched) -> None:
        """Headers of the blocks that carry logs; every log must match its block's hash."""
        need = sorted({lg.block_number for lg in fetched.logs} - fetched.headers.keys())
        if need:
            self.nrpc += 1
            fetched.headers.update(await self.rpc.headers(need))
        for lg in fetched.logs:
            header = fetched.headers.get(lg.block_number)
            if header is None:
                raise LaggingNode(f"no header for block {lg.block_number}")
            if header.hash != lg.block_hash:
                metrics.INVALID_RPC_DATA.labels(self.spec.name).inc()
                raise InvalidRpcData(f"log block hash differs from header at {lg.block_number}")

    # ---- reorgs -------------------------------------------------------------------------

    async def _rollback(self, cp: Checkpoint, head: int) -> StepResult:
        """Find the common ancestor and roll back to it, or halt when that is unsafe."""
        await self._drop_prefetch()
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
            self.nrpc += 1
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
        await self._forget_children()
        return StepResult(Step.REWOUND, last=ancestor.number)

    async def _halt(self, error: ReorgTooDeep | FinalityViolation) -> StepResult:
        await self.sink.set_halted(str(error))
        self._set_health(halted=True)
        log.error("chain_halted", reason=str(error), kind=type(error).__name__)
        return StepResult(Step.HALTED)

    def _set_health(self, *, halted: bool) -> None:
        self.halted = halted
        metrics.HALTED.labels(self.spec.name).set(1 if halted else 0)
        metrics.HEALTHY.labels(self.spec.name).set(0 if halted else 1)


def _check_order(logs: Sequence[RawLog]) -> None:
    """One range's logs must be strictly ordered by (block, log index): no duplicate, no
    reordering (one pass over ints; the RPC client checks this too, the follower does not
    rely on it)."""
    prev_block, prev_index = -1, -1
    for lg in logs:
        block, index = lg.block_number, lg.log_index
        if block < prev_block or (block == prev_block and index <= prev_index):
            raise InvalidRpcData(f"log ({block}, {index}) duplicated or out of order")
        prev_block, prev_index = block, index


def backoff_s(attempt: int, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter."""
    return rng.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))


NODE_BEHIND_FAILOVER_S = 10.0  # a head below our checkpoint this long: try another endpoint
PERSISTENT_FAULT_LIMIT = 4  # failures of the kinds below, with no success between: halt
# Failures that retrying the same range does not fix: a node that keeps answering data that
# does not verify, a provider that refuses even one block's logs, rows PostgreSQL refuses.
PERSISTENT_FAULTS: tuple[type[BaseException], ...] = (
    InvalidRpcData,
    RangeLimitError,
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    *CLIENT_DATA_ERRORS,
)
_RETRIED: tuple[type[BaseException], ...] = (Retryable, *PERSISTENT_FAULTS, *CONNECTION_ERRORS)


async def run_follower(
    follower: ChainFollower,
    *,
    poll_interval_s: float,
    exit_when_caught_up: bool,
    stop: asyncio.Event,
    rng: random.Random | None = None,
) -> Step:
    """The driver: sleep on nothing new, back off on Retryable, stop on done, halt or ``stop``.

    A lost database connection (any of ``CONNECTION_ERRORS``, also from plain reads) is
    retried like ``Retryable``: the next step re-reads the checkpoint, so a commit whose reply
    was lost is neither repeated nor skipped. ``PERSISTENT_FAULT_LIMIT`` consecutive
    ``PERSISTENT_FAULTS`` halt the chain (``chain_halted``) instead of looping forever.

    Returns the last step (HALTED means the chain is halted; with ``exit_when_caught_up`` the
    caller turns that into a non-zero exit)."""
    try:
        return await _drive(follower, poll_interval_s, exit_when_caught_up, stop, rng)
    finally:
        await follower.close()


async def _drive(
    follower: ChainFollower,
    poll_interval_s: float,
    exit_when_caught_up: bool,
    stop: asyncio.Event,
    rng: random.Random | None,
) -> Step:
    rng = rng or random.Random()
    attempt = 0
    persistent = 0
    while not stop.is_set():
        try:
            result = await follower.step()
        except NotLeader:
            raise  # the daemon goes back to standing by
        except _RETRIED as exc:
            attempt += 1
            if isinstance(exc, PERSISTENT_FAULTS):
                persistent += 1  # other faults in between neither count nor reset
            metrics.RETRIES.labels(follower.spec.name, type(exc).__name__).inc()
            if persistent >= PERSISTENT_FAULT_LIMIT:
                halted = await _halt_persistent(follower, exc, persistent)
                if halted and exit_when_caught_up:
                    return Step.HALTED
                if halted:
                    persistent = attempt = 0
                    await _sleep(stop, max(poll_interval_s, 1.0))
                    continue
            delay = backoff_s(attempt, rng)
            log.warning(
                "step_retry",
                error=_one_line(exc),
                kind=type(exc).__name__,
                attempt=attempt,
                delay_s=round(delay, 2),
            )
            await _sleep(stop, delay)
            continue
        finally:
            structlog.contextvars.unbind_contextvars("chain")
        attempt = persistent = 0
        step = result.step
        if step is Step.DONE:
            return step
        if step is Step.HALTED:
            if exit_when_caught_up:
                return step
            await _sleep(stop, max(poll_interval_s, 1.0))
        elif step in (Step.NOTHING_NEW, Step.WAITING):
            if exit_when_caught_up and step is Step.NOTHING_NEW:
                return Step.DONE
            await _sleep(stop, poll_interval_s)
    return Step.DONE


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:500]


async def _halt_persistent(follower: ChainFollower, exc: BaseException, tries: int) -> bool:
    """Halt the chain after a fault that keeps coming back; False if the halt itself failed
    (the database is gone: the driver retries and counts again)."""
    block = follower.checkpoint + 1
    reason = (
        f"persistent fault at block {block} after {tries} tries: {type(exc).__name__}: "
        f"{_one_line(exc)}; fix the node or the data, then run `indexer rewind`"
    )
    try:
        await follower.sink.set_halted(reason)
    except CONNECTION_ERRORS:
        return False
    follower._set_health(halted=True)
    log.error("chain_halted", chain=follower.spec.name, reason=reason, kind=type(exc).__name__)
    return True


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, waking early when asked to stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
