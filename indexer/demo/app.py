"""``indexer demo``: the whole product on one machine, in one command.

Why it is shaped like this:
- Real parts only: a real anvil, a real PostgreSQL (the system's binaries, data under the
  git-ignored ``.rewardsync/`` of the current directory, unless ``DATABASE_URL`` is set), the
  real daemon (``daemon.run``: followers, pusher, reconciler, ``/metrics``) in this process.
  What the user sees is what production does, not a mock of it.
- Every reward goes the production way: inserted into ``rewards`` by SQL (the "backend"),
  batched, signed and pushed by the daemon's pusher, confirmed from the indexed event. So the
  final reconcile must find nothing, and the demo says so.
- Nothing is left behind: processes are started in their own sessions and stopped in
  ``finally`` blocks (anvil killed by process group, PostgreSQL by pg_ctl), on success, on
  Ctrl-C/SIGTERM and on any exception.

Order of a stop (Ctrl-C, SIGTERM or ``--duration``): traffic stops; when the stop did not
come through the daemon's own signal handler, the daemon is given a few seconds to push and
confirm what is queued; the daemon stops; a final ``reconcile`` (and ``verify`` of the indexed
range) runs; anvil and PostgreSQL stop (``--keep``: the data directory stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import asyncpg
import structlog

from indexer import catalogue, daemon, db, ops
from indexer import config as config_mod
from indexer import log as log_mod
from indexer.config import Settings
from indexer.demo import contracts as dc
from indexer.demo import view as dv
from indexer.demo.devchain import ANVIL_DEV_KEYS, Anvil, PgCluster, free_port, pg_home_for
from indexer.demo.traffic import DEMO_USERS, DemoTraffic

CHAIN = "local"
CHAIN_ID = 31337
CONFIRMATIONS = 2
MAX_REORG_DEPTH = 12
SIGNER_KEY = ANVIL_DEV_KEYS[1]  # DISTRIBUTOR_ROLE on every bank made by contracts.create_bank
SENDER_KEY = ANVIL_DEV_KEYS[4]  # pays the pusher's gas; the traffic never sends from it
REORG_EVERY = (30, 60)  # blocks between two reorgs (drawn from this range)
REORG_DEPTH = (1, 3)
QUEUE_EVERY_S = (0.3, 1.2)  # seconds between two inserts of rewards
SETTLE_S = 15.0  # at most this long for queued rewards to confirm after the traffic stops
DB_NAME = "rewardsync"

# Every typed event table (the catalogue); the demo's traffic fills each of them.
EVENT_TABLES = catalogue.TABLES
WATCHED = ("MultiTokenPushPull", "ProductBankFactory", "ChamaSavings")


class DemoError(Exception):
    """The demo cannot start (missing tools, a database that is not empty): one line."""


@dataclass(frozen=True, slots=True)
class Options:
    duration: float | None
    tty: bool
    keep: bool
    seed: int
    home: Path  # the demo's directory (``./.rewardsync``)


@dataclass
class Stats:
    """What the traffic did, for the live view and the summary."""

    actions: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    last_error: str | None = None
    reorgs_made: int = 0
    rewards_queued: int = 0


@dataclass
class Demo:
    """Everything the async part needs."""

    opts: Options
    anvil: Anvil
    dsn: str
    settings: Settings
    deployment: dc.Deployment
    reward_targets: list[tuple[str, bytes]]  # (bank, campaign) the backend queues rewards for
    metrics_url: str
    out: TextIO
    stats: Stats = field(default_factory=Stats)
    started: float = field(default_factory=time.monotonic)


# ---- entry point (sync: owns the processes) ------------------------------------------------


def main(opts: Options, out: TextIO | None = None) -> int:
    """Run the demo; returns the exit code (0 ok, 2 unusable database, 3 the final reconcile
    or verify found something, 130 interrupted before the end, 1 any other failure).
    Processes started here are stopped here, whatever happens."""
    out = out or sys.stdout
    opts.home.mkdir(parents=True, exist_ok=True)
    logfile = (opts.home / "demo.log").open("w")
    _log_to(logfile)
    anvil: Anvil | None = None
    pg: PgCluster | None = None
    summary: dict[str, Any] = {"kind": "summary"}
    code = 1
    previous = signal.signal(signal.SIGTERM, _interrupt)  # setup is sync: SIGTERM = Ctrl-C
    try:
        anvil = Anvil.start()
        summary["anvil_pid"] = anvil.proc.pid
        dv.say(out, opts.tty, "anvil", pid=anvil.proc.pid, url=anvil.url)
        dsn, pg = _database(opts, out)
        summary["postgres_pid"] = pg.pid() if pg is not None else None
        code = asyncio.run(_run(opts, anvil, dsn, out, summary))
    except (KeyboardInterrupt, asyncio.CancelledError):
        dv.line(sys.stderr, "interrupted")
        code = 130
    except DemoError as exc:
        dv.line(sys.stderr, f"error: {exc}")
        code = 2
    except Exception as exc:  # one line for the user, the traceback in the log
        traceback.print_exc(file=logfile)
        dv.line(
            sys.stderr, f"error: {log_mod.redact(dv.describe(exc))} (details in {logfile.name})"
        )
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the cleanup must run to its end
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _stop_processes(opts, anvil, pg, out, summary)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
            logfile.close()
    summary["exit_code"] = code
    dv.summary(out, opts.tty, summary)
    return code


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _log_to(logfile: TextIO) -> None:
    """The daemon's logs go to a file: the terminal belongs to the live view."""
    log_mod.configure("json", "info")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=logfile))


