"""Fuzz of the decode -> COPY path: a log of a watched contract must either land in exactly one
table with the commit succeeding, or be quarantined with a reason. Nothing in between: an
exception out of ``write_rows`` (a NUL PostgreSQL refuses, a COPY escape gone wrong, a value a
column cannot hold) would stop the follower on that block for good, and a log decoded to
values other than the ones encoded would be stored wrong silently.

Hypothesis generates event ABIs (elementary types, ``T[]`` / ``T[k]`` and tuples nested two
levels, up to three static indexed parameters) and values of them (strings with NUL, tabs,
backslashes, ``\\N``, unicode; integers at their bounds; empty arrays), encodes them with
eth_abi, decodes through ``AbiRegistry`` and writes the batch with ``write_rows`` in a
transaction rolled back after each example. A second property mutates those encodings
(truncation, hostile offsets and lengths, dirty words and topics); a table of hand-made
hostile logs (invalid UTF-8, huge lengths, a 10**6-element array) pins the expected outcome
of each.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from indexer.decode import EVENT_TABLE_NAMES, EVENT_TABLES, AbiRegistry, Event, Undecodable
from indexer.sink import Batch, event_row, write_rows
from indexer.types import BlockHeader, RawLog

pytestmark = pytest.mark.pg

CHAIN = 31337
BLOCK = 7
HEADER = BlockHeader(BLOCK, "0x" + "ab" * 32, "0x" + "ac" * 32, 1_700_000_000)
TX = "0x" + "cd" * 32
LOG_INDEX = 3
CONTRACT = "0x" + "55" * 20
ABI_NAME = "Fuzz"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the connection is shared on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# ---- a small model of ABI types -------------------------------------------------------------


@dataclass(frozen=True)
class Elem:
    """An elementary type: ``uint8``, ``int256``, ``address``, ``bool``, ``bytes4``, ..."""

    name: str


@dataclass(frozen=True)
class Arr:
    """``item[]`` (size None) or ``item[size]``."""

    item: Typ
    size: int | None


@dataclass(frozen=True)
class Tup:
    items: tuple[Typ, ...]


Typ = Elem | Arr | Tup


def canonical(t: Typ) -> str:
    """The type as it appears in the event signature (``(uint8,string)[2][]``)."""
    if isinstance(t, Elem):
        return t.name
    if isinstance(t, Arr):
        return f"{canonical(t.item)}[{'' if t.size is None else t.size}]"
    return f"({','.join(canonical(c) for c in t.items)})"


def abi_input(t: Typ, name: str) -> dict[str, Any]:
    """The ABI JSON of a parameter of type ``t`` (tuples as ``tuple[..]`` + components)."""
    suffix = ""
    while isinstance(t, Arr):
        suffix = f"[{'' if t.size is None else t.size}]{suffix}"
        t = t.item
    if isinstance(t, Tup):
        return {
            "name": name,
            "type": f"tuple{suffix}",
            "components": [abi_input(c, f"c{i}") for i, c in enumerate(t.items)],
        }
    return {"name": name, "type": f"{t.name}{suffix}"}


def is_static_elem(t: Typ) -> bool:
    return isinstance(t, Elem) and t.name not in ("bytes", "string")


def json_of(t: Typ, v: Any) -> Any:
    """What ``other_events.args`` must hold for value ``v``: integers as decimal strings,
    addresses and bytes as lowercase 0x hex, strings unchanged, arrays and tuples as lists."""
    if isinstance(t, Arr):
        return [json_of(t.item, x) for x in v]
    if isinstance(t, Tup):
        return [json_of(c, x) for c, x in zip(t.items, v, strict=True)]
    if t.name == "bool" or t.name == "string":
        return v
    if t.name.startswith(("uint", "int")):
        return str(v)
    return "0x" + bytes(v).hex()  # address, bytes, bytesN


def column_of(v: Any) -> Any:
    """What a project table's column must hold for value ``v`` (NUMERIC read back as int)."""
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return v


