"""Banks discovered from the factory, two chains, backfill, verify and operator errors."""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import checks, deploy
from tests.e2e.test_follow import assert_all, static
from tests.fakes.rpc import FakeRpc
from tests.harness import (
    INDEXER_BIN,
    ChainCfg,
    Daemon,
    _env,
    indexer,
    parse_events,
    wait_synced,
    write_config,
)
from tests.procs import ROOT, Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]
RUN = ("run", "--exit-when-caught-up", "--no-http")


def snapshot(dsn: str) -> list[tuple[object, ...]]:
    """Every event row, balance and header, to prove that something changed nothing."""
    out: list[tuple[object, ...]] = []
    for table in (*checks.EVENT_TABLES, "reward_balances", "blocks", "checkpoints"):
        rows = checks.db_fetch(dsn, f"SELECT * FROM {table}")
        out += sorted((table, *[str(v) for k, v in r.items() if k != "updated_at"]) for r in rows)
    return out


def test_reorg_removing_bank_creation_removes_bank_and_events(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """A reorg that drops a ProductBank's creation drops the bank and its events; a bank
    created again later at the same address is indexed from its new creation."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(3), 15)
    daemon = Daemon(make_config(), "--no-http")
    daemons.append(daemon)
    wait_synced(db_dsn, anvil)
    bank = deploy.create_bank(d, deploy.product_id("doomed"))
    deploy.fund_bank(d, bank, 1000)
    wait_synced(db_dsn, anvil)
    addr = bank.address.lower()
    assert checks.db_fetch(db_dsn, "SELECT 1 FROM product_banks WHERE bank=$1", addr)
    assert checks.db_fetch(db_dsn, "SELECT 1 FROM funds_deposited WHERE contract=$1", addr)
    tip = anvil.block_number()
    created = min(
        r["block_number"]
        for r in checks.db_fetch(
            db_dsn, "SELECT block_number FROM product_banks WHERE bank=$1", addr
        )
    )
    anvil.reorg(tip - created + 1)
    daemon.wait_for(lambda e: e.get("event") == "reorg_detected")
    wait_synced(db_dsn, anvil)
    assert not checks.db_fetch(db_dsn, "SELECT 1 FROM product_banks WHERE bank=$1", addr)
    assert not checks.db_fetch(db_dsn, "SELECT 1 FROM funds_deposited WHERE contract=$1", addr)
    bank2 = deploy.create_bank(d, deploy.product_id("doomed"))
    assert bank2.address.lower() == addr  # CREATE2: same product, same address
    deploy.fund_bank(d, bank2, 7)
    wait_synced(db_dsn, anvil)
    assert daemon.stop() == 0
    rows = checks.db_fetch(db_dsn, "SELECT amount FROM funds_deposited WHERE contract=$1", addr)
    assert [int(r["amount"]) for r in rows] == [7]
    assert_all(db_dsn, anvil, d)


def test_restart_keeps_discovered_banks(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """A bank discovered before a restart is still watched after it."""
    d = deployment
    bank = deploy.create_bank(d, deploy.product_id("kept"))
    cfg = make_config()
    assert indexer(cfg, *RUN).code == 0
    deploy.fund_bank(d, bank, 55)
    assert indexer(cfg, *RUN).code == 0
    rows = checks.db_fetch(
        db_dsn, "SELECT amount FROM funds_deposited WHERE contract=$1", bank.address.lower()
    )
    assert [int(r["amount"]) for r in rows] == [55]
    assert_all(db_dsn, anvil, d)


def test_two_chains_in_one_daemon(
    tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """Two anvils (two chain ids) followed by one daemon, each with its own checkpoint."""
    other = Anvil.start(chain_id=31338)
    try:
        d2 = deploy.deploy_all(deploy.connect(other.url))
        deploy.generate_traffic(deployment.w3, deployment, random.Random(1), 20)
        deploy.generate_traffic(d2.w3, d2, random.Random(2), 30)
        cfg = write_config(
            tmp_path / "two.toml",
            db_dsn,
            [
                ChainCfg(
                    "one",
                    31337,
                    anvil.url,
                    deployment.addresses,
                    start_block=deployment.block_number,
                ),
                ChainCfg("two", 31338, other.url, d2.addresses, start_block=d2.block_number),
            ],
        )
        out = indexer(cfg, *RUN)
        assert out.code == 0, out.stderr[-2000:]
        chains = {e["chain"] for e in out.named("batch_committed")}
        assert chains == {"one", "two"}
        assert_all(db_dsn, anvil, deployment)
        n2 = checks.assert_canonical(
            db_dsn,
            other,
            static(d2),
            d2.addresses["ProductBankFactory"],
            chain_id=31338,
            start=d2.block_number,
        )
        checks.assert_balances(db_dsn, other, d2.addresses["MultiTokenPushPull"], 31338)
        assert n2 > 0
    finally:
        other.stop()


def test_backfill_of_indexed_range_changes_nothing(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """Backfilling a range that is already indexed leaves every table as it was."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(4), 30)
    cfg = make_config(batch_blocks=9)
    assert indexer(cfg, *RUN).code == 0
    before = snapshot(db_dsn)
    tip = checks.checkpoint(db_dsn)[0]
    out = indexer(
        cfg, "backfill", "--chain", "local", "--from", str(d.block_number), "--to", str(tip)
    )
    assert out.code == 0, out.stderr[-2000:]
    assert out.named("backfill_range_unchanged")
    assert snapshot(db_dsn) == before


def test_backfill_on_fresh_database_then_beside_run(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    """backfill indexes a fresh range; beside a running daemon it says once that it waits for
    the writer lock (naming the daemon's lock connection) and waits for the daemon to pass the
    range instead of writing beside it, and both end equal to the chain."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(5), 25)
    cfg = make_config(batch_blocks=6)
    mid = anvil.block_number()
    out = indexer(
        cfg, "backfill", "--chain", "local", "--from", str(d.block_number), "--to", str(mid)
    )
    assert out.code == 0, out.stderr[-2000:]
    assert checks.checkpoint(db_dsn)[0] == mid
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    daemon.wait_for(lambda e: e.get("event") == "leader")  # it holds the writer lock
    target = anvil.block_number() + 5  # above the daemon's checkpoint until traffic comes
    log = tmp_path / "side.log"
    with log.open("w") as err:
        side = subprocess.Popen(
            [INDEXER_BIN, "--config", str(cfg), "--log-format", "json", "backfill",
             "--chain", "local", "--from", str(d.block_number), "--to", str(target)],
            stdout=subprocess.DEVNULL, stderr=err, env=_env(None), cwd=ROOT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "backfill_waits_for_daemon" not in log.read_text():
            assert side.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        deploy.generate_traffic(d.w3, d, random.Random(6), 10)  # the daemon passes target
        assert side.wait(timeout=60) == 0, log.read_text()[-2000:]
    finally:
        if side.poll() is None:
            side.kill()
    [waits] = [
        e for e in parse_events(log.read_text()) if e["event"] == "backfill_waits_for_daemon"
    ]
    assert re.fullmatch(r"PostgreSQL backend pid \d+ \(indexer-lock from [\d.]+\)", waits["holder"])
    assert "writer lock" in waits["detail"]
    assert checks.checkpoint(db_dsn)[0] >= target
    wait_synced(db_dsn, anvil)
    assert daemon.stop() == 0
    assert_all(db_dsn, anvil, d)


def test_verify_clean_then_detects_a_deleted_row(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """verify exits 0 on a clean database and 3 after one event row is deleted by hand."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(8), 25)
    cfg = make_config()
    assert indexer(cfg, *RUN).code == 0
    tip = str(checks.checkpoint(db_dsn)[0])
    args = ("verify", "--chain", "local", "--from", str(d.block_number), "--to", tip)
    clean = indexer(cfg, *args)
    assert clean.code == 0, clean.stdout + clean.stderr[-1500:]
    assert "consistent" in clean.stdout
    row = checks.db_fetch(
        db_dsn,
        "DELETE FROM reward_added WHERE ctid IN (SELECT ctid FROM "
        "reward_added LIMIT 1) RETURNING block_number, log_index",
    )
    assert row
    dirty = indexer(cfg, *args)
    assert dirty.code == 3
    assert f"missing  reward_added block {row[0]['block_number']} " in dirty.stdout


def test_verify_asks_again_for_a_header_the_node_answered_null(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """A node that answers null once for a header it has (a lagging backend behind a load
    balancer) makes verify ask again, not exit 1: it ends clean, exit 0."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(9), 10)
    cfg = make_config()
    assert indexer(cfg, *RUN).code == 0
    tip = checks.checkpoint(db_dsn)[0]
    nulled: list[str] = []

    def null_once(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        if method == "eth_getBlockByNumber" and params[0] == hex(tip) and not nulled:
            nulled.append(params[0])
            return {**answer, "result": None}
        return answer

    fake = FakeRpc.start_in_thread(anvil.url, corrupt=null_once)
    try:
        cfg.write_text(cfg.read_text().replace(f'["{anvil.url}"]', f'["{fake.url}"]'))
        args = ("verify", "--chain", "local", "--from", str(d.block_number), "--to", str(tip))
        got = indexer(cfg, *args)
    finally:
        fake.stop()
    assert nulled == [hex(tip)]
    assert got.code == 0, got.stdout + got.stderr[-1500:]
    assert "consistent" in got.stdout
    [retry] = [e for e in parse_events(got.stderr) if e["event"] == "verify_retry"]
    assert retry["attempt"] == 1
    assert f"block {tip}" in retry["error"]


def test_wrong_chain_id_is_a_clear_error(
    tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """An RPC serving another chain than configured: one line, exit 2, nothing written."""
    cfg = write_config(
        tmp_path / "wrong.toml", db_dsn, [ChainCfg("local", 1, anvil.url, deployment.addresses)]
    )
    out = indexer(cfg, *RUN)
    assert out.code == 2
    assert "chain" in out.stderr.lower()
    assert out.stderr.strip().count("\n") <= 1 + sum(
        1 for line in out.stderr.splitlines() if line.startswith("{")
    )
    assert not checks.db_fetch(db_dsn, "SELECT 1 FROM checkpoints")