def _database(opts: Options, out: TextIO) -> tuple[str, PgCluster | None]:
    """``DATABASE_URL`` when set, else a cluster of our own under ``.rewardsync/pg``."""
    url = os.environ.get(config_mod.ENV_DATABASE_URL)
    if url:
        dv.say(out, opts.tty, "postgres", url=log_mod.mask_url(url), embedded=False)
        return url, None
    home = pg_home_for(opts.home / "pg")
    pg = PgCluster.start(home)
    try:
        asyncio.run(_create_database(pg.dsn(), DB_NAME))
    except BaseException:
        pg.stop()
        raise
    dv.say(out, opts.tty, "postgres", pid=pg.pid(), url=pg.dsn(DB_NAME), datadir=str(pg.datadir))
    return pg.dsn(DB_NAME), pg


async def _create_database(admin_dsn: str, name: str) -> None:
    con = await asyncpg.connect(admin_dsn)
    try:
        await con.execute(f"CREATE DATABASE {db.quote_ident(name)}")
    finally:
        await con.close()


def _stop_processes(
    opts: Options,
    anvil: Anvil | None,
    pg: PgCluster | None,
    out: TextIO,
    summary: dict[str, Any],
) -> None:
    try:
        if anvil is not None:
            anvil.stop()
    finally:
        if pg is not None:
            pg.stop(keep=opts.keep)
            if opts.keep:
                summary["kept"] = {"datadir": str(pg.datadir), "start": pg.start_command()}
                dv.line(out, f"database kept in {pg.datadir} (server stopped); start it with:")
                dv.line(out, f"  {pg.start_command()}")
                dv.line(out, f"  psql {pg.dsn(DB_NAME)}")
    summary["stopped"] = True


# ---- the async part ------------------------------------------------------------------------


async def _run(opts: Options, anvil: Anvil, dsn: str, out: TextIO, summary: dict[str, Any]) -> int:
    quit_ = asyncio.Event()
    main_task = asyncio.current_task()
    assert main_task is not None
    _on_signals(quit_, main_task)
    await db.migrate(dsn)
    await _require_empty(dsn)
    deployment, targets = await asyncio.to_thread(_deploy, anvil)
    metrics_port = free_port()
    settings = _write_config(opts, anvil, dsn, deployment, metrics_port)
    demo = Demo(
        opts,
        anvil,
        dsn,
        settings,
        deployment,
        targets,
        f"http://127.0.0.1:{metrics_port}/metrics",
        out,
    )
    dv.say(out, opts.tty, "ready", metrics=demo.metrics_url, config=str(opts.home / "demo.toml"))
    pool = await db.create_pool(dsn, app="indexer-demo", size=3)
    try:
        await _run_daemon(demo, pool, quit_)
        _on_signals(quit_, main_task)  # daemon.run removed its handlers on the way out
        summary.update(await _final(demo, pool))
    finally:
        await pool.close()
    consistent = all(r["consistent"] for r in summary["reconcile"]) and summary["verify"]["clean"]
    return 0 if consistent else 3


