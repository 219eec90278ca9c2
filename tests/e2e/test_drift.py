"""Scenario 25a: drift between the database and the chain is found by `indexer verify` and
fixed by `indexer verify --repair`."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.harness import indexer
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]
RUN = ("run", "--exit-when-caught-up", "--no-http")


def test_drift_verify_finds_three_differences_and_repair_fixes_them(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """A deleted event row, a phantom row and a changed stored hash are reported exactly by
    verify (exit 3); verify --repair fixes them and a second verify is clean."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(25), 25)
    anvil.mine(3)
    cfg = make_config()
    assert indexer(cfg, *RUN).code == 0
    tip = checks.checkpoint(db_dsn)[0]
    args = ("verify", "--chain", "local", "--from", str(d.block_number), "--to", str(tip))

    deleted = checks.db_fetch(
        db_dsn,
        "DELETE FROM reward_added WHERE ctid IN (SELECT ctid FROM reward_added "
        "ORDER BY block_number LIMIT 1) RETURNING block_number, log_index",
    )[0]
    phantom_block = tip - 1
    checks.db_fetch(
        db_dsn,
        "INSERT INTO other_events SELECT chain_id, number, hash, NULL, $2, 77, $3, "
        "'Phantom', '{}'::jsonb FROM blocks WHERE number = $1",
        phantom_block,
        "0x" + "ee" * 32,
        d.addresses["MultiTokenPushPull"],
    )
    changed_block = checks.db_fetch(
        db_dsn, "SELECT min(number) AS n FROM blocks WHERE number < $1", tip
    )[0]["n"]
    checks.db_fetch(
        db_dsn, "UPDATE blocks SET hash = $2 WHERE number = $1", changed_block, "0x" + "12" * 32
    )

    dirty = indexer(cfg, *args, "--json")
    assert dirty.code == 3, dirty.stdout + dirty.stderr[-1500:]
    report = json.loads(dirty.stdout)
    assert report["missing"] == [["reward_added", deleted["block_number"], deleted["log_index"]]]
    assert report["phantom"] == [["other_events", phantom_block, 77]]
    assert report["changed"] == []
    assert [h[0] for h in report["hashes"]] == [changed_block]

    fixed = indexer(cfg, *args, "--repair")
    assert fixed.code == 0, fixed.stdout + fixed.stderr[-1500:]
    assert "REPAIRED" in fixed.stdout
    clean = indexer(cfg, *args)
    assert clean.code == 0, clean.stdout + clean.stderr[-1500:]
    assert "consistent" in clean.stdout
    assert_all(db_dsn, anvil, d)  # balances rebuilt from the repaired events too
    again = indexer(cfg, *RUN)  # the follower continues from the repaired checkpoint
    assert again.code == 0, again.stderr[-1500:]


def test_drift_repair_replaces_a_changed_row_and_its_balance(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """A tampered amount is reported as changed and repaired, with the wallet's balance."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(251), 25)
    cfg = make_config()
    assert indexer(cfg, *RUN).code == 0
    tip = checks.checkpoint(db_dsn)[0]
    row = checks.db_fetch(
        db_dsn,
        "UPDATE reward_added SET amount = amount + 1 WHERE ctid IN (SELECT ctid FROM "
        "reward_added LIMIT 1) RETURNING block_number, log_index, token, wallet",
    )[0]
    checks.db_fetch(
        db_dsn,
        "UPDATE reward_balances SET added = added + 1 WHERE token = $1 AND wallet = $2",
        row["token"],
        row["wallet"],
    )
    args = ("verify", "--chain", "local", "--from", str(d.block_number), "--to", str(tip))
    dirty = indexer(cfg, *args, "--json")
    assert dirty.code == 3
    expected = [["reward_added", row["block_number"], row["log_index"]]]
    assert json.loads(dirty.stdout)["changed"] == expected
    assert indexer(cfg, *args, "--repair").code == 0
    assert indexer(cfg, *args).code == 0
    assert_all(db_dsn, anvil, d)
