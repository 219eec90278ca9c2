"""How our tip relates to the node's chain: replaced (a reorg: walk down to the common
ancestor) or ahead of the node (a lagging node: wait, then fail over).

The follower calls this when its tip is no longer canonical. It walks the stored headers down
from the checkpoint, ``ANCESTOR_CHUNK`` at a time, and asks the node for the same heights in one
batch; the first stored header whose hash the node returns is the common ancestor. Nothing is
written here: the follower decides from the answer whether to roll back or to halt.

A node whose head is below the checkpoint but agrees on the hash at its head is behind us (a
lagging backend, a restarted node): there is nothing to roll back. ``NodeBehind`` exposes how
far behind in ``indexer_node_behind_blocks`` and moves to another endpoint after
``NODE_BEHIND_FAILOVER_S``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from indexer import metrics
from indexer.checkpoint import Checkpoint, CheckpointStore
from indexer.errors import FinalityViolation, InvalidRpcData, ReorgTooDeep
from indexer.rpc import RpcClient
from indexer.types import BlockHeader

log = structlog.get_logger()

ANCESTOR_CHUNK = 16  # node headers fetched per round of the common-ancestor walk
NODE_BEHIND_FAILOVER_S = 10.0  # a head below our checkpoint this long: try another endpoint


@dataclass(frozen=True, slots=True)
class Ancestry:
    """What the walk found: the ancestor to roll back to, or why the chain must halt."""

    ancestor: BlockHeader | None
    new_tip: str | None  # the node's hash at the old checkpoint height, for the reorg log
    requests: int
    unsafe: ReorgTooDeep | FinalityViolation | None = None


async def find_ancestor(
    rpc: RpcClient, store: CheckpointStore, cp: Checkpoint, head: int, max_depth: int
) -> Ancestry:
    """The newest stored block at most ``max_depth`` below ``cp`` that the node agrees with.

    An ancestor below the block that was final at ``cp``'s commit is a finality violation, no
    agreeing block in the window a too-deep reorg: both come back in ``unsafe`` (the follower
    halts, nothing deleted). Raises ``InvalidRpcData`` when the node agrees with the tip itself
    (a range that does not link to the node's own header is bad data, not a reorg)."""
    floor = cp.number - max_depth
    stored = [h for h in await store.recent(cp.number, max_depth + 1) if h.number >= floor]
    candidates = [h for h in stored if h.number <= head]
    ancestor: BlockHeader | None = None
    new_tip: str | None = None
    requests = 0
    for i in range(0, len(candidates), ANCESTOR_CHUNK):
        chunk = candidates[i : i + ANCESTOR_CHUNK]
        requests += 1
        node = await rpc.headers([h.number for h in chunk])
        if new_tip is None and cp.number in node:
            new_tip = node[cp.number].hash
        ancestor = next((h for h in chunk if node[h.number].hash == h.hash), None)
        if ancestor is not None:
            break
    if ancestor is None and cp.start_block - 1 >= floor:
        # Every indexed block is replaced, the first one included: the common ancestor is
        # the block before start_block, which we never stored.
        ancestor = BlockHeader(cp.start_block - 1, "", "", 0)
    if ancestor is None:
        too_deep = ReorgTooDeep(
            f"reorg deeper than max_reorg_depth={max_depth}: no stored block in "
            f"{floor}..{cp.number} is canonical; run `indexer rewind`"
        )
        return Ancestry(None, new_tip, requests, too_deep)
    if ancestor.number == cp.number:
        raise InvalidRpcData(
            f"range after block {cp.number} does not link to the node's own header of it"
        )
    if cp.finalized is not None and ancestor.number < cp.finalized:
        violation = FinalityViolation(
            f"block {ancestor.number + 1} changed but {cp.finalized} was finalized; "
            "run `indexer rewind` after checking the node"
        )
        return Ancestry(ancestor, new_tip, requests, violation)
    return Ancestry(ancestor, new_tip, requests)


class NodeBehind:
    """How long the node's head has been below our checkpoint (see the module docstring)."""

    def __init__(self, chain: str, rpc: RpcClient) -> None:
        self.chain = chain
        self.rpc = rpc
        self.since: float | None = None

    def observe(self, checkpoint: int, head: int) -> None:
        """One more poll with the node at ``head`` below ``checkpoint``."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        behind_s = now - self.since
        metrics.NODE_BEHIND.labels(self.chain).set(checkpoint - head)
        moved = False
        if behind_s >= NODE_BEHIND_FAILOVER_S:
            moved = self.rpc.demote_current("behind_checkpoint")
            self.since = now
        log.info(
            "node_behind",
            head=head,
            checkpoint=checkpoint,
            behind_s=round(behind_s, 1),
            failover=moved,
        )

    def clear(self) -> None:
        """The node caught up with us."""
        self.since = None
        metrics.NODE_BEHIND.labels(self.chain).set(0)
