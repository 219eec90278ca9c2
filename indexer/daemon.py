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
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from indexer import db, metrics
from indexer.config import ServiceSettings, Settings
from indexer.driver import run_follower
from indexer.errors import DatabaseUnavailable, IndexerError, NotLeader
from indexer.runtime import (
    SINK_APP_NAME,
    ChainRuntime,
    Shutdown,
    WriterLock,
    make_pusher,
    on_stop,
    open_chain,
)
from indexer.types import Step

if TYPE_CHECKING:
    from indexer.service import ReadyCheck

log = structlog.get_logger()


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
        heads=rt.heads,
    )


async def run(  # noqa: PLR0913 (keyword-only options of the run command)
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
            if serve_http and settings.api is not None:
                from indexer.api import serve as serve_api  # noqa: PLC0415 (only with [api])

                server = await stack.enter_async_context(
                    serve_api(settings.api, dsn, _live_view(runtimes))
                )
                side.append(("api-listen", server.hub.run))
            if not exit_when_caught_up:
                side += [(f"endpoints:{rt.settings.name}", _endpoint_probe(rt)) for rt in runtimes]
            side += [] if exit_when_caught_up else _reconcilers(settings, runtimes, pool)
            side += [] if exit_when_caught_up else _subscriptions(runtimes)
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


def _subscriptions(runtimes: Sequence[ChainRuntime]) -> list[tuple[str, SideTask]]:
    """The newHeads subscription of every chain with a ``ws_url`` (``indexer.heads``)."""
    return [(f"heads:{rt.settings.name}", rt.heads.run) for rt in runtimes if rt.heads]


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


def _reconcilers(
    settings: Settings, runtimes: list[ChainRuntime], pool: asyncpg.Pool
) -> list[tuple[str, SideTask]]:
    """One periodic reconciler per chain (it works only while this process leads the chain)."""
    service = settings.service

    def loop(rt: ChainRuntime) -> SideTask:
        return lambda stop: _reconcile_loop(rt, pool, service, stop)

    return [(f"reconciler:{rt.settings.name}", loop(rt)) for rt in runtimes]


# What a periodic reconcile may fail with and try again later (anything else is a bug).
RECONCILE_ERRORS: tuple[type[BaseException], ...] = (
    IndexerError,
    asyncpg.PostgresError,
    *db.CONNECTION_ERRORS,
)


async def _reconcile_loop(
    rt: ChainRuntime, pool: asyncpg.Pool, service: ServiceSettings, stop: asyncio.Event
) -> None:
    """Every ``interval_s``, on the leader only, record discrepancies (never fix: repairs are
    an operator's call); a failed run is logged and tried again at the next interval, since a
    node or database hiccup must not stop the followers."""
    from indexer.reconcile import (  # noqa: PLC0415 (exit mode and backfill never load it)
        Coverage,
        Reconciler,
    )

    interval_s = service.reconcile_interval_s
    coverage = Coverage(share=service.reconcile_share, max_views=service.reconcile_max_views)
    reconciler = Reconciler(
        pool, rt.settings, rt.rpc, rt.watch, coverage=coverage, interval_s=interval_s
    )
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


def _live_view(runtimes: list[ChainRuntime]) -> Callable[[], dict[int, dict[str, Any]]]:
    """What the API shows beside the database: each chain's name, head and leadership."""

    def view() -> dict[int, dict[str, Any]]:
        return {
            rt.settings.chain_id: {
                "name": rt.settings.name,
                "head": rt.follower.head,
                "leader": rt.leader,
            }
            for rt in runtimes
        }

    return view


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
