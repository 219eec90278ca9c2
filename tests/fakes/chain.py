"""ScriptedChain: an in-memory chain of (number, fork) blocks, and ScriptedRpc serving it.

Block hashes follow graph-node's ``test_ptr_reorged``: the fork id in the high bytes and the
block number in the low bytes, so a failing assertion shows at a glance which fork a stored
block came from (``0x0000000000000003…0000000000000011`` is block 17 of fork 3). Blocks link
by parent hash; the canonical chain is a list indexed by number, starting at genesis (block 0,
fork 1).

Operations: :meth:`ScriptedChain.mine`, :meth:`ScriptedChain.reorg` (replace the top
``depth`` blocks by a new fork of any length, with other logs) and
:meth:`ScriptedChain.rollback` (drop the top ``k`` like ``anvil_rollback``; the next mined
block starts a new fork, as anvil re-mines with other timestamps).

Each block carries logs made by a :class:`LogMaker`, by default :class:`RewardLogs`:
``RewardAdded`` events of the ``MultiTokenPushPull`` ABI from :data:`CONTRACT` (amounts depend
on the fork, so a reorg changes the data), every 5th log an unknown topic0 from the same
contract (quarantine) and every 4th an event of an unwatched address (the node must filter it).

:class:`ScriptedRpc` has the methods of :class:`indexer.rpc.RpcClient` the follower calls
(duck-typed; ``typing.cast`` it), serving the current canonical chain, with knobs for a
provider log-range limit, the ``finalized`` tag, stale replay of an earlier range, duplicated
logs and a lagging node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from eth_utils.crypto import keccak

from indexer.errors import LaggingNode
from indexer.types import BlockHeader, RangeResult, RawLog

ZERO_HASH = "0x" + "00" * 32
GENESIS_TIME = 1_700_000_000
BLOCK_TIME = 12

CONTRACT = "0x" + "c0" * 20  # the watched MultiTokenPushPull
UNWATCHED = "0x" + "ee" * 20  # a contract nobody asked for
EMITTER = "0x" + "e1" * 20
TOKENS = ("0x" + "a1" * 20, "0x" + "a2" * 20)
WALLETS = ("0x" + "b1" * 20, "0x" + "b2" * 20, "0x" + "b3" * 20)
REWARD_ADDED = "0x" + keccak(text="RewardAdded(address,address,address,uint256)").hex()
UNKNOWN_TOPIC = "0x" + keccak(text="NotInTheAbi(uint256)").hex()


def block_hash(number: int, fork: int) -> str:
    """graph-node's scheme: fork id in the high 8 bytes, number in the low 8 bytes."""
    return "0x" + fork.to_bytes(8, "big").hex() + "00" * 16 + number.to_bytes(8, "big").hex()


def parse_hash(value: str) -> tuple[int, int]:
    """(number, fork) of a hash made by :func:`block_hash`."""
    raw = bytes.fromhex(value[2:])
    return int.from_bytes(raw[24:], "big"), int.from_bytes(raw[:8], "big")


def _word(value: int | str) -> str:
    if isinstance(value, str):
        return "0x" + value[2:].rjust(64, "0")
    return "0x" + value.to_bytes(32, "big").hex()


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    fork: int
    parent_hash: str
    timestamp: int
    logs: tuple[RawLog, ...] = ()

    @property
    def hash(self) -> str:
        return block_hash(self.number, self.fork)

    @property
    def header(self) -> BlockHeader:
        return BlockHeader(self.number, self.hash, self.parent_hash, self.timestamp)


LogMaker = Callable[[int, int, str, int], list[RawLog]]
"""(number, fork, block hash, count) -> the block's logs, log_index 0.. in order."""


