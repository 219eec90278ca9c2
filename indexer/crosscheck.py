"""Completeness of final ranges: what we committed, against a second endpoint.

A lagging backend behind a load balancer can answer ``[]`` for a range whose logs it has not
got yet; when the headers it gives carry no bloom (or a bloom that proves nothing), nothing in
the answer itself betrays it, and once the range is final the follower never looks again.
The only witness is another node. So each reconciler run, when the chain has more than one
endpoint, takes a few finalized ranges (the newest one, plus older ones drawn at random), asks
every other endpoint for their logs through its own client (chain id verified first) and
compares the (block, log index, block hash, transaction) of each log with the rows stored in
every event table, ``quarantine`` included.

A difference is a ``range_incomplete`` finding, and the range is fetched again through the
chain's own client and repaired as ``verify --repair`` would, under the checkpoint lock and only
while the range is still final: when that client now agrees with the witness the finding
clears at the next run; when it does not (two nodes disagree about final history) the finding
stays open for the operator. With a single endpoint there is no witness: the check is skipped,
the limit is stated in the README.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

import asyncpg
import structlog

from indexer.config import ChainSettings
from indexer.decode import EVENT_TABLE_NAMES, AbiRegistry
from indexer.rpc import RpcClient
from indexer.types import RawLog
from indexer.verify import RepairRaced, repair_range, stored_rows, table_columns

log = structlog.get_logger()

RANGES_PER_RUN: Final = 3
MAX_RANGE_BLOCKS: Final = 1000

LogKey = tuple[int, int, str, str]  # block, log index, block hash, transaction hash


@dataclass(frozen=True, slots=True)
class RangeDiff:
    """One sampled range where a witness endpoint and our tables disagree."""

    first: int
    last: int
    endpoint: int
    witness: int  # logs the witness endpoint has
    stored: int  # rows we have
    missing: int  # logs of the witness absent from our tables
    extra: int  # rows of ours the witness does not have

    @property
    def subject(self) -> str:
        return f"range:{self.first}-{self.last}"

    def describe(self) -> tuple[str, str]:
        """(expected, actual) for the discrepancy row."""
        return (
            f"endpoint #{self.endpoint}: {self.witness} logs",
            f"indexed: {self.stored} rows "
            f"({self.missing} missing, {self.extra} not on the witness)",
        )


def sample_ranges(
    start: int, final: int, span: int, rng: random.Random, count: int = RANGES_PER_RUN
) -> list[tuple[int, int]]:
    """Up to ``count`` disjoint ranges of ``span`` blocks inside ``[start, final]``: the newest
    one always (a lagging backend hurts the most recent blocks), older ones at random."""
    if final < start or span < 1:
        return []
    newest = (max(start, final - span + 1), final)
    out = [newest]
    below = newest[0] - 1
    slots = (below - start + 1) // span
    for slot in sorted(rng.sample(range(slots), min(count - 1, slots)), reverse=True):
        first = start + slot * span
        out.append((first, first + span - 1))
    return out


def parse_subject(subject: str) -> tuple[int, int] | None:
    """The range of a ``range:FIRST-LAST`` subject (None for any other subject)."""
    if not subject.startswith("range:"):
        return None
    first, _, last = subject[len("range:") :].partition("-")
    return (int(first), int(last)) if first.isdigit() and last.isdigit() else None


def log_keys(logs: Sequence[RawLog]) -> set[LogKey]:
    return {(lg.block_number, lg.log_index, lg.block_hash, lg.tx_hash) for lg in logs}


KEY_COLUMNS: Final = ("block_number", "log_index", "block_hash", "tx_hash")


async def stored_keys(pool: asyncpg.Pool, chain_id: int, first: int, last: int) -> set[LogKey]:
    """The same identity of every stored row of ``[first, last]``, whatever its table."""
    rows = await stored_rows(
        pool, chain_id, first, last, dict.fromkeys(EVENT_TABLE_NAMES, KEY_COLUMNS)
    )
    return {cast(LogKey, row) for _, row in rows.values()}


class CrossChecker:
    """The check above for one chain; one witness client per extra endpoint, made lazily."""

    def __init__(self, chain: ChainSettings, rng: random.Random | None = None) -> None:
        self.chain = chain
        self.rng = rng or random.Random()
        self._witnesses: dict[int, RpcClient] = {}

    @property
    def enabled(self) -> bool:
        return len(self.chain.rpc_urls) > 1

    def _witness(self, idx: int) -> RpcClient:
        client = self._witnesses.get(idx)
        if client is None:
            client = self._witnesses[idx] = RpcClient(
                [self.chain.rpc_urls[idx]],
                chain=self.chain.name,
                chain_id=self.chain.chain_id,
                max_attempts=3,
                log_range=min(self.chain.batch_blocks, MAX_RANGE_BLOCKS),
                max_log_range=MAX_RANGE_BLOCKS,
                max_response_bytes=self.chain.max_response_bytes,
                address_chunk=self.chain.address_chunk,
                endpoint_ids=[idx],
            )
        return client

    async def close(self) -> None:
        for client in self._witnesses.values():
            await client.close()
        self._witnesses.clear()

    def ranges(
        self, start: int, final: int, still_open: Sequence[tuple[int, int]] = ()
    ) -> list[tuple[int, int]]:
        """This run's ranges: the sample, and every range whose finding is still open (so a
        finding is closed only by a look that agrees)."""
        span = min(self.chain.batch_blocks, MAX_RANGE_BLOCKS)
        sampled = sample_ranges(start, final, span, self.rng)
        return sorted({*sampled, *(r for r in still_open if r[1] <= final)})

    async def check(
        self,
        pool: asyncpg.Pool,
        ranges: Sequence[tuple[int, int]],
        *,
        addresses: list[str],
        primary: int,
    ) -> list[RangeDiff]:
        """The ``ranges`` where an endpoint other than ``primary`` (the one the follower reads)
        disagrees with our tables."""
        if not self.enabled or not addresses:
            return []
        diffs: list[RangeDiff] = []
        others = [i for i in range(len(self.chain.rpc_urls)) if i != primary]
        for first, last in ranges:
            ours = await stored_keys(pool, self.chain.chain_id, first, last)
            for idx in others:
                theirs = log_keys(await self._witness(idx).get_logs(first, last, addresses))
                if theirs != ours:
                    diffs.append(
                        RangeDiff(
                            first,
                            last,
                            idx,
                            witness=len(theirs),
                            stored=len(ours),
                            missing=len(theirs - ours),
                            extra=len(ours - theirs),
                        )
                    )
                    break  # one witness is enough to refetch this range
        return diffs


async def refetch(  # noqa: PLR0913 (the chain context and the range; the rest keyword-only)
    pool: asyncpg.Pool,
    rpc: RpcClient,
    chain: ChainSettings,
    registry: AbiRegistry,
    span: tuple[int, int],
    *,
    addresses: list[str],
) -> bool:
    """Fetch a disagreeing final range again through the chain's client and repair it; True
    when rows changed. A race with the follower (the range stopped being final) is skipped."""
    first, last = span
    try:
        repaired = await repair_range(
            pool=pool,
            rpc=rpc,
            registry=registry,
            chain_id=chain.chain_id,
            first=first,
            last=last,
            addresses=addresses,
            table_columns=table_columns(registry),
            final_only=True,
        )
    except RepairRaced:
        return False
    if not repaired.clean:
        log.warning("range_refetched", chain=chain.name, **repaired.as_dict())
    return not repaired.clean
