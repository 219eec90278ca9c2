"""The range loader: one range of blocks fetched, verified and decoded, ready to commit (no
database access).

A range's logs and headers come in one batch to one endpoint (``RpcClient.get_range``),
asked for by address, or, above ``topics_above`` watched contracts, by the watched events'
topic0 with no address (the node scans the range once, not once per address chunk; the logs
of contracts not watched are set aside, and a child discovered in the range takes its own
from them, with no request). The loader checks that every log comes from a watched address
in chain order, decodes each through the registry (discovering factory children, whose logs
from creation on join the range), fetches the headers of blocks that carry logs, and, above
the finalized block, asks again for blocks whose bloom admits a watched contract the node
returned no log of (a lagging backend's empty answer).

Pipelining: while range k commits, range k+1 is fetched and decoded and, at or below the
finalized block, range k+2 is already asked for (``PREFETCH_DEPTH``), so that the node works
on it while this process decodes k+1 and PostgreSQL writes k (a backfill's three stages
overlap instead of taking turns). Commits stay strictly in order: a prefetched range is used
only by the step whose checkpoint it extends, and goes through the same checks (parent link)
as a fresh one; anything else drops every prefetched range. A range asked for before the one
ahead of it was decoded may lack the children that one discovered: when taken, the logs of
every address watched now and not then are fetched over it and decoded in (``_catch_up``).
Above the finalized block one range is prefetched (ranges there are small, and their bloom
checks read the watchlist). A prefetched range that is loaded when the one before it is about
to commit may commit with it (``Fetched.joined``, ``GROUP_RANGES``; the follower decides). At
most four ranges are in memory (a group of two committing, two loading ahead), each sized
(``span``) to about TARGET_LOGS_PER_RANGE logs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from indexer import metrics
from indexer.decode import AbiRegistry, Event, Undecodable
from indexer.errors import InvalidRpcData, LaggingNode
from indexer.rpc import RpcClient
from indexer.sink import Batch, CopyData, copy_data, join_copy
from indexer.types import BlockHeader, RawLog
from indexer.watch import Watchlist

log = structlog.get_logger()

# Bounds memory (at most four ranges of about this many logs are held) and sizes the
# pipeline's steps. Against 20,000, a 200k-event backfill paying one new wallet per event
# took 4 % less wall time (the last commits, which PostgreSQL writes alone, are smaller),
# one paying 5,000 wallets the same time (its balance rows are updated once per range: more
# ranges, more updates); 5,000 was 13 % slower (per-commit costs). README "Benchmark".
TARGET_LOGS_PER_RANGE = 10_000
BLOOM_RETRIES = 3  # empty answers for a block whose bloom admits our contracts, asked again
BLOOM_RETRY_S = 0.05  # pause before the 2nd and 3rd asks (busy blocks' blooms give false
# positives often, so this stays short: it sits on the follow latency)
INITIAL_SPAN_BLOCKS = 64  # the first range is small; it doubles while ranges stay light
# Ranges (at or below the finalized block, already loaded) one commit may take: their balances
# are derived once for the group. With 5,000 repeat wallets each range updates ~5,000 balance
# rows; two ranges a commit update them half as often.
GROUP_RANGES = 2
PREFETCH_DEPTH = 2  # ranges loaded ahead of the one committing, at or below the finalized block


@dataclass(slots=True)
class Fetched:
    """One loaded range: its logs (decoded into events or quarantined) and headers."""

    logs: list[RawLog] = field(default_factory=list)
    first: int = 0
    last: int = 0
    full: bool = False
    headers: dict[int, BlockHeader] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    quarantined: list[Undecodable] = field(default_factory=list)
    watched: frozenset[str] = frozenset()  # the addresses the range was asked for
    # Fetched by topic0 (no address filter): the logs of contracts not watched when it was
    # asked for, kept in chain order, where children found later take theirs from.
    by_topics: bool = False
    foreign: list[RawLog] = field(default_factory=list)
    copy: CopyData | None = None  # the events' COPY data, made while an earlier range commits

    def joined(self, after: Fetched) -> Fetched:
        """This sparse range and ``after``, the one that follows it, as one range: a commit
        group. Its headers, events and COPY data are both ranges', in chain order."""
        if self.full or after.full or after.first != self.last + 1:
            raise ValueError(f"{after.first}.. does not follow {self.first}..{self.last} sparsely")
        copy = None
        if self.copy is not None and after.copy is not None:
            copy = join_copy(self.copy, after.copy)
        return Fetched(
            logs=[*self.logs, *after.logs],
            first=self.first,
            last=after.last,
            headers={**self.headers, **after.headers},
            events=[*self.events, *after.events],
            quarantined=[*self.quarantined, *after.quarantined],
            watched=self.watched | after.watched,
            by_topics=self.by_topics or after.by_topics,
            foreign=[*self.foreign, *after.foreign],
            copy=copy,
        )

    def batch(self, chain_id: int, parent: tuple[int, str | None], finalized: int) -> Batch:
        """What the sink commits: every header of a full range, those carrying logs (and the
        last) of a sparse one."""
        numbers = range(self.first, self.last + 1) if self.full else sorted(self.headers)
        return Batch(
            chain_id=chain_id,
            from_block=self.first,
            to_block=self.last,
            parent=parent,
            head=self.headers[self.last],
            headers=[self.headers[n] for n in numbers],
            events=self.events,
            quarantined=self.quarantined,
            finalized=finalized,
            header_by_number=self.headers,
            copy=self.copy,
        )


