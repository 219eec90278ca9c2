"""The JSON-RPC protocol layer: what a node's answers and errors mean, with no I/O.

Kept apart from :mod:`indexer.rpc` so that the client holds only transport, retries and
failover, while the rules for reading responses (ids, batches, provider error wordings,
Retry-After, revert data) are pure functions that can be tested on their own.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Sequence
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from indexer.errors import RpcError, RpcUnavailable
from indexer.rpcdata import HEX_RE

BLOCK_TAGS: Final = frozenset({"latest", "finalized", "safe", "earliest", "pending"})

ErrorKind = Literal["range", "rate_limited", "retry", "revert", "fatal"]

# Provider wordings for "the logs of this range are too many / too big" (Infura, Alchemy,
# QuickNode, geth/erigon/reth, Ankr, BlastAPI...): the answer is a smaller range, not a retry.
_RANGE_RE: Final = re.compile(
    r"query returned more than|block range is too wide|exceeds? (the )?max(imum)? block range"
    r"|response size (exceeded|is larger|should not)|log response size|range (is )?too (large|wide)"
    r"|block range too large|eth_getlogs is limited to|too many (results|logs|blocks)"
    r"|up to a \S+ block range|logs matched by query exceeds|max(imum)? (results|logs) "
    r"|range limit|returned too many"
)
_RATE_RE: Final = re.compile(
    r"rate.?limit|too many requests|limit exceeded|exceeded .*(quota|capacity|credits)"
    r"|compute units|throughput|request count exceeded|capacity exceeded"
)
# -32000 is both "try again" (header not found, missing trie node, timeouts) and the answer
# to a bad transaction or call; these wordings are answers and never change on retry.
_FINAL_MSG_RE: Final = re.compile(
    r"revert|nonce too (low|high)|already known|known transaction|insufficient funds"
    r"|underpriced|intrinsic gas|exceeds block gas limit|gas too low|invalid|fee cap"
    r"|max fee per gas|not supported|oversized data|tx fee|unsupported"
)
_TAG_MISSING_RE: Final = re.compile(r"unknown block|not found|not supported|unsupported|invalid")
_FINAL_CODES: Final = frozenset({-32700, -32600, -32601, -32602, -32003, -32004, -32006})
_RATE_CODES: Final = frozenset({429, -32005, -32029, -32090})
_SUGGESTED_RANGE_RE: Final = re.compile(r"\[(0x[0-9a-fA-F]+),\s*(0x[0-9a-fA-F]+)\]")
_SUGGESTED_SPAN_RE: Final = re.compile(
    r"up to an? ([\d,]+)(k?) block range|limited to an? ([\d,]+)"
)
_LONG_SEGMENT: Final = 16


class ExecutionReverted(RpcError):
    """The call reverted; ``data`` holds the hex revert data for decoding custom errors."""

    def __init__(self, message: str | None = None, code: int | None = None, data: str = "0x"):
        super().__init__(message, code)
        self.data = data


class Transient(RpcUnavailable):
    """One attempt failed for a reason another attempt (or endpoint) may not have."""

    def __init__(self, kind: str, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.retry_after_s = retry_after_s


class RangeTooLarge(RpcError):
    """The provider refused the eth_getLogs range as too wide or too many results."""

    def __init__(self, message: str, code: int | None, suggested_span: int | None) -> None:
        super().__init__(message, code)
        self.suggested_span = suggested_span


class ResponseTooLarge(RangeTooLarge):
    """The answer exceeded the client's size cap; for eth_getLogs a smaller range may pass."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"RPC answer larger than {cap} bytes (max_response_mb)", None, None)


