"""PostgreSQL faults (scenarios 14–17): a backend killed inside a batch, a COMMIT whose reply is
lost, a crash-restart of the server, a slow then unreachable server. The daemon (a subprocess)
retries with backoff, never leaves a partial batch or a duplicate, recovers without a restart
and leaves no session idle in a transaction."""

from __future__ import annotations

import random
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.fakes.proxy import PG_COMMIT, ProxyThread, TcpFaultProxy
from tests.harness import ChainCfg, Daemon, write_config
from tests.procs import Anvil, PgCluster

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

IDLE_IN_TX = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND state LIKE 'idle in transaction%'"
)


def traffic(d: deploy.Deployment, anvil: Anvil, seed: int, rounds: int = 4, gap: int = 2) -> None:
    """Seeded contract traffic with a few empty blocks between rounds."""
    rng = random.Random(seed)
    for _ in range(rounds):
        deploy.generate_traffic(d.w3, d, rng, 3)
        anvil.mine(gap)


def config(
    tmp_path: Path, dsn: str, anvil: Anvil, d: deploy.Deployment, batch_blocks: int = 2000
) -> Path:
    """An indexer.toml for the test chain on ``dsn`` (which may point at a proxy)."""
    chain = ChainCfg(
        "local",
        31337,
        anvil.url,
        d.addresses,
        start_block=d.block_number,
        batch_blocks=batch_blocks,
    )
    return write_config(tmp_path / "indexer.toml", dsn, [chain])


def via_port(dsn: str, port: int) -> str:
    """``dsn`` with its port replaced (to go through a proxy)."""
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def assert_no_partial_batch(dsn: str) -> None:
    """Nothing is stored above the checkpoint (a batch is all there or not at all)."""
    number = checks.checkpoint(dsn)[0] if checks.db_fetch(dsn, "SELECT 1 FROM checkpoints") else -1
    for table in (*checks.EVENT_TABLES, "blocks"):
        col = "number" if table == "blocks" else "block_number"
        above = checks.db_fetch(dsn, f"SELECT 1 FROM {table} WHERE {col} > $1 LIMIT 1", number)
        assert not above, f"partial batch: {table} has rows above checkpoint {number}"


def wait_until(predicate: object, timeout: float = 30, what: str = "condition") -> object:
    """Poll ``predicate()`` until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def at_head(dsn: str, anvil: Anvil) -> bool:
    """The checkpoint equals the node's head (False while there is no checkpoint row)."""
    rows = checks.db_fetch(dsn, "SELECT block_number FROM checkpoints")
    return bool(rows) and rows[0]["block_number"] == anvil.block_number()


def retried(daemon: Daemon, kind: str) -> list[dict[str, object]]:
    return [e for e in daemon.events() if e.get("event") == "step_retry" and e.get("kind") == kind]


@pytest.fixture
def pg_proxy(pg_cluster: PgCluster) -> Iterator[ProxyThread]:
    """A TcpFaultProxy in front of the test PostgreSQL server."""
    proxy = TcpFaultProxy.start_in_thread(pg_cluster.host, pg_cluster.port)
    try:
        yield proxy
    finally:
        proxy.stop()


def pg_start_again(cluster: PgCluster) -> None:
    """Start a cluster stopped by the test with the options it was first started with."""
    assert cluster.datadir is not None
    words = shlex.split((cluster.datadir / "postmaster.opts").read_text())[1:]
    if "-D" in words:
        i = words.index("-D")
        del words[i : i + 2]
    log = str(cluster.datadir.parent / "log")
    cluster.pg_ctl("-o", shlex.join(words), "-l", log, "-w", "-t", "60", "start")


