"""HTTP endpoints for operators: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``.

``/healthz`` is 200 while the event loop answers (liveness: a hung process gets restarted).
``/readyz`` is 200 only when this process is the writer of every chain it runs, no chain is
halted, and each chain's lag is within ``ready_max_lag_blocks``; 503 otherwise, with a JSON
body saying why. A standby replica is alive but not ready. ``/readyz?standby=ok`` also
passes for a healthy standby (not the writer, not halted): the Kubernetes readiness probe,
so that rolling updates and disruption budgets work with one writer among the replicas.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import orjson
import prometheus_client
import structlog
from aiohttp import web

log = structlog.get_logger()

ReadyCheck = Callable[[], tuple[bool, dict[str, object]]]


def _standby_ok(detail: dict[str, object]) -> bool:
    """True when every chain is ready or a healthy standby (not the writer, not halted)."""
    chains = detail.get("chains")
    if not isinstance(chains, dict):
        return False
    return all(
        isinstance(c, dict)
        and (c.get("ready") is True or (c.get("leader") is False and c.get("halted") is False))
        for c in chains.values()
    )


def _app(ready: ReadyCheck) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = prometheus_client.generate_latest()
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        ok, detail = ready()
        if request.query.get("standby") == "ok":
            ok = ok or _standby_ok(detail)
        return web.Response(
            body=orjson.dumps({"ready": ok, **detail}),
            status=200 if ok else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@contextlib.asynccontextmanager
async def serve(listen: tuple[str, int], ready: ReadyCheck) -> AsyncIterator[int]:
    """Serve the endpoints on ``listen`` (port 0: a free port) and yield the bound port."""
    runner = web.AppRunner(_app(ready), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, listen[0], listen[1])
    await site.start()
    port = listen[1]
    sockets = getattr(site._server, "sockets", None)  # aiohttp keeps the bound sockets here
    if sockets:
        port = int(sockets[0].getsockname()[1])
    log.info("http_listening", host=listen[0], port=port)
    try:
        yield port
    finally:
        await runner.cleanup()
