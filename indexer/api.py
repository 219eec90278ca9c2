"""The backend's HTTP API, served by the daemon on ``[api] listen`` (off without ``[api]``).

Reads (``/v1/wallets/{address}``, its ``/history``, ``/v1/rewards/{external_key}``,
``/v1/campaigns[/{campaign_id}]``, ``/v1/chamas/{chama_id}``, ``/v1/status``) go through
``indexer.apidata``; ``/v1/stream`` is the live feed (``indexer.stream``); ``/`` the ops page
(``indexer.opspage``); ``/v1/openapi.json`` the document (``indexer.openapi``).
``POST /v1/rewards`` queues a reward only when a token is configured and the request carries
it as a bearer token (compared in constant time): 401 without one, 403 with a wrong one or
when none is configured.

The API has its own small pool, so no client load can hold a connection the followers need.
Errors are JSON ``{"error": "..."}`` with one clear message; a database fault is a 503 and is
logged by type only (never a DSN or a token).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from indexer import apidata, db, metrics, openapi, opspage, stream
from indexer.apidata import ApiError
from indexer.config import ApiSettings

log = structlog.get_logger()

API_APP_NAME = "rewardsync-api"
API_POOL_SIZE = 4
MAX_BODY_BYTES = 64 * 1024
SHUTDOWN_S = 2.0

# chain_id -> what this process knows live about the chain: name, head, leader.
LiveView = Callable[[], dict[int, dict[str, Any]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

POOL_KEY = web.AppKey("pool", asyncpg.Pool)
HUB_KEY = web.AppKey("hub", stream.Hub)
SETTINGS_KEY = web.AppKey("settings", ApiSettings)
LIVE_KEY: web.AppKey[LiveView] = web.AppKey("live")


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON with one message; counted by route and status."""
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    try:
        resp = await handler(request)
    except ApiError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        resp = _json({"error": exc.message}, exc.status, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = _json({"error": exc.reason}, exc.status)
    except stream.DB_ERRORS as exc:
        log.warning("api_database_error", route=name, error=type(exc).__name__)
        resp = _json({"error": "database unavailable, try again"}, 503)
    metrics.API_REQUESTS.labels(name, str(resp.status)).inc()
    return resp


def _pool(request: web.Request) -> asyncpg.Pool:
    return request.app[POOL_KEY]


async def wallet(request: web.Request) -> web.Response:
    address = apidata.parse_address(request.match_info["address"], "address")
    async with _pool(request).acquire() as con:
        return _json(await apidata.wallet_overview(con, address))


async def history(request: web.Request) -> web.Response:
    address = apidata.parse_address(request.match_info["address"], "address")
    q = request.query
    limit = apidata.parse_int(q.get("limit"), "limit", minimum=1) or apidata.HISTORY_LIMIT
    chain_id = apidata.parse_int(q.get("chain_id"), "chain_id", minimum=1)
    async with _pool(request).acquire() as con:
        page = await apidata.wallet_history(
            con,
            address,
            cursor=q.get("cursor"),
            chain_id=chain_id,
            limit=min(limit, apidata.HISTORY_MAX_LIMIT),
        )
    return _json(page)


async def reward(request: web.Request) -> web.Response:
    async with _pool(request).acquire() as con:
        return _json(await apidata.reward_status(con, request.match_info["external_key"]))


async def enqueue(request: web.Request) -> web.Response:
    _authorize(request, request.app[SETTINGS_KEY])
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError(400, "the body is not JSON") from None
    async with _pool(request).acquire() as con:
        return _json(await apidata.enqueue(con, body))


def _authorize(request: web.Request, settings: ApiSettings) -> None:
    """Bearer token, compared in constant time; no token configured: enqueue is off."""
    if settings.token is None:
        raise ApiError(403, "enqueue is disabled: no API token is configured")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "a bearer token is required")
    if not hmac.compare_digest(given.strip().encode(), settings.token.reveal().encode()):
        raise ApiError(403, "the bearer token is not valid")


