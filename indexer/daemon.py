"""The daemon: one asyncio TaskGroup running a follower per chain (plus the HTTP endpoints).

Lifecycle like procrastinate's worker: SIGTERM/SIGINT set a stop event; each follower finishes
its current step (the open transaction commits or rolls back) and returns; pools close; exit 0
within the grace period. A task that crashes (a ``Fatal`` error, a bug) stops the daemon
with exit 1 so that the supervisor restarts it.

One writer per chain (P8): a PostgreSQL advisory lock held on a dedicated connection. A second
process on the same database stands by and takes over when the first dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from indexer import db, metrics
from indexer.checkpoint import CheckpointStore
from indexer.config import DEFAULT_ABI_DIR, ChainSettings, Settings, SignerSettings
from indexer.decode import AbiRegistry
from indexer.driver import run_follower
from indexer.errors import DatabaseUnavailable, IndexerError, NotLeader, Retryable
from indexer.follower import ChainFollower, FollowerSpec, Step
from indexer.rpc import RpcClient
from indexer.sink import PostgresSink
from indexer.watch import FactoryWatch

if TYPE_CHECKING:
    from indexer.pusher import Pusher
    from indexer.service import ReadyCheck

log = structlog.get_logger()

LOCK_NAMESPACE = 0x7273  # "rs": high bits of every per-chain writer lock key
SINK_APP_NAME = "indexer-sink"


def writer_lock_key(chain_id: int) -> int:
    """The advisory lock key of a chain's single writer (a signed 64-bit integer)."""
    return (LOCK_NAMESPACE << 48) | (chain_id & 0xFFFF_FFFF_FFFF)


def follower_spec(
    chain: ChainSettings, until_block: int | None = None
) -> tuple[FollowerSpec, AbiRegistry]:
    """Decoders and the follower's view of one configured chain."""
    registry = AbiRegistry()
    addresses: dict[str, str] = {}
    factories: list[FactoryWatch] = []
    for c in chain.contracts:
        registry.add_abi(c.name, c.abi)
        if c.address is not None:
            registry.bind(c.address, c.name)
            addresses[c.address] = c.name
        if c.factory is not None:
            factories.append(
                FactoryWatch(c.factory.contract, c.factory.event, c.factory.parameter, c.name)
            )
    start = min((c.start_block for c in chain.contracts), default=0)
    spec = FollowerSpec(
        name=chain.name,
        chain_id=chain.chain_id,
        start_block=start,
        max_reorg_depth=chain.max_reorg_depth,
        batch_blocks=chain.batch_blocks,
        finality=chain.finality,
        addresses=addresses,
        factories=tuple(factories),
        until_block=until_block,
    )
    return spec, registry


def make_rpc(chain: ChainSettings) -> RpcClient:
    return RpcClient(
        chain.rpc_urls,
        chain=chain.name,
        log_range=chain.batch_blocks,
        max_log_range=max(chain.batch_blocks, 10_000),
        chain_id=chain.chain_id,
        max_response_bytes=chain.max_response_bytes,
    )


@dataclass
class ChainRuntime:
    settings: ChainSettings
    rpc: RpcClient
    follower: ChainFollower
    leader: bool = False


@contextlib.asynccontextmanager
async def open_chain(
    chain: ChainSettings, pool: asyncpg.Pool, until_block: int | None = None
) -> AsyncIterator[ChainRuntime]:
    """RPC client checked against the configured chain id, and the chain's follower."""
    rpc = make_rpc(chain)
    try:
        await _check_chain_id(rpc, chain)
        spec, registry = follower_spec(chain, until_block)
        store = CheckpointStore(pool, chain.chain_id)
        sink = PostgresSink(pool, chain.chain_id, chain.name, confirmations=chain.confirmations)
        yield ChainRuntime(chain, rpc, ChainFollower(spec, rpc, store, sink, registry))
    finally:
        await rpc.close()


START_ATTEMPTS = 5


async def _check_chain_id(rpc: RpcClient, chain: ChainSettings) -> None:
    """The chain id check at start, retried through a flaky start (P7); a wrong id is fatal."""
    for attempt in range(START_ATTEMPTS):
        try:
            await rpc.check_chain_id(chain.chain_id)
            return
        except Retryable as exc:
            if attempt == START_ATTEMPTS - 1:
                raise
            delay = min(2.0**attempt, 10.0)
            log.warning("start_retry", chain=chain.name, error=str(exc), delay_s=delay)
            await asyncio.sleep(delay)


