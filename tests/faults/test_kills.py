"""Crash safety (P1, P5): kill -9 at every sink failpoint, in the middle of a rollback, and at
random instants of a long backfill; a restart with no manual step converges to the chain."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from indexer.loader import GROUP_RANGES
from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.e2e.test_reorgs import chama_tx
from tests.harness import Daemon, indexer, wait_synced
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

RUN = ("run", "--exit-when-caught-up", "--no-http")


def spread_traffic(d: deploy.Deployment, anvil: Anvil, seed: int, rounds: int, gap: int) -> None:
    """Seeded traffic with ``gap`` empty blocks between rounds (events spread over a range)."""
    rng = random.Random(seed)
    for _ in range(rounds):
        deploy.generate_traffic(d.w3, d, rng, 3)
        anvil.mine(gap)


@pytest.mark.parametrize(
    "point",
    ["sink.before_begin", "sink.after_events", "sink.after_checkpoint", "sink.after_commit"],
)
def test_kill_at_sink_failpoint_then_restart_converges(
    point: str,
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
) -> None:
    """Scenario 11: SIGKILL at a sink failpoint; the checkpoint is the last committed one and a
    plain restart converges to the chain."""
    d = deployment
    spread_traffic(d, anvil, 11, 12, 5)
    cfg = make_config(batch_blocks=10)
    killed = indexer(cfg, *RUN, env={"INDEXER_FAILPOINTS": f"{point}=kill@3"})
    assert killed.code == -9, killed.stderr[-1500:]
    committed = killed.named("batch_committed")
    ckpt = checks.checkpoint(db_dsn)[0]
    expected = committed[-1]["last"] if committed else d.block_number - 1
    if point == "sink.after_commit":
        # the third commit landed, its log line did not: one range of batch_blocks, or a
        # commit group of up to GROUP_RANGES of them (below the finalized block)
        assert ckpt - expected in {10 * k for k in range(1, GROUP_RANGES + 1)}, (ckpt, expected)
    else:
        assert ckpt == expected
    assert not checks.db_fetch(
        db_dsn,
        "SELECT 1 FROM pg_stat_activity WHERE state = "
        "'idle in transaction' AND datname = current_database()",
    )
    again = indexer(cfg, *RUN)
    assert again.code == 0, again.stderr[-1500:]
    assert_all(db_dsn, anvil, d)


def test_kill_in_the_middle_of_a_rollback(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Scenario 12: SIGKILL between the delete of reorged rows and the checkpoint move; the
    rollback is all-or-nothing and a restart converges."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(12), 25)
    cfg = make_config()
    daemon = Daemon(cfg, "--no-http", env={"INDEXER_FAILPOINTS": "sink.rewind_after_delete=kill"})
    daemons.append(daemon)
    tip = wait_synced(db_dsn, anvil)
    anvil.reorg(3, [[chama_tx(d, "after-kill"), 0], [chama_tx(d, "x"), 2]])
    assert daemon.proc.wait(timeout=30) == -9
    assert checks.checkpoint(db_dsn)[0] == tip  # the rollback did not commit
    out = indexer(cfg, *RUN)
    assert out.code == 0, out.stderr[-1500:]
    assert out.named("reorg_detected")
    assert_all(db_dsn, anvil, d)


def test_kill_at_random_instants_during_long_backfill(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
) -> None:
    """20 SIGKILLs at seeded random instants during a backfill of >= 2,000 blocks, each
    followed by a restart; the end state equals the chain and the checkpoint never went down."""
    seed = 20260
    rng = random.Random(seed)
    print(
        f"seed={seed}: pytest 'tests/faults/test_kills.py::"
        "test_kill_at_random_instants_during_long_backfill'"
    )
    d = deployment
    spread_traffic(d, anvil, seed, 40, 50)
    assert anvil.block_number() - d.block_number >= 2000
    cfg = make_config(batch_blocks=5)
    progress: list[int] = []
    slow = {"INDEXER_FAILPOINTS": "sink.before_begin=sleep:0.03"}  # kills must land mid-way
    for _ in range(20):
        daemon = Daemon(cfg, "--exit-when-caught-up", "--no-http", env=slow)
        try:
            time.sleep(rng.uniform(0.5, 2.5))
            daemon.kill()
        finally:
            daemon.close()
        rows = checks.db_fetch(db_dsn, "SELECT block_number FROM checkpoints")
        progress.append(rows[0]["block_number"] if rows else -1)
    assert progress == sorted(progress), "INV-MONO: the checkpoint went down without a reorg"
    assert len(set(progress)) > 5, f"kills did not land during the backfill: {progress}"
    out = indexer(cfg, *RUN)
    assert out.code == 0, out.stderr[-1500:]
    assert assert_all(db_dsn, anvil, d) > 100
