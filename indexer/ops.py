"""Operator commands behind the CLI: backfill, status, verify, rewind.

backfill ``[N, M]``: the part above the checkpoint is indexed by a follower that holds the
chain's writer lock (when ``run`` holds it, backfill says so and waits for the daemon to pass M,
or for the lock to come free, instead of writing beside it); the part at or below the
checkpoint is refetched and compared, and rows
missing from the database are inserted (an indexed range stays unchanged). A chain without a
checkpoint starts at N (or its contracts' start block, whichever is later).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from indexer import db, runtime
from indexer.checkpoint import CheckpointStore
from indexer.config import ChainSettings, Settings
from indexer.driver import run_follower
from indexer.errors import IndexerError, LaggingNode, SignerNotAuthorized, UsageError
from indexer.rpc import RpcClient
from indexer.sink import PostgresSink
from indexer.types import Step
from indexer.verify import Diff, repair_range, table_columns, verify_range

if TYPE_CHECKING:
    from indexer.progress import BackfillLine
    from indexer.reconcile import Report

log = structlog.get_logger()

# verify is read-only, so a header the node has not got yet (a lagging backend behind a
# load balancer answered) is asked again before verify gives up.
VERIFY_ATTEMPTS = 3
VERIFY_RETRY_S = 1.0


@contextlib.asynccontextmanager
async def _pool(settings: Settings, app: str = "indexer-cli") -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(settings.database_url.reveal(), app=app)
    try:
        await db.check_version(pool)
        yield pool
    finally:
        await pool.close()


async def backfill(
    settings: Settings, chain: ChainSettings, first: int, last: int, *, tty: bool = False
) -> int:
    """Index ``[first, last]``; returns an exit code (1 when the chain is halted)."""
    async with _pool(settings, runtime.SINK_APP_NAME) as pool:
        store = CheckpointStore(pool, chain.chain_id)
        spec, _ = runtime.follower_spec(chain)
        before = await store.ensure(max(first, spec.start_block))
        async with runtime.open_chain(chain, pool, until_block=last) as rt:
            if before.number >= first:
                await _repair_missing(pool, rt, first, min(last, before.number))
            if before.number < last:
                step = await _follow_until(rt, settings, store, last, tty=tty)
                if step is Step.HALTED:
                    log.error("backfill_halted", chain=chain.name)
                    return 1
    log.info("backfill_done", chain=chain.name, first=first, last=last)
    return 0


async def _repair_missing(
    pool: asyncpg.Pool, rt: runtime.ChainRuntime, first: int, last: int
) -> None:
    diff = await _verify(pool, rt, first, last)
    if diff.clean:
        log.info("backfill_range_unchanged", first=first, last=last)
        return
    log.warning("backfill_found_differences", **diff.as_dict())


async def _follow_until(
    rt: runtime.ChainRuntime, settings: Settings, store: CheckpointStore, last: int, *, tty: bool
) -> Step:
    lock = runtime.WriterLock(settings.database_url.reveal(), rt.settings.chain_id)
    stop = asyncio.Event()  # SIGTERM/SIGINT: the open batch commits or rolls back, then exit 0
    step = Step.DONE  # also when the shutdown grace expired: the open batch rolled back
    line: BackfillLine | None = None
    if tty:
        from indexer.progress import BackfillLine  # noqa: PLC0415 (rich: terminals only)

        line = BackfillLine(rt.settings.name, (await store.load()).number, last)
    try:
        with (
            runtime.on_stop(runtime.Shutdown(stop, settings.service.shutdown_grace_s)),
            line or contextlib.nullcontext(),
        ):
            step = await _lead_or_wait(rt, lock, store, last, stop, line=line)
    finally:
        await lock.release()
    return step


async def _lead_or_wait(  # noqa: PLR0913 (the backfill context; line keyword-only)
    rt: runtime.ChainRuntime,
    lock: runtime.WriterLock,
    store: CheckpointStore,
    last: int,
    stop: asyncio.Event,
    *,
    line: BackfillLine | None,
) -> Step:
    """Backfill under the writer lock; while a daemon holds it, say so and wait for the daemon
    to pass ``last``, or for the lock (the daemon stopped) to backfill the rest here."""
    name = rt.settings.name
    holder: str | None = None
    block = (await store.load()).number
    while not stop.is_set():
        if await lock.try_acquire():
            assert lock.con is not None
            if holder is not None:
                log.info("backfill_took_writer_lock", chain=name, checkpoint=block, until=last)
                if line is not None:
                    line.took_lock(block)
            rt.follower.sink.fence = (lock.con.get_server_pid(), lock.key)
            return await _backfill_locked(rt, store, last, stop, line=line)
        if holder is None:
            holder = await lock_holder(lock)
            log.info(
                "backfill_waits_for_daemon",
                chain=name,
                until=last,
                holder=holder,
                detail=f"another process holds the writer lock of chain {name} (the daemon): "
                f"waiting until it has indexed block {last}, or until the lock is free",
            )
        cp = await store.load()
        block = cp.number
        if cp.halted_reason:
            return Step.HALTED
        if cp.number >= last:
            break
        if line is not None:
            line.waiting(cp.number, holder)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(rt.settings.poll_interval_s, 1.0))
    if line is not None:
        line.finished(block, by_daemon=True)
    return Step.DONE


async def lock_holder(lock: runtime.WriterLock) -> str:
    """Who holds the chain's writer lock, as PostgreSQL sees it (pid, application, client)."""
    assert lock.con is not None
    row = await lock.con.fetchrow(
        "SELECT a.pid, a.application_name, host(a.client_addr) AS addr"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
        lock.key,
    )
    if row is None:
        return "a process that has just released it"
    who = " ".join(
        part
        for part in (row["application_name"], f"from {row['addr']}" if row["addr"] else "")
        if part
    )
    return f"PostgreSQL backend pid {row['pid']}" + (f" ({who})" if who else "")


