"""What a node says, checked: headers, logs and fetched ranges parsed from JSON-RPC answers
and validated (P6) before anyone may commit them.

Like Shovel's ``validate()``: the range's first and last blocks are the ones asked for, headers
chain by parent hash, every log lies inside the range, comes from a requested address, carries
its block's hash, and appears once. Hex is normalised to lowercase here, once.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Collection, Mapping
from typing import Any, Final

import orjson

from indexer.errors import InvalidRpcData, LaggingNode
from indexer.types import BlockHeader, RangeResult, RawLog, Receipt

HEX_RE: Final = re.compile(r"0x[0-9a-fA-F]*\Z")
_LOWER_HEX: Final = re.compile(r"0x[0-9a-f]*\Z")
_LOWER_WORD: Final = re.compile(r"0x[0-9a-f]{64}\Z").match  # a 32-byte word, as nodes send it


def hex_field(value: Any, what: str, *, length: int | None = None) -> str:
    """A 0x hex string field, lowercased; InvalidRpcData when malformed or of another length."""
    if not isinstance(value, str) or not HEX_RE.match(value):
        raise InvalidRpcData(f"{what} is not 0x hex")
    if length is not None and len(value) != length:
        raise InvalidRpcData(f"{what} has length {len(value)}, expected {length}")
    return value.lower()


# Bounds of what a sane node can say, so that a value the tables cannot hold is refused at the
# edge (a named InvalidRpcData that halts the chain when it persists) instead of failing
# inside a commit: BIGINT columns, and timestamps up to 9999-12-31 (Python's datetime).
MAX_INT64: Final = 2**63 - 1
MAX_TIMESTAMP: Final = 253_402_300_799


def qty_field(value: Any, what: str, maximum: int | None = None) -> int:
    """A 0x hex quantity as an int; InvalidRpcData when malformed or above ``maximum``."""
    if not isinstance(value, str) or len(value) < 3 or not HEX_RE.match(value):
        raise InvalidRpcData(f"{what} is not a hex quantity")
    number = int(value, 16)
    if maximum is not None and number > maximum:
        raise InvalidRpcData(f"{what} {number} is out of range (max {maximum})")
    return number


def parse_header(raw: Any) -> BlockHeader:
    """A header from a node's block object; raises InvalidRpcData on any malformed field."""
    if not isinstance(raw, dict):
        raise InvalidRpcData("block is not an object")
    return BlockHeader(
        number=qty_field(raw.get("number"), "block number", MAX_INT64),
        hash=hex_field(raw.get("hash"), "block hash", length=66),
        parent_hash=hex_field(raw.get("parentHash"), "parent hash", length=66),
        timestamp=qty_field(raw.get("timestamp"), "block timestamp", MAX_TIMESTAMP),
        logs_bloom=_bloom(raw.get("logsBloom")),
    )


def parse_receipt(raw: Any) -> Receipt:
    """A receipt from ``eth_getTransactionReceipt``; InvalidRpcData on any malformed field
    (a pusher never reads a raw answer with ``dict.get``)."""
    if not isinstance(raw, dict):
        raise InvalidRpcData("receipt is not an object")
    status = qty_field(raw.get("status"), "receipt status")
    if status not in (0, 1):
        raise InvalidRpcData(f"receipt status {status} is neither 0 nor 1")
    logs = raw.get("logs")
    if not isinstance(logs, list):
        raise InvalidRpcData("receipt logs are not a list")
    return Receipt(
        tx_hash=hex_field(raw.get("transactionHash"), "receipt transactionHash", length=66),
        status=status,
        block_number=qty_field(raw.get("blockNumber"), "receipt blockNumber"),
        block_hash=hex_field(raw.get("blockHash"), "receipt blockHash", length=66),
        gas_used=qty_field(raw.get("gasUsed"), "receipt gasUsed"),
        logs=tuple(parse_log(x) for x in logs),
    )


