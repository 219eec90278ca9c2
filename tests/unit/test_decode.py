"""The decoder: bound to (address, ABI), exact on good logs, never raising on hostile ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.decode import (
    AbiRegistry,
    DecodeError,
    Event,
    Undecodable,
    column_name,
    compile_event,
    compile_fast,
    decode_with,
)
from indexer.types import RawLog
from tests.procs import ROOT

MTPP = "0x" + "11" * 20
EMITTER = "0x" + "22" * 20
CHAMA = "0x" + "33" * 20
ADDED = "0x" + keccak(text="RewardAdded(address,address,address,uint256)").hex()
CLAIMED = "0x" + keccak(text="RewardClaimed(address,address,uint256)").hex()
CREATED = "0x" + keccak(text="ChamaCreated(uint256,string,address,uint256)").hex()


def registry() -> AbiRegistry:
    reg = AbiRegistry()
    for name, address in (
        ("MultiTokenPushPull", MTPP),
        ("LogEmitter", EMITTER),
        ("ChamaSavings", CHAMA),
    ):
        reg.add_abi(name, json.loads((ROOT / "abis" / f"{name}.json").read_text())["abi"])
        reg.bind(address, name)
    return reg


def word(addr_or_int: str | int) -> str:
    if isinstance(addr_or_int, int):
        return "0x" + addr_or_int.to_bytes(32, "big").hex()
    return "0x" + "00" * 12 + addr_or_int[2:]


def raw(address: str, topics: list[str], data: bytes, index: int = 0) -> RawLog:
    return RawLog(
        block_number=7,
        block_hash="0x" + "ab" * 32,
        tx_hash="0x" + "cd" * 32,
        tx_index=0,
        log_index=index,
        address=address,
        topics=tuple(topics),
        data="0x" + data.hex(),
    )


TOKEN, USER, PUSHER = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20


def test_decode_reward_added_exact() -> None:
    """RewardAdded decodes to its table with every value, including 2**256-1."""
    lg = raw(
        MTPP, [ADDED, word(TOKEN), word(USER), word(PUSHER)], encode(["uint256"], [2**256 - 1])
    )
    out = registry().decode(lg)
    assert isinstance(out, Event)
    assert out.spec.table == "reward_added"
    assert out.values == (TOKEN, USER, PUSHER, 2**256 - 1)
    assert out.spec.columns == ("token", "wallet", "emitter", "amount")


def test_decode_is_bound_to_address_not_topic0() -> None:
    """LogEmitter's look-alike RewardClaimed (same topic0, other layout) never reaches
    reward_claimed, while MultiTokenPushPull's does."""
    reg = registry()
    good = reg.decode(raw(MTPP, [CLAIMED, word(TOKEN), word(USER)], encode(["uint256"], [5])))
    assert isinstance(good, Event)
    assert good.spec.table == "reward_claimed"
    alike = reg.decode(
        raw(EMITTER, [CLAIMED, word(TOKEN)], encode(["address", "uint256"], [USER, 5]))
    )
    assert not (isinstance(alike, Event) and alike.spec.table == "reward_claimed")


def test_decode_string_event() -> None:
    """ChamaCreated decodes its dynamic string."""
    data = encode(["string", "uint256"], ["Savings club ✓", 10])
    out = registry().decode(raw(CHAMA, [CREATED, word(3), word(USER)], data))
    assert isinstance(out, Event)
    assert out.values == (3, "Savings club ✓", USER, 10)


def test_decode_hostile_logs_are_undecodable_with_reasons() -> None:
    """Unknown topic0, truncated data, wrong topic count, no topics, dirty address words,
    NUL in a string and an out-of-bounds offset each give an Undecodable with a reason."""
    reg = registry()
    amount = encode(["uint256"], [1])
    cases = {
        "unknown topic0": raw(MTPP, ["0x" + "99" * 32], amount),
        "data length": raw(MTPP, [ADDED, word(TOKEN), word(USER), word(PUSHER)], amount[:31]),
        "topics": raw(MTPP, [ADDED, word(TOKEN), word(USER)], amount),
        "no topics": raw(MTPP, [], amount),
        "dirty": raw(MTPP, [ADDED, "0x" + "ff" * 32, word(USER), word(PUSHER)], amount),
        "NUL": raw(
            CHAMA, [CREATED, word(1), word(USER)], encode(["string", "uint256"], ["a\x00b", 1])
        ),
        "offset": raw(
            CHAMA,
            [CREATED, word(1), word(USER)],
            word(2**40)[2:].encode()[:0] + (2**40).to_bytes(32, "big") + (1).to_bytes(32, "big"),
        ),
    }
    for expect, lg in cases.items():
        out = reg.decode(lg)
        assert isinstance(out, Undecodable), expect
        assert out.reason, expect


def test_decode_large_bytes_field_does_not_crash() -> None:
    """A 1 MB payload from a watched address is handled (quarantined), not fatal."""
    out = registry().decode(raw(MTPP, ["0x" + "98" * 32], b"\x01" * 1_000_000))
    assert isinstance(out, Undecodable)


def test_column_name_snake_case_and_wallet() -> None:
    """Event fields become snake_case columns; `user` is `wallet`."""
    assert column_name("user") == "wallet"
    assert column_name("contributionAmount") == "contribution_amount"
    assert column_name("campaignId") == "campaign_id"


@settings(max_examples=300, deadline=None)
@given(
    address=st.sampled_from([MTPP, EMITTER, CHAMA, "0x" + "44" * 20]),
    topics=st.lists(
        st.one_of(
            st.sampled_from([ADDED, CLAIMED, CREATED]),
            st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()),
        ),
        max_size=5,
    ),
    data=st.binary(max_size=400),
)
def test_decode_fuzz_never_raises(address: str, topics: list[str], data: bytes) -> None:
    """Any log gives an Event or an Undecodable; decoding never raises."""
    out = registry().decode(raw(address, topics, data))
    assert isinstance(out, Event | Undecodable)