async def _backfill_locked(
    rt: runtime.ChainRuntime,
    store: CheckpointStore,
    last: int,
    stop: asyncio.Event,
    *,
    line: BackfillLine | None,
) -> Step:
    progress = asyncio.create_task(_progress(store, last, stop, line)) if line else None
    try:
        return await run_follower(
            rt.follower,
            poll_interval_s=rt.settings.poll_interval_s,
            exit_when_caught_up=True,
            stop=stop,
        )
    finally:
        if stop.is_set():
            log.info("backfill_stopped", chain=rt.settings.name)
        stop.set()
        if progress is not None:
            await progress


async def _progress(
    store: CheckpointStore, last: int, stop: asyncio.Event, line: BackfillLine
) -> None:
    """Feed the live line from the committed checkpoint, twice a second."""
    block = (await store.load()).number
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        block = (await store.load()).number
        line.indexing(block)
    line.finished(block)


async def _verify(pool: asyncpg.Pool, rt: runtime.ChainRuntime, first: int, last: int) -> Diff:
    await rt.watch.ensure_loaded()
    return await verify_range(
        pool=pool,
        rpc=rt.rpc,
        registry=rt.watch.registry,
        chain_id=rt.settings.chain_id,
        first=first,
        last=last,
        addresses=rt.watch.addresses(),
        table_columns=table_columns(rt.watch.registry),
    )


async def verify(
    settings: Settings, chain: ChainSettings, first: int, last: int, *, repair: bool = False
) -> Diff:
    """Differences between the database and the node over ``[first, last]``; with ``repair``
    they are also fixed (see ``indexer.verify.repair_range``). A plain verify is asked again
    (``VERIFY_ATTEMPTS``) when the node lacks a header it should have (LaggingNode)."""
    async with _pool(settings) as pool, runtime.open_chain(chain, pool) as rt:
        if not repair:
            for attempt in range(1, VERIFY_ATTEMPTS + 1):
                try:
                    return await _verify(pool, rt, first, last)
                except LaggingNode as exc:
                    if attempt == VERIFY_ATTEMPTS:
                        raise
                    log.warning("verify_retry", chain=chain.name, attempt=attempt, error=str(exc))
                    await asyncio.sleep(VERIFY_RETRY_S * attempt)
        await rt.watch.ensure_loaded()
        diff = await repair_range(
            pool=pool,
            rpc=rt.rpc,
            registry=rt.watch.registry,
            chain_id=chain.chain_id,
            first=first,
            last=last,
            addresses=rt.watch.addresses(),
            table_columns=table_columns(rt.watch.registry),
        )
        if not diff.clean:
            log.warning("verify_repaired", chain=chain.name, **diff.as_dict())
        return diff


async def rewind(settings: Settings, chain: ChainSettings, to: int) -> None:
    """Roll back to ``to`` (kept) and clear a halt."""
    async with _pool(settings) as pool, runtime.open_chain(chain, pool) as rt:
        store = CheckpointStore(pool, chain.chain_id)
        cp = await store.load()
        if to > cp.number:
            raise UsageError(f"checkpoint is {cp.number}; nothing above {to} to roll back")
        hash_ = await store.hash_at(to)
        if hash_ is None and to >= 0:
            header = await rt.rpc.header(to)
            hash_ = header.hash if header is not None else None
        sink = PostgresSink(pool, chain.chain_id, chain.name, confirmations=chain.confirmations)
        deleted = await sink.rewind_to(
            (to, hash_),
            kind="rewind",
            depth=cp.number - to,
            old_hash=cp.hash,
            new_hash=None,
            reset_finality=True,
        )
        await sink.set_halted(None)
        log.info("rewound", chain=chain.name, to=to, depth=cp.number - to, deleted=deleted)