def _on_signals(quit_: asyncio.Event, main_task: asyncio.Task[Any]) -> None:
    """The first Ctrl-C/SIGTERM stops the demo in order; a second one cancels what is left
    (the finally blocks still stop the processes)."""

    def handler() -> None:
        if quit_.is_set():
            main_task.cancel()
        quit_.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)


async def _require_empty(dsn: str) -> None:
    """Refuse a database that already indexes chain 31337: a fresh anvil would look like a
    deep reorg of it. The embedded cluster is new on every run, so only DATABASE_URL hits it."""
    con = await asyncpg.connect(dsn)
    try:
        found = await con.fetchval("SELECT count(*) FROM checkpoints WHERE chain_id = $1", CHAIN_ID)
    finally:
        await con.close()
    if found:
        raise DemoError(
            f"the database already holds chain {CHAIN_ID}: give the demo an empty database "
            "(unset DATABASE_URL to use an embedded one)"
        )


def _deploy(anvil: Anvil) -> tuple[dc.Deployment, list[tuple[str, bytes]]]:
    """The contracts, and two funded banks with uncapped campaigns for the queued rewards
    (made before the daemon and any reorg, so that no reorg can take them away)."""
    d = dc.deploy_all(dc.connect(anvil.url))
    targets = []
    for label in ("coffee-shop", "bookstore"):
        bank = dc.create_bank(d, dc.product_id(f"demo:{label}"))
        dc.fund_bank(d, bank, 10**27)
        for campaign in (f"{label}:welcome", f"{label}:referral"):
            cid = dc.product_id(campaign)
            dc.allocate_budget(d, bank, cid, dc.UNCAPPED)
            targets.append((bank.address.lower(), cid))
    anvil.mine(MAX_REORG_DEPTH)  # the setup lies below any reorg the traffic makes
    return d, targets


def _write_config(
    opts: Options, anvil: Anvil, dsn: str, d: dc.Deployment, metrics_port: int
) -> Settings:
    """``.rewardsync/demo.toml``: usable later with ``indexer --config`` (status, verify...)."""
    external = bool(os.environ.get(config_mod.ENV_DATABASE_URL))
    url = f"${config_mod.ENV_DATABASE_URL}" if external else dsn  # never copy a secret
    lines = [
        "# Written by `indexer demo`; anvil's public development keys, for a local anvil only.",
        f'[database]\nurl = "{url}"\n',
        f'[service]\nmetrics_listen = "127.0.0.1:{metrics_port}"\nreconcile_interval = 5\n',
        f'[[chains]]\nname = "{CHAIN}"\nchain_id = {CHAIN_ID}\nrpc_urls = ["{anvil.url}"]',
        f"confirmations = {CONFIRMATIONS}\nmax_reorg_depth = {MAX_REORG_DEPTH}",
        'poll_interval = 0.2\nfinality = "depth"\n',
    ]
    for name in WATCHED:
        lines.append(
            f'[[chains.contracts]]\nname = "{name}"\naddress = "{d.addresses[name]}"\n'
            f"start_block = {d.block_number}\n"
        )
    lines.append(
        '[[chains.contracts]]\nname = "ProductBank"\nfactory = { contract = '
        '"ProductBankFactory", event = "ProductBankCreated", parameter = "bank" }\n'
    )
    lines.append(
        f'[signer]\nkey = "{SIGNER_KEY}"\nsender_key = "{SENDER_KEY}"\n'
        "push_interval = 0.5\nmax_batch = 50\n"
    )
    path = opts.home / "demo.toml"
    path.write_text("\n".join(lines))
    env = {config_mod.ENV_DATABASE_URL: dsn} if external else {}
    return config_mod.load(path, env)


