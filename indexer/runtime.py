"""The composition root: what a chain's configuration becomes at run time.

Every command (``run``, ``backfill``, ``verify``, ``rewind``, ``push``, ``reconcile``) and the
bench open a chain here (config -> RPC client checked against the chain id, registry,
watchlist, checkpoint store, sink, follower) and take the chain's writer lock and the signal
handling from here, so that no command reaches into another for its wiring. The daemon
(``indexer.daemon``) is one user of it among others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import structlog

from indexer import db
from indexer.checkpoint import CheckpointStore
from indexer.config import DEFAULT_ABI_DIR, ChainSettings, SignerSettings
from indexer.decode import AbiRegistry
from indexer.errors import DatabaseUnavailable, Retryable
from indexer.follower import ChainFollower
from indexer.heads import HeadSubscription
from indexer.rpc import RpcClient
from indexer.sink import PostgresSink
from indexer.types import FactoryWatch, FollowerSpec
from indexer.watch import Watchlist

if TYPE_CHECKING:
    from indexer.pusher import Pusher

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
        topics_above=chain.topics_above,
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
        address_chunk=chain.address_chunk,
    )


@dataclass
class ChainRuntime:
    settings: ChainSettings
    rpc: RpcClient
    follower: ChainFollower
    leader: bool = False
    heads: HeadSubscription | None = None  # with a ws_url: wakes the follower on new blocks

    @property
    def watch(self) -> Watchlist:
        """What the chain watches (shared by the follower, verify and the reconciler)."""
        return self.follower.watch


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
        follower = ChainFollower(spec, rpc, store, sink, registry)
        heads = HeadSubscription(chain.name, chain.ws_url) if chain.ws_url else None
        yield ChainRuntime(chain, rpc, follower, heads=heads)
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


def make_pusher(signer: SignerSettings, rt: ChainRuntime, pool: asyncpg.Pool) -> Pusher:
    """The pusher of a chain, decoding custom errors with the factory-made bank's ABI.

    Imported here: eth_account costs ~2 s of start-up that only the pusher needs."""
    from indexer.pusher import Pusher  # noqa: PLC0415

    bank_abi = next((c.abi for c in rt.settings.contracts if c.factory is not None), None)
    if bank_abi is None:
        bank_abi = tuple(json.loads((DEFAULT_ABI_DIR / "ProductBank.json").read_text())["abi"])
    return Pusher(pool=pool, rpc=rt.rpc, chain=rt.settings, signer=signer, bank_abi=bank_abi)