class RewardLogs:
    """The default LogMaker: ``count`` logs of :data:`CONTRACT` (plus unwatched noise)."""

    def __call__(self, number: int, fork: int, hash_: str, count: int) -> list[RawLog]:
        out: list[RawLog] = []
        for i in range(count):
            seed = number * 7919 + fork * 104_729 + i * 31
            tx = "0x" + keccak(text=f"tx-{number}-{fork}-{i}").hex()
            if seed % 4 == 3:  # an unwatched contract's log, same layout
                address, topics = UNWATCHED, self._reward_topics(seed)
            elif seed % 5 == 4:  # watched, but no such event in the ABI -> quarantine
                address, topics = CONTRACT, (UNKNOWN_TOPIC, _word(seed))
            else:
                address, topics = CONTRACT, self._reward_topics(seed)
            out.append(
                RawLog(
                    block_number=number,
                    block_hash=hash_,
                    tx_hash=tx,
                    tx_index=i,
                    log_index=i,
                    address=address,
                    topics=topics,
                    data=_word(1 + seed % 1000 + fork),
                )
            )
        return out

    @staticmethod
    def _reward_topics(seed: int) -> tuple[str, ...]:
        token = TOKENS[seed % len(TOKENS)]
        wallet = WALLETS[(seed // 2) % len(WALLETS)]
        return (REWARD_ADDED, _word(token), _word(wallet), _word(EMITTER))


def is_reward_added(lg: RawLog) -> bool:
    return lg.address == CONTRACT and bool(lg.topics) and lg.topics[0] == REWARD_ADDED


def reward_fields(lg: RawLog) -> tuple[str, str, str, int]:
    """(token, wallet, emitter, amount) of a RewardAdded log made by :class:`RewardLogs`."""
    token, wallet, emitter = ("0x" + t[-40:] for t in lg.topics[1:4])
    return token, wallet, emitter, int(lg.data, 16)


class ScriptedChain:
    """The canonical chain as a list of blocks; forks get fresh ids, never reused."""

    def __init__(self, *, log_maker: LogMaker | None = None) -> None:
        self.log_maker: LogMaker = log_maker or RewardLogs()
        self._forks = 1
        self._fork = 1
        self._fresh_fork = False
        self.blocks: list[Block] = [Block(0, 1, ZERO_HASH, GENESIS_TIME)]
        self.max_head = 0

    # ---- reading ------------------------------------------------------------------------

    @property
    def head(self) -> int:
        return self.blocks[-1].number

    def block(self, number: int) -> Block | None:
        return self.blocks[number] if 0 <= number < len(self.blocks) else None

    def hash(self, number: int) -> str:
        return self.blocks[number].hash

    def header(self, number: int) -> BlockHeader | None:
        b = self.block(number)
        return b.header if b is not None else None

    def logs(
        self, from_block: int, to_block: int, addresses: Iterable[str] | None = None
    ) -> list[RawLog]:
        """Canonical logs of ``[from_block, to_block]`` (of ``addresses`` when given)."""
        wanted = None if addresses is None else {a.lower() for a in addresses}
        return [
            lg
            for b in self.blocks[max(from_block, 0) : to_block + 1]
            for lg in b.logs
            if wanted is None or lg.address in wanted
        ]

    # ---- mutating -----------------------------------------------------------------------

    def _new_fork(self) -> int:
        self._forks += 1
        return self._forks

    def mine(self, k: int = 1, logs_per_block: int | Sequence[int] = 0) -> list[Block]:
        """Append ``k`` blocks to the canonical chain (a new fork right after a rollback)."""
        if self._fresh_fork:
            self._fork, self._fresh_fork = self._new_fork(), False
        counts = [logs_per_block] * k if isinstance(logs_per_block, int) else list(logs_per_block)
        if len(counts) != k:
            raise ValueError("one log count per block")
        added = []
        for count in counts:
            parent = self.blocks[-1]
            number = parent.number + 1
            hash_ = block_hash(number, self._fork)
            # a fork's blocks come later in time than the ones they replace
            ts = max(parent.timestamp + 1, GENESIS_TIME + BLOCK_TIME * number + self._fork)
            logs = tuple(self.log_maker(number, self._fork, hash_, count))
            block = Block(number, self._fork, parent.hash, ts, logs)
            self.blocks.append(block)
            added.append(block)
        self.max_head = max(self.max_head, self.head)
        return added

    def reorg(
        self, depth: int, length: int | None = None, logs_per_block: int | Sequence[int] = 1
    ) -> list[Block]:
        """Replace the top ``depth`` blocks by a new fork of ``length`` blocks (default the
        same height, like ``anvil_reorg``); returns the replaced blocks."""
        if not 1 <= depth <= self.head:
            raise ValueError(f"cannot reorg {depth} blocks of a chain of height {self.head}")
        length = depth if length is None else length
        if length < 1:
            raise ValueError("a reorg mines at least one block; use rollback to shorten")
        replaced = self.blocks[-depth:]
        del self.blocks[-depth:]
        self._fork, self._fresh_fork = self._new_fork(), False
        self.mine(length, logs_per_block)
        return replaced

    def rollback(self, k: int) -> list[Block]:
        """Drop the top ``k`` blocks (``anvil_rollback``); returns them."""
        if not 1 <= k <= self.head:
            raise ValueError(f"cannot roll back {k} blocks of a chain of height {self.head}")
        dropped = self.blocks[-k:]
        del self.blocks[-k:]
        self._fresh_fork = True
        return dropped


@dataclass
class ScriptedRpc:
    """The RpcClient methods the follower calls, answering from a ScriptedChain.

    Knobs (plain attributes, change them at any time):

    - ``max_log_range``: a range is cut to that many blocks (``to_block`` says so);
    - ``finalized_depth``: ``header("finalized")`` is head - depth; None: the node has no
      such tag (the follower falls back to its reorg depth);
    - ``lag``: the node is that many blocks behind: head, headers and ranges above
      ``head - lag`` are missing, everything below agrees with the canonical chain;
    - ``replay_stale``: the next that many ``get_range`` calls that can be answered from an
      earlier answer (same ``from_block``, ``to_block`` within the request, same addresses
      and header mode) get that old answer, even if the chain reorged since (a caching load
      balancer);
    - ``duplicate_logs``: the next that many ``get_range`` answers carry one log twice.
    """

    chain: ScriptedChain
    max_log_range: int | None = None
    finalized_depth: int | None = None
    lag: int = 0
    replay_stale: int = 0
    duplicate_logs: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    replayed: int = 0
    _served: list[tuple[tuple[str, ...], bool, RangeResult]] = field(default_factory=list)

    @property
    def visible_head(self) -> int:
        return max(self.chain.head - self.lag, 0)

    def _visible(self, number: int) -> BlockHeader | None:
        return self.chain.header(number) if number <= self.visible_head else None

    def demote_current(self, kind: str) -> bool:
        """One scripted node: nowhere to fail over to (RpcClient.demote_current)."""
        return False

    async def block_number(self) -> int:
        self.calls["block_number"] += 1
        return self.visible_head

    async def header(self, block: int | str) -> BlockHeader | None:
        self.calls["header"] += 1
        if block == "finalized":
            if self.finalized_depth is None:
                return None
            return self._visible(max(self.visible_head - self.finalized_depth, 0))
        if block == "latest":
            return self._visible(self.visible_head)
        if not isinstance(block, int):
            raise ValueError(f"unknown block tag {block!r}")
        return self._visible(block)

    async def headers(self, numbers: Sequence[int]) -> dict[int, BlockHeader]:
        self.calls["headers"] += 1
        out: dict[int, BlockHeader] = {}
        for n in sorted(set(numbers)):
            header = self._visible(n)
            if header is None:
                raise LaggingNode(f"node has no header for block {n} yet")
            out[n] = header
        return out

    async def get_range(
        self,
        from_block: int,
        to_block: int,
        addresses: Sequence[str],
        *,
        full_headers: bool,
        topics: Sequence[str] | None = None,
    ) -> RangeResult:
        if topics is not None:  # the scripted chain serves address filters only
            raise NotImplementedError("ScriptedRpc: no filter by topic0")
        self.calls["get_range"] += 1
        if to_block < from_block:
            raise ValueError(f"empty range {from_block}..{to_block}")
        addrs = tuple(sorted({a.lower() for a in addresses}))
        stale = self._stale(from_block, to_block, addrs, full_headers)
        if stale is not None:
            return stale
        to = to_block
        if self.max_log_range is not None:
            to = min(to, from_block + self.max_log_range - 1)
        if to > self.visible_head:
            raise LaggingNode(f"node has no header for block {to} yet")
        numbers = range(from_block, to + 1) if full_headers else (to,)
        headers = {n: self.chain.blocks[n].header for n in numbers}
        logs = self.chain.logs(from_block, to, addrs) if addrs else []
        if self.duplicate_logs and logs:
            self.duplicate_logs -= 1
            logs = [*logs, logs[len(logs) // 2]]
        result = RangeResult(from_block, to, logs, headers)
        self._served.append((addrs, full_headers, result))
        return result

    def _stale(
        self, from_block: int, to_block: int, addrs: tuple[str, ...], full: bool
    ) -> RangeResult | None:
        if not self.replay_stale:
            return None
        for a, f, old in reversed(self._served):
            if (a, f, old.from_block) == (addrs, full, from_block) and old.to_block <= min(
                to_block, self.visible_head
            ):
                self.replay_stale -= 1
                self.replayed += 1
                return old
        return None

    async def get_logs(
        self, from_block: int, to_block: int, addresses: Sequence[str]
    ) -> list[RawLog]:
        self.calls["get_logs"] += 1
        if to_block > self.visible_head:
            raise LaggingNode(f"node has no header for block {to_block} yet")
        return self.chain.logs(from_block, to_block, addresses)