@dataclass(frozen=True, slots=True)
class Check:
    """One pre-flight check of ``indexer check``."""

    name: str
    ok: bool
    detail: str


CHECK_ERRORS: tuple[type[BaseException], ...] = (IndexerError, *db.CONNECTION_ERRORS)


async def check(settings: Settings) -> list[Check]:
    """What a deploy pipeline wants to know before it starts the daemon: the database answers
    at this build's schema version; every endpoint of every chain answers its configured chain
    id; with ``[signer]``, the sender holds gas money and the signer is a distributor of every
    bank with queued rewards. (The configuration and its ABI files were validated by loading
    it.) Never raises for a failed check: each is one line."""
    out: list[Check] = []
    try:
        async with _pool(settings) as pool:
            await db.check_version(pool)
            out.append(Check("database", True, f"reachable, schema version {db.SCHEMA_VERSION}"))
            for chain in settings.chains:
                out += await _check_chain(settings, chain, pool)
    except CHECK_ERRORS as exc:
        out.append(Check("database", False, str(exc) or type(exc).__name__))
    return out


async def _check_chain(settings: Settings, chain: ChainSettings, pool: asyncpg.Pool) -> list[Check]:
    out: list[Check] = []
    for idx, url in enumerate(chain.rpc_urls):
        name = f"chain {chain.name} endpoint #{idx}"
        async with RpcClient([url], chain=chain.name, max_attempts=2) as rpc:
            try:
                actual = await rpc.chain_id()
            except IndexerError as exc:
                out.append(Check(name, False, f"no answer: {exc}"))
                continue
        ok = actual == chain.chain_id
        detail = f"chain id {actual}" + ("" if ok else f", the configuration says {chain.chain_id}")
        out.append(Check(name, ok, detail))
    if settings.signer is None:
        return out
    # the signer's checks through the chain's own client, on the endpoints that passed
    good = tuple(u for u, c in zip(chain.rpc_urls, out, strict=True) if c.ok)
    if not good:
        return out
    try:
        async with runtime.open_chain(replace(chain, rpc_urls=good), pool) as rt:
            pusher = runtime.make_pusher(settings.signer, rt, pool)
            wei = await rt.rpc.balance(pusher.sender)
            sender = f"{pusher.sender} holds {wei} wei"
            out.append(Check(f"chain {chain.name} sender", wei > 0, sender))
            try:
                await pusher.check_roles()
                out.append(Check(f"chain {chain.name} signer", True, "distributor of every bank"))
            except SignerNotAuthorized as exc:
                out.append(Check(f"chain {chain.name} signer", False, str(exc)))
    except CHECK_ERRORS as exc:
        out.append(Check(f"chain {chain.name} signer", False, str(exc) or type(exc).__name__))
    return out


async def status(settings: Settings) -> dict[str, Any]:
    """Everything `indexer status` shows, as a dict."""
    async with _pool(settings) as pool:
        async with pool.acquire() as con:
            rows = {r["chain_id"]: r for r in await con.fetch(db.Q["chains_status"])}
            reorgs = {
                c.chain_id: await con.fetchrow(db.Q["last_reorg"], c.chain_id)
                for c in settings.chains
            }
            rewards = {r["status"]: r["n"] for r in await con.fetch(db.Q["rewards_by_status"])}
            open_d = await con.fetchval(db.Q["open_discrepancies"])
        chains = []
        for c in settings.chains:
            row = rows.get(c.chain_id)
            head = await _head(c)
            checkpoint = row["block_number"] if row else None
            reorg = reorgs.get(c.chain_id)
            chains.append(
                {
                    "name": c.name,
                    "chain_id": c.chain_id,
                    "checkpoint": checkpoint,
                    "head": head,
                    "lag": (head - checkpoint)
                    if head is not None and checkpoint is not None
                    else None,
                    "finalized": row["finalized_block"] if row else None,
                    "halted": row["halted_reason"] if row else None,
                    "last_reorg": dict(reorg) if reorg else None,
                    "healthy": row is not None
                    and not row["halted_reason"]
                    and head is not None
                    and head - row["block_number"] <= settings.service.ready_max_lag_blocks,
                }
            )
    return {"chains": chains, "rewards": rewards, "open_discrepancies": open_d}


async def _head(chain: ChainSettings) -> int | None:
    rpc = runtime.make_rpc(chain)
    try:
        return await asyncio.wait_for(rpc.block_number(), 15)
    except Exception:  # status shows "unreachable" rather than failing
        return None
    finally:
        await rpc.close()


