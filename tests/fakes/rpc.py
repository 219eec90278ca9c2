"""FakeRpc: a JSON-RPC HTTP server that forwards to an upstream and injects seeded faults.

The upstream is an anvil URL or a scripted in-memory handler ``(method, params) -> result``
(raise :class:`FakeRpcError` for a JSON-RPC error). Every fault is decided by a RNG seeded
from (seed, method, params, attempt), where ``attempt`` counts the calls of the same
(method, params) so far, so a run replays exactly (Ponder's ``rpc-sim.ts``). After
``max_fail_streak`` injected faults in a row for a key the next call passes, which bounds the
retries any client needs.

Knobs are plain attributes and may be changed while the server runs:

- ``error_rate`` / ``error_kinds``: ``http_502``, ``http_429`` (with ``retry_after_s``),
  ``jsonrpc_32000``, ``reset`` (close the connection, no answer), ``timeout`` (answer after
  ``timeout_sleep_s``, beyond any client timeout);
- ``latency_s``: added to every HTTP request;
- ``max_logs_range``: eth_getLogs wider than that many blocks gets -32005 "query returned more
  than 10000 results";
- ``lagging``: the first N calls of a key answer eth_getLogs with ``[]`` and the top
  eth_getBlockByNumber of the request with ``null``;
- ``head_offset``: the node is that many blocks behind (eth_blockNumber, "latest", and numbered
  blocks above that head are null);
- ``shuffle_batches``: batch answers come back in a seeded random order;
- ``corrupt(method, params, response) -> response | None``: rewrite any response object
  (``None`` drops it from a batch), for gaps, broken parent hashes, foreign logs, wrong ids.

Counters: ``calls[method]`` (batch elements count one each), ``http_requests``,
``faults[kind]``.

Use ``async with FakeRpc(upstream, seed=1, error_rate=0.05) as fake: fake.url`` in async
tests, or ``FakeRpc.start_in_thread(upstream, ...)`` (its own loop in a thread) to put it
between a subprocess and anvil.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from aiohttp import web

Handler = Callable[[str, list[Any]], Any]
Corrupt = Callable[[str, list[Any], dict[str, Any]], "dict[str, Any] | None"]

HTTP_FAULTS = ("http_502", "http_429", "reset", "timeout")
DEFAULT_FAULTS = ("http_502", "jsonrpc_32000", "reset", "timeout")
RANGE_ERROR = {"code": -32005, "message": "query returned more than 10000 results"}


class FakeRpcError(Exception):
    """Raised by a scripted upstream handler to answer with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass
class _Plan:
    """What the fake decided for one JSON-RPC request object."""

    item: dict[str, Any]
    method: str
    params: list[Any]
    attempt: int
    fault: str | None
    answer: dict[str, Any] | None = None


def _block_of(value: Any) -> int | None:
    if isinstance(value, str) and value.startswith("0x"):
        return int(value, 16)
    return None


