"""Scenario 2 (graceful restart), 10 (reorg across the finalized height), NOTIFY, and the
HTTP endpoints of a running daemon."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.e2e.test_reorgs import chama_tx
from tests.harness import ChainCfg, Daemon, indexer, wait_synced, write_config
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]


def test_sigterm_mid_run_exits_cleanly_and_restart_continues(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Scenario 2: SIGTERM while following: exit 0 within 10 s, no session left idle in a
    transaction, and a restart continues with no gap or duplicate."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(2), 20)
    cfg = make_config(batch_blocks=3)
    slow = {"INDEXER_FAILPOINTS": "sink.after_events=sleep:0.2"}  # SIGTERM lands mid-batch
    daemon = Daemon(cfg, "--no-http", env=slow)
    daemons.append(daemon)
    daemon.wait_for(lambda e: e.get("event") == "batch_committed")
    started = time.monotonic()
    assert daemon.stop(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert not checks.db_fetch(
        db_dsn,
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%'",
    )
    first = [e for e in daemon.events() if e.get("event") == "batch_committed"]
    out = indexer(cfg, "run", "--exit-when-caught-up", "--no-http")
    assert out.code == 0, out.stderr[-1500:]
    blocks = [
        b for e in [*first, *out.named("batch_committed")] for b in range(e["first"], e["last"] + 1)
    ]
    assert blocks == list(range(d.block_number, anvil.block_number() + 1))
    assert_all(db_dsn, anvil, d)


def test_reorg_across_finalized_height_halts(tmp_path: Path, db_dsn: str) -> None:
    """Scenario 10: with the node's finalized tag 2 blocks behind the head, a reorg of depth 3
    replaces a finalized block: finality violation, halt, nothing deleted."""
    node = Anvil.start("--slots-in-an-epoch", "1")
    try:
        d = deploy.deploy_all(deploy.connect(node.url))
        deploy.generate_traffic(d.w3, d, random.Random(10), 15)
        node.mine(5)
        cfg = write_config(
            tmp_path / "fin.toml",
            db_dsn,
            [
                ChainCfg(
                    "local",
                    31337,
                    node.url,
                    d.addresses,
                    start_block=d.block_number,
                    finality="tag",
                    max_reorg_depth=10,
                )
            ],
        )
        assert indexer(cfg, "run", "--exit-when-caught-up", "--no-http").code == 0
        finalized = int(node.rpc("eth_getBlockByNumber", ["finalized", False])["number"], 16)
        assert finalized == node.block_number() - 2
        before = sorted(checks.stored_keys(db_dsn))
        ckpt = checks.checkpoint(db_dsn)
        node.rpc("anvil_reorg", [3, [[chama_tx(d, "late"), 0]]])
        out = indexer(cfg, "run", "--exit-when-caught-up", "--no-http")
        assert out.code == 1
        [halt] = out.named("chain_halted")
        assert halt["kind"] == "FinalityViolation"
        assert sorted(checks.stored_keys(db_dsn)) == before
        assert checks.checkpoint(db_dsn) == ckpt
    finally:
        node.stop()


def test_notify_after_commit_and_rollback(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Subscribers get a NOTIFY per commit (range and tables) and per rollback."""
    d = deployment
    got: list[dict[str, object]] = []

    async def listen() -> None:
        con = await asyncpg.connect(db_dsn)
        await con.add_listener("rewardsync", lambda *a: got.append(json.loads(a[3])))
        daemon = Daemon(make_config(), "--no-http")
        daemons.append(daemon)
        deploy.create_chama(d, d.admin_key, "notify", 10, 3)
        for _ in range(200):
            if any(g["kind"] == "commit" and "chamas" in g["tables"] for g in got):  # type: ignore[operator]
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(wait_synced, db_dsn, anvil)
        anvil.reorg(1)
        for _ in range(200):
            if any(g["kind"] == "rollback" for g in got):
                break
            await asyncio.sleep(0.05)
        await con.close()

    asyncio.run(listen())
    commits = [g for g in got if g["kind"] == "commit"]
    assert any("chamas" in g["tables"] for g in commits)  # type: ignore[operator]
    assert all(g["chain_id"] == 31337 for g in got)
    assert any(g["kind"] == "rollback" for g in got)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_health_and_halt_state_over_http(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """/healthz is 200, /readyz 200 once caught up, /metrics exposes the checkpoint; after a
    too-deep reorg indexer_healthy is 0 and /readyz 503."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(11), 15)
    anvil.mine(10)
    daemon = Daemon(make_config(max_reorg_depth=3))
    daemons.append(daemon)
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    base = f"http://127.0.0.1:{port}"
    tip = wait_synced(db_dsn, anvil)
    assert _get(base + "/healthz")[0] == 200
    deadline = time.monotonic() + 10
    while _get(base + "/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _get(base + "/readyz")[0] == 200
    metrics = _get(base + "/metrics")[1]
    assert f'indexer_checkpoint_block{{chain="local"}} {float(tip)}' in metrics
    assert 'indexer_healthy{chain="local"} 1.0' in metrics
    anvil.reorg(5)
    daemon.wait_for(lambda e: e.get("event") == "chain_halted")
    deadline = time.monotonic() + 10
    while 'indexer_healthy{chain="local"} 0.0' not in _get(base + "/metrics")[1]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status, body = _get(base + "/readyz")
    assert status == 503
    assert json.loads(body)["chains"]["local"]["halted"] is True
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=10) == 0
