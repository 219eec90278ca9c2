"""Values passed between the stages: headers, raw logs, fetched ranges (frozen, slotted).

Addresses and hashes are lowercase ``0x`` hex strings, normalised once at the RPC edge."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from eth_hash.auto import keccak


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """The part of a block header the follower keeps: position, identity, link, time."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int
    logs_bloom: bytes | None = None  # 256 bytes when the node sent it

    def may_have_logs_of(self, addresses: Iterable[str]) -> bool:
        """Whether the block's bloom filter admits a log of one of ``addresses`` (False
        positives happen; a False is certain). Unknown bloom: True."""
        bloom = self.logs_bloom
        if bloom is None:
            return True
        return any(all(bloom[i] & m for i, m in _bloom_bits(a)) for a in addresses)


@lru_cache(maxsize=65_536)
def _bloom_bits(address: str) -> tuple[tuple[int, int], ...]:
    """The three (byte index, mask) pairs an address sets in a 2048-bit logs bloom."""
    digest = keccak(bytes.fromhex(address[2:]))
    out = []
    for i in (0, 2, 4):
        bit = ((digest[i] << 8) | digest[i + 1]) & 2047
        out.append((255 - bit // 8, 1 << (bit % 8)))
    return tuple(out)


class RawLog(NamedTuple):
    """One log as the node returned it (validated, not yet decoded).

    A NamedTuple rather than a frozen dataclass: equally immutable, and built in a third of
    the time (a frozen dataclass sets each field through ``object.__setattr__``), which
    counts at hundreds of thousands of logs per backfill.

    The promise every consumer relies on (the decoder reads values by slicing): hashes and
    topics are lowercase ``0x`` hex of 32 bytes, the address of 20, ``data`` lowercase ``0x``
    hex of whole bytes. ``rpcdata.parse_log`` is where a node's logs are made to keep it."""

    block_number: int
    block_hash: str
    tx_hash: str
    tx_index: int
    log_index: int
    address: str
    topics: tuple[str, ...]
    data: str  # 0x hex

    @property
    def key(self) -> tuple[int, int]:
        """Position of the log on its chain: the primary key of every event table."""
        return (self.block_number, self.log_index)


@dataclass(frozen=True, slots=True)
class RangeResult:
    """Logs of ``[from_block, to_block]`` and the headers fetched in the same JSON-RPC batch.

    ``to_block`` may be lower than what was asked for when the provider limited the range."""

    from_block: int
    to_block: int
    logs: list[RawLog]
    headers: dict[int, BlockHeader] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A mined transaction's outcome, validated: status 1 (success) or 0 (reverted)."""

    tx_hash: str
    status: int
    block_number: int
    block_hash: str
    gas_used: int
    logs: tuple[RawLog, ...]


@dataclass(frozen=True, slots=True)
class FactoryWatch:
    """Children of a factory: the factory ABI's event whose ``parameter`` is a new address."""

    factory_abi: str
    event: str
    parameter: str
    child_abi: str


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
    topics_above: int | None = None  # more watched contracts: logs fetched by topic0