def _bloom(value: Any) -> bytes | None:
    """The 256-byte logs bloom, or None when absent or malformed (then it proves nothing)."""
    if isinstance(value, str) and len(value) == 514 and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return None
    return None


class _Seen:
    """Validated field values of one response, so a value repeated across its logs (the block
    hash, the transaction hash, the address, topic0, a token topic, small quantities) is
    checked once. The profile of a 200,000-log backfill had a third of its time in
    ``parse_log``, most of it re-validating the same strings. Keyed by exact input string
    per field kind, so a hit is the very answer ``_hex``/``_qty`` gave for that string."""

    __slots__ = ("h42", "h66", "qty")

    def __init__(self) -> None:
        self.h66: dict[str, str] = {}
        self.h42: dict[str, str] = {}
        self.qty: dict[str, int] = {}

    def hash66(self, value: Any, what: str) -> str:
        if type(value) is str:
            hit = self.h66.get(value)
            if hit is not None:
                return hit
            out = self.h66[value] = hex_field(value, what, length=66)
            return out
        return hex_field(value, what, length=66)

    def new_words(self, topics: list[Any], words: tuple[str | None, ...]) -> tuple[str, ...]:
        """``topics`` validated, given the cached answers ``words`` (None where a topic was
        not seen yet): only those are checked (a canonical lowercase word is its own answer)."""
        out: list[str] = []
        for topic, cached in zip(topics, words, strict=True):
            if cached is not None:
                out.append(cached)
            elif type(topic) is str and _LOWER_WORD(topic):
                out.append(self.h66.setdefault(topic, topic))
            else:
                out.append(self.hash66(topic, "log topic"))
        return tuple(out)

    def number(self, value: Any, what: str) -> int:
        if type(value) is str:
            hit = self.qty.get(value)
            if hit is not None:
                return hit
            out = self.qty[value] = qty_field(value, what, MAX_INT64)
            return out
        return qty_field(value, what, MAX_INT64)


def parse_log(raw: Any, seen: _Seen | None = None) -> RawLog:
    """A log from a node's log object; raises InvalidRpcData on any malformed field.

    ``seen`` shares validated values between the logs of one response (see ``_Seen``)."""
    if not isinstance(raw, dict):
        raise InvalidRpcData("log is not an object")
    if raw.get("removed", False) is not False:
        raise InvalidRpcData("log marked removed (reorged away)")
    memo = seen or _Seen()
    data = hex_field(raw.get("data"), "log data")
    topics = raw.get("topics")
    if not isinstance(topics, list) or len(topics) > 4 or len(data) % 2:
        raise InvalidRpcData("log topics or data malformed")
    address = raw.get("address")
    addr = memo.h42.get(address) if type(address) is str else None
    if addr is None:
        addr = hex_field(address, "log address", length=42)
        if type(address) is str:
            memo.h42[address] = addr
    h66 = memo.hash66
    return RawLog(
        block_number=memo.number(raw.get("blockNumber"), "log blockNumber"),
        block_hash=h66(raw.get("blockHash"), "log blockHash"),
        tx_hash=h66(raw.get("transactionHash"), "log transactionHash"),
        tx_index=memo.number(raw.get("transactionIndex"), "log transactionIndex"),
        log_index=memo.number(raw.get("logIndex"), "log logIndex"),
        address=addr,
        topics=tuple([h66(t, "log topic") for t in topics]),
        data=data,
    )


