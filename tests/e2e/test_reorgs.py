"""Reorgs on a real anvil with the daemon following: live at each depth, then growth, a
rollback and regrowth, two within one poll, one while stopped, and one too deep (halt)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.harness import Daemon, call_tx, indexer, wait_synced
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]


def chama_tx(d: deploy.Deployment, name: str) -> dict[str, object]:
    """createChama from the admin: a ChamaCreated event on whatever fork it lands."""
    data = d.chama.functions.createChama(name, 10, 3)._encode_transaction_data()
    return call_tx(deploy.address_of(d.admin_key), d.chama.address, data)


def reorgs_of(dsn: str) -> list[tuple[int, int, str]]:
    rows = checks.db_fetch(dsn, "SELECT depth, common_ancestor, kind FROM reorgs ORDER BY id")
    return [(r["depth"], r["common_ancestor"], r["kind"]) for r in rows]


@pytest.mark.parametrize("depth", [1, 2, 5, 20, 64])
def test_reorg_live_at_depth(
    depth: int,
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """A live reorg of the given depth (same height, new events on the fork) is rolled back."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(depth), 30)
    anvil.mine(max(0, depth + 5 - (anvil.block_number() - d.block_number)))
    cfg = make_config()
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    tip = wait_synced(db_dsn, anvil)
    anvil.reorg(depth, [[chama_tx(d, "fork-a"), 0], [chama_tx(d, "fork-b"), depth - 1]])
    assert anvil.block_number() == tip  # same height: only the hash check can see it
    event = daemon.wait_for(lambda e: e.get("event") == "reorg_detected")
    assert event["depth"] == depth
    assert event["common_ancestor"] == tip - depth
    wait_synced(db_dsn, anvil)
    assert daemon.stop() == 0
    assert_all(db_dsn, anvil, d)
    names = [r["name"] for r in checks.db_fetch(db_dsn, "SELECT name FROM chamas")]
    assert "fork-a" in names
    assert "fork-b" in names
    assert reorgs_of(db_dsn) == [(depth, tip - depth, "reorg")]


def test_reorg_then_chain_grows(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Scenario 5: reorg of depth 3 then 5 more blocks: ancestor found, one reorg recorded."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(5), 25)
    daemon = Daemon(make_config(), "--no-http")
    daemons.append(daemon)
    tip = wait_synced(db_dsn, anvil)
    anvil.reorg(3, [[chama_tx(d, "grown"), 1]])
    anvil.mine(5)
    wait_synced(db_dsn, anvil)
    assert daemon.stop() == 0
    assert_all(db_dsn, anvil, d)
    assert reorgs_of(db_dsn) == [(3, tip - 3, "reorg")]


def test_reorg_rollback_then_regrow(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Scenario 6: the chain gets shorter than our checkpoint (anvil_rollback): we wait without
    deleting; once it regrows with other transactions, the heights above the fork are
    rewritten."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(6), 25)
    daemon = Daemon(make_config(), "--no-http")
    daemons.append(daemon)
    tip = wait_synced(db_dsn, anvil)
    rows_before = len(checks.stored_keys(db_dsn))
    anvil.rpc("anvil_rollback", [3])
    daemon.wait_for(lambda e: e.get("event") == "node_behind")
    assert checks.checkpoint(db_dsn)[0] == tip
    assert len(checks.stored_keys(db_dsn)) == rows_before
    deploy.create_chama(d, d.admin_key, "regrown", 10, 3)
    anvil.mine(4)
    daemon.wait_for(lambda e: e.get("event") == "reorg_detected")
    wait_synced(db_dsn, anvil)
    assert daemon.stop() == 0
    assert_all(db_dsn, anvil, d)


def test_reorg_twice_within_one_poll(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Scenario 7: two reorgs before we look again; we end equal to the final chain."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(7), 25)
    daemon = Daemon(make_config(poll_interval=2.0), "--no-http")
    daemons.append(daemon)
    wait_synced(db_dsn, anvil, timeout=60)
    anvil.reorg(2, [[chama_tx(d, "first-fork"), 0]])
    anvil.reorg(3, [[chama_tx(d, "second-fork"), 1]])
    daemon.wait_for(lambda e: e.get("event") == "reorg_detected")
    wait_synced(db_dsn, anvil)
    assert daemon.stop() == 0
    assert_all(db_dsn, anvil, d)
    names = {r["name"] for r in checks.db_fetch(db_dsn, "SELECT name FROM chamas")}
    assert "second-fork" in names
    assert "first-fork" not in names


def test_reorg_offline_is_repaired_at_start(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """Scenario 8: a reorg while the daemon is down is found before fetching forward."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(8), 25)
    cfg = make_config()
    assert indexer(cfg, "run", "--exit-when-caught-up", "--no-http").code == 0
    tip = checks.checkpoint(db_dsn)[0]
    anvil.reorg(4, [[chama_tx(d, "offline"), 2]])
    out = indexer(cfg, "run", "--exit-when-caught-up", "--no-http")
    assert out.code == 0, out.stderr[-2000:]
    [event] = out.named("reorg_detected")
    assert event["common_ancestor"] == tip - 4
    assert_all(db_dsn, anvil, d)


def test_reorg_too_deep_halts_then_rewind_recovers(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """Scenario 9: deeper than max_reorg_depth: halt, delete nothing; rewind then recovers."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(9), 25)
    anvil.mine(10)
    cfg = make_config(max_reorg_depth=4)
    assert indexer(cfg, "run", "--exit-when-caught-up", "--no-http").code == 0
    before = sorted(checks.stored_keys(db_dsn))
    ckpt = checks.checkpoint(db_dsn)
    anvil.reorg(6, [[chama_tx(d, "deep"), 0]])
    out = indexer(cfg, "run", "--exit-when-caught-up", "--no-http")
    assert out.code == 1
    assert out.named("chain_halted")
    assert sorted(checks.stored_keys(db_dsn)) == before
    assert checks.checkpoint(db_dsn) == ckpt
    status = indexer(cfg, "status", "--json")
    assert '"halted": "reorg deeper than max_reorg_depth' in status.stdout
    assert status.code == 4, "status exits 4 while a chain is halted"
    again = indexer(cfg, "run", "--exit-when-caught-up", "--no-http")
    assert again.code == 1  # still halted: nothing changes without a human
    assert sorted(checks.stored_keys(db_dsn)) == before
    rw = indexer(cfg, "rewind", "--chain", "local", "--to", str(ckpt[0] - 8))
    assert rw.code == 0, rw.stderr
    final = indexer(cfg, "run", "--exit-when-caught-up", "--no-http")
    assert final.code == 0, final.stderr[-2000:]
    assert_all(db_dsn, anvil, d)
    assert indexer(cfg, "status").code == 0