class WriterLock:
    """The chain's advisory lock, held on its own connection for as long as we write."""

    def __init__(self, dsn: str, chain_id: int) -> None:
        self.dsn = dsn
        self.key = writer_lock_key(chain_id)
        self.con: asyncpg.Connection | None = None

    async def try_acquire(self) -> bool:
        if self.con is None or self.con.is_closed():
            try:
                self.con = await asyncpg.connect(
                    self.dsn,
                    timeout=db.CONNECT_TIMEOUT_S,
                    server_settings={"application_name": "indexer-lock"},
                )
            except db.CONNECTION_ERRORS as exc:
                raise DatabaseUnavailable("cannot open the writer-lock connection") from exc
        return bool(await self.con.fetchval("SELECT pg_try_advisory_lock($1)", self.key))

    async def release(self) -> None:
        if self.con is not None and not self.con.is_closed():
            with contextlib.suppress(*db.CONNECTION_ERRORS):
                await self.con.close()
        self.con = None


async def _follow_chain(
    rt: ChainRuntime, dsn: str, stop: asyncio.Event, *, exit_when_caught_up: bool
) -> Step:
    """Stand by until the writer lock is ours, then follow until done, halted (exit mode) or
    stopped; losing the lock (fencing refuses a commit) sends us back to standing by."""
    lock = WriterLock(dsn, rt.settings.chain_id)
    try:
        while not stop.is_set():
            if not await _wait_for_lock(rt, lock, stop):
                return Step.DONE
            try:
                return await _lead(rt, lock, stop, exit_when_caught_up=exit_when_caught_up)
            except NotLeader as exc:
                log.warning("leadership_lost", chain=rt.settings.name, error=str(exc))
                await lock.release()
        return Step.DONE
    finally:
        _set_leader(rt, False)
        rt.follower.sink.fence = None
        await lock.release()


def _set_leader(rt: ChainRuntime, leader: bool) -> None:
    rt.leader = leader
    metrics.LEADER.labels(rt.settings.name).set(1 if leader else 0)


async def _wait_for_lock(rt: ChainRuntime, lock: WriterLock, stop: asyncio.Event) -> bool:
    """True once the lock is held; False when asked to stop first."""
    announced = False
    while not stop.is_set():
        try:
            if await lock.try_acquire():
                return True
        except DatabaseUnavailable as exc:
            log.warning("lock_retry", chain=rt.settings.name, error=str(exc))
        if not announced:
            log.info(
                "standby", chain=rt.settings.name, reason="another process holds the writer lock"
            )
            announced = True
        _set_leader(rt, False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rt.settings.poll_interval_s)
    return False


async def _lead(
    rt: ChainRuntime, lock: WriterLock, stop: asyncio.Event, *, exit_when_caught_up: bool
) -> Step:
    assert lock.con is not None
    rt.follower.sink.fence = (lock.con.get_server_pid(), lock.key)
    _set_leader(rt, True)
    log.info("leader", chain=rt.settings.name)
    return await run_follower(
        rt.follower,
        poll_interval_s=rt.settings.poll_interval_s,
        exit_when_caught_up=exit_when_caught_up,
        stop=stop,
    )


@dataclass
class Shutdown:
    """What SIGTERM/SIGINT did: ``stop`` set at once, and ``expired`` once ``grace_s`` passed
    with tasks still running (they were then cancelled)."""

    stop: asyncio.Event
    grace_s: float
    expired: bool = False


