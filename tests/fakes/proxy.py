"""TcpFaultProxy: an asyncio TCP proxy that injects network faults (asyncpg's TCPFuzzingProxy).

Put it between the daemon and PostgreSQL (or anvil) and switch its mode while it runs:

- ``pass``: forward both ways;
- ``delay``: hold every chunk ``delay_s`` before forwarding it (latency per direction);
- ``blackhole``: forward nothing and keep the data (like a path that drops packets, which TCP
  retransmits): traffic stalls and resumes intact when the mode goes back to ``pass``;
- ``reset``: abort every open connection with a RST and refuse new ones the same way;
- ``drop``: after ``drop_after`` more bytes in ``direction`` (``down`` = server to client,
  ``up`` = client to server, ``both``), discard what follows; the connection stays open.

``arm(pattern, drop="down")`` makes the connection whose client sends ``pattern`` discard
everything after it in that direction (``down``: the reply is lost, ``up``: the request itself
never arrives); ``triggered`` is set then. Scenario 15 arms on PostgreSQL's ``COMMIT`` query.

Use ``async with TcpFaultProxy(host, port) as proxy`` in async tests, or
``TcpFaultProxy.start_in_thread(host, port)`` (its own loop in a thread) for subprocess tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

Mode = Literal["pass", "delay", "blackhole", "reset", "drop"]
Direction = Literal["up", "down", "both"]
MODES = ("pass", "delay", "blackhole", "reset", "drop")
CHUNK = 64 * 1024
PG_COMMIT = b"Q\x00\x00\x00\x0cCOMMIT;\x00"  # the simple-query message asyncpg sends to commit


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (SO_LINGER 0) rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    drop_up: bool = False
    drop_down: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        _rst(self.client)
        _rst(self.server)


class TcpFaultProxy:
    """The proxy (see module docstring); mode and knobs may change at any time."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        mode: Mode = "pass",
        delay_s: float = 0.0,
        drop_after: int = 0,
        direction: Direction = "down",
        port: int = 0,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = mode
        self.delay_s = delay_s
        self.direction: Direction = direction
        self._budget = drop_after
        self._port = port
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._pattern: bytes | None = None
        self._pattern_drop: Literal["up", "down"] = "down"
        self._resume = asyncio.Event()
        self._resume.set()
        self.triggered = threading.Event()
        self.connections = 0  # accepted so far
        self.bytes_up = 0
        self.bytes_down = 0

    # -- control ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    def set_mode(
        self,
        mode: Mode,
        *,
        delay_s: float | None = None,
        drop_after: int | None = None,
        direction: Direction | None = None,
    ) -> None:
        """Switch the mode (call on the proxy's loop; see ProxyThread.set_mode)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if delay_s is not None:
            self.delay_s = delay_s
        if drop_after is not None:
            self._budget = drop_after
        if direction is not None:
            self.direction = direction
        self.mode = mode
        if mode == "blackhole":
            self._resume.clear()
        else:
            self._resume.set()
        if mode == "reset":
            self.reset_all()

    def arm(self, pattern: bytes, drop: Literal["up", "down"] = "down") -> None:
        """The next connection whose client sends ``pattern`` loses what follows (see above)."""
        self.triggered.clear()
        self._pattern_drop = drop
        self._pattern = pattern

    def reset_all(self) -> None:
        """RST every open connection (new ones are accepted unless the mode is ``reset``)."""
        for conn in list(self._conns):
            conn.abort()
        self._conns.clear()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> TcpFaultProxy:
        self._resume = asyncio.Event()
        if self.mode != "blackhole":
            self._resume.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.reset_all()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpFaultProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    def start_in_thread(
        cls, upstream_host: str, upstream_port: int, **knobs: object
    ) -> ProxyThread:
        """Serve a proxy on its own event loop in a daemon thread."""
        proxy = cls(upstream_host, upstream_port, **knobs)  # type: ignore[arg-type]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(proxy.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        thread = threading.Thread(target=serve, name="tcp-fault-proxy", daemon=True)
        thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return ProxyThread(proxy, loop, thread)

    # -- forwarding --------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _rst(writer)
            return
        conn = _Conn(client=writer, server=up_writer)
        self._conns.add(conn)
        up = asyncio.create_task(self._pump(conn, reader, up_writer, upstream=True))
        down = asyncio.create_task(self._pump(conn, up_reader, writer, upstream=False))
        conn.tasks = [up, down]
        try:
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in conn.tasks:
                task.cancel()
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()
            self._conns.discard(conn)

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    return
                pattern = self._pattern
                if upstream and pattern is not None and pattern in data:
                    self._pattern = None
                    if self._pattern_drop == "down":
                        conn.drop_down = True  # the request goes out, its reply is lost
                    else:
                        conn.drop_up = True  # the request itself is lost
                        data = data[: data.index(pattern)]
                    self.triggered.set()
                elif conn.drop_up if upstream else conn.drop_down:
                    continue
                await self._resume.wait()  # blackhole: hold the chunk until the path heals
                if self.mode == "delay" and self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                if self.mode == "drop" and self.direction in ("both", "up" if upstream else "down"):
                    data = data[: max(self._budget, 0)]
                    self._budget -= len(data)
                if not data:
                    continue
                if upstream:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                writer.write(data)
                await writer.drain()


@dataclass
class ProxyThread:
    """A TcpFaultProxy served by its own event loop in a thread; ``stop()`` joins it."""

    proxy: TcpFaultProxy
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def triggered(self) -> threading.Event:
        return self.proxy.triggered

    def _call(self, fn: object, *args: object, **kwargs: object) -> None:
        async def run() -> None:
            fn(*args, **kwargs)  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def set_mode(self, mode: Mode, **knobs: object) -> None:
        self._call(self.proxy.set_mode, mode, **knobs)

    def arm(self, pattern: bytes, drop: Literal["up", "down"] = "down") -> None:
        self._call(self.proxy.arm, pattern, drop)

    def reset_all(self) -> None:
        self._call(self.proxy.reset_all)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