class FakeRpc:
    """The fault-injecting JSON-RPC server (see module docstring for the knobs)."""

    def __init__(
        self,
        upstream: str | Handler,
        *,
        seed: int = 0,
        error_rate: float = 0.0,
        error_kinds: Sequence[str] = DEFAULT_FAULTS,
        max_fail_streak: int = 2,
        latency_s: float = 0.0,
        timeout_sleep_s: float = 30.0,
        retry_after_s: float | None = None,
        max_logs_range: int | None = None,
        lagging: int = 0,
        head_offset: int = 0,
        shuffle_batches: bool = False,
        corrupt: Corrupt | None = None,
        port: int = 0,
    ) -> None:
        self.upstream = upstream
        self.seed = seed
        self.error_rate = error_rate
        self.error_kinds = tuple(error_kinds)
        self.max_fail_streak = max_fail_streak
        self.latency_s = latency_s
        self.timeout_sleep_s = timeout_sleep_s
        self.retry_after_s = retry_after_s
        self.max_logs_range = max_logs_range
        self.lagging = lagging
        self.head_offset = head_offset
        self.shuffle_batches = shuffle_batches
        self.corrupt = corrupt
        self.calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.http_requests = 0
        self._port = port
        self._seen: Counter[str] = Counter()
        self._streak: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> FakeRpc:
        self._closing = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        sock.listen(128)
        self._port = sock.getsockname()[1]
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        if isinstance(self.upstream, str):
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FakeRpc:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    def start_in_thread(cls, upstream: str | Handler, **knobs: Any) -> FakeRpcThread:
        """Run a FakeRpc on its own event loop in a daemon thread (for sync/subprocess tests)."""
        fake = cls(upstream, **knobs)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(fake.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        thread = threading.Thread(target=serve, name="fake-rpc", daemon=True)
        thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return FakeRpcThread(fake=fake, loop=loop, thread=thread)

    def reset_counters(self) -> None:
        """Forget calls, faults and attempts (the next call of every key is attempt 0)."""
        self.calls.clear()
        self.faults.clear()
        self._seen.clear()
        self._streak.clear()
        self.http_requests = 0

    # -- request handling --------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but end early when the server stops (so stop() never waits for it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _plan(self, item: Any) -> tuple[_Plan, str]:
        if not isinstance(item, dict):
            item = {}
        method = str(item.get("method", ""))
        params = item.get("params") or []
        key = method + "|" + orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()
        attempt = self._seen[key]
        self._seen[key] += 1
        self.calls[method] += 1
        plan = _Plan(item=item, method=method, params=list(params), attempt=attempt, fault=None)
        return plan, key

    def _draw_fault(self, plans: list[_Plan], key: str) -> str | None:
        """Decide one fault for the whole HTTP request, seeded by its calls and attempt.

        A batch draws once (not once per element), so a 100-call batch is not almost surely
        faulted; a JSON-RPC error then hits one seeded element of it."""
        attempt = self._seen["request|" + key]
        self._seen["request|" + key] += 1
        digest = hashlib.sha256(f"{self.seed}|{key}|{attempt}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        fault = None
        drawn = self.error_rate > 0 and rng.random() < self.error_rate and self.error_kinds
        if drawn and self._streak[key] < self.max_fail_streak:
            fault = rng.choice(self.error_kinds)
        self._streak[key] = self._streak[key] + 1 if fault else 0
        if fault is not None and fault not in HTTP_FAULTS:
            plans[rng.randrange(len(plans))].fault = fault
        return fault

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.http_requests += 1
        body = await request.read()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            error = {"code": -32700, "message": "parse error"}
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": error})
        is_batch = isinstance(payload, list)
        keyed = [self._plan(item) for item in (payload if is_batch else [payload])]
        plans = [plan for plan, _ in keyed]
        fault = self._draw_fault(plans, "||".join(key for _, key in keyed)) if plans else None
        if self.latency_s > 0:
            await self._sleep(self.latency_s)
        if fault is not None and fault in HTTP_FAULTS:
            self.faults[fault] += 1
            return await self._http_fault(request, fault)
        await self._answer(plans)
        answers = [p.answer for p in plans if p.answer is not None]
        if is_batch and self.shuffle_batches:
            random.Random(f"{self.seed}|{self.http_requests}").shuffle(answers)
        if is_batch:
            out: Any = answers
        else:
            out = answers[0] if answers else {"jsonrpc": "2.0", "id": plans[0].item.get("id")}
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def _http_fault(self, request: web.Request, kind: str) -> web.StreamResponse:
        if kind == "http_502":
            return web.Response(status=502, text="bad gateway (injected)")
        if kind == "http_429":
            headers = {}
            if self.retry_after_s is not None:
                headers["Retry-After"] = str(int(self.retry_after_s))
            return web.Response(status=429, text="too many requests", headers=headers)
        if kind == "timeout":
            await self._sleep(self.timeout_sleep_s)
            return web.Response(status=504, text="too late (injected)")
        # reset: drop the connection without an answer
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)  # never reaches the client

    async def _answer(self, plans: list[_Plan]) -> None:
        """Fill ``plan.answer`` for each plan: locally decided or forwarded upstream."""
        head = await self._reported_head() if self.head_offset > 0 else None
        top = self._lagging_top(plans)
        forward: list[_Plan] = []
        for plan in plans:
            ident = plan.item.get("id")
            if plan.fault == "jsonrpc_32000":
                self.faults["jsonrpc_32000"] += 1
                error = {"code": -32000, "message": "internal error (injected)"}
                plan.answer = {"jsonrpc": "2.0", "id": ident, "error": error}
                continue
            result = self._local_result(plan, head, top is plan)
            if result is _RANGE:
                plan.answer = {"jsonrpc": "2.0", "id": ident, "error": dict(RANGE_ERROR)}
            elif result is not _FORWARD:
                plan.answer = {"jsonrpc": "2.0", "id": ident, "result": result}
            else:
                forward.append(plan)
        await self._forward(forward)
        for plan in plans:
            if plan.answer is not None and self.corrupt is not None:
                plan.answer = self.corrupt(plan.method, plan.params, plan.answer)

    def _lagging_top(self, plans: list[_Plan]) -> _Plan | None:
        blocks = [
            (n, p)
            for p in plans
            if p.method == "eth_getBlockByNumber"
            and p.params
            and (n := _block_of(p.params[0])) is not None
        ]
        if not blocks:
            return None
        top = max(blocks, key=lambda entry: entry[0])[1]
        return top if top.attempt < self.lagging else None

    def _local_result(self, plan: _Plan, head: int | None, is_top: bool) -> Any:
        params = plan.params
        if plan.method == "eth_getLogs" and params and isinstance(params[0], dict):
            lo, hi = _block_of(params[0].get("fromBlock")), _block_of(params[0].get("toBlock"))
            limit = self.max_logs_range
            if limit is not None and lo is not None and hi is not None and hi - lo + 1 > limit:
                self.faults["range"] += 1
                return _RANGE
            if plan.attempt < self.lagging:
                self.faults["lagging"] += 1
                return []
        if plan.method == "eth_getBlockByNumber" and params:
            if is_top:
                self.faults["lagging"] += 1
                return None
            number = _block_of(params[0])
            if head is not None and number is not None and number > head:
                return None
            if head is not None and params[0] == "latest":
                plan.params = [hex(head), *params[1:]]
        if plan.method == "eth_blockNumber" and head is not None:
            return hex(head)
        return _FORWARD

    async def _reported_head(self) -> int:
        probe = _Plan(item={"id": 0}, method="eth_blockNumber", params=[], attempt=0, fault=None)
        await self._forward([probe])
        assert probe.answer is not None
        return max(0, int(probe.answer["result"], 16) - self.head_offset)

    async def _forward(self, plans: list[_Plan]) -> None:
        if not plans:
            return
        if not isinstance(self.upstream, str):
            for plan in plans:
                plan.answer = await self._call_handler(plan)
            return
        assert self._session is not None
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": p.method, "params": p.params}
            for i, p in enumerate(plans)
        ]
        headers = {"Content-Type": "application/json"}
        async with self._session.post(
            self.upstream, data=orjson.dumps(batch), headers=headers
        ) as resp:
            answers = orjson.loads(await resp.read())
        if not isinstance(answers, list):  # the upstream refused the whole batch
            answers = [{**answers, "id": i} for i in range(len(plans))]
        by_id = {a.get("id"): a for a in answers}
        for i, plan in enumerate(plans):
            answer = dict(by_id[i])
            answer["id"] = plan.item.get("id")
            plan.answer = answer

    async def _call_handler(self, plan: _Plan) -> dict[str, Any]:
        assert callable(self.upstream)
        ident = plan.item.get("id")
        try:
            result = self.upstream(plan.method, plan.params)
            if inspect.isawaitable(result):
                result = await result
        except FakeRpcError as exc:
            return {"jsonrpc": "2.0", "id": ident, "error": exc.to_json()}
        return {"jsonrpc": "2.0", "id": ident, "result": result}


_FORWARD: Any = object()
_RANGE: Any = object()


@dataclass
class FakeRpcThread:
    """A FakeRpc served by its own event loop in a thread; ``stop()`` joins it."""

    fake: FakeRpc
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def url(self) -> str:
        return self.fake.url

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run a coroutine factory on the server's loop (e.g. to change state atomically)."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(30)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