@contextlib.contextmanager
def on_stop(shutdown: Shutdown) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop``; ``grace_s`` later the task running this block is
    cancelled if it has not left it, and the block ends as if it had returned (the code after
    it runs; a second signal is ignored: the grace timer rules).

    Cancelling is safe at any instant: an open transaction is rolled back by PostgreSQL when
    its statement is cancelled or its connection closes, and the checkpoint commits only with
    its batch (P1), so the next start resumes from the last commit."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    timer: list[asyncio.TimerHandle] = []

    def expire() -> None:
        shutdown.expired = True
        log.warning("shutdown_grace_expired", grace_s=shutdown.grace_s)
        if main is not None:
            main.cancel()

    def requested(sig: signal.Signals) -> None:
        if shutdown.stop.is_set() and timer:
            return
        log.info("stop_requested", signal=sig.name, grace_s=shutdown.grace_s)
        shutdown.stop.set()
        timer.append(loop.call_later(shutdown.grace_s, expire))

    sigs = (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
        loop.add_signal_handler(sig, requested, sig)
    try:
        yield
    except asyncio.CancelledError:
        if not shutdown.expired or main is None:
            raise
        main.uncancel()
    finally:
        for handle in timer:
            handle.cancel()
        for sig in sigs:
            loop.remove_signal_handler(sig)


async def run(
    settings: Settings,
    *,
    chains: list[str] | None = None,
    until_block: int | None = None,
    exit_when_caught_up: bool = False,
    serve_http: bool = True,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the followers; returns the process exit code (0 ok, 1 halted in exit mode).

    ``stop``: setting it ends the run as SIGTERM does (``indexer demo`` runs the daemon
    in-process and stops it after its traffic)."""
    selected = [c for c in settings.chains if not chains or c.name in chains]
    for c in selected:
        metrics.init_chain(c.name)
    dsn = settings.database_url.reveal()
    pool = await db.create_pool(dsn, app=SINK_APP_NAME, size=2 + 2 * len(selected))
    stop = stop if stop is not None else asyncio.Event()
    shutdown = Shutdown(stop, settings.service.shutdown_grace_s)
    try:
        await db.check_version(pool)
        async with contextlib.AsyncExitStack() as stack:
            runtimes = [
                await stack.enter_async_context(open_chain(c, pool, until_block)) for c in selected
            ]
            if serve_http:
                from indexer.service import serve  # noqa: PLC0415 (aiohttp.web: only with HTTP)

                await stack.enter_async_context(
                    serve(settings.service.metrics_listen, _readiness(runtimes, settings))
                )
            side = [] if exit_when_caught_up else await _pushers(settings, runtimes, pool)
            if not exit_when_caught_up:
                side += [(f"endpoints:{rt.settings.name}", _endpoint_probe(rt)) for rt in runtimes]
            side += [] if exit_when_caught_up else _reconcilers(settings, runtimes, pool)
            results: list[tuple[ChainRuntime, Step]] = []  # stays empty if the grace expired
            with on_stop(shutdown):
                results = await _run_all(runtimes, dsn, stop, exit_when_caught_up, side)
    finally:
        await _close_pool(pool, shutdown)
    halted = [rt for rt, step in results if step is Step.HALTED]
    for rt in halted:
        log.error("exit_halted", chain=rt.settings.name)
    return 1 if halted else 0


POOL_CLOSE_S = 5.0


async def _close_pool(pool: asyncpg.Pool, shutdown: Shutdown) -> None:
    """Close the pool; after an expired grace, or when closing hangs, terminate it (the
    server rolls back whatever a terminated connection had open)."""
    if shutdown.expired:
        pool.terminate()
        return
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_S)
    except TimeoutError:
        pool.terminate()


ENDPOINT_PROBE_S = 15.0


def _endpoint_probe(rt: ChainRuntime) -> SideTask:
    """Per-endpoint health for /metrics: up, and head lag behind the best endpoint."""

    async def probe(stop: asyncio.Event) -> None:
        name = rt.settings.name
        while not stop.is_set():
            heads = await rt.rpc.endpoint_heads()
            best = max((h for h in heads.values() if h is not None), default=None)
            for idx, head in heads.items():
                metrics.RPC_ENDPOINT_UP.labels(name, str(idx)).set(0 if head is None else 1)
                if head is not None and best is not None:
                    metrics.RPC_ENDPOINT_HEAD_LAG.labels(name, str(idx)).set(best - head)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ENDPOINT_PROBE_S)

    return probe


async def _pushers(
    settings: Settings, runtimes: list[ChainRuntime], pool: asyncpg.Pool
) -> list[tuple[str, SideTask]]:
    """One pusher per chain when ``[signer]`` is configured (a bank on which the signer lacks
    DISTRIBUTOR_ROLE is skipped with an error and a gauge, not a reason to stop)."""
    if settings.signer is None:
        return []
    out: list[tuple[str, SideTask]] = []
    for rt in runtimes:
        pusher = make_pusher(settings.signer, rt, pool)
        out.append((f"pusher:{rt.settings.name}", pusher.run))
    return out


def make_pusher(signer: SignerSettings, rt: ChainRuntime, pool: asyncpg.Pool) -> Pusher:
    """The pusher of a chain, decoding custom errors with the factory-made bank's ABI.

    Imported here: eth_account costs ~2 s of start-up that only the pusher needs."""
    from indexer.pusher import Pusher  # noqa: PLC0415

    bank_abi = next((c.abi for c in rt.settings.contracts if c.factory is not None), None)
    if bank_abi is None:
        bank_abi = tuple(json.loads((DEFAULT_ABI_DIR / "ProductBank.json").read_text())["abi"])
    return Pusher(pool=pool, rpc=rt.rpc, chain=rt.settings, signer=signer, bank_abi=bank_abi)


def _reconcilers(
    settings: Settings, runtimes: list[ChainRuntime], pool: asyncpg.Pool
) -> list[tuple[str, SideTask]]:
    """One periodic reconciler per chain (it works only while this process leads the chain)."""
    interval_s = settings.service.reconcile_interval_s

    def loop(rt: ChainRuntime) -> SideTask:
        return lambda stop: _reconcile_loop(rt, pool, interval_s, stop)

    return [(f"reconciler:{rt.settings.name}", loop(rt)) for rt in runtimes]


# What a periodic reconcile may fail with and try again later (anything else is a bug).
RECONCILE_ERRORS: tuple[type[BaseException], ...] = (
    IndexerError,
    asyncpg.PostgresError,
    *db.CONNECTION_ERRORS,
)


async def _reconcile_loop(
    rt: ChainRuntime, pool: asyncpg.Pool, interval_s: float, stop: asyncio.Event
) -> None:
    """Every ``interval_s``, on the leader only, record discrepancies (never fix: repairs are
    an operator's call); a failed run is logged and tried again at the next interval, since a
    node or database hiccup must not stop the followers."""
    from indexer.reconcile import Reconciler  # noqa: PLC0415 (exit mode and backfill never load it)

    reconciler = Reconciler(pool, rt.settings, rt.rpc, rt.follower)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            if stop.is_set() or not rt.leader:
                continue
            try:
                await reconciler.run_once()
            except RECONCILE_ERRORS as exc:
                log.warning(
                    "reconcile_failed",
                    chain=rt.settings.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
    finally:
        await reconciler.close()


def _readiness(runtimes: list[ChainRuntime], settings: Settings) -> ReadyCheck:
    """Ready when leader of every chain, none halted, each within the allowed lag."""

    def check() -> tuple[bool, dict[str, object]]:
        chains: dict[str, object] = {}
        ok = True
        for rt in runtimes:
            name = rt.settings.name
            f = rt.follower
            leader, halted = rt.leader, f.halted
            lag = max(f.head - f.checkpoint, 0) if f.head >= 0 else None
            within = lag is not None and lag <= settings.service.ready_max_lag_blocks
            chain_ok = leader and not halted and within
            ok = ok and chain_ok
            chains[name] = {"leader": leader, "halted": halted, "lag": lag, "ready": chain_ok}
        return ok, {"chains": chains}

    return check


SideTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def _run_all(
    runtimes: list[ChainRuntime],
    dsn: str,
    stop: asyncio.Event,
    exit_when_caught_up: bool,
    side: Sequence[tuple[str, SideTask]] = (),
) -> list[tuple[ChainRuntime, Step]]:
    """Followers and side tasks (pusher, reconciler) in one TaskGroup. A follower that crashes
    cancels the others and the daemon exits non-zero; a side task that raises is restarted
    with backoff (``_supervised``): nothing the pusher or reconciler meets stops indexing.
    Side tasks end with the followers."""
    async with asyncio.TaskGroup() as tg:
        tasks = [
            (
                rt,
                tg.create_task(
                    _follow_chain(rt, dsn, stop, exit_when_caught_up=exit_when_caught_up),
                    name=f"follower:{rt.settings.name}",
                ),
            )
            for rt in runtimes
        ]
        for name, fn in side:
            tg.create_task(_supervised(name, fn, stop), name=name)
        if side:
            tg.create_task(_stop_when_done([t for _, t in tasks], stop), name="side-stopper")
    return [(rt, t.result()) for rt, t in tasks]


SIDE_RESTART_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


async def _supervised(name: str, fn: SideTask, stop: asyncio.Event) -> None:
    """Run a side task until ``stop``; when it raises (a bug, a malformed answer, a row it
    did not expect) log it, count it and start it again after a growing pause."""
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            await fn(stop)
            return
        except Exception as exc:  # isolation: whatever it was, the followers go on
            failures = 0 if time.monotonic() - started > 300 else failures + 1
            pause = SIDE_RESTART_S[min(failures, len(SIDE_RESTART_S) - 1)]
            metrics.TASK_RESTARTS.labels(name).inc()
            log.error(
                "side_task_failed",
                task=name,
                error=f"{type(exc).__name__}: {exc}"[:500],
                restart_in_s=pause,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)


async def _stop_when_done(tasks: list[asyncio.Task[Step]], stop: asyncio.Event) -> None:
    """When every follower has returned (exit mode, or stop), the side tasks stop too."""
    await asyncio.wait(tasks)
    stop.set()
