"""New heads pushed by the node: an ``eth_subscribe("newHeads")`` subscription on a chain's
``ws_url`` that wakes the follower the moment a block arrives, instead of at its next poll.

The subscription only says "something new": every request, the head's number included, still
goes through the one RPC client over ``rpc_urls`` (HTTP), so a lying or stale socket can make
the follower look early but never makes it index anything it did not fetch and verify. When
the socket fails or never opens, the follower keeps polling at ``poll_interval`` (the fallback
is the normal path), and the subscription reconnects and subscribes again with capped,
jittered backoff. ``indexer_ws_connected`` says which of the two is in force.

The URL may carry a provider key: it is logged only through ``redact_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from indexer import metrics
from indexer.jsonrpc import backoff_delay, redact_url

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger()

CONNECT_TIMEOUT_S = 10.0
HEARTBEAT_S = 20.0  # websocket pings: a silently dead connection is noticed within this
BACKOFF_MAX_S = 30.0
MAX_MESSAGE_BYTES = 1 << 20  # a newHeads notification is a header: a few KiB


class HeadSubscription:
    """One chain's newHeads subscription; ``wait(timeout)`` is the follower's sleep."""

    def __init__(self, chain: str, url: str, rng: random.Random | None = None) -> None:
        self.chain = chain
        self.url = url
        self.rng = rng or random.Random()
        self.woken = asyncio.Event()
        self.connected = False
        self.heads = 0
        metrics.WS_CONNECTED.labels(chain).set(0)

    async def wait(self, timeout_s: float) -> bool:
        """Sleep until a new head is announced or ``timeout_s`` passes; True when woken."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.woken.wait()
        except TimeoutError:
            return False
        finally:
            self.woken.clear()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the subscription open until ``stop``; never raises for a network fault."""
        import aiohttp  # noqa: PLC0415 (only with a ws_url: a backfill starts without it)

        attempt = 0
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                try:
                    await self._subscribe(session, stop)
                    attempt = 0  # it was open, then lost: start the backoff again
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    log.warning(
                        "ws_subscription_failed",
                        chain=self.chain,
                        url=redact_url(self.url),
                        error=type(exc).__name__,
                    )
                finally:
                    if self.connected and not stop.is_set():
                        metrics.WS_RECONNECTS.labels(self.chain).inc()
                    self._set_connected(False)
                delay = backoff_delay(attempt, base_s=0.5, max_s=BACKOFF_MAX_S, rng=self.rng)
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _subscribe(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        import aiohttp  # noqa: PLC0415 (imported by ``run`` already)

        async with session.ws_connect(
            self.url,
            timeout=aiohttp.ClientWSTimeout(ws_close=CONNECT_TIMEOUT_S),
            heartbeat=HEARTBEAT_S,
            max_msg_size=MAX_MESSAGE_BYTES,
        ) as ws:
            request = {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
            await ws.send_bytes(orjson.dumps(request))
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                answer = await ws.receive()
            sub = _subscription_id(answer.data)
            self._set_connected(True)
            log.info("ws_subscribed", chain=self.chain, url=redact_url(self.url))
            self.woken.set()  # anything mined while we were away: look now
            stopping = asyncio.ensure_future(stop.wait())
            try:
                while True:
                    receiving = asyncio.ensure_future(ws.receive())
                    done, _ = await asyncio.wait(
                        {receiving, stopping}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if stopping in done:
                        receiving.cancel()
                        return
                    msg = receiving.result()
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        if _is_head(msg.data, sub):
                            self.heads += 1
                            metrics.WS_HEADS.labels(self.chain).inc()
                            self.woken.set()
                        continue
                    raise ConnectionError(f"websocket {msg.type.name.lower()}")
            finally:
                stopping.cancel()

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        metrics.WS_CONNECTED.labels(self.chain).set(1 if up else 0)


def _subscription_id(data: Any) -> str:
    """The id ``eth_subscribe`` answered; ValueError for an error or anything else."""
    try:
        answer = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError):
        raise ValueError("eth_subscribe answer is not JSON") from None
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, str) or not result:
        raise ValueError("eth_subscribe refused")
    return result


def _is_head(data: Any, sub: str) -> bool:
    """Whether ``data`` is a notification of our subscription (its content is not trusted:
    the follower asks the node over HTTP what the head is)."""
    try:
        msg = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError):
        return False
    params = msg.get("params") if isinstance(msg, dict) else None
    return (
        isinstance(params, dict)
        and msg.get("method") == "eth_subscription"
        and params.get("subscription") == sub
    )
