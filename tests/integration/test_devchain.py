"""The dev chain helpers the demo and the tests stand on (``indexer.demo.devchain``)."""

from __future__ import annotations

import itertools
import random
import threading

import pytest

from tests.procs import Anvil

pytestmark = pytest.mark.anvil


def test_a_reorg_beside_concurrent_sends_leaves_every_block_in_place() -> None:
    """``Anvil.reorg`` while other threads send transactions (as the daemon's pusher does
    during the demo's reorgs): every number up to the head has its block and every parent link
    holds. A bare ``anvil_reorg`` here left numbers with no block (anvil 1.7.1's race), which
    the demo's final verify met as "node has no header for block 245". The node's own home
    (where anvil spills old states) is gone once it stops."""
    node = Anvil.start()
    stop = threading.Event()
    try:
        node.mine(5)
        accounts = node.rpc("eth_accounts")

        def send(sender: str) -> None:
            while not stop.is_set():
                tx = {"from": sender, "to": accounts[-1], "value": "0x1"}
                node.rpc("eth_sendTransaction", [tx])

        threads = [threading.Thread(target=send, args=(a,)) for a in accounts[:2]]
        for t in threads:
            t.start()
        rng = random.Random(5)
        for _ in range(12):
            stop.wait(rng.uniform(0.02, 0.1))
            node.reorg(rng.randint(1, 3))
        stop.set()
        for t in threads:
            t.join()
        head = node.block_number()
        assert head > 20
        blocks = [node.rpc("eth_getBlockByNumber", [hex(n), False]) for n in range(head + 1)]
        assert [n for n, b in enumerate(blocks) if b is None] == []
        for parent, child in itertools.pairwise(blocks):
            assert child["parentHash"] == parent["hash"]
    finally:
        stop.set()
        node.stop()
    assert node.home is not None
    assert not node.home.exists()