MIXED_ABI = {
    "type": "event",
    "name": "Mixed",
    "anonymous": False,
    "inputs": [
        {"name": "a", "type": "address", "indexed": True},
        {"name": "small", "type": "uint8", "indexed": True},
        {"name": "flag", "type": "bool", "indexed": True},
        {"name": "s", "type": "int256", "indexed": False},
        {"name": "b4", "type": "bytes4", "indexed": False},
        {"name": "u", "type": "uint64", "indexed": False},
        {"name": "h", "type": "bytes32", "indexed": False},
        {"name": "on", "type": "bool", "indexed": False},
    ],
}
# A clean word per parameter of Mixed, in ABI order.
_CLEAN = [
    st.binary(min_size=20, max_size=20).map(lambda b: bytes(12) + b),  # address
    st.integers(0, 255).map(lambda v: v.to_bytes(32, "big")),  # uint8
    st.integers(0, 1).map(lambda v: v.to_bytes(32, "big")),  # bool
    st.integers(0, 2**256 - 1).map(lambda v: v.to_bytes(32, "big")),  # int256
    st.binary(min_size=4, max_size=4).map(lambda b: b + bytes(28)),  # bytes4
    st.integers(0, 2**64 - 1).map(lambda v: v.to_bytes(32, "big")),  # uint64
    st.binary(min_size=32, max_size=32),  # bytes32
    st.integers(0, 1).map(lambda v: v.to_bytes(32, "big")),  # bool
]
_DIRTY = st.one_of(
    st.sampled_from([2, 3, 15, 16, 255, 256, 2**64 - 1, 2**64, 2**160, 2**255]),
    st.integers(0, 2**256 - 1),
).map(lambda v: v.to_bytes(32, "big")) | st.binary(min_size=32, max_size=32)


@settings(max_examples=1000, deadline=None)
@given(
    st.tuples(*_CLEAN),
    st.sampled_from(range(-1, 8)),
    _DIRTY,
    st.integers(0, 2),
)
def test_generated_decoder_agrees_with_the_generic_walk(
    clean: tuple[bytes, ...], spoil: int, dirty: bytes, cut: int
) -> None:
    """Same values or the same undecodable reason: clean words, one dirty word (any
    parameter), a missing topic, short data."""
    spec = compile_event("Mixed", MIXED_ABI)
    assert spec is not None
    fast = compile_fast(spec)
    assert fast is not None
    words = list(clean)
    if spoil >= 0:
        words[spoil] = dirty
    topics = [spec.topic0, *("0x" + w.hex() for w in words[:3])]
    lg = raw("0x" + "44" * 20, topics[: len(topics) - (cut == 1)], b"".join(words[3:]))
    if cut == 2:
        lg = lg._replace(data=lg.data[:-64])

    def outcome(fn: Callable[[RawLog], tuple[Any, ...]]) -> object:
        try:
            return fn(lg)
        except DecodeError as exc:
            return str(exc)

    assert outcome(fast) == outcome(lambda x: decode_with(spec, x))


def _spec(signature_types: list[str]) -> Any:
    entry = {
        "type": "event",
        "name": "E",
        "inputs": [
            {"name": f"a{i}", "type": t, "indexed": False} for i, t in enumerate(signature_types)
        ],
    }
    spec = compile_event("X", entry)
    assert spec is not None
    return spec


def _log_for(spec: Any, data: bytes) -> RawLog:
    return raw(EMITTER, [spec.topic0], data)


def test_static_arrays_and_tuples_sit_inline_in_the_head() -> None:
    """uint256[2] and (uint8,bool) take 2 head words each, not an offset: the values after
    them are read from the right words (found by the decode -> COPY fuzz)."""
    types = ["uint256[2]", "(uint8,bool)", "string", "address[1]"]
    values = [[0, 6], (255, True), "after", ["0x" + "Ab" * 20]]
    spec = _spec(types)
    got = decode_with(spec, _log_for(spec, encode(types, values)))
    assert got == ([0, 6], [255, True], "after", ["0x" + "ab" * 20])


def test_int8_out_of_range_is_undecodable_on_both_paths() -> None:
    """A word that is no sign extension of an int8 is refused by the generated decoder and
    the generic walk alike."""
    spec = _spec(["int8"])
    fast = compile_fast(spec)
    assert fast is not None
    bad = _log_for(spec, (2**200).to_bytes(32, "big"))
    ok = _log_for(spec, encode(["int8"], [-128]))
    assert fast(ok) == decode_with(spec, ok) == (-128,)
    for fn in (fast, lambda lg: decode_with(spec, lg)):
        with pytest.raises(DecodeError, match="int8 out of range"):
            fn(bad)


def test_offsets_sharing_one_tail_cannot_blow_up_memory() -> None:
    """A string[] of 2,000 elements whose offsets all point at one 4 KiB string would decode
    to 8 MB from 68 KB of data: refused as decoding to more than its size."""
    text = b"x" * 4096
    n = 2000
    tail = (32 * n).to_bytes(32, "big")  # every element: offset of the shared string
    shared = len(text).to_bytes(32, "big") + text
    data = (32).to_bytes(32, "big") + n.to_bytes(32, "big") + tail * n + shared
    spec = _spec(["string[]"])
    with pytest.raises(DecodeError, match="more than its size"):
        decode_with(spec, _log_for(spec, data))