def redact_url(url: str) -> str:
    """``url`` without credentials: userinfo, query, fragment and key-like path segments go.

    Providers put API keys in the userinfo, the query string or a long path segment
    (``/v3/<key>``, ``/v2/<key>``), so all three are masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{port}" if port else "")
    segments = ["***" if len(s) >= _LONG_SEGMENT else s for s in parts.path.split("/")]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, "/".join(segments), query, ""))


def classify_error(code: int | None, message: str, method: str = "") -> ErrorKind:
    """What the caller should do with a JSON-RPC error: shrink, back off, retry, or raise."""
    msg = message.lower()
    if method == "eth_getLogs" and _RANGE_RE.search(msg):
        return "range"
    if code in _RATE_CODES or _RATE_RE.search(msg):
        return "rate_limited"
    if code == 3 or "revert" in msg:
        return "revert"
    if code in _FINAL_CODES:
        return "fatal"
    if code is not None and (code == -32603 or -32099 <= code <= -32000):
        return "fatal" if _FINAL_MSG_RE.search(msg) else "retry"
    return "fatal"


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    rng: random.Random,
    retry_after_s: float | None = None,
) -> float:
    """Full-jitter backoff after failed attempt ``attempt`` (0-based), at most ``max_s``.

    A server's Retry-After is honoured as a lower bound, itself capped at ``max_s`` so that
    a hostile or confused provider cannot park the follower for hours."""
    cap = min(max_s, base_s * (2 ** min(attempt, 30)))
    delay = rng.uniform(0.0, cap)
    if retry_after_s is not None:
        delay = max(delay, min(max(retry_after_s, 0.0), max_s))
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from an HTTP Retry-After header (seconds or a date), None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _revert_data(data: Any, message: str) -> str:
    """The hex revert data wherever the node put it (``data``, nested, or in the message)."""
    if isinstance(data, str) and HEX_RE.match(data):
        return data.lower()
    if isinstance(data, dict):
        for key in ("data", "originalError", "result"):
            found = _revert_data(data.get(key), "")
            if found != "0x":
                return found
    found_in_msg = re.search(r"0x[0-9a-fA-F]{8,}", message)
    return found_in_msg.group(0).lower() if found_in_msg else "0x"


def _suggested_span(message: str) -> int | None:
    """The range a provider says would work (Alchemy's ``[0x.., 0x..]``, "up to a 2K")."""
    if m := _SUGGESTED_RANGE_RE.search(message):
        span = int(m.group(2), 16) - int(m.group(1), 16) + 1
        return span if span > 0 else None
    if m := _SUGGESTED_SPAN_RE.search(message.lower()):
        digits = (m.group(1) or m.group(3) or "").replace(",", "")
        if digits.isdigit():
            return int(digits) * (1000 if m.group(2) else 1) or None
    return None


def error_from(  # noqa: PLR0911 (one exception per kind of JSON-RPC error)
    error: Any, method: str, params: Sequence[Any] = ()
) -> RpcError | Transient:
    """The exception for one JSON-RPC error object (not raised: the caller picks one)."""
    if not isinstance(error, dict):
        return Transient("bad_response", "malformed JSON-RPC error")
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    message = str(error.get("message", ""))[:500]
    text = f"{method}: {message} (code {code})"
    is_tag = method == "eth_getBlockByNumber" and bool(params) and params[0] in BLOCK_TAGS
    if is_tag and _TAG_MISSING_RE.search(message.lower()):
        return RpcError(text, code)
    kind = classify_error(code, message, method)
    if kind == "range":
        return RangeTooLarge(text, code, _suggested_span(message))
    if kind == "rate_limited":
        return Transient("rate_limited", text)
    if kind == "retry":
        return Transient("server_error", text)
    if kind == "revert":
        return ExecutionReverted(text, code, _revert_data(error.get("data"), message))
    return RpcError(text, code)


def _pick(errors: list[RpcError | Transient]) -> RpcError | Transient:
    """The error that decides a batch: a rate limit, then anything transient (the whole batch
    is retried), then a range error (the range shrinks), then the first deterministic one."""
    ranked = sorted(
        errors,
        key=lambda e: (
            0
            if isinstance(e, Transient) and e.kind == "rate_limited"
            else 1
            if isinstance(e, Transient)
            else 2
            if isinstance(e, RangeTooLarge)
            else 3
        ),
    )
    return ranked[0]


def parse_response(  # noqa: PLR0912 (each malformed shape of an answer is refused apart)
    data: Any, calls: Sequence[tuple[str, list[Any]]], *, single: bool
) -> list[Any]:
    """Results of ``calls`` in call order from a decoded response, matched by id.

    Raises a retryable ``RpcUnavailable`` for a malformed or incomplete answer and the error
    picked by :func:`_pick` when some call failed."""
    if single:
        if not isinstance(data, dict):
            raise Transient("bad_response", "response is not a JSON-RPC object")
        by_id: dict[int, Any] = {0: data}
    else:
        if isinstance(data, dict) and data.get("error") is not None:
            raise error_from(data["error"], calls[0][0] if len(calls) == 1 else "batch")
        if not isinstance(data, list):
            raise Transient("bad_response", "batch response is not a list")
        by_id = {}
        for item in data:
            ident = item.get("id") if isinstance(item, dict) else None
            if isinstance(ident, int) and not isinstance(ident, bool):
                by_id[ident] = item
        missing = [i for i in range(len(calls)) if i not in by_id]
        if missing:
            raise Transient("bad_response", f"batch response lacks {len(missing)} id(s)")
    results: list[Any] = []
    errors: list[RpcError | Transient] = []
    for i, (method, params) in enumerate(calls):
        item = by_id[i]
        if item.get("error") is not None:
            errors.append(error_from(item["error"], method, params))
            results.append(None)
        elif "result" not in item:
            raise Transient("bad_response", f"{method}: response has neither result nor error")
        else:
            results.append(item["result"])
    if errors:
        raise _pick(errors)
    return results


def block_param(block: int | str) -> str:
    """The JSON-RPC block parameter for a number or a tag (ValueError for an unknown tag)."""
    if isinstance(block, int):
        return hex(block)
    if block not in BLOCK_TAGS:
        raise ValueError(f"unknown block tag {block!r}")
    return block
