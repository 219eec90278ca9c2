"""The JSON-RPC transport under :class:`indexer.rpc.RpcClient`: endpoints, batching,
timeouts, retries, failover, endpoint identity, capped answers.

Transient failures (transport, timeouts, HTTP 5xx, rate limits, JSON-RPC server errors) are
retried here with capped exponential backoff and full jitter, rotating to the next endpoint;
deterministic JSON-RPC errors (reverts, invalid params) are raised at once.

Every answer is read in chunks up to ``max_response_bytes`` (a hostile or broken node cannot
exhaust memory; an over-size eth_getLogs answer shrinks the range like a provider's limit). With
``chain_id`` given, each endpoint is asked its chain id before its first request and after
any failure, and one that names another chain leaves the rotation for good.

Endpoint URLs may carry API keys: logs, metrics and exception messages name an endpoint by its
index, and where a URL must appear it goes through :func:`indexer.jsonrpc.redact_url`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, NoReturn, Self, TypeVar

import orjson
import structlog

from indexer.errors import (
    InvalidRpcData,
    RpcError,
    RpcRateLimited,
    RpcUnavailable,
    WrongChainId,
)
from indexer.http import HttpClient, HttpError
from indexer.jsonrpc import (
    Transient,
    backoff_delay,
    parse_response,
    parse_retry_after,
    redact_url,
)
from indexer.metrics import (
    INVALID_RPC_DATA,
    RPC_ENDPOINT_ERRORS,
    RPC_ENDPOINT_SECONDS,
    RPC_ENDPOINT_WRONG_CHAIN,
    RPC_REQUESTS,
    RPC_SECONDS,
)
from indexer.rpcdata import FAST_ANSWER_MIN, loads_answer, qty_field

log = structlog.get_logger()
_T = TypeVar("_T")

MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
_HEADERS: Final = {"Content-Type": "application/json", "Accept": "application/json"}


class Transport:
    """JSON-RPC over HTTP to one or more endpoints of one chain (see module docstring).

    Retryable failures are retried up to ``max_attempts`` times, then raise RpcUnavailable
    (RpcRateLimited if the last failure was a rate limit). Deterministic JSON-RPC errors raise
    RpcError (ExecutionReverted for reverts) at once. Use as an async context manager or call
    :meth:`close`."""

    def __init__(  # noqa: PLR0913 (keyword-only limits, each with a default)
        self,
        urls: Sequence[str],
        *,
        chain: str = "",
        timeout_s: float = 10.0,
        max_attempts: int = 6,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        max_batch_size: int = 100,
        rng: random.Random | None = None,
        chain_id: int | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        endpoint_ids: Sequence[int] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("an RPC client needs at least one URL")
        if max_batch_size < 2 or max_attempts < 1:
            raise ValueError("invalid RPC client limits")
        self._urls = list(urls)
        # How metrics and logs name each URL: its index in the chain's rpc_urls (a client of
        # one endpoint of several, such as the cross-check's witness, passes that index).
        self._ids = [str(i) for i in (endpoint_ids or range(len(self._urls)))]
        self._chain = chain
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._max_batch_size = max_batch_size
        self._rng = rng or random.Random()
        self._current = 0
        self._http: HttpClient | None = None
        self._max_response_bytes = max_response_bytes
        # Endpoint identity: with ``chain_id`` set, an endpoint serves no request before its
        # eth_chainId said that id, and is asked again after any failure (a load balancer may
        # come back pointing elsewhere); a wrong answer takes it out of rotation for good.
        self._chain_id = chain_id
        self._verified: set[int] = set()
        self._wrong: set[int] = set()
        for ident in self._ids:
            RPC_ENDPOINT_WRONG_CHAIN.labels(chain, ident).set(0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connections (idempotent)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    @property
    def endpoint(self) -> int:
        """Index of the endpoint the next request goes to (the last healthy one)."""
        return self._current

    # -- transport -------------------------------------------------------------------------

    async def _post(self, idx: int, body: bytes) -> Any:
        """One HTTP round trip; transient failures become ``Transient`` (no URL inside)."""
        if self._http is None:
            self._http = HttpClient(limit=64)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                resp = await self._http.post(
                    self._urls[idx], body, _HEADERS, max_bytes=self._max_response_bytes
                )
        except TimeoutError:
            raise Transient("timeout", f"no answer within {self._timeout_s} s") from None
        except HttpError as exc:
            raise Transient("transport", str(exc)) from None  # never the URL (keys)
        RPC_ENDPOINT_SECONDS.labels(self._chain, self._ids[idx]).observe(
            time.perf_counter() - started
        )
        status, payload = resp.status, resp.body
        retry_after = resp.headers.get("retry-after")
        if status == 429:
            raise Transient("rate_limited", "HTTP 429", parse_retry_after(retry_after))
        if status >= 500 or status == 408:
            raise Transient("http_5xx", f"HTTP {status}", parse_retry_after(retry_after))
        if 300 <= status < 400:  # not followed: a JSON-RPC POST must not change its target
            raise RpcError(f"HTTP {status}: the endpoint redirects; configure the URL it names")
        try:
            if len(payload) < FAST_ANSWER_MIN:
                return orjson.loads(payload)
            # a large answer is read in a worker thread: the event loop stays free to send
            # the commit's next statement meanwhile (PostgreSQL waited on it otherwise)
            return await asyncio.to_thread(loads_answer, payload)
        except orjson.JSONDecodeError:
            if status != 200:
                raise RpcError(f"HTTP {status} without a JSON-RPC answer") from None
            raise Transient("bad_response", "response is not JSON") from None

    def _observe(self, calls: Sequence[tuple[str, list[Any]]], outcome: str, t0: float) -> None:
        elapsed = time.monotonic() - t0
        for method, count in Counter(m for m, _ in calls).items():
            RPC_REQUESTS.labels(method, outcome).inc(count)
            RPC_SECONDS.labels(method).observe(elapsed)

    def _endpoint_failed(self, idx: int, kind: str) -> None:
        """Count the failure and demote the endpoint: the next attempt goes elsewhere."""
        RPC_ENDPOINT_ERRORS.labels(self._chain, self._ids[idx], kind).inc()
        self._verified.discard(idx)
        if len(self._urls) > 1 and self._current == idx:
            self._current = self._next_endpoint(idx)
            log.info(
                "rpc_failover",
                chain=self._chain,
                from_endpoint=idx,
                to_endpoint=self._current,
                kind=kind,
            )

    def demote_current(self, kind: str) -> bool:
        """Count a failure of the current endpoint that the caller saw in its answers (a head
        stuck below what we already indexed) and move to the next one; False when there is
        no other endpoint to move to."""
        before = self._current
        self._endpoint_failed(before, kind)
        return self._current != before

    def _next_endpoint(self, idx: int) -> int:
        """The endpoint after ``idx`` in rotation, skipping those that serve another chain."""
        n = len(self._urls)
        for step in range(1, n + 1):
            candidate = (idx + step) % n
            if candidate not in self._wrong:
                return candidate
        return idx

    async def _verify_endpoint(self, idx: int) -> None:
        """Ask endpoint ``idx`` its chain id before it serves anything (see ``__init__``).

        A transport failure raises Transient (the attempt fails over as any other); a wrong
        id removes the endpoint from rotation, counted as ``wrong_chain_id``, and raises
        Transient so the request goes elsewhere, or WrongChainId when no endpoint is left."""
        body = orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "eth_chainId", "params": []})
        (answer,) = parse_response(await self._post(idx, body), [("eth_chainId", [])], single=True)
        actual = self._counted(lambda r: qty_field(r, "chain id"), answer)
        if actual == self._chain_id:
            self._verified.add(idx)
            return
        self._wrong.add(idx)
        RPC_ENDPOINT_ERRORS.labels(self._chain, self._ids[idx], "wrong_chain_id").inc()
        RPC_ENDPOINT_WRONG_CHAIN.labels(self._chain, self._ids[idx]).set(1)
        log.error(
            "rpc_endpoint_wrong_chain",
            chain=self._chain,
            endpoint=self._ids[idx],
            chain_id=actual,
            expected=self._chain_id,
        )
        if len(self._wrong) == len(self._urls):
            raise WrongChainId(
                f"every RPC endpoint of chain {self._chain!r} serves another chain id "
                f"(endpoint #{idx} says {actual}, the configuration says {self._chain_id})"
            )
        self._current = self._next_endpoint(idx)
        raise Transient("wrong_chain_id", f"endpoint #{idx} serves chain id {actual}")

    async def _run(
        self,
        calls: Sequence[tuple[str, list[Any]]],
        *,
        single: bool,
        pin: int | None = None,
        max_attempts: int | None = None,
    ) -> list[Any]:
        """Send ``calls`` (one request or one batch), retrying transient failures."""
        if single:
            method, params = calls[0]
            body = orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": method, "params": params})
        else:
            body = orjson.dumps(
                [
                    {"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                    for i, (m, p) in enumerate(calls)
                ]
            )
        label = calls[0][0] if len(calls) == 1 else f"batch[{len(calls)}]"
        attempts = max_attempts or self._max_attempts
        last: Transient | None = None
        for attempt in range(attempts):
            idx = self._current if pin is None else pin
            t0 = time.monotonic()
            try:
                if pin is None and self._chain_id is not None and idx not in self._verified:
                    await self._verify_endpoint(idx)
                results = parse_response(await self._post(idx, body), calls, single=single)
            except Transient as exc:
                outcome = {"rate_limited": "rate_limited", "timeout": "timeout"}
                self._observe(calls, outcome.get(exc.kind, "error"), t0)
                if exc.kind != "wrong_chain_id":  # counted and rotated already
                    self._endpoint_failed(idx, exc.kind)
                last = exc
                if attempt + 1 < attempts:
                    delay = backoff_delay(
                        attempt,
                        base_s=self._backoff_base_s,
                        max_s=self._backoff_max_s,
                        rng=self._rng,
                        retry_after_s=exc.retry_after_s,
                    )
                    log.warning(
                        "rpc_retry",
                        chain=self._chain,
                        method=label,
                        attempt=attempt + 1,
                        endpoint=self._ids[idx],
                        kind=exc.kind,
                        delay_s=round(delay, 3),
                    )
                    await asyncio.sleep(delay)
                continue
            except RpcError:
                self._observe(calls, "error", t0)
                raise
            self._observe(calls, "ok", t0)
            return results
        assert last is not None
        text = f"{label} failed after {attempts} attempts, last: {last}"
        if last.kind == "rate_limited":
            raise RpcRateLimited(text)
        raise RpcUnavailable(text)

    # -- generic calls ---------------------------------------------------------------------

    async def request(self, method: str, params: list[Any]) -> Any:
        """The result of one JSON-RPC call (retried when transient, see class docstring)."""
        return (await self._run([(method, params)], single=True))[0]

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Results of ``calls`` in order; chunks of ``max_batch_size``, each one batch.

        A chunk is retried as a whole when any of its calls failed transiently; a
        deterministic error of any call raises RpcError."""
        chunks = [
            calls[i : i + self._max_batch_size] for i in range(0, len(calls), self._max_batch_size)
        ]
        answers = await asyncio.gather(
            *(self._run(c, single=False) for c in chunks), return_exceptions=True
        )
        results: list[Any] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            results.extend(answer)
        return results

    # -- endpoints and identity ------------------------------------------------------------

    async def endpoint_heads(self) -> dict[int, int | None]:
        """Each endpoint's head, asked directly (no retry, no failover): None when it did not
        answer. For per-endpoint health metrics, not for indexing."""

        async def one(idx: int) -> int | None:
            if idx in self._wrong:
                return None  # another chain's head means nothing here
            body = orjson.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
            )
            try:
                answer = await self._post(idx, body)
                return int(answer["result"], 16)
            except Exception:  # any failure means "not healthy", reported as None
                return None

        heads = await asyncio.gather(*(one(i) for i in range(len(self._urls))))
        return dict(enumerate(heads))

    async def chain_id(self) -> int:
        """``eth_chainId`` as an int."""
        return qty_field(await self.request("eth_chainId", []), "chain id")

    async def check_chain_id(self, expected: int) -> None:
        """Raise WrongChainId unless every endpoint that answers serves chain ``expected``.

        All endpoints are asked, since failover to a misconfigured one would mix chains; an
        endpoint that does not answer now is logged and left in rotation, verified before its
        first use (raise RpcUnavailable only if none answers)."""
        answers = await asyncio.gather(
            *(
                self._run([("eth_chainId", [])], single=True, pin=i, max_attempts=2)
                for i in range(len(self._urls))
            ),
            return_exceptions=True,
        )
        answered = 0
        for idx, answer in enumerate(answers):
            if isinstance(answer, RpcUnavailable):
                log.warning("rpc_chain_id_unverified", chain=self._chain, endpoint=idx)
                continue
            if isinstance(answer, BaseException):
                raise answer
            actual = qty_field(answer[0], "chain id")
            if actual != expected:
                raise WrongChainId(
                    f"RPC endpoint #{idx} ({redact_url(self._urls[idx])}) serves chain id "
                    f"{actual}, the configuration of chain {self._chain!r} says {expected}"
                )
            if expected == self._chain_id:
                self._verified.add(idx)
            answered += 1
        if not answered:
            raise RpcUnavailable(f"no RPC endpoint of chain {self._chain!r} answered eth_chainId")

    def _counted(self, parse: Callable[[Any], _T], raw: Any) -> _T:
        try:
            return parse(raw)
        except InvalidRpcData:
            INVALID_RPC_DATA.labels(self._chain).inc()
            raise

    def _counted_error(self, message: str) -> NoReturn:
        INVALID_RPC_DATA.labels(self._chain).inc()
        raise InvalidRpcData(message)