def parse_logs(logs_raw: list[Any]) -> list[RawLog]:
    """``parse_log`` of every log of one response, with a fast path for the common case.

    A log whose repeated fields (block and transaction hashes, numbers, address, topics)
    were all validated earlier in the response and whose data is lowercase hex is built from
    those cached answers directly (a topic seen for the first time is checked on the spot:
    wallets are many); any other log (first sight of a block or transaction, an odd field,
    anything malformed) takes ``parse_log``, which validates it field by field, raises the
    precise InvalidRpcData and fills the cache. Either way the result is what ``parse_log``
    gives: the fast path is only a cache of its answers."""
    memo = _Seen()
    h66, h42, qty = memo.h66, memo.h42, memo.qty
    checked_word = h66.get
    lower_hex = _LOWER_HEX.match
    new = tuple.__new__  # RawLog(...) without NamedTuple's Python-level __new__
    out: list[RawLog] = []
    append = out.append
    for raw in logs_raw:
        if type(raw) is RawLog:  # read and validated by ``loads_answer``
            append(raw)
            continue
        try:
            topics, data = raw["topics"], raw["data"]
            if (
                raw.get("removed", False) is False
                and type(data) is str
                and not len(data) % 2
                and lower_hex(data)
                and type(topics) is list
                and len(topics) <= 4
            ):
                words = tuple(map(checked_word, topics))
                if None in words:  # a topic seen for the first time (a new wallet): check it
                    words = memo.new_words(topics, words)
                append(
                    new(
                        RawLog,
                        (
                            qty[raw["blockNumber"]],
                            h66[raw["blockHash"]],
                            h66[raw["transactionHash"]],
                            qty[raw["transactionIndex"]],
                            qty[raw["logIndex"]],
                            h42[raw["address"]],
                            words,
                            data,
                        ),
                    )
                )
                continue
        except (KeyError, TypeError):  # not seen yet, or not of a cacheable type
            pass
        append(parse_log(raw, memo))
    return out


# ---- the fast path for large log answers -------------------------------------------------
#
# A 20,000-log eth_getLogs answer cost the backfill's profile more in turning JSON into
# dicts (orjson) and dicts into validated RawLogs (``parse_logs``) than anything else:
# ~8 us per log. ``loads_answer`` reads the log arrays of a large answer with one regex per
# log instead, whose grammar is the validation itself (lowercase hex of the exact length,
# quantities, ``removed`` false), and gives RawLogs straight away (~4 us per log). It is a
# cache of the exact path's answers, never a second opinion: an array it does not read
# completely (another key order it cannot build a pattern for, an unknown or escaped key,
# uppercase hex, a quantity of 16 hex digits or more, odd data) is left to orjson and
# ``parse_logs``, which then accept or refuse it exactly as before.

FAST_ANSWER_MIN: Final = 64 * 1024  # smaller answers go to orjson whole
_H64: Final = '"(0x[0-9a-f]{64})"'
_QTY: Final = '"(0x[0-9a-f]{1,15})"'  # < 2**60: within the tables' BIGINT (MAX_INT64)
_FIELD_PATTERNS: Final = {
    "address": '"(0x[0-9a-f]{40})"',
    "topics": r'\[((?:"0x[0-9a-f]{64}"(?:,"0x[0-9a-f]{64}"){0,3})?)\]',
    "data": '"(0x[0-9a-f]*)"',  # whole bytes: checked per log (an even length)
    "blockHash": _H64,
    "transactionHash": _H64,
    "blockNumber": _QTY,
    "transactionIndex": _QTY,
    "logIndex": _QTY,
    "blockTimestamp": '"0x[0-9a-f]{1,16}"',  # not read (parse_log ignores it), not captured
    "removed": "false",
}
# RawLog's fields in order, from the captured groups
_RAWLOG_KEYS: Final = (
    "blockNumber",
    "blockHash",
    "transactionHash",
    "transactionIndex",
    "logIndex",
    "address",
    "topics",
    "data",
)
_RESULT_ARRAY: Final = '"result":[{'  # found with str.find: a regex walked every quote
_patterns: dict[tuple[str, ...], tuple[re.Pattern[str], Any] | None] = {}