def has_nul(t: Typ, v: Any) -> bool:
    if isinstance(t, Arr):
        return any(has_nul(t.item, x) for x in v)
    if isinstance(t, Tup):
        return any(has_nul(c, x) for c, x in zip(t.items, v, strict=True))
    return t.name == "string" and "\x00" in v


# ---- generated events -----------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzParam:
    name: str  # "" is allowed: the decoder names it arg<n>
    typ: Typ
    indexed: bool


@dataclass(frozen=True)
class Case:
    """One event ABI, the values of one log of it and the table it belongs in."""

    event: str
    params: tuple[FuzzParam, ...]
    values: tuple[Any, ...]
    table: str

    @property
    def signature(self) -> str:
        return f"{self.event}({','.join(canonical(p.typ) for p in self.params)})"

    def abi(self) -> list[dict[str, Any]]:
        inputs = [{**abi_input(p.typ, p.name), "indexed": p.indexed} for p in self.params]
        return [{"type": "event", "name": self.event, "anonymous": False, "inputs": inputs}]

    def log(self) -> RawLog:
        topics = ["0x" + keccak(text=self.signature).hex()]
        plain_types: list[str] = []
        plain_values: list[Any] = []
        for p, v in zip(self.params, self.values, strict=True):
            if p.indexed:
                topics.append("0x" + encode([canonical(p.typ)], [v]).hex())
            else:
                plain_types.append(canonical(p.typ))
                plain_values.append(v)
        return make_log(topics, encode(plain_types, plain_values))

    @property
    def decodable(self) -> bool:
        """A well-formed encoding decodes, unless a string holds NUL (text and JSONB refuse it)."""
        return not any(has_nul(p.typ, v) for p, v in zip(self.params, self.values, strict=True))

    def expected_args(self) -> dict[str, Any]:
        return {
            p.name or f"arg{i}": json_of(p.typ, v)
            for i, (p, v) in enumerate(zip(self.params, self.values, strict=True))
        }

    def expected_columns(self) -> tuple[Any, ...]:
        if self.table == "other_events":
            return (self.event, self.expected_args())
        if self.table == "pusher_changes":
            return ("0x" + self.values[0].hex(), self.event == "PusherAuthorized")
        return tuple(column_of(v) for v in self.values)


def make_log(topics: Sequence[str], data: bytes) -> RawLog:
    return RawLog(BLOCK, HEADER.hash, TX, 0, LOG_INDEX, CONTRACT, tuple(topics), "0x" + data.hex())


HOSTILE_STRINGS = [
    "",
    "\x00",
    "a\x00b",
    "\t",
    "\\",
    "\n",
    "\r\n",
    "\\N",
    "\\.",
    "\\t",
    "\\u0000",
    '"quoted"',
    "'",
    "0xABCdef",  # text that looks like hex must not be lowercased
    "ünïcødé ✓",
    "𝄞 😀",
    "\u2028\u2029",
    "\x7f\x1b[31m",
    "{}",
    "NULL",
]
STRINGS = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=20),
    st.lists(st.sampled_from(HOSTILE_STRINGS) | st.text(max_size=4), max_size=4).map("".join),
)
STATIC_ELEMS: st.SearchStrategy[Typ] = st.one_of(
    st.integers(1, 32).map(lambda n: Elem(f"uint{8 * n}")),
    st.sampled_from([Elem("uint256"), Elem("int8"), Elem("int128"), Elem("int256")]),
    st.sampled_from([Elem("address"), Elem("bool")]),
    st.integers(1, 32).map(lambda n: Elem(f"bytes{n}")),
)
ELEMS: st.SearchStrategy[Typ] = STATIC_ELEMS | st.sampled_from([Elem("bytes"), Elem("string")])


