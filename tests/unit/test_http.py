"""The JSON-RPC transport's HTTP/1.1 client against raw loopback servers that answer as
nodes and proxies do: lengths, chunks, connection ends, keep-alive, caps and refusals."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from indexer.errors import RpcError
from indexer.http import HttpClient, HttpError
from indexer.jsonrpc import ResponseTooLarge
from indexer.transport import Transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers["content-length"]))
    return lines[0].encode(), headers, body


class Server:
    """A loopback server; ``handler(reader, writer, n)`` serves the n-th connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.seen: list[tuple[bytes, dict[str, str], bytes]] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        request = await _request(reader)
        self.seen.append(request)
        return request[2]


Serve = Callable[[Handler], Awaitable[tuple[Server, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> tuple[Server, str]:
        server = Server(handler)
        srv = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        servers.append(srv)
        port = srv.sockets[0].getsockname()[1]
        return server, f"http://u%40x:p%3Aw@127.0.0.1:{port}/rpc?key=k"

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def _ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_one_connection_and_the_request_as_sent(serve: Serve) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while True:
            body = await server.read(r)
            w.write(_ok(b'{"echo":' + body + b"}"))
            await w.drain()

    server, url = await serve(handler)
    http = HttpClient()
    try:
        for i in range(3):
            resp = await http.post(url, b"%d" % i, {"Content-Type": "x"}, max_bytes=1000)
            assert (resp.status, resp.body) == (200, b'{"echo":%d}' % i)
    finally:
        await http.close()
    assert server.connections == 1
    line, headers, _ = server.seen[0]
    assert line == b"POST /rpc?key=k HTTP/1.1"
    assert headers["authorization"] == "Basic " + base64.b64encode(b"u@x:p:w").decode()
    assert headers["content-type"] == "x"


async def test_chunked_answer_with_trailers(serve: Serve) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await server.read(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        w.write(b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\n")
        await w.drain()
        await server.read(r)  # the connection was kept
        w.write(_ok(b"again"))
        await w.drain()

    server, url = await serve(handler)
    http = HttpClient()
    try:
        assert (await http.post(url, b"{}", {}, max_bytes=100)).body == b"hello world"
        assert (await http.post(url, b"{}", {}, max_bytes=100)).body == b"again"
    finally:
        await http.close()
    assert server.connections == 1


async def test_answer_delimited_by_the_connection_end_and_interim_answers(serve: Serve) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await server.read(r)
        w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 503 Busy\r\nRetry-After: 2\r\n\r\nbusy")
        await w.drain()

    server, url = await serve(handler)
    http = HttpClient()
    try:
        first = await http.post(url, b"{}", {}, max_bytes=100)
        second = await http.post(url, b"{}", {}, max_bytes=100)
    finally:
        await http.close()
    assert (first.status, first.headers["retry-after"], first.body) == (503, "2", b"busy")
    assert second.body == b"busy"
    assert server.connections == 2  # HTTP/1.0 without a length: not reused


async def test_a_connection_closed_while_idle_is_replaced_once(serve: Serve) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await server.read(r)
        w.write(_ok(b"fresh %d" % n))
        await w.drain()
        if n == 1:  # keep-alive promised, then closed after a read: a stale connection
            await r.read(1)

    server, url = await serve(handler)
    http = HttpClient()
    try:
        assert (await http.post(url, b"{}", {}, max_bytes=100)).body == b"fresh 1"
        await asyncio.sleep(0.05)
        assert (await http.post(url, b"{}", {}, max_bytes=100)).body == b"fresh 2"
    finally:
        await http.close()
    assert server.connections == 2


async def test_caps_refusals_and_malformed_answers(serve: Serve) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n",  # declared over the cap
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + b"x" * 64 + b"\r\n"
        b"40\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n",  # chunks over the cap
        b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 101,  # until the end, over the cap
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # ends early
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"",  # closed at once, on a new connection
    ]

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await server.read(r)
        w.write(answers[n - 1])
        await w.drain()
        w.close()

    server, url = await serve(handler)
    http = HttpClient()
    try:
        for expected in (ResponseTooLarge,) * 3 + (HttpError,) * 4:
            with pytest.raises(expected) as info:
                await http.post(url, b"{}", {}, max_bytes=100)
            assert "127.0.0.1" not in str(info.value)
            assert "key" not in str(info.value)
        with pytest.raises(HttpError):  # nothing listens there
            await http.post("http://127.0.0.1:1/", b"{}", {}, max_bytes=100)
        with pytest.raises(HttpError):
            await http.post("ftp://127.0.0.1/", b"{}", {}, max_bytes=100)
    finally:
        await http.close()


async def test_a_cancelled_request_does_not_leave_its_connection_for_the_next(serve: Serve) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await server.read(r)
        if n == 1:
            await asyncio.sleep(0.3)  # answers late: the caller has given up
        w.write(_ok(b"answer %d" % n))
        await w.drain()
        await r.read(1)

    server, url = await serve(handler)
    http = HttpClient()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await http.post(url, b"{}", {}, max_bytes=100)
        assert (await http.post(url, b"{}", {}, max_bytes=100)).body == b"answer 2"
    finally:
        await http.close()


async def test_the_transport_refuses_a_redirect_at_once(serve: Serve) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await server.read(r)
        w.write(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: https://x/?key=k\r\n")
        w.write(b"Content-Length: 0\r\n\r\n")
        await w.drain()

    server, url = await serve(handler)
    async with Transport([url], max_attempts=3) as transport:
        with pytest.raises(RpcError, match="redirects") as info:
            await transport.request("eth_blockNumber", [])
    assert "key" not in str(info.value)
    assert server.connections == 1  # deterministic: not retried