async def campaigns(request: web.Request) -> web.Response:
    q = request.query
    chain_id = apidata.parse_int(q.get("chain_id"), "chain_id", minimum=1)
    bank = apidata.parse_address(q["bank"], "bank") if "bank" in q else None
    campaign = request.match_info.get("campaign_id", q.get("campaign_id"))
    if campaign is not None and not _is_hex32(campaign):
        raise ApiError(400, "campaign_id is not a 32-byte 0x value")
    async with _pool(request).acquire() as con:
        return _json(
            await apidata.campaigns(
                con,
                chain_id=chain_id,
                bank=bank,
                campaign_id=None if campaign is None else campaign.lower(),
            )
        )


def _is_hex32(text: str) -> bool:
    return (
        len(text) == 66
        and text[:2] == "0x"
        and all(c in "0123456789abcdefABCDEF" for c in text[2:])
    )


async def chama(request: web.Request) -> web.Response:
    chama_id = apidata.parse_int(request.match_info["chama_id"], "chama_id")
    chain_id = apidata.parse_int(request.query.get("chain_id"), "chain_id", minimum=1)
    assert chama_id is not None  # the route matched a non-empty segment
    async with _pool(request).acquire() as con:
        return _json(await apidata.chamas(con, chama_id, chain_id))


async def status(request: web.Request) -> web.Response:
    async with _pool(request).acquire() as con:
        return _json(await apidata.sync_status(con, request.app[LIVE_KEY]()))


async def spec(_: web.Request) -> web.Response:
    return _json(openapi.document())


async def ops(request: web.Request) -> web.Response:
    async with _pool(request).acquire() as con:
        facts = await apidata.ops_facts(con, request.app[LIVE_KEY]())
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return web.Response(
        text=opspage.render(facts, generated_at=now),
        content_type="text/html",
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


async def live(request: web.Request) -> web.StreamResponse:
    return await stream.handle(request, request.app[HUB_KEY], _pool(request))


def make_app(
    pool: asyncpg.Pool, settings: ApiSettings, live_view: LiveView, hub: stream.Hub
) -> web.Application:
    """The application with every route of ``openapi.document()`` (a test holds them equal)."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app[POOL_KEY] = pool
    app[HUB_KEY] = hub
    app[SETTINGS_KEY] = settings
    app[LIVE_KEY] = live_view
    r = app.router
    r.add_get("/", ops)
    r.add_get("/v1/openapi.json", spec)
    r.add_get("/v1/status", status)
    r.add_get("/v1/wallets/{address}", wallet)
    r.add_get("/v1/wallets/{address}/history", history)
    r.add_post("/v1/rewards", enqueue)
    r.add_get("/v1/rewards/{external_key}", reward)
    r.add_get("/v1/campaigns", campaigns)
    r.add_get("/v1/campaigns/{campaign_id}", campaigns)
    r.add_get("/v1/chamas/{chama_id}", chama)
    r.add_get("/v1/stream", live)
    return app


@dataclass(frozen=True, slots=True)
class ApiServer:
    """A running API: its bound port and the LISTEN task the daemon supervises."""

    port: int
    hub: stream.Hub


@contextlib.asynccontextmanager
async def serve(settings: ApiSettings, dsn: str, live_view: LiveView) -> AsyncIterator[ApiServer]:
    """Serve the API on ``settings.listen`` (port 0: any free port) with its own pool."""
    pool = await db.create_pool(dsn, app=API_APP_NAME, size=API_POOL_SIZE)
    hub = stream.Hub(dsn)
    runner = web.AppRunner(
        make_app(pool, settings, live_view, hub), access_log=None, shutdown_timeout=SHUTDOWN_S
    )
    try:
        await runner.setup()
        host, port = settings.listen
        site = web.TCPSite(runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)  # aiohttp keeps the bound sockets here
        if sockets:
            port = int(sockets[0].getsockname()[1])
        log.info("api_listening", host=host, port=port, enqueue=settings.token is not None)
        yield ApiServer(port, hub)
    finally:
        hub.close()
        await runner.cleanup()
        await pool.close()