class RangeLoader:
    """Loads ranges of one chain (see the module docstring); ``nrpc`` counts its requests."""

    def __init__(  # noqa: PLR0913 (the chain's parts; the knob keyword-only)
        self,
        chain: str,
        rpc: RpcClient,
        watch: Watchlist,
        registry: AbiRegistry,
        batch_blocks: int,
        *,
        chain_id: int,
        topics_above: int | None = None,
    ) -> None:
        self.chain = chain
        self.chain_id = chain_id
        self.rpc = rpc
        self.watch = watch
        self.registry = registry
        self.batch_blocks = batch_blocks
        self.topics_above = topics_above
        self._by_topics = False  # the filter of the last range (a change is logged)
        # every event of every ABI, the factory children's too, so that a child found in a
        # range has its logs in that range's answer already (the ABIs are fixed at start)
        self._topic0s = sorted({spec.topic0 for spec in registry.specs()})
        self.span = min(batch_blocks, INITIAL_SPAN_BLOCKS)
        self.nrpc = 0
        # (first, planned last, full, task) of each range loading ahead, in chain order
        self._prefetch: deque[tuple[int, int, bool, asyncio.Task[Fetched]]] = deque()

    async def fetch(self, first: int, last: int, full: bool) -> Fetched:
        """Logs and headers of ``[first, last]`` (or less: the RPC client may cap it),
        verified and decoded; ``full`` asks for every header (above the finalized block)."""
        self.nrpc += 1
        watched = self.watch.addresses()
        topics = self._topics(watched)
        rng = await self.rpc.get_range(first, last, watched, full_headers=full, topics=topics)
        fetched = Fetched(
            headers=dict(rng.headers),
            first=first,
            last=rng.to_block,
            full=full,
            watched=frozenset(watched),
            by_topics=topics is not None,
        )
        if topics is None:
            fetched.logs = list(rng.logs)
            _check_addresses(fetched.logs, watched)
        else:  # the client-side filter: one set lookup per log
            for lg in rng.logs:
                (fetched.logs if lg.address in fetched.watched else fetched.foreign).append(lg)
        _check_order(fetched.logs)
        await self._decode_all(fetched, fetched.last)
        await self._fill_headers(fetched)
        await self._check_blooms(fetched)
        self._prepare_copy(fetched)
        return fetched

    def _prepare_copy(self, fetched: Fetched) -> None:
        """Make the range's COPY data now, while an earlier range commits: the commit then
        only sends it (PostgreSQL, which paces a backfill, waited while it was built)."""
        fetched.copy = copy_data(self.chain_id, fetched.events, fetched.headers)

    def _topics(self, watched: Sequence[str]) -> list[str] | None:
        """The watched events' topic0 values when more than ``topics_above`` contracts are
        watched (the filter is then by topic, not by address), else None."""
        by_topics = self.topics_above is not None and len(watched) > self.topics_above
        if by_topics != self._by_topics:
            self._by_topics = by_topics
            log.info(
                "log_filter",
                chain=self.chain,
                by="topic0" if by_topics else "address",
                watched=len(watched),
            )
        return self._topic0s if by_topics else None

    # ---- pipelining ---------------------------------------------------------------------

    def start_prefetch(self, first: int, last: int, full: bool) -> int | None:
        """Load ``[first, last]`` in the background when it is the next range to load ahead
        and there is room (``PREFETCH_DEPTH`` at or below the finalized block, one above).
        Returns the planned last block of the range loading from ``first`` (this one or one
        already queued: the next range starts after it), or None when nothing loads from
        ``first``."""
        for qfirst, qlast, _full, _task in self._prefetch:
            if qfirst == first:
                return qlast
        depth = 1 if full or any(q[2] for q in self._prefetch) else PREFETCH_DEPTH
        if len(self._prefetch) >= depth:
            return None
        if self._prefetch and self._prefetch[-1][1] + 1 != first:
            return None
        task = asyncio.create_task(self.fetch(first, last, full), name="prefetch")
        self._prefetch.append((first, last, full, task))
        return last

    def next_ready(self, first: int) -> bool:
        """Whether the range loading ahead from ``first`` is sparse and already loaded (a
        commit may take it too, at no wait)."""
        if not self._prefetch:
            return False
        qfirst, _qlast, full, task = self._prefetch[0]
        return qfirst == first and not full and task.done() and task.exception() is None

    async def take_prefetch(self, first: int, last: int, full: bool) -> Fetched | None:
        """The prefetched range if it starts at ``first`` in the same mode and stays within
        ``last``'s bounds, caught up with the children discovered since it was asked for;
        else None (and every prefetched range is dropped)."""
        if not self._prefetch:
            return None
        task = self._prefetch.popleft()[3]
        try:
            fetched = await task
        except Exception:  # its error, if any, repeats on the fresh fetch that follows
            await self.drop_prefetch()
            return None
        if fetched.first == first and fetched.full == full and fetched.last <= last:
            await self._catch_up(fetched)
            return fetched
        await self.drop_prefetch()
        return None

    async def _catch_up(self, fetched: Fetched) -> None:
        """Add the logs of addresses watched now but not when ``fetched`` was asked for
        (children that a range before it discovered), decoded like the rest."""
        since = self.watch.since  # children a later range created have nothing here
        missing = sorted(
            a
            for a in set(self.watch.addresses()) - fetched.watched
            if since.get(a, -1) <= fetched.last
        )
        if not missing:
            return
        log.info(
            "prefetch_caught_up", first=fetched.first, last=fetched.last, children=len(missing)
        )
        found = await self._logs_of(missing, fetched.first, fetched.last, fetched)
        added = [lg for lg in found if lg.block_number >= since.get(lg.address, -1)]
        fetched.watched = fetched.watched.union(missing)
        fetched.logs.extend(added)
        await self._decode_all(fetched, fetched.last, pending=added)
        await self._fill_headers(fetched)
        self._prepare_copy(fetched)

    async def drop_prefetch(self) -> None:
        """Cancel the background loads, forgetting the children they may have bound."""
        tasks = [q[3] for q in self._prefetch]
        self._prefetch.clear()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if tasks:
            await self.watch.reload()

    def adapt_span(self, fetched: Fetched) -> None:
        """Size the next range for about TARGET_LOGS_PER_RANGE logs (bounded memory)."""
        blocks = fetched.last - fetched.first + 1
        n = len(fetched.logs)
        if n > TARGET_LOGS_PER_RANGE:
            self.span = max(1, blocks * TARGET_LOGS_PER_RANGE // n)
        elif blocks >= self.span:  # a full range, lighter than the target: grow toward it
            grown = 2 * self.span if n == 0 else blocks * TARGET_LOGS_PER_RANGE // n
            self.span = min(self.batch_blocks, 2 * self.span, max(self.span, grown))

    # ---- decoding ------------------------------------------------------------------------

    async def _decode_all(
        self, fetched: Fetched, last: int, pending: list[RawLog] | None = None
    ) -> None:
        """Decode ``pending`` (default: every log of the range), discovering factory
        children; their logs from creation on join the batch, which ends in chain order."""
        n_ranged = len(fetched.logs) - (len(pending) if pending is not None else 0)
        pending = list(fetched.logs) if pending is None else list(pending)
        while pending:
            new_children: dict[str, int] = {}
            for lg in pending:
                out = self.registry.decode(lg)
                if isinstance(out, Undecodable):
                    fetched.quarantined.append(out)
                    continue
                fetched.events.append(out)
                child = self.watch.child_of(out)
                if child is not None and not self.watch.is_child(child[0]):
                    self.watch.bind_child(child[0], child[1], lg.block_number)
                    new_children.setdefault(child[0], lg.block_number)
            pending = []
            if new_children:
                fetched.watched = fetched.watched.union(new_children)
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

    async def _logs_of(
        self, addresses: list[str], first: int, last: int, fetched: Fetched
    ) -> list[RawLog]:
        """Logs of new children over [first, last], each sub-range checked against our headers
        (its last header must equal the one already fetched, so one chain answered both).
        A range fetched by topics has them already, among its foreign logs: no request."""
        if fetched.by_topics:
            wanted = set(addresses)
            mine = [lg for lg in fetched.foreign if lg.address in wanted]
            fetched.foreign = [lg for lg in fetched.foreign if lg.address not in wanted]
            return [lg for lg in mine if first <= lg.block_number <= last]
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
            _check_addresses(rng.logs, addresses)
            out.extend(rng.logs)
            start = rng.to_block + 1
        return out

    # ---- headers and blooms --------------------------------------------------------------

    async def _fill_headers(self, fetched: Fetched) -> None:
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
                metrics.INVALID_RPC_DATA.labels(self.chain).inc()
                raise InvalidRpcData(f"log block hash differs from header at {lg.block_number}")

    async def _check_blooms(self, fetched: Fetched) -> None:
        """Above the finalized block, where a load-balanced node may lag: a block whose bloom
        admits a watched contract of which the node returned no log may be a lagging backend's
        empty answer. Those blocks' logs are asked for again (at once, then after short
        pauses, BLOOM_RETRIES times); logs that show up mean the range was incomplete
        (LaggingNode: fetch it all again). Blooms have false positives (an address can also be
        a topic), so an answer that stays empty is accepted; a bloom that admits many absent
        contracts (thousands of banks watched: ~2 % of them pass any busy block's bloom) says
        nothing, and its block is asked again once, at once (``bloom_asks``). Final blocks
        are not checked: no backend lags that far."""
        if not fetched.full:
            return
        present: dict[int, set[str]] = {}
        for lg in fetched.logs:
            present.setdefault(lg.block_number, set()).add(lg.address)
        watched = self.watch.addresses()
        since = self.watch.since  # a child is watched from its creation on, not before

        def absent(number: int) -> list[str]:
            seen = present.get(number, ())
            return [a for a in watched if a not in seen and since.get(a, -1) <= number]

        admitted = {
            number: _admitted(header, absent(number))
            for number, header in fetched.headers.items()
            if header.logs_bloom is not None
        }
        doubtful = sorted(number for number, n in admitted.items() if n)
        for attempt in range(bloom_asks(list(admitted.values()))):
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


BLOOM_SUSPECTS_MAX = 8  # a bloom admitting more absent contracts than this says nothing


def _admitted(header: BlockHeader, addresses: Sequence[str]) -> int:
    """How many of ``addresses`` the block's bloom admits, counted up to one past
    BLOOM_SUSPECTS_MAX."""
    n = 0
    for a in addresses:
        if header.may_have_logs_of((a,)):
            n += 1
            if n > BLOOM_SUSPECTS_MAX:
                break
    return n


def bloom_asks(admitted: Sequence[int]) -> int:
    """How many times the doubtful blocks of a range are asked again, from how many absent
    contracts each block's bloom admits: none, no ask; a few in some block, BLOOM_RETRIES
    paced asks (a lagging backend's empty answer looks like that); only many (a saturated
    filter, which admits nearly anything), one ask at once."""
    if not any(admitted):
        return 0
    if any(0 < n <= BLOOM_SUSPECTS_MAX for n in admitted):
        return BLOOM_RETRIES
    return 1


def _check_addresses(logs: Sequence[RawLog], watched: Sequence[str]) -> None:
    allowed = set(watched)
    for lg in logs:
        if lg.address not in allowed:
            raise InvalidRpcData(f"log from unrequested address at block {lg.block_number}")


def _check_order(logs: Sequence[RawLog]) -> None:
    """One range's logs must be strictly ordered by (block, log index): no duplicate, no
    reordering (one pass over ints; the RPC client checks this too, the loader does not
    rely on it)."""
    prev_block, prev_index = -1, -1
    for lg in logs:
        block, index = lg.block_number, lg.log_index
        if block < prev_block or (block == prev_block and index <= prev_index):
            raise InvalidRpcData(f"log ({block}, {index}) duplicated or out of order")
        prev_block, prev_index = block, index