def _log_pattern(keys: tuple[str, ...]) -> tuple[re.Pattern[str], Any] | None:
    """The compiled grammar of a log object with exactly ``keys`` in that order, and the
    getter of RawLog's groups from its match; None for keys it does not cover."""
    if keys in _patterns:
        return _patterns[keys]
    found = None
    if set(_RAWLOG_KEYS) <= set(keys) <= set(_FIELD_PATTERNS) and len(set(keys)) == len(keys):
        body = ",".join(f'"{k}":{_FIELD_PATTERNS[k]}' for k in keys)
        captured = [k for k in keys if k in _RAWLOG_KEYS]  # the groups, in key order
        getter = operator.itemgetter(*(captured.index(k) for k in _RAWLOG_KEYS), len(captured))
        found = (re.compile(r"\{" + body + r"\}(,|\])"), getter)
    if len(_patterns) < 64:  # a node uses one or two orders; a hostile one cannot grow this
        _patterns[keys] = found
    return found


def _first_pattern(text: str, start: int) -> tuple[re.Pattern[str], Any] | None:
    """The pattern of the key order of the object starting at ``text[start]`` (a log has
    no nested object: it ends at the first ``}``)."""
    end = text.find("}", start)
    try:
        first = orjson.loads(text[start : end + 1]) if end > 0 else None
    except orjson.JSONDecodeError:
        return None
    return _log_pattern(tuple(first)) if isinstance(first, dict) else None


def _scan_logs(text: str, start: int) -> tuple[list[RawLog], int] | None:
    """The logs of the JSON array whose first object starts at ``text[start]``, and the
    index just past its ``]``; None unless every element matches the grammar of the first
    one's key order."""
    compiled = _first_pattern(text, start)
    if compiled is None:
        return None
    match, getter = compiled[0].match, compiled[1]
    new = tuple.__new__  # RawLog(...) without NamedTuple's Python-level __new__
    # One object per distinct hash, address and topic, as parse_logs shares them: the logs
    # of a block, a transaction, a contract or an event repeat them (a third of the memory
    # of the ranges in flight otherwise; ~0.3 us per log).
    shared: dict[str, str] = {}
    one = shared.setdefault
    out: list[RawLog] = []
    append = out.append
    pos = start
    while True:
        m = match(text, pos)
        if m is None:
            return None
        block, bhash, thash, txi, logi, address, topics, data, sep = getter(m.groups())
        if len(data) % 2:
            return None
        words = topics[1:-1].split('","') if topics else ()
        append(
            new(
                RawLog,
                (
                    int(block, 16),
                    one(bhash, bhash),
                    one(thash, thash),
                    int(txi, 16),
                    int(logi, 16),
                    one(address, address),
                    tuple(map(one, words, words)),
                    data,
                ),
            )
        )
        pos = m.end()
        if sep == "]":  # else the next match, anchored at ``pos``, must start with "{"
            return out, pos


def loads_answer(payload: bytes, *, min_size: int = FAST_ANSWER_MIN) -> Any:
    """``orjson.loads`` of a JSON-RPC answer (one response or a batch), except that a
    top-level ``result`` array of logs is given as a list of validated RawLogs when the fast
    path reads all of it (see above; ``parse_logs`` passes RawLogs through). Answers under
    ``min_size`` bytes go to orjson whole. Raises what orjson.loads raises."""
    if len(payload) < min_size or _RESULT_ARRAY.encode() not in payload:
        return orjson.loads(payload)
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return orjson.loads(payload)
    token = os.urandom(8).hex()  # a node cannot plant the placeholder it cannot guess
    pieces: list[str] = []
    arrays: dict[str, list[RawLog]] = {}
    pos = at = 0  # text[:pos] is in pieces; the next array is looked for from ``at``
    while (found := text.find(_RESULT_ARRAY, at)) >= 0:
        start = found + len(_RESULT_ARRAY) - 1  # its first object
        scanned = _scan_logs(text, start)
        if scanned is None:
            at = start
            continue
        key = f"{token}:{len(arrays)}"
        pieces += (text[pos : start - 1], f'"{key}"')
        arrays[key], pos = scanned
        at = pos
    if not arrays:
        return orjson.loads(payload)
    pieces.append(text[pos:])
    doc = orjson.loads("".join(pieces))
    for response in doc if isinstance(doc, list) else [doc]:
        result = response.get("result") if isinstance(response, dict) else None
        if type(result) is str and result in arrays:
            response["result"] = arrays.pop(result)
    if arrays:  # a cut array was not a top-level result: read the answer the exact way
        return orjson.loads(payload)
    return doc


