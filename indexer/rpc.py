"""The one JSON-RPC client: batching, timeouts, retries, failover, adaptive log ranges.

Every call the daemon makes to a node goes through :class:`RpcClient`, so that timeouts,
retries, metrics and the validation of what a node returns live in one place (Shovel's
``jrpc2`` client). Transient failures (transport, timeouts, HTTP 5xx, rate limits, JSON-RPC
server errors) are retried here with capped exponential backoff and full jitter, rotating to
the next endpoint; deterministic JSON-RPC errors (reverts, invalid params) are raised at once.

``get_range`` fetches the logs of a range and its headers in ONE batch to ONE endpoint, so
that a lagging node behind a load balancer cannot give us logs from one backend and headers
from another; the answer is validated (P6) before anyone may commit it.

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
from typing import Any, Final, NoReturn, TypeVar

import aiohttp
import orjson
import structlog

from indexer.errors import (
    InvalidRpcData,
    LaggingNode,
    RangeLimitError,
    RpcError,
    RpcRateLimited,
    RpcUnavailable,
    WrongChainId,
)
from indexer.jsonrpc import (
    ExecutionReverted,
    RangeTooLarge,
    ResponseTooLarge,
    Transient,
    backoff_delay,
    block_param,
    parse_response,
    parse_retry_after,
    redact_url,
)
from indexer.metrics import (
    INVALID_RPC_DATA,
    RPC_ENDPOINT_ERRORS,
    RPC_ENDPOINT_SECONDS,
    RPC_ENDPOINT_WRONG_CHAIN,
    RPC_LOG_RANGE,
    RPC_REQUESTS,
    RPC_SECONDS,
)
from indexer.rpcdata import (
    hex_field,
    parse_header,
    parse_logs,
    parse_receipt,
    qty_field,
    validate_range,
)
from indexer.types import BlockHeader, RangeResult, RawLog, Receipt

# ExecutionReverted is part of the client's surface (eth_call raises it; callers catch it).
__all__ = ["GROW_AFTER_SUCCESSES", "ExecutionReverted", "RpcClient"]

log = structlog.get_logger()
_T = TypeVar("_T")

GROW_AFTER_SUCCESSES: Final = 10
MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
# Addresses per eth_getLogs: public providers refuse or slow down on thousands in one filter.
ADDRESS_CHUNK: Final = 500
_READ_CHUNK: Final = 1 << 16
_HEADERS: Final = {"Content-Type": "application/json", "Accept": "application/json"}


class RpcClient:
    """JSON-RPC over HTTP to one or more endpoints of one chain (see module docstring).

    Retryable failures are retried up to ``max_attempts`` times, then raise RpcUnavailable
    (RpcRateLimited if the last failure was a rate limit). Deterministic JSON-RPC errors raise
    RpcError (ExecutionReverted for reverts) at once. Use as an async context manager or call
    :meth:`close`."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        chain: str = "",
        timeout_s: float = 10.0,
        max_attempts: int = 6,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        max_batch_size: int = 100,
        log_range: int = 2000,
        min_log_range: int = 1,
        max_log_range: int = 10_000,
        rng: random.Random | None = None,
        grow_after: int = GROW_AFTER_SUCCESSES,
        chain_id: int | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        endpoint_ids: Sequence[int] | None = None,
        address_chunk: int = ADDRESS_CHUNK,
    ) -> None:
        if not urls:
            raise ValueError("RpcClient needs at least one URL")
        if not 1 <= min_log_range <= max_log_range or max_batch_size < 2 or max_attempts < 1:
            raise ValueError("invalid RpcClient limits")
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
        self._min_log_range = min_log_range
        self._max_log_range = max_log_range
        self._log_range = min(max(log_range, min_log_range), max_log_range)
        self._grow_after = grow_after
        self._successes = 0
        self._rng = rng or random.Random()
        self._current = 0
        self._session: aiohttp.ClientSession | None = None
        self._max_response_bytes = max_response_bytes
        self._address_chunk = max(1, address_chunk)
        # Endpoint identity: with ``chain_id`` set, an endpoint serves no request before its
        # eth_chainId said that id, and is asked again after any failure (a load balancer may
        # come back pointing elsewhere); a wrong answer takes it out of rotation for good.
        self._chain_id = chain_id
        self._verified: set[int] = set()
        self._wrong: set[int] = set()
        RPC_LOG_RANGE.labels(chain).set(self._log_range)
        for ident in self._ids:
            RPC_ENDPOINT_WRONG_CHAIN.labels(chain, ident).set(0)

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def log_range(self) -> int:
        """The current adaptive eth_getLogs range in blocks."""
        return self._log_range

    @property
    def endpoint(self) -> int:
        """Index of the endpoint the next request goes to (the last healthy one)."""
        return self._current

    # -- transport -------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(limit=64, enable_cleanup_closed=True),
            )
        return self._session

    async def _post(self, idx: int, body: bytes) -> Any:
        """One HTTP round trip; transient failures become ``Transient`` (no URL inside)."""
        session = self._get_session()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                async with session.post(self._urls[idx], data=body, headers=_HEADERS) as resp:
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                    payload = await self._read_capped(resp)
        except TimeoutError:
            raise Transient("timeout", f"no answer within {self._timeout_s} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            # from None: aiohttp's messages can carry the full URL, key included.
            detail = type(exc).__name__
            if isinstance(exc, OSError) and exc.strerror:
                detail += f" ({exc.strerror})"  # errno text and host:port, never the path
            raise Transient("transport", detail) from None
        RPC_ENDPOINT_SECONDS.labels(self._chain, self._ids[idx]).observe(
            time.perf_counter() - started
        )
        if status == 429:
            raise Transient("rate_limited", "HTTP 429", parse_retry_after(retry_after))
        if status >= 500 or status == 408:
            raise Transient("http_5xx", f"HTTP {status}", parse_retry_after(retry_after))
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            if status != 200:
                raise RpcError(f"HTTP {status} without a JSON-RPC answer") from None
            raise Transient("bad_response", "response is not JSON") from None

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, read in chunks and given up on past ``max_response_bytes``: a broken or
        hostile node cannot make us hold an answer of any size in memory."""
        cap = self._max_response_bytes
        if (resp.content_length or 0) > cap:
            raise ResponseTooLarge(cap)
        parts: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > cap:
                raise ResponseTooLarge(cap)
            parts.append(chunk)
        return b"".join(parts)

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

    # -- chain ---------------------------------------------------------------------------------

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

    async def block_number(self) -> int:
        """``eth_blockNumber`` as an int."""
        return qty_field(await self.request("eth_blockNumber", []), "block number")

    async def header(self, block: int | str) -> BlockHeader | None:
        """Header of block ``block`` (a number or a tag), None if the node has no such block.

        A tag the node does not support ("finalized" before the merge, or an old node) also
        gives None; raises InvalidRpcData on a malformed block."""
        param = block_param(block)
        try:
            raw = await self.request("eth_getBlockByNumber", [param, False])
        except RpcError as exc:
            if isinstance(block, str) and not isinstance(exc, RangeTooLarge):
                return None
            raise
        if raw is None:
            return None
        header = self._counted(parse_header, raw)
        if isinstance(block, int) and header.number != block:
            self._counted_error(f"asked for block {block}, got block {header.number}")
        return header

    async def headers(self, numbers: Sequence[int]) -> dict[int, BlockHeader]:
        """Headers of ``numbers`` (deduplicated), batched; raises LaggingNode if any is null."""
        wanted = sorted(set(numbers))
        raws = await self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in wanted])
        out: dict[int, BlockHeader] = {}
        for number, raw in zip(wanted, raws, strict=True):
            if raw is None:
                raise LaggingNode(f"node has no header for block {number} yet")
            header = self._counted(parse_header, raw)
            if header.number != number:
                self._counted_error(f"asked for block {number}, got block {header.number}")
            out[number] = header
        return out

    def _counted(self, parse: Callable[[Any], _T], raw: Any) -> _T:
        try:
            return parse(raw)
        except InvalidRpcData:
            INVALID_RPC_DATA.labels(self._chain).inc()
            raise

    def _counted_error(self, message: str) -> NoReturn:
        INVALID_RPC_DATA.labels(self._chain).inc()
        raise InvalidRpcData(message)

    # -- logs ----------------------------------------------------------------------------------

    async def get_range(
        self, from_block: int, to_block: int, addresses: Sequence[str], *, full_headers: bool
    ) -> RangeResult:
        """Logs of ``addresses`` in ``[from_block, to]`` and headers, in ONE batch, validated.

        ``to`` is ``to_block`` capped by the adaptive log range (and, with ``full_headers``,
        by the batch size); the result says which. The header of ``to`` is always fetched,
        every header of the range with ``full_headers``. A provider range error halves the
        range and tries again; RangeLimitError when even the smallest range is refused.
        Raises LaggingNode (header of ``to`` missing) and InvalidRpcData (see
        :func:`validate_range`)."""
        if to_block < from_block:
            raise ValueError(f"empty range {from_block}..{to_block}")
        addrs = sorted({a.lower() for a in addresses})
        while True:
            limit = self._log_range
            span = min(to_block - from_block + 1, limit)
            if full_headers:
                span = min(span, self._max_batch_size - 1)
            to = from_block + span - 1
            numbers = list(range(from_block, to + 1)) if full_headers else [to]
            # Many contracts (thousands of factory-made banks): one eth_getLogs per chunk of
            # addresses, all in the same batch to the same endpoint as the headers; an empty
            # address list would mean "every contract" to the node, so none is sent then.
            chunks = [
                addrs[i : i + self._address_chunk]
                for i in range(0, len(addrs), self._address_chunk)
            ]
            calls: list[tuple[str, list[Any]]] = [
                ("eth_getLogs", [{"fromBlock": hex(from_block), "toBlock": hex(to), "address": c}])
                for c in chunks
            ]
            calls.extend(("eth_getBlockByNumber", [hex(n), False]) for n in numbers)
            try:
                results = await self._run(calls, single=False)
            except RangeTooLarge as exc:
                self._shrink(from_block, span, exc)
                continue
            if span >= limit:
                self._note_success()
            answers = results[: len(chunks)]
            if not all(isinstance(a, list) for a in answers):
                self._counted_error("eth_getLogs result is not a list")
            logs_raw = [lg for a in answers for lg in a]  # validate_range orders and dedups
            headers_raw = dict(zip(numbers, results[len(chunks) :], strict=True))
            try:
                return validate_range(
                    from_block,
                    to,
                    logs_raw,
                    headers_raw,
                    full_headers=full_headers,
                    addresses=addrs,
                )
            except InvalidRpcData:
                INVALID_RPC_DATA.labels(self._chain).inc()
                raise

    async def get_logs(
        self, from_block: int, to_block: int, addresses: Sequence[str]
    ) -> list[RawLog]:
        """Every log of ``addresses`` in ``[from_block, to_block]`` (several ranges if needed).

        For callers that want the logs without the follower's header checks (verify,
        reconcile); each piece is still validated against its last header."""
        logs: list[RawLog] = []
        start = from_block
        while start <= to_block:
            result = await self.get_range(start, to_block, addresses, full_headers=False)
            logs.extend(result.logs)
            start = result.to_block + 1
        return logs

    def _set_log_range(self, new: int, reason: str) -> None:
        old, self._log_range = self._log_range, new
        self._successes = 0
        RPC_LOG_RANGE.labels(self._chain).set(new)
        log.info("rpc_log_range_changed", chain=self._chain, old=old, new=new, reason=reason)

    def _shrink(self, from_block: int, span: int, exc: RangeTooLarge) -> None:
        if span <= self._min_log_range:
            raise RangeLimitError(
                f"the provider refuses eth_getLogs for {span} block(s) from {from_block}: {exc}"
            )
        new = max(self._min_log_range, span // 2)
        if exc.suggested_span is not None and exc.suggested_span < span:
            new = max(self._min_log_range, exc.suggested_span)
        self._set_log_range(new, "provider_limit")

    def _note_success(self) -> None:
        self._successes += 1
        if self._successes >= self._grow_after and self._log_range < self._max_log_range:
            self._set_log_range(min(self._max_log_range, self._log_range * 2), "grow")

    # -- calls and transactions ---------------------------------------------------------------

    async def eth_call(self, to: str, data: bytes, block_hash: str) -> bytes:
        """Return data of a call pinned to ``block_hash`` (EIP-1898, requireCanonical).

        Raises ExecutionReverted (an RpcError, ``.data`` = hex revert data) on a revert."""
        call = {"to": to.lower(), "data": "0x" + data.hex()}
        pin = {"blockHash": block_hash.lower(), "requireCanonical": True}
        result = await self.request("eth_call", [call, pin])
        value = self._counted(lambda r: hex_field(r, "eth_call result"), result)
        if len(value) % 2:
            self._counted_error("eth_call result has odd length")
        return bytes.fromhex(value[2:])

    async def find_logs(
        self, address: str, topics: Sequence[str | None], from_block: int, to_block: int
    ) -> list[RawLog]:
        """Logs of one contract matching ``topics`` (None = any) in ``[from_block, to_block]``,
        in pieces of the adaptive log range; every log is validated and must come from
        ``address`` inside the range (the chain judge reads a batch's own event this way)."""
        addr = address.lower()
        out: list[RawLog] = []
        start = from_block
        while start <= to_block:
            to = min(to_block, start + self._log_range - 1)
            flt = {"fromBlock": hex(start), "toBlock": hex(to), "address": addr, "topics": topics}
            try:
                raw = await self.request("eth_getLogs", [flt])
            except RangeTooLarge as exc:
                self._shrink(start, to - start + 1, exc)
                continue
            if not isinstance(raw, list):
                self._counted_error("eth_getLogs result is not a list")
            logs = self._counted(parse_logs, raw)
            for lg in logs:
                if lg.address != addr or not start <= lg.block_number <= to:
                    self._counted_error(f"eth_getLogs answered a log outside {addr} {start}..{to}")
            out.extend(logs)
            start = to + 1
        return out

    async def receipt(self, tx_hash: str) -> Receipt | None:
        """The validated receipt of ``tx_hash``, None while it is not mined (or was reorged
        out); raises InvalidRpcData on a malformed one or one of another transaction."""
        raw = await self.request("eth_getTransactionReceipt", [tx_hash.lower()])
        if raw is None:
            return None
        receipt = self._counted(parse_receipt, raw)
        if receipt.tx_hash != tx_hash.lower():
            self._counted_error(f"asked for receipt of {tx_hash}, got {receipt.tx_hash}")
        return receipt

    async def transaction_sender(self, tx_hash: str) -> str | None:
        """The ``from`` of a transaction (lowercase), None when the node does not know it."""
        raw = await self.request("eth_getTransactionByHash", [tx_hash.lower()])
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self._counted_error("transaction is not an object")
        return str(
            self._counted(lambda r: hex_field(r, "transaction from", length=42), raw.get("from"))
        )

    async def balance(self, address: str, block: str = "latest") -> int:
        """``eth_getBalance`` in wei (the sender's gas money, for ``indexer check``)."""
        raw = await self.request("eth_getBalance", [address.lower(), block])
        return int(self._counted(lambda r: qty_field(r, "balance"), raw))

    async def transaction_count(self, address: str, block: str = "pending") -> int:
        """``eth_getTransactionCount``: the next account nonce of ``address`` at ``block``."""
        raw = await self.request("eth_getTransactionCount", [address.lower(), block])
        return int(self._counted(lambda r: qty_field(r, "transaction count"), raw))

    async def estimate_gas(self, call: dict[str, Any]) -> int:
        """``eth_estimateGas`` of ``call``; raises ExecutionReverted when it would revert."""
        raw = await self.request("eth_estimateGas", [call])
        return int(self._counted(lambda r: qty_field(r, "gas estimate"), raw))

    async def fee_data(self) -> tuple[int, int | None]:
        """(base fee of the latest block, the node's suggested priority fee or None when it
        has no ``eth_maxPriorityFeePerGas``), both in wei and validated."""
        raw = await self.request("eth_getBlockByNumber", ["latest", False])
        if not isinstance(raw, dict):
            self._counted_error("latest block is not an object")
        base_raw = raw.get("baseFeePerGas", "0x0")
        base = int(self._counted(lambda r: qty_field(r, "baseFeePerGas"), base_raw))
        try:
            tip_raw = await self.request("eth_maxPriorityFeePerGas", [])
        except RpcError:
            return base, None
        return base, int(self._counted(lambda r: qty_field(r, "priority fee"), tip_raw))

    async def send_raw_transaction(self, raw: bytes) -> str:
        """Broadcast a signed transaction and return its hash (lowercase).

        Resending is safe: a node that already has it answers "already known", which raises
        RpcError like any other rejection; the caller keeps the hash it recorded."""
        result = await self.request("eth_sendRawTransaction", ["0x" + raw.hex()])
        return str(self._counted(lambda r: hex_field(r, "transaction hash", length=66), result))
