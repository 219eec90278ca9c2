"""Values passed between the stages: headers, raw logs, fetched ranges (frozen, slotted).

Addresses and hashes are lowercase ``0x`` hex strings, normalised once at the RPC edge."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """The part of a block header the follower keeps: position, identity, link, time."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class RawLog:
    """One log as the node returned it (validated, not yet decoded)."""

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
