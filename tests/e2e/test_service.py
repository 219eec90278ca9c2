"""The daemon as a service: live /metrics during a run and a reorg, every metric the
dashboard and the alerts name, kill -9 failover to a standby, SIGTERM during a backfill."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.e2e.test_reorgs import chama_tx
from tests.harness import INDEXER_BIN, Daemon, parse_events, wait_synced
from tests.procs import ROOT, Anvil
from tests.unit.test_deploy_files import named_metrics

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

DEAD_RPC = "http://127.0.0.1:1"
# Written only by the pusher and the reconciler, which this run does not start, or labelled
# by the kind of a failure that a healthy run never has (step retries): the daemon declares
# them (HELP/TYPE) but has no label set to report yet.
NOT_DRIVEN_HERE = {
    "indexer_step_retries_total",
    "indexer_discrepancies_open",
    "indexer_pusher_queue_rewards",
    "indexer_pusher_oldest_pending_seconds",
    "indexer_pusher_stuck_transactions",
    "indexer_pusher_errors_total",
    "indexer_pusher_sender_balance",  # no [signer] here: tests/e2e/test_pusher.py drives it
    "indexer_pusher_batches",  # as above
    "indexer_pusher_gas_used_total",  # as above
    "indexer_settlement_verdicts_total",  # the judge runs in the pusher's rounds
    "indexer_reconcile_mismatches_total",  # see the last-run line below;
    # tests/e2e/test_reconcile.py drives these
    "indexer_reconcile_last_run_timestamp_seconds",  # the first run comes after 600 s
    "indexer_ws_connected",  # no ws_url here: tests/e2e/test_new_heads.py drives it
}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Scrape:
    """One /metrics answer, parsed."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in self.families.values()
            for s in f.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def declared(self, name: str) -> bool:
        base = name
        for suffix in ("_total", "_bucket", "_count", "_sum"):
            base = base.removesuffix(suffix)
        return base in self.families or name in self.families

    def has_samples(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)


def scrape(base: str) -> Scrape:
    status, text = get(base + "/metrics")
    assert status == 200
    return Scrape(text)


