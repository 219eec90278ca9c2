"""Live updates of one wallet over Server-Sent Events (``GET /v1/stream?wallet=0x..``).

One LISTEN connection per daemon (``Hub.run``, a side task) receives the sink's ``NOTIFY
rewardsync`` after each commit and rollback and wakes the clients it concerns: those of the
wallets a commit names (every client when the payload's wallet list was truncated) and every
client after a rollback. A woken client catches up by itself from its cursor, in one
repeatable-read snapshot: reorgs since its last one (a ``reorg`` event with the common
ancestor, its position moved back there), then its wallet's items after its position on each
chain (``reward`` events), then the new ``overview``. So a missed or coalesced notification
never loses an update, and a reconnect with ``Last-Event-ID`` resumes exactly where the last
delivered event was (the cursor: per chain the block and log index, and the last reorg id).

Slow clients are dropped, not buffered: each has a bounded queue of wake-ups and a write
timeout (``indexer_api_stream_dropped_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from indexer import metrics
from indexer.apidata import ApiError, history_item, parse_address, wallet_overview
from indexer.db import CONNECTION_ERRORS, Conn, Q

log = structlog.get_logger()

CHANNEL = "rewardsync"
END = 2**62  # log index meaning "the whole block": every item of it was delivered
QUEUE_SIZE = 256  # wake-ups a client may have pending before it counts as stuck
WRITE_TIMEOUT_S = 10.0
KEEPALIVE_S = 15.0
MAX_CLIENTS = 1000
PAGE = 500
ROUND = 2000  # reward events per catch-up round: a long resume is sent in rounds, not held
LISTEN_PING_S = 30.0
LISTEN_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
CONNECT_TIMEOUT_S = 10.0
LISTEN_APP_NAME = "rewardsync-api-listen"
FIRST = asyncio.FIRST_COMPLETED
DB_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *CONNECTION_ERRORS)


@dataclass(slots=True)
class Cursor:
    """Where a client is: per chain the last (block, log index) delivered, and the last
    reorg id it has been told about. Encoded as ``r<id>,<chain>:<block>[:<log>],...``."""

    reorg_id: int
    chains: dict[int, tuple[int, int]] = field(default_factory=dict)

    def encode(self) -> str:
        parts = [f"r{self.reorg_id}"]
        for chain, (block, log_index) in sorted(self.chains.items()):
            parts.append(f"{chain}:{block}" if log_index == END else f"{chain}:{block}:{log_index}")
        return ",".join(parts)

    @classmethod
    def decode(cls, text: str) -> Cursor:
        parts = text.strip().split(",")
        head = re.fullmatch(r"r(\d{1,19})", parts[0])
        if head is None or len(parts) > 1000:
            raise ApiError(400, "Last-Event-ID is not an event id of this stream")
        out = cls(int(head[1]))
        for part in parts[1:]:
            m = re.fullmatch(r"(\d{1,19}):(-?\d{1,19})(?::(\d{1,19}))?", part)
            if m is None:
                raise ApiError(400, "Last-Event-ID is not an event id of this stream")
            out.chains[int(m[1])] = (int(m[2]), END if m[3] is None else int(m[3]))
        return out


class Subscriber:
    """One connected client: its wallet, its bounded queue of wake-ups (True: the wallet was
    named, so an overview is due even without new items) and its connection."""

    def __init__(self, wallet: str, transport: asyncio.Transport | None) -> None:
        self.wallet = wallet
        self.queue: asyncio.Queue[bool] = asyncio.Queue(QUEUE_SIZE)
        self.closed = asyncio.Event()
        self.transport = transport

    def drop(self, reason: str) -> None:
        """Stop serving this client: counted, its connection aborted (a blocked write ends)."""
        if self.closed.is_set():
            return
        metrics.API_STREAM_DROPPED.labels(reason).inc()
        log.warning("stream_client_dropped", reason=reason)
        self.closed.set()
        if self.transport is not None:
            self.transport.abort()

    async def next(self, wait_s: float) -> bool | None:
        """The coalesced wake-ups pending (True if any named the wallet); None once closed;
        TimeoutError after ``wait_s`` seconds without one."""
        getter = asyncio.ensure_future(self.queue.get())
        closer = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait((getter, closer), timeout=wait_s, return_when=FIRST)
        finally:
            closer.cancel()
            if not getter.done():
                getter.cancel()
        if self.closed.is_set():
            return None
        if not getter.done() or getter.cancelled():
            raise TimeoutError
        named = getter.result()
        while not self.queue.empty():
            named = self.queue.get_nowait() or named
        return named


class Hub:
    """The daemon's one LISTEN connection and its clients by wallet."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._subs: dict[str, set[Subscriber]] = {}
        self.listening = asyncio.Event()  # set while LISTEN is in force

    def __len__(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def subscribe(self, wallet: str, transport: asyncio.Transport | None) -> Subscriber:
        sub = Subscriber(wallet, transport)
        self._subs.setdefault(wallet, set()).add(sub)
        metrics.API_STREAM_CLIENTS.set(len(self))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subs.get(sub.wallet, set())
        subs.discard(sub)
        if not subs:
            self._subs.pop(sub.wallet, None)
        metrics.API_STREAM_CLIENTS.set(len(self))

    def close(self) -> None:
        """End every stream (shutdown): each handler returns at its next wait."""
        for subs in list(self._subs.values()):
            for sub in subs:
                sub.closed.set()

    def publish(self, payload: str) -> None:
        """Wake the clients a NOTIFY payload concerns (see the module's docstring)."""
        try:
            note = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("stream_bad_notify", payload=payload[:200])
            return
        if not isinstance(note, dict):
            return
        wallets = note.get("wallets")
        commit = note.get("kind") == "commit"
        if commit and isinstance(wallets, list) and not note.get("wallets_truncated"):
            for wallet in wallets:
                for sub in list(self._subs.get(str(wallet), ())):
                    self._offer(sub, named=True)
            return
        everyone = [s for subs in self._subs.values() for s in subs]
        for sub in everyone:
            self._offer(sub, named=note.get("kind") != "commit")

    def _wake_all(self) -> None:
        for sub in [s for subs in self._subs.values() for s in subs]:
            self._offer(sub, named=True)

    def _offer(self, sub: Subscriber, *, named: bool) -> None:
        try:
            sub.queue.put_nowait(named)
        except asyncio.QueueFull:
            sub.drop("queue_full")

    async def run(self, stop: asyncio.Event) -> None:
        """LISTEN until ``stop``; a lost connection is opened again with backoff, and every
        client then catches up (notifications sent meanwhile were lost)."""
        failures = 0
        while not stop.is_set():
            try:
                con = await asyncpg.connect(
                    self._dsn,
                    timeout=CONNECT_TIMEOUT_S,
                    server_settings={"application_name": LISTEN_APP_NAME},
                )
            except CONNECTION_ERRORS as exc:
                pause = LISTEN_BACKOFF_S[min(failures, len(LISTEN_BACKOFF_S) - 1)]
                failures += 1
                log.warning("stream_listen_retry", error=type(exc).__name__, retry_in_s=pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                continue
            failures = 0
            lost = asyncio.Event()
            con.add_termination_listener(lambda _con, lost=lost: lost.set())
            try:
                await con.add_listener(CHANNEL, self._on_notify)
                self.listening.set()
                self._wake_all()
                await self._hold(con, stop, lost)
            except CONNECTION_ERRORS as exc:
                log.warning("stream_listen_lost", error=type(exc).__name__)
            finally:
                self.listening.clear()
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await asyncio.wait_for(con.close(), 5)

    async def _hold(
        self, con: asyncpg.Connection, stop: asyncio.Event, lost: asyncio.Event
    ) -> None:
        """Keep the connection until ``stop``; its loss is noticed at once (termination
        listener) or by a ping (a silent network)."""
        while not stop.is_set():
            ended = asyncio.ensure_future(stop.wait())
            gone = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait((ended, gone), timeout=LISTEN_PING_S, return_when=FIRST)
            finally:
                ended.cancel()
                gone.cancel()
            if stop.is_set():
                return
            if lost.is_set() or con.is_closed():
                log.warning("stream_listen_lost", error="connection closed")
                return
            await con.fetchval("SELECT 1")

    def _on_notify(self, _con: object, _pid: int, _channel: str, payload: object) -> None:
        self.publish(str(payload))


class Session:
    """One client's position and what it has been sent."""

    def __init__(self, pool: asyncpg.Pool, wallet: str, cursor: Cursor | None) -> None:
        self.pool = pool
        self.wallet = wallet
        self.cursor = cursor
        self.more = False  # the last round stopped at ROUND events: another one is due

    async def catch_up(self, *, named: bool) -> list[tuple[str, str, dict[str, Any]]]:
        """The events due since the cursor, as (event, id, data), in one snapshot."""
        async with (
            self.pool.acquire() as con,
            con.transaction(isolation="repeatable_read", readonly=True),
        ):
            if self.cursor is None:  # a new client: from the tip on
                reorg_id = await con.fetchval(Q["api_last_reorg_id"])
                cps = await con.fetch(Q["api_checkpoints"])
                self.cursor = Cursor(int(reorg_id), {r[0]: (r[1], END) for r in cps})
                overview = await wallet_overview(con, self.wallet)
                return [("overview", self.cursor.encode(), overview)]
            events = await self._reorgs(con, self.cursor)
            events += await self._items(con, self.cursor)
            if (events or named) and not self.more:
                overview = await wallet_overview(con, self.wallet)
                events.append(("overview", self.cursor.encode(), overview))
            return events

    async def _reorgs(self, con: Conn, cursor: Cursor) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        for r in await con.fetch(Q["api_reorgs_since"], cursor.reorg_id):
            chain, ancestor = r["chain_id"], r["common_ancestor"]
            cursor.reorg_id = max(cursor.reorg_id, r["last_id"])
            pos = cursor.chains.get(chain)
            if pos is not None and pos[0] > ancestor:
                cursor.chains[chain] = (ancestor, END)
            data = {"chain_id": chain, "common_ancestor": ancestor}
            out.append(("reorg", cursor.encode(), data))
        return out

    async def _items(self, con: Conn, cursor: Cursor) -> list[tuple[str, str, dict[str, Any]]]:
        out: list[tuple[str, str, dict[str, Any]]] = []
        self.more = False
        for chain, checkpoint in await con.fetch(Q["api_checkpoints"]):
            block, log_index = cursor.chains.get(chain, (-1, END))
            while True:
                rows = await con.fetch(
                    Q["api_wallet_items_after"], self.wallet, chain, block, log_index, PAGE
                )
                for row in rows:
                    block, log_index = row["block_number"], row["log_index"]
                    cursor.chains[chain] = (block, log_index)
                    out.append(("reward", cursor.encode(), history_item(row)))
                if len(rows) < PAGE:
                    break
                if len(out) >= ROUND:
                    self.more = True
                    return out
            if (block, log_index) < (checkpoint, END):
                cursor.chains[chain] = (checkpoint, END)
        return out


def sse(event: str, event_id: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event (the JSON has no newline)."""
    return b"event: %s\nid: %s\ndata: %s\n\n" % (
        event.encode(),
        event_id.encode(),
        orjson.dumps(data),
    )


async def handle(request: web.Request, hub: Hub, pool: asyncpg.Pool) -> web.StreamResponse:
    """``GET /v1/stream?wallet=0x..``: an overview at once (or, resuming, what was missed),
    then reorg, reward and overview events as commits and rollbacks happen."""
    wallet = parse_address(request.query.get("wallet"), "wallet")
    resume = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    session = Session(pool, wallet, Cursor.decode(resume) if resume else None)
    if len(hub) >= MAX_CLIENTS:
        raise ApiError(503, "too many live clients")
    sub = hub.subscribe(wallet, request.transport)  # before the first read: nothing missed
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await resp.prepare(request)
        await _write(resp, sub, b"retry: 2000\n\n")
        named: bool | None = True
        while named is not None:
            for event, event_id, data in await session.catch_up(named=named):
                await _write(resp, sub, sse(event, event_id, data))
            more = session.more and not sub.closed.is_set()
            named = True if more else await _next(resp, sub)
    except ConnectionError:
        pass  # the client left, or was dropped as too slow
    except DB_ERRORS as exc:
        # Mid-stream no error answer is possible: end it; the client resumes from its last id.
        log.warning("stream_database_error", error=type(exc).__name__)
    finally:
        hub.unsubscribe(sub)
    return resp


async def _next(resp: web.StreamResponse, sub: Subscriber) -> bool | None:
    """The next wake-up; a keep-alive comment every ``KEEPALIVE_S`` meanwhile."""
    while True:
        try:
            return await sub.next(KEEPALIVE_S)
        except TimeoutError:
            await _write(resp, sub, b": keepalive\n\n")


async def _write(resp: web.StreamResponse, sub: Subscriber, data: bytes) -> None:
    try:
        await asyncio.wait_for(resp.write(data), WRITE_TIMEOUT_S)
    except TimeoutError:
        sub.drop("write_timeout")
        raise ConnectionResetError("slow client dropped") from None
