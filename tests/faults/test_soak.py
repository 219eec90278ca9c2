"""Scenario 13 (soak, marker `slow`): kill -9 in a loop while blocks and reorgs keep coming."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import deploy
from tests.e2e.test_follow import assert_all
from tests.e2e.test_reorgs import chama_tx
from tests.harness import Daemon, wait_synced
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg, pytest.mark.slow]


def _chaos(anvil: Anvil, d: deploy.Deployment, rng: random.Random, stop: threading.Event) -> None:
    """Traffic every block; with p=0.1 per block a reorg of depth 1-3 with new events."""
    seen = anvil.block_number()
    while not stop.is_set():
        deploy.generate_traffic(d.w3, d, rng, 1)
        head = anvil.block_number()
        if head > seen and rng.random() < 0.1:
            depth = rng.randint(1, 3)
            anvil.reorg(depth, [[chama_tx(d, f"soak-{head}"), 0]])
        seen = head
        time.sleep(0.2)


@pytest.mark.timeout(600)
def test_soak_random_kills_with_reorgs(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
) -> None:
    """20 kill -9 cycles at seeded random delays while anvil mines every second and reorgs;
    after the chaos stops, every invariant holds and the checkpoint only went down with a
    logged reorg."""
    seed = int(os.environ.get("SOAK_SEED", "13"))
    print(f"seed={seed}: SOAK_SEED={seed} pytest -m slow tests/faults/test_soak.py")
    rng = random.Random(seed)
    d = deployment
    anvil.rpc("anvil_setIntervalMining", [1])
    stop = threading.Event()
    chaos = threading.Thread(target=_chaos, args=(anvil, d, random.Random(seed + 1), stop))
    chaos.start()
    cfg = make_config(batch_blocks=4)
    try:
        for _ in range(20):
            daemon = Daemon(cfg, "--no-http")
            try:
                time.sleep(rng.uniform(0, 2) + 1.0)
                daemon.kill()
                events = daemon.events()
            finally:
                daemon.close()
            _assert_monotonic(events)
    finally:
        stop.set()
        chaos.join()
    daemon = Daemon(cfg, "--no-http")
    try:
        wait_synced(db_dsn, anvil, timeout=60)
        anvil.rpc("anvil_setIntervalMining", [0])
        wait_synced(db_dsn, anvil, timeout=60)
        assert daemon.stop() == 0
        _assert_monotonic(daemon.events())
    finally:
        daemon.close()
    assert_all(db_dsn, anvil, d)


def _assert_monotonic(events: list[dict[str, object]]) -> None:
    """INV-MONO: the checkpoint only goes down with a reorg_detected event of depth <= max."""
    last = -1
    for e in events:
        if e.get("event") == "batch_committed":
            assert int(e["first"]) == last + 1 or last == -1  # type: ignore[call-overload]
            last = int(e["last"])  # type: ignore[call-overload]
        elif e.get("event") == "reorg_detected":
            assert int(e["depth"]) <= 64  # type: ignore[call-overload]
            last = int(e["common_ancestor"])  # type: ignore[call-overload]