def types(depth: int) -> st.SearchStrategy[Typ]:
    """Elementary types, arrays and tuples with at most ``depth`` levels of nesting."""
    if depth == 0:
        return ELEMS
    inner = types(depth - 1)
    return st.one_of(
        ELEMS,
        st.builds(Arr, inner, st.none() | st.integers(1, 3)),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: Tup(tuple(xs))),
    )


TYPES = types(2)


def elem_values(name: str) -> st.SearchStrategy[Any]:
    if name.startswith("uint"):
        top = 2 ** int(name[4:]) - 1
        return st.sampled_from([0, 1, top]) | st.integers(0, top)
    if name.startswith("int"):
        half = 2 ** (int(name[3:]) - 1)
        return st.sampled_from([0, -1, -half, half - 1]) | st.integers(-half, half - 1)
    if name == "address":
        return st.binary(min_size=20, max_size=20)
    if name == "bool":
        return st.booleans()
    if name == "string":
        return STRINGS
    if name == "bytes":
        return st.just(b"") | st.binary(max_size=70)
    size = int(name[5:])
    return st.binary(min_size=size, max_size=size)


def values_of(t: Typ) -> st.SearchStrategy[Any]:
    if isinstance(t, Elem):
        return elem_values(t.name)
    if isinstance(t, Arr):
        item = values_of(t.item)
        if t.size is None:
            return st.just([]) | st.lists(item, max_size=4)
        return st.lists(item, min_size=t.size, max_size=t.size)
    return st.tuples(*(values_of(c) for c in t.items))


@st.composite
def random_events(draw: st.DrawFn) -> Case:
    """An event no project table knows (so `other_events`), of 1-4 generated parameters."""
    n = draw(st.integers(1, 4))
    params: list[FuzzParam] = []
    n_indexed = 0
    for i in range(n):
        typ = draw(TYPES)
        indexed = is_static_elem(typ) and n_indexed < 3 and draw(st.booleans())
        n_indexed += indexed
        params.append(FuzzParam(draw(st.sampled_from([f"p{i}", ""])), typ, indexed))
    name = draw(st.from_regex(r"[A-Z][A-Za-z0-9_]{0,11}", fullmatch=True))
    values = tuple(draw(values_of(p.typ)) for p in params)
    return Case(name, tuple(params), values, "other_events")


KNOWN = sorted(EVENT_TABLES.items())


@st.composite
def known_events(draw: st.DrawFn) -> Case:
    """An event of a project table (its exact signature, indexed flags and names)."""
    (signature, flags, names), table = draw(st.sampled_from(KNOWN))
    name, _, rest = signature.partition("(")
    params = tuple(
        FuzzParam(pname, Elem(typ), flag)
        for typ, flag, pname in zip(rest[:-1].split(","), flags, names, strict=True)
    )
    values = tuple(draw(values_of(p.typ)) for p in params)
    return Case(name, params, values, table)


CASES = st.one_of(random_events(), random_events(), known_events())


# ---- the store and the property -------------------------------------------------------------


@dataclass
class Db:
    runner: asyncio.Runner
    con: asyncpg.Connection


@pytest.fixture
def pg(db_dsn: str) -> Iterator[Db]:
    """One connection for all the examples of a test (each runs in a rolled-back transaction)."""
    with asyncio.Runner() as runner:
        con = runner.run(asyncpg.connect(db_dsn))
        try:
            yield Db(runner, con)
        finally:
            runner.run(con.close())


_COUNTS = " UNION ALL ".join(
    f"SELECT '{t}', count(*) FROM {t} WHERE chain_id = $1" for t in (*EVENT_TABLE_NAMES, "blocks")
)


@dataclass(frozen=True)
class Stored:
    written: dict[str, int]
    counts: dict[str, int]  # tables with rows, blocks included
    rows: dict[str, list[tuple[Any, ...]]]  # rows of every event table with rows


