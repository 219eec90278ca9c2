"""The one JSON-RPC client: typed, validated calls and adaptive log ranges.

Every call the daemon makes to a node goes through :class:`RpcClient`, so that timeouts,
retries, metrics and the validation of what a node returns live in one place (Shovel's
``jrpc2`` client). Batching, retries, failover and endpoint identity are its transport's
(:class:`indexer.transport.Transport`); this module turns answers into typed values.

``get_range`` fetches the logs of a range and its headers in ONE batch to ONE endpoint, so
that a lagging node behind a load balancer cannot give us logs from one backend and headers
from another; the answer is validated (P6) before anyone may commit it.

A provider's range limit halves the adaptive eth_getLogs range (or takes the span the error
suggests); ``GROW_AFTER_SUCCESSES`` full ranges in a row double it again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any, Final

import structlog

from indexer.errors import InvalidRpcData, LaggingNode, RangeLimitError, RpcError
from indexer.jsonrpc import ExecutionReverted, RangeTooLarge, block_param
from indexer.metrics import INVALID_RPC_DATA, RPC_LOG_RANGE
from indexer.rpcdata import (
    hex_field,
    parse_header,
    parse_logs,
    parse_receipt,
    qty_field,
    validate_range,
)
from indexer.transport import MAX_RESPONSE_BYTES, Transport
from indexer.types import BlockHeader, RangeResult, RawLog, Receipt

# ExecutionReverted is part of the client's surface (eth_call raises it; callers catch it).
__all__ = ["GROW_AFTER_SUCCESSES", "ExecutionReverted", "RpcClient"]

log = structlog.get_logger()

GROW_AFTER_SUCCESSES: Final = 10
# Addresses per eth_getLogs: public providers refuse or slow down on thousands in one filter.
ADDRESS_CHUNK: Final = 500


class RpcClient(Transport):
    """The chain's node, asked in typed calls whose answers are validated (see the module
    docstring; the transport's for retries, failover and errors)."""

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
        if not 1 <= min_log_range <= max_log_range:
            raise ValueError("invalid RpcClient limits")
        super().__init__(
            urls,
            chain=chain,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            max_batch_size=max_batch_size,
            rng=rng,
            chain_id=chain_id,
            max_response_bytes=max_response_bytes,
            endpoint_ids=endpoint_ids,
        )
        self._min_log_range = min_log_range
        self._max_log_range = max_log_range
        self._log_range = min(max(log_range, min_log_range), max_log_range)
        self._grow_after = grow_after
        self._successes = 0
        self._address_chunk = max(1, address_chunk)
        RPC_LOG_RANGE.labels(chain).set(self._log_range)

    @property
    def log_range(self) -> int:
        """The current adaptive eth_getLogs range in blocks."""
        return self._log_range

    # -- chain ---------------------------------------------------------------------------------

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

    # -- logs ----------------------------------------------------------------------------------

    async def get_range(
        self,
        from_block: int,
        to_block: int,
        addresses: Sequence[str],
        *,
        full_headers: bool,
        topics: Sequence[str] | None = None,
    ) -> RangeResult:
        """Logs of ``addresses`` in ``[from_block, to]`` and headers, in ONE batch, validated.

        With ``topics`` (topic0 values) the filter is those topics and no address: the logs
        of every contract that emitted one come back (the caller keeps its own); with
        thousands of watched contracts the node scans the range once instead of once per
        ``address_chunk`` addresses.

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
            # addresses (or one by topics), in the same batch to the same endpoint as the
            # headers; an empty address list would mean "every contract" to the node, so no
            # address filter is sent then.
            span_filter = {"fromBlock": hex(from_block), "toBlock": hex(to)}
            if topics is not None:
                filters = [{**span_filter, "topics": [sorted(set(topics))]}]
            else:
                filters = [
                    {**span_filter, "address": addrs[i : i + self._address_chunk]}
                    for i in range(0, len(addrs), self._address_chunk)
                ]
            calls: list[tuple[str, list[Any]]] = [("eth_getLogs", [f]) for f in filters]
            calls.extend(("eth_getBlockByNumber", [hex(n), False]) for n in numbers)
            try:
                results = await self._run(calls, single=False)
            except RangeTooLarge as exc:
                self._shrink(from_block, span, exc)
                continue
            if span >= limit:
                self._note_success()
            answers = results[: len(filters)]
            if not all(isinstance(a, list) for a in answers):
                self._counted_error("eth_getLogs result is not a list")
            logs_raw = [lg for a in answers for lg in a]  # validate_range orders and dedups
            headers_raw = dict(zip(numbers, results[len(filters) :], strict=True))
            try:
                return await asyncio.to_thread(
                    validate_range,
                    from_block,
                    to,
                    logs_raw,
                    headers_raw,
                    full_headers=full_headers,
                    addresses=addrs if topics is None else None,
                    topics=topics,
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
