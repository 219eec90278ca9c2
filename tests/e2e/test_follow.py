"""Scenario 1 and friends: backfill then follow, on a real anvil and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import checks, deploy
from tests.harness import indexer
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]


def static(d: deploy.Deployment) -> list[str]:
    a = d.addresses
    return [a["MultiTokenPushPull"], a["ProductBankFactory"], a["ChamaSavings"]]


def assert_all(dsn: str, anvil: Anvil, d: deploy.Deployment) -> int:
    n = checks.assert_canonical(
        dsn, anvil, static(d), d.addresses["ProductBankFactory"], start=d.block_number
    )
    checks.assert_balances(dsn, anvil, d.addresses["MultiTokenPushPull"])
    return n


def test_follow_baseline_backfill_then_follow(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """Seeded traffic is indexed equal to the chain; then new blocks are followed."""
    rng = random.Random(1)
    done = deploy.generate_traffic(deployment.w3, deployment, rng, 60)
    cfg = make_config(batch_blocks=7)
    assert indexer(cfg, "migrate").code == 0
    first = indexer(cfg, "run", "--exit-when-caught-up", "--no-http")
    assert first.code == 0, first.stderr[-2000:]
    n1 = assert_all(db_dsn, anvil, deployment)
    assert n1 > 30, done
    committed = first.named("batch_committed")
    covered = [b for e in committed for b in range(e["first"], e["last"] + 1)]
    assert covered == list(range(deployment.block_number, anvil.block_number() + 1))
    deploy.generate_traffic(deployment.w3, deployment, rng, 20)
    anvil.mine(5)
    second = indexer(cfg, "run", "--exit-when-caught-up", "--no-http")
    assert second.code == 0, second.stderr[-2000:]
    assert assert_all(db_dsn, anvil, deployment) > n1