def _plain(value: Any) -> Any:
    """A NUMERIC read back as the int it holds."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def _batch(outcome: Event | Undecodable) -> Batch:
    return Batch(
        chain_id=CHAIN,
        from_block=BLOCK,
        to_block=BLOCK,
        parent=(BLOCK - 1, None),
        head=HEADER,
        headers=[HEADER],
        events=[outcome] if isinstance(outcome, Event) else [],
        quarantined=[outcome] if isinstance(outcome, Undecodable) else [],
        header_by_number={BLOCK: HEADER},
    )


async def _store(con: asyncpg.Connection, outcome: Event | Undecodable) -> Stored:
    """write_rows of the one-log batch, what the tables then hold, and a rollback."""
    tr = con.transaction()
    await tr.start()
    try:
        written = await write_rows(con, _batch(outcome))
        counts = {t: n for t, n in await con.fetch(_COUNTS, CHAIN) if n}
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for table in counts:
            if table != "blocks":
                found = await con.fetch(f"SELECT * FROM {table} WHERE chain_id = $1", CHAIN)
                rows[table] = [tuple(_plain(v) for v in r.values()) for r in found]
        return Stored(written, counts, rows)
    finally:
        await tr.rollback()


def decode(abi: list[dict[str, Any]], log: RawLog) -> Event | Undecodable:
    reg = AbiRegistry()
    reg.add_abi(ABI_NAME, abi)
    reg.bind(CONTRACT, ABI_NAME)
    return reg.decode(log)


BASE = (CHAIN, BLOCK, HEADER.hash, datetime.fromtimestamp(HEADER.timestamp, UTC), TX, LOG_INDEX)


def check_landed(db: Db, log: RawLog, outcome: Event | Undecodable) -> tuple[Any, ...]:
    """The property: one row in the event's table, or one quarantine row with the reason;
    any exception out of write_rows fails it. Returns the stored row past the base columns."""
    stored = db.runner.run(_store(db.con, outcome))
    table = outcome.spec.table if isinstance(outcome, Event) else "quarantine"
    if isinstance(outcome, Undecodable):
        assert isinstance(outcome.reason, str)
        assert outcome.reason.strip(), "quarantined without a reason"
    assert stored.written == {table: 1}, stored.written
    assert stored.counts == {table: 1, "blocks": 1}, stored.counts
    (row,) = stored.rows[table]
    assert row[:7] == (*BASE, log.address), row[:7]
    if isinstance(outcome, Undecodable):
        assert row[7:] == (list(log.topics), log.data, outcome.reason[:1000])
        return row[7:]
    want = tuple(_plain(v) for v in event_row(CHAIN, outcome, HEADER))
    if table == "other_events":  # JSONB: compare the documents
        assert json.loads(row[8]) == json.loads(want[8])
        return (row[7], json.loads(row[8]))
    assert row == want
    return row[7:]


# ---- properties -----------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(case=CASES)
def test_generated_log_lands_in_one_table_or_quarantine(pg: Db, case: Case) -> None:
    """A well-formed log of a generated ABI: stored, with exactly the values encoded; or, when
    a string holds NUL, quarantined with a reason."""
    log = case.log()
    outcome = decode(case.abi(), log)
    event(type(outcome).__name__)
    event(case.table if case.table == "other_events" else "project table")
    stored = check_landed(pg, log, outcome)
    if not case.decodable:
        assert isinstance(outcome, Undecodable)
        assert "NUL" in outcome.reason, outcome.reason
        return
    assert isinstance(outcome, Event), f"a well-formed log was quarantined: {outcome.reason}"
    assert outcome.spec.table == case.table
    assert stored == case.expected_columns()


@dataclass(frozen=True)
class Mutation:
    """One change to a log: ``at`` picks the position (modulo what there is)."""

    kind: str
    at: int
    word: int | str  # a 32-byte value, or one relative to the data length ("len-32", ...)

    def value(self, data: bytes) -> int:
        if isinstance(self.word, int):
            return self.word
        return max(len(data) + int(self.word[3:]), 0)

    def apply(self, log: RawLog) -> RawLog:
        data = bytes.fromhex(log.data[2:])
        topics = list(log.topics)
        words = len(data) // 32
        if self.kind == "truncate" and data:
            data = data[: self.at % len(data)]
        elif self.kind == "truncate_words" and words:
            data = data[: 32 * (self.at % words)]
        elif self.kind == "word" and words:
            i = 32 * (self.at % words)
            data = data[:i] + self.value(data).to_bytes(32, "big") + data[i + 32 :]
        elif self.kind == "byte" and data:
            i = self.at % len(data)
            data = data[:i] + bytes([self.value(data) % 256]) + data[i + 1 :]
        elif self.kind == "append":
            data += self.value(data).to_bytes(32, "big")
        elif self.kind == "drop_topic" and len(topics) > 1:
            del topics[1 + self.at % (len(topics) - 1)]
        elif self.kind == "add_topic":
            topics.append("0x" + self.value(data).to_bytes(32, "big").hex())
        elif self.kind == "dirty_topic" and len(topics) > 1:
            topics[1 + self.at % (len(topics) - 1)] = "0x" + (b"\xff" + bytes(31)).hex()
        return log._replace(topics=tuple(topics), data="0x" + data.hex())


HOSTILE_WORDS: list[int | str] = [
    2**256 - 1,
    2**255,
    2**64,
    2**32,
    2**31 - 1,
    0,
    1,
    2,
    31,
    33,
    0xFF,
    0xC0,
    "len+0",
    "len-32",
    "len-31",
    "len+32",
    "len-64",
]
MUTATIONS = st.builds(
    Mutation,
    st.sampled_from(
        [
            *("truncate", "truncate_words", "word", "byte", "append"),
            *("drop_topic", "add_topic", "dirty_topic"),
        ]
    ),
    st.integers(0, 2**16),
    st.sampled_from(HOSTILE_WORDS) | st.integers(0, 2**256 - 1),
)


@FUZZ_SETTINGS
@given(case=CASES, mutations=st.lists(MUTATIONS, min_size=1, max_size=3))
def test_mutated_log_lands_in_one_table_or_quarantine(
    pg: Db, case: Case, mutations: list[Mutation]
) -> None:
    """Hostile encodings of generated ABIs: never an exception, always one row somewhere."""
    log = case.log()
    for m in mutations:
        log = m.apply(log)
    outcome = decode(case.abi(), log)
    event(type(outcome).__name__)
    check_landed(pg, log, outcome)


# ---- hand-made hostile logs -----------------------------------------------------------------


def w(n: int) -> bytes:
    return n.to_bytes(32, "big")


def padded(raw: bytes) -> bytes:
    return raw + bytes(-len(raw) % 32)


def ev(*inputs: tuple[str, str, bool] | dict[str, Any], name: str = "Hostile") -> dict[str, Any]:
    """An event entry from (type, name, indexed) triples or ready ABI inputs."""
    items = [
        i if isinstance(i, dict) else {"type": i[0], "name": i[1], "indexed": i[2]} for i in inputs
    ]
    return {"type": "event", "name": name, "anonymous": False, "inputs": items}


def sig_topic(entry: dict[str, Any], *, text: bool = False) -> str:
    """topic0 of an event entry (its signature with ``text``)."""

    def typ(i: dict[str, Any]) -> str:
        t = str(i["type"])
        if t.startswith("tuple"):
            return f"({','.join(typ(c) for c in i['components'])}){t[5:]}"
        return t

    signature = f"{entry['name']}({','.join(typ(i) for i in entry['inputs'])})"
    return signature if text else "0x" + keccak(text=signature).hex()


def replaced(data: bytes, marker: bytes, raw: bytes) -> bytes:
    """``data`` with the single occurrence of ``marker`` replaced by ``raw`` (same length):
    the way to put bytes no encoder accepts (invalid UTF-8) inside a valid layout."""
    assert data.count(marker) == 1
    assert len(marker) == len(raw)
    return data.replace(marker, raw)


@dataclass(frozen=True)
class Hostile:
    entry: dict[str, Any]
    data: bytes
    topics: tuple[str, ...] = ()  # after topic0
    quarantine: str | None = None  # a substring of the reason; None: must decode
    args: dict[str, Any] | None = None  # other_events args when it decodes
    either: bool = False  # no opinion on the outcome, only the property

    def __repr__(self) -> str:
        return f"Hostile({sig_topic(self.entry, text=True)}, {len(self.data)} bytes of data)"


STR = ev(("string", "s", False))
BYTES = ev(("bytes", "b", False))
UINTS = ev(("uint256[]", "xs", False))
STRS = ev(("string[]", "ss", False))
TUPLE_STR = {
    "type": "tuple[]",
    "name": "t",
    "indexed": False,
    "components": [{"type": "uint256", "name": "n"}, {"type": "string", "name": "s"}],
}
STATIC_TUPLE = {
    "type": "tuple",
    "name": "t",
    "indexed": False,
    "components": [{"type": "uint8", "name": "n"}, {"type": "bool", "name": "f"}],
}

HOSTILE: dict[str, Hostile] = {
    "truncated tail": Hostile(STR, encode(["string"], ["hello world"])[:64], quarantine="length"),
    "truncated mid-word": Hostile(STR, encode(["string"], ["hello"])[:70], quarantine="length"),
    "truncated array": Hostile(UINTS, encode(["uint256[]"], [[1, 2, 3]])[:-32], quarantine="uint"),
    "no data": Hostile(ev(("uint256", "n", False)), b"", quarantine="length"),
    "invalid UTF-8": Hostile(STR, w(32) + w(4) + padded(b"ab\xff\xfe"), quarantine="UTF-8"),
    "overlong NUL (modified UTF-8)": Hostile(
        STR, w(32) + w(2) + padded(b"\xc0\x80"), quarantine="UTF-8"
    ),
    "UTF-8 surrogate": Hostile(STR, w(32) + w(3) + padded(b"\xed\xa0\x80"), quarantine="UTF-8"),
    "invalid UTF-8 in string[]": Hostile(
        STRS,
        replaced(encode(["string[]"], [["ok", "XX"]]), b"XX", b"\xff\xfe"),
        quarantine="string",
    ),
    "invalid UTF-8 in tuple": Hostile(
        ev(TUPLE_STR),
        replaced(encode(["(uint256,string)[]"], [[(1, "XX")]]), b"XX", b"\x80\x80"),
        quarantine="string",
    ),
    "string length 2**256-1": Hostile(STR, w(32) + w(2**256 - 1) + w(0), quarantine="length"),
    "bytes offset 2**256-1": Hostile(BYTES, w(2**256 - 1) + w(0), quarantine="offset"),
    "misaligned string offset": Hostile(STR, w(33) + w(1) + w(0), quarantine="offset"),
    "array offset 2**256-1": Hostile(UINTS, w(2**256 - 1) + w(1) + w(5), quarantine="offset"),
    "array length 2**256-1": Hostile(
        UINTS, w(32) + w(2**256 - 1) + w(1) + w(2), quarantine="uint256[]"
    ),
    "string[] length 2**64": Hostile(STRS, w(32) + w(2**64) + w(64) + w(0), quarantine="string"),
    "string offset into the head": Hostile(STR, w(0), either=True),
    "trailing garbage": Hostile(STR, encode(["string"], ["x"]) + w(2**256 - 1), either=True),
    "NUL in string": Hostile(STR, encode(["string"], ["a\x00"]), quarantine="NUL"),
    "NUL in string[]": Hostile(STRS, encode(["string[]"], [["ok", "a\x00b"]]), quarantine="NUL"),
    "NUL in string[][]": Hostile(
        ev(("string[][]", "sss", False)),
        encode(["string[][]"], [[["x"], ["", "\x00"]]]),
        quarantine="NUL",
    ),
    "NUL in tuple[]": Hostile(
        ev(TUPLE_STR), encode(["(uint256,string)[]"], [[(1, "\x00")]]), quarantine="NUL"
    ),
    "NUL in a chama name": Hostile(
        ev(
            ("uint256", "chamaId", True),
            ("string", "name", False),
            ("address", "creator", True),
            ("uint256", "contributionAmount", False),
            name="ChamaCreated",
        ),
        encode(["string", "uint256"], ["bad\x00name", 1]),
        topics=("0x" + w(1).hex(), "0x" + w(0xBB).hex()),
        quarantine="NUL",
    ),
    "dirty address topic": Hostile(
        ev(("address", "a", True)), b"", topics=("0x" + "ff" * 32,), quarantine="address"
    ),
    "bool 2": Hostile(ev(("bool", "f", False)), w(2), quarantine="bool"),
    "uint8 256": Hostile(ev(("uint8", "n", False)), w(256), quarantine="uint8"),
    "int8 2**200 (not a sign extension)": Hostile(
        ev(("int8", "n", False)), w(2**200), quarantine="int8"
    ),
    "bytes4 dirty padding": Hostile(ev(("bytes4", "b", False)), w(1), quarantine="bytes4"),
    "one topic too many": Hostile(
        ev(("uint256", "n", False)), w(1), topics=("0x" + w(1).hex(),), quarantine="topics"
    ),
    "extremes": Hostile(
        ev(("uint256", "u", False), ("int256", "i", False), ("int256", "j", False)),
        encode(["uint256", "int256", "int256"], [2**256 - 1, -(2**255), 2**255 - 1]),
        args={"u": str(2**256 - 1), "i": str(-(2**255)), "j": str(2**255 - 1)},
    ),
    "empty arrays": Hostile(
        ev(("uint256[]", "a", False), ("string[]", "b", False), ("bytes[][]", "c", False)),
        encode(["uint256[]", "string[]", "bytes[][]"], [[], [], [[]]]),
        args={"a": [], "b": [], "c": [[]]},
    ),
    "static uint256[2]": Hostile(
        ev(("uint256[2]", "a", False)), encode(["uint256[2]"], [[0, 6]]), args={"a": ["0", "6"]}
    ),
    "static uint256[2] before a string": Hostile(
        ev(("uint256[2]", "a", False), ("string", "s", False)),
        encode(["uint256[2]", "string"], [[5, 6], "hi"]),
        args={"a": ["5", "6"], "s": "hi"},
    ),
    "static tuple": Hostile(
        ev(STATIC_TUPLE), encode(["(uint8,bool)"], [(1, True)]), args={"t": ["1", True]}
    ),
}


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_log(pg: Db, case: Hostile) -> None:
    """The property for a hand-made log, and the outcome it must have."""
    log = make_log((sig_topic(case.entry), *case.topics), case.data)
    outcome = decode([case.entry], log)
    stored = check_landed(pg, log, outcome)
    if case.either:
        return
    if case.quarantine is not None:
        assert isinstance(outcome, Undecodable), f"decoded to {outcome.values!r}"[:500]
        assert case.quarantine in outcome.reason, outcome.reason
        return
    assert isinstance(outcome, Event), outcome.reason
    if case.args is not None:
        assert stored == (case.entry["name"], case.args)


def test_million_element_array(pg: Db) -> None:
    """10**6 uint256 in one log (32 MB of data, its encoding built directly): decoded and
    stored as one other_events row whose args read back whole."""
    n = 10**6
    data = b"".join([w(32), w(n), *(w(i) for i in range(n - 1)), w(2**256 - 1)])
    log = make_log((sig_topic(UINTS),), data)
    outcome = decode([UINTS], log)
    assert isinstance(outcome, Event), outcome.reason
    stored = check_landed(pg, log, outcome)
    assert stored == ("Hostile", {"xs": [*map(str, range(n - 1)), str(2**256 - 1)]})