def wait_until(predicate: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def http_base(daemon: Daemon) -> str:
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    return f"http://127.0.0.1:{port}"


def test_service_metrics_move_with_blocks_and_reorgs(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Head, checkpoint and events written rise as blocks come, a reorg moves the reorg
    counter and depth histogram, and every metric of the dashboard and alerts is exported."""
    d = deployment
    cfg = make_config(batch_blocks=5)
    # A second, dead endpoint: its failures feed the per-endpoint error series.
    cfg.write_text(cfg.read_text().replace(f'["{anvil.url}"]', f'["{anvil.url}", "{DEAD_RPC}"]'))
    daemon = Daemon(cfg)
    daemons.append(daemon)
    base = http_base(daemon)
    tip = wait_synced(db_dsn, anvil)
    first = scrape(base)
    assert first.value("indexer_checkpoint_block", chain="local") == tip
    assert first.value("indexer_head_block", chain="local") >= tip
    events_before = first.total("indexer_events_written_total")

    deploy.generate_traffic(d.w3, d, random.Random(21), 15)
    anvil.mine(3)
    tip2 = wait_synced(db_dsn, anvil)
    wait_until(
        lambda: scrape(base).value("indexer_checkpoint_block", chain="local") == tip2,
        what="checkpoint metric",
    )
    second = scrape(base)
    assert second.value("indexer_head_block", chain="local") >= tip2 > tip
    assert second.total("indexer_events_written_total") > events_before
    assert second.value("indexer_reorgs_total", chain="local") == 0

    anvil.reorg(2, [[chama_tx(d, "metrics-reorg"), 0]])
    daemon.wait_for(lambda e: e.get("event") == "reorg_detected")
    wait_until(lambda: scrape(base).value("indexer_reorgs_total", chain="local") >= 1, what="reorg")
    after = scrape(base)
    assert after.value("indexer_reorg_depth_blocks_count", chain="local") >= 1
    assert after.value("indexer_reorg_depth_blocks_sum", chain="local") >= 1
    assert after.value("indexer_rpc_endpoint_errors_total", chain="local", endpoint="1",
                       kind="transport") >= 1  # fmt: skip

    names = named_metrics()
    assert {n for n in names if not after.declared(n)} == set()
    missing = {n for n in names if not after.has_samples(n)}
    assert missing <= NOT_DRIVEN_HERE, sorted(missing - NOT_DRIVEN_HERE)
    wait_synced(db_dsn, anvil)
    assert_all(db_dsn, anvil, d)


def _ts(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def test_service_standby_takes_over_after_kill9(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """kill -9 of the writer: the standby (healthy, not ready) takes over within two poll
    intervals, and the database has no gap and no duplicate."""
    d = deployment
    poll_s = 0.5
    cfg = make_config(batch_blocks=3, poll_interval=poll_s)
    leader = Daemon(cfg)
    daemons.append(leader)
    leader.wait_for(lambda e: e.get("event") == "leader")
    standby = Daemon(cfg)
    daemons.append(standby)
    base = http_base(standby)
    standby.wait_for(lambda e: e.get("event") == "standby")
    assert get(base + "/healthz")[0] == 200
    status, body = get(base + "/readyz")
    assert status == 503
    assert json.loads(body)["chains"]["local"]["leader"] is False
    assert get(base + "/readyz?standby=ok")[0] == 200
    assert 'indexer_leader{chain="local"} 0.0' in get(base + "/metrics")[1]

    deploy.generate_traffic(d.w3, d, random.Random(22), 10)
    wait_synced(db_dsn, anvil)
    killed_at = time.time()
    leader.kill()
    took_over = standby.wait_for(lambda e: e.get("event") == "leader", timeout=10)
    assert _ts(took_over) - killed_at < 2 * poll_s + 0.5  # + scheduling slack
    deploy.generate_traffic(d.w3, d, random.Random(23), 10)
    anvil.mine(2)
    wait_synced(db_dsn, anvil)
    wait_until(lambda: get(base + "/readyz")[0] == 200, what="readyz of the new writer")
    assert_all(db_dsn, anvil, d)


def test_service_sigterm_mid_backfill_exits_cleanly(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    tmp_path: Path,
) -> None:
    """SIGTERM during `indexer backfill`: exit 0 within 10 s, the checkpoint is the last
    committed batch, and no session is left idle in a transaction."""
    d = deployment
    anvil.mine(1500)
    deploy.generate_traffic(d.w3, d, random.Random(24), 10)
    head = anvil.block_number()
    cfg = make_config(batch_blocks=5)
    log_path = tmp_path / "backfill.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [INDEXER_BIN, "--config", str(cfg), "--log-format", "json", "backfill",
             "--chain", "local", "--from", str(d.block_number), "--to", str(head)],
            stdout=log, stderr=log, cwd=ROOT, start_new_session=True,
            env=_env({"INDEXER_FAILPOINTS": "sink.before_begin=sleep:0.05"}),
        )  # fmt: skip
        try:
            wait_until(
                lambda: len(_named(log_path, "batch_committed")) >= 3, what="backfill batches"
            )
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0, log_path.read_text()[-2000:]
            assert time.monotonic() - started < 10
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    committed = _named(log_path, "batch_committed")
    assert _named(log_path, "stop_requested")
    number, hash_ = checks.checkpoint(db_dsn)
    assert number == committed[-1]["last"] < head
    assert hash_ == anvil.rpc("eth_getBlockByNumber", [hex(number), False])["hash"]
    assert not checks.db_fetch(
        db_dsn,
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%'",
    )
    assert_all(db_dsn, anvil, d)


def _named(path: Path, event: str) -> list[dict[str, object]]:
    return [e for e in parse_events(path.read_text()) if e.get("event") == event]


def _env(extra: dict[str, str]) -> dict[str, str]:
    from tests.harness import _env as harness_env  # noqa: PLC0415

    return harness_env(extra)