def format_status(report: dict[str, Any]) -> str:
    lines = [
        f"{'chain':<12} {'id':>8} {'checkpoint':>11} {'head':>10} {'lag':>6} "
        f"{'finalized':>10}  state"
    ]
    for c in report["chains"]:
        state = (
            f"HALTED: {c['halted']}"
            if c["halted"]
            else ("ok" if c["healthy"] else "rpc unreachable")
        )
        lines.append(
            f"{c['name']:<12} {c['chain_id']:>8} {_s(c['checkpoint']):>11} "
            f"{_s(c['head']):>10} {_s(c['lag']):>6} {_s(c['finalized']):>10}  {state}"
        )
        if c["last_reorg"]:
            r = c["last_reorg"]
            lines.append(
                f"{'':<12} last {r['kind']}: depth {r['depth']} to block "
                f"{r['common_ancestor']} at {r['detected_at']}"
            )
    rewards = ", ".join(f"{k} {v}" for k, v in sorted(report["rewards"].items())) or "none"
    lines.append(f"rewards: {rewards}")
    lines.append(f"open discrepancies: {report['open_discrepancies']}")
    return "\n".join(lines)


def _s(value: object) -> str:
    return "-" if value is None else str(value)


def format_diff(report: dict[str, Any]) -> str:
    if report["clean"]:
        return f"{report['chain']} {report['from']}..{report['to']}: consistent"
    lines = [f"{report['chain']} {report['from']}..{report['to']}: DIFFERENCES"]
    for kind in ("missing", "phantom", "changed"):
        for table, block, index in report[kind]:
            lines.append(f"  {kind:<8} {table} block {block} log {index}")
    for block, ours, theirs in report["hashes"]:
        lines.append(f"  hash     block {block}: stored {ours}, node {theirs}")
    return "\n".join(lines)


async def push(settings: Settings, chains: list[ChainSettings], *, once: bool) -> None:
    """The pusher of each chain: one round each (``once``) or until SIGTERM."""
    assert settings.signer is not None
    async with _pool(settings, "indexer-pusher") as pool, contextlib.AsyncExitStack() as stack:
        pushers = []
        for chain in chains:
            rt = await stack.enter_async_context(runtime.open_chain(chain, pool))
            pusher = runtime.make_pusher(settings.signer, rt, pool)
            await pusher.check_roles()
            pushers.append(pusher)
        if once:
            for p in pushers:
                result = await p.run_once()
                log.info(
                    "push_round",
                    chain=p.chain.name,
                    created=result.created,
                    signed=result.signed,
                    broadcast=result.broadcast,
                    refused=result.refused,
                )
            return
        stop = asyncio.Event()
        with runtime.on_stop(runtime.Shutdown(stop, settings.service.shutdown_grace_s)):
            async with asyncio.TaskGroup() as tg:
                for p in pushers:
                    tg.create_task(p.run(stop))


async def reconcile(
    settings: Settings, chains: list[ChainSettings], *, fix: bool = False
) -> list[Report]:
    """One reconciler run per chain (see ``indexer.reconcile``); with ``fix`` the database is
    made to agree with the chain and each discrepancy row records how it was resolved."""
    from indexer.reconcile import Coverage, Reconciler  # noqa: PLC0415 (only this command needs it)

    svc = settings.service
    coverage = Coverage(share=svc.reconcile_share, max_views=svc.reconcile_max_views)

    reports = []
    async with _pool(settings, "indexer-reconcile") as pool:
        for chain in chains:
            async with runtime.open_chain(chain, pool) as rt:
                reconciler = Reconciler(
                    pool,
                    chain,
                    rt.rpc,
                    rt.watch,
                    coverage=coverage,
                    interval_s=svc.reconcile_interval_s,
                )
                try:
                    reports.append(await reconciler.run_once(fix=fix))
                finally:
                    await reconciler.close()
    return reports


def format_reconcile(reports: list[Report]) -> str:
    """Human-readable reconcile output: per chain the block compared, then each finding."""
    lines = []
    for r in reports:
        state = "consistent" if r.consistent else f"{len(r.found)} discrepancies"
        lines.append(f"{r.chain} at block {r.block if r.block is not None else '-'}: {state}")
        for f in r.found:
            fixed = r.fixed.get(f.subject)
            lines.append(f"  {f.kind:<22} {f.subject}")
            lines.append(f"  {'':<22} chain: {f.expected}; database: {f.actual}")
            if fixed:
                lines.append(f"  {'':<22} {fixed}")
        if r.found and r.fixed:
            lines.append(f"  fixed {len(r.fixed)}, remaining {len(r.remaining)}")
    return "\n".join(lines)