async def _run_daemon(demo: Demo, pool: asyncpg.Pool, quit_: asyncio.Event) -> None:
    """The daemon, the traffic and the live view side by side until asked to stop."""
    daemon_stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(daemon.run(demo.settings, stop=daemon_stop), name="daemon")
        traffic = tg.create_task(_traffic(demo, pool, quit_), name="traffic")
        down = asyncio.Event()  # the view goes on while the daemon settles and stops
        view = tg.create_task(dv.view(demo, pool, down), name="view")
        if demo.opts.duration is not None:
            tg.create_task(_timer(demo.opts.duration, quit_), name="timer")
        # While it runs, the daemon's own handler turns Ctrl-C into daemon_stop.
        stopped_by_daemon = tg.create_task(daemon_stop.wait())
        asked = tg.create_task(quit_.wait())
        await asyncio.wait([stopped_by_daemon, asked, runner], return_when="FIRST_COMPLETED")
        quit_.set()
        await traffic
        if not daemon_stop.is_set() and not runner.done():
            await _settle(demo, pool)
        daemon_stop.set()
        stopped_by_daemon.cancel()
        code = await runner
        down.set()
        await view
    if code != 0:
        raise RuntimeError(f"the daemon stopped with exit code {code} (see {demo.opts.home})")


async def _timer(seconds: float, quit_: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(quit_.wait(), seconds)
    quit_.set()


# ---- traffic ---------------------------------------------------------------------------------


async def _traffic(demo: Demo, pool: asyncpg.Pool, quit_: asyncio.Event) -> None:
    """Seeded chain traffic (in a thread: web3 is sync), rewards queued by SQL, and a reorg of
    depth 1-3 every few dozen blocks. After a reorg (or a refused transaction) the model of
    what is on chain starts afresh: the dropped blocks took some of its state with them."""
    rng = random.Random(demo.opts.seed)
    model = DemoTraffic(demo.deployment, rng)
    next_reorg = demo.anvil.block_number() + rng.randint(*REORG_EVERY)
    next_queue = time.monotonic()
    while not quit_.is_set():
        if time.monotonic() >= next_queue:
            await _queue_rewards(demo, pool, rng)
            next_queue = time.monotonic() + rng.uniform(*QUEUE_EVERY_S)
        try:
            demo.stats.actions[await asyncio.to_thread(model.step)] += 1
        except Exception as exc:  # e.g. a revert the model did not foresee: keep going
            demo.stats.errors += 1
            demo.stats.last_error = dv.describe(exc)[:120]
            structlog.get_logger().warning("demo_traffic_error", error=demo.stats.last_error)
            model = DemoTraffic(demo.deployment, rng)
        head = await asyncio.to_thread(demo.anvil.block_number)
        if head >= next_reorg:
            await _indexed(head)  # so that the reorg replaces indexed blocks: a rollback
            depth = rng.randint(*REORG_DEPTH)
            await asyncio.to_thread(demo.anvil.reorg, depth)  # safe beside the pusher's sends
            demo.stats.reorgs_made += 1
            model = DemoTraffic(demo.deployment, rng)
            next_reorg = head + rng.randint(*REORG_EVERY)


async def _indexed(block: int, timeout_s: float = 3.0) -> None:
    """Wait (a little) until the in-process follower's checkpoint reaches ``block``."""
    deadline = time.monotonic() + timeout_s
    while (dv.gauge("indexer_checkpoint_block", CHAIN) or -1) < block:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def _queue_rewards(demo: Demo, pool: asyncpg.Pool, rng: random.Random) -> None:
    """What a backend does: insert rewards (idempotent by ``external_key``); some go to the
    traffic's users so that they can claim them."""
    bank, campaign = rng.choice(demo.reward_targets)
    users = [dc.address_of(k).lower() for k in DEMO_USERS]
    rows = [
        (
            CHAIN_ID,
            bank,
            "0x" + campaign.hex(),
            demo.deployment.token.address.lower(),
            rng.choice(users) if rng.random() < 0.5 else "0x" + rng.randbytes(20).hex(),
            rng.randint(10**15, 10**18),
            f"demo:{uuid.uuid4()}",
        )
        for _ in range(rng.randint(2, 12))
    ]
    await pool.executemany(
        "INSERT INTO rewards (chain_id, bank, campaign_id, token, wallet, amount, external_key) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (external_key) DO NOTHING",
        rows,
    )
    demo.stats.rewards_queued += len(rows)


async def _settle(demo: Demo, pool: asyncpg.Pool) -> None:
    """Give the pusher a few seconds to push and confirm what is queued (mining the blocks
    that confirmations need) and the follower to reach the head."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        open_rewards = await pool.fetchval(
            "SELECT count(*) FROM rewards WHERE status IN ('pending', 'pushed')"
        )
        cp = await pool.fetchrow(
            "SELECT block_number, block_hash FROM checkpoints WHERE chain_id = $1", CHAIN_ID
        )
        head = await asyncio.to_thread(demo.anvil.block_number)
        # the hash too: a same-height reorg (the traffic's last act) leaves the number equal
        # while the stored tip is the old branch; stopping then left verify a changed hash
        node = await asyncio.to_thread(demo.anvil.rpc, "eth_getBlockByNumber", [hex(head), False])
        tip = None if cp is None else (cp["block_number"], cp["block_hash"])
        if not open_rewards and tip == (head, node["hash"]):
            return
        if open_rewards:
            await asyncio.to_thread(demo.anvil.mine)
        await asyncio.sleep(0.3)


# ---- the end ---------------------------------------------------------------------------------


async def _final(demo: Demo, pool: asyncpg.Pool) -> dict[str, Any]:
    """Counts, then a reconcile and a verify of the indexed range, once the daemon is down."""
    async with pool.acquire() as con:
        events = {
            t: await con.fetchval(f"SELECT count(*) FROM {db.quote_ident(t)}") for t in EVENT_TABLES
        }
        other = await con.fetchval("SELECT count(*) FROM other_events")
        quarantined = await con.fetchval("SELECT count(*) FROM quarantine")
        reorgs = await con.fetchrow(
            "SELECT count(*) AS n, max(depth) AS max_depth FROM reorgs "
            "WHERE chain_id = $1 AND kind = 'reorg'",
            CHAIN_ID,
        )
        rewards = {r["status"]: r["n"] for r in await con.fetch(db.Q["rewards_by_status"])}
        checkpoint = await con.fetchval(
            "SELECT block_number FROM checkpoints WHERE chain_id = $1", CHAIN_ID
        )
    assert reorgs is not None
    dv.line(demo.out, "stopped the daemon; final reconcile and verify ...")
    reports = await ops.reconcile(demo.settings, list(demo.settings.chains))
    chain = demo.settings.chains[0]
    first = demo.deployment.block_number
    diff = await ops.verify(demo.settings, chain, first, max(checkpoint or first, first))
    async with pool.acquire() as con:
        open_d = await con.fetchval(db.Q["open_discrepancies"])
    return {
        "seconds": round(time.monotonic() - demo.started, 1),
        "checkpoint": checkpoint,
        "events": events,
        "other_events": other,
        "quarantine": quarantined,
        "reorgs": {"detected": reorgs["n"], "max_depth": reorgs["max_depth"]},
        "rewards": rewards,
        "open_discrepancies": open_d,
        "traffic": {
            **dict(demo.stats.actions),
            "rewards_queued": demo.stats.rewards_queued,
            "reorgs_made": demo.stats.reorgs_made,
            "refused": demo.stats.errors,
        },
        "reconcile": [
            {k: r.as_dict()[k] for k in ("chain", "block", "consistent", "checked", "found")}
            for r in reports
        ],
        "verify": {"from": first, "to": checkpoint, "clean": diff.clean, **diff.as_dict()},
        "metrics": demo.metrics_url,
    }
