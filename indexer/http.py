"""The HTTP/1.1 client under the JSON-RPC transport: POST a body, get the status, the headers
and the body back, with keep-alive connections per endpoint.

Why not aiohttp here: importing it took 160-240 ms of the backfill's 0.35 s start (it builds
two TLS contexts and its parsers at import), and the transport needs only this: one POST at a
time per connection, ``Content-Length`` or chunked answers read up to a cap, TLS for
``https://`` (a default, verifying context made on first use), Basic auth from the URL's user
info, no redirects, no proxies. aiohttp still serves what needs more (the websocket of
``ws_url``, the HTTP API, the SDK).

A reused connection that the server closed while idle fails on its first read with nothing
received; that request is sent once more on a new connection (the answer had not started,
and JSON-RPC requests are safe to send again: a repeated raw transaction is "already known").
Failures are ``HttpError`` with a message free of the URL (it may carry an API key).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, unquote, urlsplit

from indexer.jsonrpc import ResponseTooLarge

MAX_HEADER_BYTES: Final = 64 * 1024
MAX_IDLE_PER_ENDPOINT: Final = 16
_STREAM_LIMIT: Final = 1 << 20  # longest line (status, header, chunk size) read at once

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HttpError(Exception):
    """The request failed below HTTP semantics: refused, reset, closed early, malformed."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lowercased; a repeated header keeps its last value
    body: bytes


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """What a URL says about where and how to send."""

    tls: bool
    host: str
    port: int
    head: bytes  # the request line and the headers every request to this URL carries

    @classmethod
    def parse(cls, url: str, headers: Mapping[str, str]) -> _Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL (scheme {parts.scheme!r})")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError:
            raise HttpError("invalid port in URL") from None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {_host_header(parts, tls, port)}"]
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            lines.append("Authorization: Basic " + base64.b64encode(user.encode()).decode())
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += ["Accept-Encoding: identity", "Connection: keep-alive"]
        return cls(tls, parts.hostname, port, ("\r\n".join(lines) + "\r\n").encode("latin-1"))


def _host_header(parts: SplitResult, tls: bool, port: int) -> str:
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return host if port == (443 if tls else 80) else f"{host}:{port}"


class HttpClient:
    """Keep-alive HTTP/1.1 POSTs to a few endpoints, at most ``limit`` at once."""

    def __init__(self, *, limit: int = 64) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, int, bool], list[_Conn]] = {}
        self._endpoints: dict[tuple[str, tuple[tuple[str, str], ...]], _Endpoint] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, max_bytes: int
    ) -> Response:
        """POST ``body``; the answer's body is read up to ``max_bytes`` (ResponseTooLarge
        past it). Raises HttpError for transport failures."""
        key = (url, tuple(headers.items()))
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = _Endpoint.parse(url, headers)
        request = endpoint.head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        async with self._slots:
            conn = self._take(endpoint)
            if conn is not None:
                try:
                    return await self._exchange(endpoint, conn, request, max_bytes)
                except _StaleConnection:
                    pass  # closed by the server while idle: once more on a new connection
            conn = await self._connect(endpoint)
            try:
                return await self._exchange(endpoint, conn, request, max_bytes)
            except _StaleConnection:
                raise HttpError("connection closed before any answer") from None

    async def close(self) -> None:
        """Close the idle connections (idempotent)."""
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _reader, writer in conns:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    # ---- connections ------------------------------------------------------------------

    def _take(self, endpoint: _Endpoint) -> _Conn | None:
        conns = self._idle.get((endpoint.host, endpoint.port, endpoint.tls))
        while conns:
            reader, writer = conns.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    def _give_back(self, endpoint: _Endpoint, conn: _Conn) -> None:
        conns = self._idle.setdefault((endpoint.host, endpoint.port, endpoint.tls), [])
        if len(conns) < MAX_IDLE_PER_ENDPOINT:
            conns.append(conn)
        else:
            conn[1].close()

    async def _connect(self, endpoint: _Endpoint) -> _Conn:
        context: ssl.SSLContext | None = None
        if endpoint.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            context = self._tls
        try:
            return await asyncio.open_connection(
                endpoint.host,
                endpoint.port,
                ssl=context,
                server_hostname=endpoint.host if context else None,
                limit=_STREAM_LIMIT,
            )
        except OSError as exc:
            raise HttpError(_describe(exc)) from None

    async def _exchange(
        self, endpoint: _Endpoint, conn: _Conn, request: bytes, max_bytes: int
    ) -> Response:
        """One request on ``conn``; the connection goes back to the pool only after a
        complete answer that allows it, and is closed on anything else (cancellation too)."""
        reader, writer = conn
        started = False
        try:
            writer.write(request)
            await writer.drain()
            status_line = await reader.readuntil(b"\r\n")
            started = True
            response, reusable = await _read_response(reader, status_line, max_bytes)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            writer.close()
            if not started:
                raise _StaleConnection from None
            raise HttpError(_describe(exc)) from None
        except (OSError, asyncio.LimitOverrunError, ValueError) as exc:
            writer.close()
            raise HttpError(_describe(exc)) from None
        except BaseException:
            writer.close()
            raise
        if reusable:
            self._give_back(endpoint, conn)
        else:
            writer.close()
        return response


class _StaleConnection(Exception):
    """The connection failed before the answer's first byte."""


def _describe(exc: BaseException) -> str:
    """A failure's kind and OS reason, never an address or URL."""
    detail = type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        detail += f" ({exc.strerror})"
    return detail


async def _read_response(
    reader: asyncio.StreamReader, status_line: bytes, max_bytes: int
) -> tuple[Response, bool]:
    """The answer after its status line, and whether the connection may be reused."""
    while True:
        version, status = _parse_status(status_line)
        headers = await _read_headers(reader)
        if not 100 <= status < 200:  # an interim answer (1xx) is followed by the real one
            break
        status_line = await reader.readuntil(b"\r\n")
    reusable = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if status in (204, 304):  # no body, whatever the headers say
        return Response(status, headers, b""), reusable
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader, max_bytes)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length < 0:
            raise HttpError("negative Content-Length")
        if length > max_bytes:
            raise ResponseTooLarge(max_bytes)
        body = await reader.readexactly(length)
    else:  # delimited by the end of the connection
        reusable = False
        body = await reader.read(max_bytes + 1)
        while len(body) <= max_bytes and (more := await reader.read(max_bytes + 1 - len(body))):
            body += more
        if len(body) > max_bytes:
            raise ResponseTooLarge(max_bytes)
    return Response(status, headers, body), reusable


def _parse_status(line: bytes) -> tuple[str, int]:
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError("malformed HTTP status line")
    return parts[0], int(parts[1])


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    size = 0
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise HttpError("HTTP headers too large")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise HttpError("malformed HTTP header")
        headers[name.strip().lower()] = value.strip()
    return headers


async def _read_chunked(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        length = int(line.split(b";", 1)[0].strip(), 16)
        if length == 0:
            await _read_headers(reader)  # trailers, if any, up to the blank line
            return b"".join(parts)
        size += length
        if size > max_bytes:
            raise ResponseTooLarge(max_bytes)
        parts.append(await reader.readexactly(length))
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError("malformed chunk")