def test_pg_backend_killed_inside_batch_retries_without_partial(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Scenario 14: pg_terminate_backend of the sink's session paused inside a batch: the batch
    is absent, the daemon retries and catches up, no duplicate and nothing idle in a tx."""
    d = deployment
    traffic(d, anvil, 14)
    cfg = config(tmp_path, db_dsn, anvil, d, batch_blocks=10)
    pause = {"INDEXER_FAILPOINTS": "sink.after_events=sleep:1"}
    daemon = Daemon(cfg, "--no-http", env=pause)
    daemons.append(daemon)
    pid = wait_until(
        lambda: checks.db_fetch(
            db_dsn,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'indexer-sink' "
            "AND state LIKE 'idle in transaction%' AND datname = current_database()",
        ),
        what="the sink inside a batch",
    )
    before = checks.checkpoint(db_dsn)
    killed = checks.db_fetch(db_dsn, "SELECT pg_terminate_backend($1) AS ok", pid[0]["pid"])  # type: ignore[index]
    assert killed[0]["ok"]
    assert checks.checkpoint(db_dsn) == before
    assert_no_partial_batch(db_dsn)
    wait_until(lambda: retried(daemon, "DatabaseUnavailable"), what="a step_retry")
    wait_until(lambda: at_head(db_dsn, anvil), timeout=60, what="catch-up")
    assert daemon.stop() == 0
    assert not checks.db_fetch(db_dsn, IDLE_IN_TX)
    assert_all(db_dsn, anvil, d)


@pytest.mark.parametrize("lost", ["reply", "request"])
def test_pg_ambiguous_commit_rereads_checkpoint(
    lost: str,
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    pg_proxy: ProxyThread,
    daemons: list[Daemon],
) -> None:
    """Scenario 15: the COMMIT of the first batch is sent and its reply lost (it landed), or the
    COMMIT itself is lost (it did not); after a reset the daemon re-reads the checkpoint and
    continues with no gap or duplicate either way."""
    d = deployment
    traffic(d, anvil, 15)
    cfg = config(tmp_path, via_port(db_dsn, pg_proxy.port), anvil, d, batch_blocks=10)
    pg_proxy.arm(PG_COMMIT, drop="down" if lost == "reply" else "up")
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    assert pg_proxy.triggered.wait(30), "no COMMIT went through the proxy"
    time.sleep(0.5)
    number = checks.checkpoint(db_dsn)[0]
    if lost == "reply":
        assert number >= d.block_number, "the COMMIT reached the server, it must have landed"
    else:
        assert number == d.block_number - 1, "the COMMIT never reached the server"
    assert not [e for e in daemon.events() if e.get("event") == "batch_committed"]
    pg_proxy.reset_all()
    wait_until(lambda: retried(daemon, "DatabaseUnavailable"), what="a step_retry")
    wait_until(lambda: at_head(db_dsn, anvil), timeout=60, what="catch-up")
    assert daemon.stop() == 0
    committed = [e for e in daemon.events() if e.get("event") == "batch_committed"]
    assert committed
    first = committed[0]["first"]
    assert first == (number + 1 if lost == "reply" else d.block_number)
    assert not checks.db_fetch(db_dsn, IDLE_IN_TX)
    assert_all(db_dsn, anvil, d)


def test_pg_crash_restart_under_load_recovers_without_restart(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    pg_cluster: PgCluster,
    daemons: list[Daemon],
) -> None:
    """Scenario 16: `pg_ctl stop -m immediate` while following, start again 3 s later: the
    same daemon process reconnects and catches up (LIVE)."""
    if pg_cluster.external:
        pytest.skip("needs a PostgreSQL cluster started by the tests")
    d = deployment
    traffic(d, anvil, 16, rounds=2)
    cfg = config(tmp_path, db_dsn, anvil, d, batch_blocks=3)
    daemon = Daemon(cfg, "--no-http", env={"INDEXER_FAILPOINTS": "sink.after_events=sleep:0.1"})
    daemons.append(daemon)
    daemon.wait_for(lambda e: e.get("event") == "batch_committed")
    pg_cluster.pg_ctl("-m", "immediate", "-w", "stop")
    try:
        traffic(d, anvil, 160, rounds=2)
        time.sleep(3)
    finally:
        pg_start_again(pg_cluster)
    started = time.monotonic()
    wait_until(lambda: at_head(db_dsn, anvil), timeout=60, what="catch-up")
    print(f"caught up {time.monotonic() - started:.1f} s after the restart")
    assert daemon.proc.poll() is None, "the daemon exited instead of reconnecting"
    assert retried(daemon, "DatabaseUnavailable") or [
        e for e in daemon.events() if e.get("event") == "step_retry"
    ]
    assert daemon.stop() == 0
    assert not checks.db_fetch(db_dsn, IDLE_IN_TX)
    assert_all(db_dsn, anvil, d)


@pytest.mark.parametrize(
    ("delay_s", "blackhole_s"),
    [(0.05, 3.0), pytest.param(2.0, 10.0, marks=pytest.mark.slow)],
    ids=["short", "full"],
)
def test_pg_slow_then_unreachable_server_recovers(
    delay_s: float,
    blackhole_s: float,
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    pg_proxy: ProxyThread,
    daemons: list[Daemon],
) -> None:
    """Scenario 17: latency on every PostgreSQL round trip, then a blackhole: the daemon
    stalls without exiting, then catches up with no duplicate and nothing idle in a tx."""
    d = deployment
    traffic(d, anvil, 17, rounds=2)
    cfg = config(tmp_path, via_port(db_dsn, pg_proxy.port), anvil, d, batch_blocks=5)
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    wait_until(lambda: at_head(db_dsn, anvil), timeout=60, what="sync")
    pg_proxy.set_mode("delay", delay_s=delay_s)
    traffic(d, anvil, 170, rounds=2)
    time.sleep(max(1.0, 2 * delay_s))
    pg_proxy.set_mode("blackhole")
    traffic(d, anvil, 171, rounds=2)
    time.sleep(blackhole_s)
    assert daemon.proc.poll() is None, "the daemon exited during the blackhole"
    assert_no_partial_batch(db_dsn)
    pg_proxy.set_mode("pass")
    wait_until(lambda: at_head(db_dsn, anvil), timeout=90, what="catch-up")
    assert daemon.stop() == 0
    assert not checks.db_fetch(db_dsn, IDLE_IN_TX)
    assert_all(db_dsn, anvil, d)