def _check_headers(
    from_block: int, to_block: int, headers_raw: Mapping[int, Any], full_headers: bool
) -> dict[int, BlockHeader]:
    if headers_raw.get(to_block) is None:
        raise LaggingNode(f"node has no header for block {to_block} yet")
    headers: dict[int, BlockHeader] = {}
    for number, raw in headers_raw.items():
        if raw is None:
            raise InvalidRpcData(f"gap: header {number} missing while {to_block} is present")
        header = parse_header(raw)
        if header.number != number:
            raise InvalidRpcData(f"asked for block {number}, got block {header.number}")
        headers[number] = header
    if full_headers:
        if set(headers) != set(range(from_block, to_block + 1)):
            raise InvalidRpcData(f"headers of {from_block}..{to_block} are not contiguous")
        for n in range(from_block + 1, to_block + 1):
            if headers[n].parent_hash != headers[n - 1].hash:
                raise InvalidRpcData(f"corrupt chain segment: parent hash of block {n}")
    return headers


def validate_range(  # noqa: PLR0913 (the answer of one batch; the checks keyword-only)
    from_block: int,
    to_block: int,
    logs_raw: Any,
    headers_raw: Mapping[int, Any],
    *,
    full_headers: bool,
    addresses: Collection[str] | None = None,
    topics: Collection[str] | None = None,
) -> RangeResult:
    """Check a fetched range like Shovel's ``validate()`` and turn it into a RangeResult.

    Raises LaggingNode when the header of ``to_block`` is missing (the node is behind; retry
    later) and InvalidRpcData for anything that does not verify: malformed fields, a header
    gap or broken parent link (``full_headers``), a log outside the range, from an address or
    with a topic0 not asked for, with a block hash other than its fetched header's,
    duplicated, or ``removed``.
    """
    headers = _check_headers(from_block, to_block, headers_raw, full_headers)
    if not isinstance(logs_raw, list):
        raise InvalidRpcData("eth_getLogs result is not a list")
    wanted = {a.lower() for a in addresses} if addresses is not None else None
    wanted_topics = {t.lower() for t in topics} if topics is not None else None
    logs = parse_logs(logs_raw)
    last_block = last_index = -1
    in_order = True
    for entry in logs:
        number, index = entry.block_number, entry.log_index
        if not from_block <= number <= to_block:
            raise InvalidRpcData(f"log at block {number} outside the range")
        if wanted is not None and entry.address not in wanted:
            raise InvalidRpcData(f"log from an address not asked for at {number}")
        if wanted_topics is not None and (not entry.topics or entry.topics[0] not in wanted_topics):
            raise InvalidRpcData(f"log with a topic0 not asked for at {number}")
        header = headers.get(number)
        if header is not None and header.hash != entry.block_hash:
            raise InvalidRpcData(f"log block hash differs from header {number}")
        if in_order and (number > last_block or (number == last_block and index > last_index)):
            last_block, last_index = number, index
        else:
            in_order = False
    if not in_order:  # nodes answer in chain order; anything else is checked and sorted
        seen: set[tuple[int, int]] = set()
        for entry in logs:
            if entry.key in seen:
                raise InvalidRpcData(f"duplicate log {entry.key}")
            seen.add(entry.key)
        logs.sort(key=lambda entry: entry.key)
    return RangeResult(from_block=from_block, to_block=to_block, logs=logs, headers=headers)
