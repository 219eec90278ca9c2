"""RpcClient against FakeRpc over a scripted in-memory chain (no anvil), and its pure parts."""

from __future__ import annotations

import contextlib
import os
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from indexer.errors import (
    InvalidRpcData,
    LaggingNode,
    RangeLimitError,
    RpcError,
    RpcRateLimited,
    RpcUnavailable,
    WrongChainId,
)
from indexer.jsonrpc import backoff_delay, classify_error, parse_response, redact_url
from indexer.rpc import ExecutionReverted, RpcClient
from indexer.rpcdata import validate_range
from tests.fakes.rpc import FakeRpc, FakeRpcError
from tests.procs import free_port

ADDR = "0x" + "ab" * 20
OTHER = "0x" + "cd" * 20
TOPIC = "0x" + "11" * 32
FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.01, "timeout_s": 2.0}


def block_hash(n: int, fork: int = 0) -> str:
    return "0x" + f"{fork:02x}" + f"{n + 1:062x}"


class MemChain:
    """A scripted chain: blocks 0..head, one log of ADDR at every block in ``log_blocks``."""

    def __init__(self, head: int = 200, log_blocks: set[int] | None = None) -> None:
        self.head = head
        self.log_blocks = log_blocks if log_blocks is not None else set(range(0, head + 1, 3))
        self.calls: list[tuple[str, list[Any]]] = []
        self.errors: dict[str, FakeRpcError] = {}

    def block(self, n: int) -> dict[str, Any] | None:
        if n > self.head:
            return None
        parent = block_hash(n - 1) if n else "0x" + "00" * 32
        return {
            "number": hex(n),
            "hash": block_hash(n),
            "parentHash": parent,
            "timestamp": hex(1000 + n),
            "transactions": [],
        }

    def log(self, n: int, index: int = 0) -> dict[str, Any]:
        return {
            "address": ADDR,
            "topics": [TOPIC],
            "data": "0x" + f"{n:064x}",
            "blockNumber": hex(n),
            "blockHash": block_hash(n),
            "transactionHash": "0x" + f"{n:064x}",
            "transactionIndex": "0x0",
            "logIndex": hex(index),
            "removed": False,
        }

    def __call__(self, method: str, params: list[Any]) -> Any:
        self.calls.append((method, params))
        if method in self.errors:
            raise self.errors[method]
        if method == "eth_chainId":
            return "0x7a69"
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "eth_getBlockByNumber":
            tag = params[0]
            n = {"latest": self.head, "finalized": self.head - 10, "safe": self.head - 5}.get(tag)
            return self.block(n if n is not None else int(tag, 16))
        if method == "eth_getLogs":
            flt = params[0]
            lo, hi = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
            if "address" in flt and ADDR not in flt["address"]:
                return []
            return [self.log(n) for n in sorted(self.log_blocks) if lo <= n <= min(hi, self.head)]
        if method == "eth_call":
            return "0x" + "00" * 31 + "2a"
        if method == "eth_sendRawTransaction":
            return "0x" + "EE" * 32
        raise FakeRpcError(-32601, f"the method {method} does not exist")


def sample(name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


# -- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "method", "kind"),
    [
        (-32005, "query returned more than 10000 results", "eth_getLogs", "range"),
        (
            -32005,
            "query returned more than 10000 results. Try with this block range [0x1, 0x2].",
            "eth_getLogs",
            "range",
        ),
        (-32000, "block range is too wide", "eth_getLogs", "range"),
        (-32000, "exceed maximum block range: 50000", "eth_getLogs", "range"),
        (
            -32602,
            "Log response size exceeded. You can make eth_getLogs requests with up to a "
            "2K block range and no limit on the response size",
            "eth_getLogs",
            "range",
        ),
        (-32602, "range too large", "eth_getLogs", "range"),
        (-32614, "eth_getLogs is limited to a 10,000 range", "eth_getLogs", "range"),
        (-32000, "response size exceeded", "eth_getLogs", "range"),
        (-32005, "limit exceeded", "eth_call", "rate_limited"),
        (
            -32005,
            "daily request count exceeded, request rate limited",
            "eth_getLogs",
            "rate_limited",
        ),
        (429, "Too Many Requests", "eth_blockNumber", "rate_limited"),
        (3, "execution reverted", "eth_call", "revert"),
        (-32000, "execution reverted", "eth_call", "revert"),
        (-32602, "invalid params", "eth_call", "fatal"),
        (-32601, "method not found", "eth_foo", "fatal"),
        (-32000, "nonce too low", "eth_sendRawTransaction", "fatal"),
        (-32000, "already known", "eth_sendRawTransaction", "fatal"),
        (-32000, "header not found", "eth_call", "retry"),
        (-32000, "missing trie node", "eth_call", "retry"),
        (-32603, "internal error", "eth_getLogs", "retry"),
    ],
)
def test_classify_error_recognises_provider_wordings(
    code: int, message: str, method: str, kind: str
) -> None:
    """Each provider's error wording maps to the caller's action: shrink, back off, retry, raise."""
    assert classify_error(code, message, method) == kind


def test_classify_error_range_wording_only_counts_for_get_logs() -> None:
    """A "too many results" text outside eth_getLogs is not a reason to shrink a log range."""
    assert classify_error(-32602, "range too large", "eth_call") == "fatal"


@given(
    attempt=st.integers(0, 100),
    base=st.floats(0.0, 2.0),
    cap=st.floats(0.0, 30.0),
    retry_after=st.none() | st.floats(-5.0, 10_000.0),
    seed=st.integers(0, 2**32),
)
def test_backoff_delay_stays_within_bounds(
    attempt: int, base: float, cap: float, retry_after: float | None, seed: int
) -> None:
    """The delay is never negative and never above the cap, Retry-After included."""
    delay = backoff_delay(
        attempt, base_s=base, max_s=cap, rng=random.Random(seed), retry_after_s=retry_after
    )
    assert 0.0 <= delay <= cap
    if retry_after is None:
        assert delay <= base * 2**attempt
    else:
        assert delay >= min(max(retry_after, 0.0), cap)


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("https://user:hunter2@rpc.example.com/", "hunter2"),
        ("https://eth-mainnet.g.alchemy.com/v2/AbCdEfGhIjKlMnOpQrStUv", "AbCdEfGhIjKlMnOpQrStUv"),
        ("https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef", "0123456789abcdef"),
        ("https://rpc.example.com/?apikey=s3cr3t", "s3cr3t"),
        ("http://127.0.0.1:8545#frag-s3cr3t", "s3cr3t"),
    ],
)
def test_redact_url_hides_credentials(url: str, secret: str) -> None:
    """Userinfo, query strings and key-like path segments never survive redaction."""
    redacted = redact_url(url)
    assert secret not in redacted
    assert redacted.startswith(url.split("://", maxsplit=1)[0] + "://")


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.sampled_from(["0x", "0x1", "0xzz", "0x" + "ab" * 32, "0x" + "ab" * 20, ADDR]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "number",
                    "hash",
                    "parentHash",
                    "timestamp",
                    "blockNumber",
                    "blockHash",
                    "transactionHash",
                    "transactionIndex",
                    "logIndex",
                    "address",
                    "topics",
                    "data",
                    "removed",
                    "id",
                    "result",
                    "error",
                    "code",
                    "message",
                ]
            ),
            inner,
            max_size=8,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    logs=_json, headers=st.dictionaries(st.integers(0, 5), _json, max_size=4), full=st.booleans()
)
def test_validate_range_fuzz_only_raises_rpc_data_errors(
    logs: Any, headers: dict[int, Any], full: bool
) -> None:
    """Arbitrary JSON where logs and headers belong never raises anything but the data errors."""
    with contextlib.suppress(InvalidRpcData, LaggingNode):
        validate_range(0, 5, logs, headers, full_headers=full, addresses=[ADDR])


@settings(max_examples=150, deadline=None)
@given(data=_json, n=st.integers(1, 3), single=st.booleans())
def test_parse_response_fuzz_only_raises_rpc_errors(data: Any, n: int, single: bool) -> None:
    """Arbitrary JSON as a response envelope raises only RpcError or a retryable RpcUnavailable."""
    calls = [("eth_getLogs", [{}])] * (1 if single else n)
    with contextlib.suppress(RpcError, RpcUnavailable):
        parse_response(data, calls, single=single)


# -- client over FakeRpc -----------------------------------------------------------------------


async def test_rpc_get_range_returns_logs_and_headers() -> None:
    """A clean fetch returns the range's logs, the last header, and normalised hex."""
    chain = MemChain()
    async with FakeRpc(chain) as fake, RpcClient([fake.url], **FAST) as rpc:
        result = await rpc.get_range(0, 20, [ADDR.upper().replace("0X", "0x")], full_headers=False)
        full = await rpc.get_range(0, 20, [ADDR], full_headers=True)
    assert result.to_block == 20
    assert [entry.block_number for entry in result.logs] == [0, 3, 6, 9, 12, 15, 18]
    assert set(result.headers) == {20}
    assert result.headers[20].hash == block_hash(20)
    assert set(full.headers) == set(range(21))
    assert full.logs == result.logs
    assert fake.http_requests == 2


async def test_rpc_get_range_with_no_address_asks_no_logs() -> None:
    """An empty address list fetches only headers: to a node it would mean every contract."""
    chain = MemChain()
    async with FakeRpc(chain) as fake, RpcClient([fake.url], **FAST) as rpc:
        result = await rpc.get_range(0, 9, [], full_headers=False)
    assert result.logs == []
    assert fake.calls["eth_getLogs"] == 0


async def test_rpc_get_range_by_topic0_sends_no_address_and_refuses_other_topics() -> None:
    """By topics: one eth_getLogs filter with the topic0 set and no address; a log whose
    topic0 was not asked for is a node's error (InvalidRpcData), not data."""
    chain = MemChain()
    async with FakeRpc(chain) as fake, RpcClient([fake.url], **FAST) as rpc:
        got = await rpc.get_range(0, 20, [OTHER], full_headers=False, topics=[TOPIC])
        [flt] = [p[0] for m, p in chain.calls if m == "eth_getLogs"]
        assert flt["topics"] == [[TOPIC]]
        assert "address" not in flt
        # ADDR's logs come back though OTHER is the one watched: the caller keeps its own
        assert [lg.address for lg in got.logs] == [ADDR] * 7
        with pytest.raises(InvalidRpcData, match="topic0 not asked for"):
            await rpc.get_range(0, 20, [OTHER], full_headers=False, topics=["0x" + "22" * 32])


SEED = int(os.environ.get("RPC_FAULT_SEED", "4"))


async def test_rpc_retries_transient_faults_to_the_same_result() -> None:
    """Seeded 502s, -32000s, resets and timeouts are retried and change nothing in the result."""
    chain = MemChain()
    async with FakeRpc(chain) as clean, RpcClient([clean.url], **FAST) as rpc:
        expected = [
            await rpc.get_range(n, n + 9, [ADDR], full_headers=True) for n in range(0, 100, 10)
        ]
    before = sample("indexer_rpc_requests_total", outcome="error")
    before_timeout = sample("indexer_rpc_requests_total", outcome="timeout")
    async with (
        FakeRpc(chain, seed=SEED, error_rate=0.4, timeout_sleep_s=2.0) as fake,
        RpcClient([fake.url], backoff_base_s=0.001, backoff_max_s=0.01, timeout_s=0.3) as rpc,
    ):
        got = [await rpc.get_range(n, n + 9, [ADDR], full_headers=True) for n in range(0, 100, 10)]
        headers = await rpc.headers(list(range(0, 150)))
    assert got == expected
    assert headers[149].hash == block_hash(149)
    print(f"seed={SEED} faults={dict(fake.faults)}")
    assert sum(fake.faults.values()) > 0
    assert sample("indexer_rpc_requests_total", outcome="error") > before
    assert sample("indexer_rpc_requests_total", outcome="timeout") >= before_timeout


async def test_rpc_raises_unavailable_after_max_attempts() -> None:
    """A node that keeps failing ends in RpcUnavailable after exactly max_attempts tries."""
    chain = MemChain()
    async with (
        FakeRpc(chain, error_rate=1.0, error_kinds=["http_502"], max_fail_streak=99) as fake,
        RpcClient([fake.url], max_attempts=3, **FAST) as rpc,
    ):
        with pytest.raises(RpcUnavailable, match="3 attempts"):
            await rpc.block_number()
        assert fake.calls["eth_blockNumber"] == 3


async def test_rpc_rate_limit_honours_retry_after_then_raises_rate_limited() -> None:
    """HTTP 429 waits at least the capped Retry-After and ends in RpcRateLimited."""
    chain = MemChain()
    async with (
        FakeRpc(
            chain, error_rate=1.0, error_kinds=["http_429"], max_fail_streak=99, retry_after_s=5
        ) as fake,
        RpcClient([fake.url], max_attempts=2, backoff_base_s=0.001, backoff_max_s=0.2) as rpc,
    ):
        t0 = time.monotonic()
        with pytest.raises(RpcRateLimited):
            await rpc.chain_id()
        assert 0.2 <= time.monotonic() - t0 < 2.0
    assert sample("indexer_rpc_requests_total", method="eth_chainId", outcome="rate_limited") >= 2


async def test_rpc_fails_over_from_dead_endpoint_and_redacts_it() -> None:
    """A dead first URL is demoted, the second serves, and no message shows the URL's key."""
    chain = MemChain()
    dead = f"http://user:s3cr3t@127.0.0.1:{free_port()}/?key=s3cr3t"
    before = sample("indexer_rpc_endpoint_errors_total", chain="failover", endpoint="0")
    async with FakeRpc(chain) as fake, RpcClient([dead, fake.url], chain="failover", **FAST) as rpc:
        assert await rpc.block_number() == 200
        assert rpc.endpoint == 1
        assert await rpc.chain_id() == 31337
    assert sample("indexer_rpc_endpoint_errors_total", chain="failover", endpoint="0") > before
    async with RpcClient([dead], max_attempts=2, **FAST) as rpc:
        with pytest.raises(RpcUnavailable) as info:
            await rpc.block_number()
    assert "s3cr3t" not in str(info.value)
    assert info.value.__cause__ is None


async def test_rpc_deterministic_error_is_not_retried() -> None:
    """Invalid params raise RpcError with its code after one call."""
    chain = MemChain()
    chain.errors["eth_getBlockByNumber"] = FakeRpcError(-32602, "invalid argument 0")
    async with FakeRpc(chain) as fake, RpcClient([fake.url], **FAST) as rpc:
        with pytest.raises(RpcError) as info:
            await rpc.header(5)
    assert info.value.code == -32602
    assert fake.calls["eth_getBlockByNumber"] == 1


async def test_rpc_eth_call_is_pinned_and_keeps_revert_data() -> None:
    """eth_call goes out with EIP-1898 blockHash + requireCanonical, and a revert keeps its data."""
    chain = MemChain()
    async with FakeRpc(chain) as fake, RpcClient([fake.url], **FAST) as rpc:
        out = await rpc.eth_call(ADDR, b"\x12\x34", block_hash(7).upper().replace("0X", "0x"))
        assert out == bytes(31) + b"\x2a"
        assert chain.calls[-1][1] == [
            {"to": ADDR, "data": "0x1234"},
            {"blockHash": block_hash(7), "requireCanonical": True},
        ]
        chain.errors["eth_call"] = FakeRpcError(3, "execution reverted", "0xDEADBEEF")
        with pytest.raises(ExecutionReverted) as info:
            await rpc.eth_call(ADDR, b"", block_hash(7))
    assert info.value.code == 3
    assert info.value.data == "0xdeadbeef"
    assert fake.calls["eth_call"] == 2


async def test_rpc_send_raw_transaction_returns_lowercase_hash() -> None:
    """The transaction hash comes back normalised."""
    async with FakeRpc(MemChain()) as fake, RpcClient([fake.url], **FAST) as rpc:
        assert await rpc.send_raw_transaction(b"\x02\x01") == "0x" + "ee" * 32


async def test_rpc_batch_matches_out_of_order_answers_by_id() -> None:
    """Shuffled batch answers are matched by id, in chunks of max_batch_size."""
    async with (
        FakeRpc(MemChain(), shuffle_batches=True) as fake,
        RpcClient([fake.url], max_batch_size=16, **FAST) as rpc,
    ):
        headers = await rpc.headers([*list(range(100)), 5, 5])
    assert sorted(headers) == list(range(100))
    assert all(h.number == n and h.hash == block_hash(n) for n, h in headers.items())
    assert fake.http_requests == 7


async def test_rpc_batch_missing_id_retries_the_whole_batch() -> None:
    """An answer missing from a batch makes the client resend the whole batch."""
    dropped: list[int] = []

    def drop_once(method: str, params: list[Any], answer: dict[str, Any]) -> Any:
        if method == "eth_getBlockByNumber" and params[0] == "0x3" and not dropped:
            dropped.append(1)
            return None
        return answer

    async with (
        FakeRpc(MemChain(), corrupt=drop_once) as fake,
        RpcClient([fake.url], **FAST) as rpc,
    ):
        headers = await rpc.headers(range(6))
    assert sorted(headers) == list(range(6))
    assert fake.http_requests == 2


async def test_rpc_headers_null_raises_lagging_node() -> None:
    """A header the node does not have yet is a lagging node, not an empty answer."""
    async with FakeRpc(MemChain(head=10)) as fake, RpcClient([fake.url], **FAST) as rpc:
        with pytest.raises(LaggingNode):
            await rpc.headers([9, 10, 11])


async def test_rpc_header_tags_and_missing_blocks() -> None:
    """Tags resolve, a missing block is None, and an unsupported tag is None, not an error."""
    chain = MemChain()
    async with FakeRpc(chain) as fake, RpcClient([fake.url], **FAST) as rpc:
        finalized = await rpc.header("finalized")
        assert finalized is not None
        assert finalized.number == 190
        assert await rpc.header(500) is None
        chain.errors["eth_getBlockByNumber"] = FakeRpcError(-32602, "invalid block tag")
        assert await rpc.header("safe") is None
        chain.errors["eth_getBlockByNumber"] = FakeRpcError(-32000, "unknown block")
        assert await rpc.header("finalized") is None
        assert fake.calls["eth_getBlockByNumber"] == 4


async def test_rpc_check_chain_id_names_the_wrong_endpoint() -> None:
    """An endpoint serving another chain raises WrongChainId naming its index, not its key."""

    def wrong_chain(method: str, params: list[Any], answer: dict[str, Any]) -> Any:
        return {**answer, "result": "0x1"} if method == "eth_chainId" else answer

    async with (
        FakeRpc(MemChain()) as good,
        FakeRpc(MemChain(), corrupt=wrong_chain) as bad,
    ):
        bad_url = bad.url + "/?apikey=s3cr3t"
        async with RpcClient([good.url], **FAST) as rpc:
            await rpc.check_chain_id(31337)
        async with RpcClient([good.url, bad_url], chain="x", **FAST) as rpc:
            with pytest.raises(WrongChainId, match=r"#1 .*chain id 1,") as info:
                await rpc.check_chain_id(31337)
    assert "s3cr3t" not in str(info.value)


async def test_rpc_get_range_halves_on_range_errors_then_grows() -> None:
    """-32005 above k blocks halves the range until it passes; successes grow it back."""
    async with (
        FakeRpc(MemChain(head=1000), max_logs_range=10) as fake,
        RpcClient([fake.url], log_range=64, grow_after=2, chain="halving", **FAST) as rpc,
    ):
        first = await rpc.get_range(0, 500, [ADDR], full_headers=False)
        assert first.to_block == 7
        assert rpc.log_range == 8
        assert fake.faults["range"] == 3
        assert sample("indexer_rpc_log_range_blocks", chain="halving") == 8
        fake.max_logs_range = None
        second = await rpc.get_range(8, 500, [ADDR], full_headers=False)
        assert second.to_block == 15
        assert rpc.log_range == 16
        third = await rpc.get_range(16, 500, [ADDR], full_headers=False)
        assert third.to_block == 31


async def test_rpc_get_range_uses_the_range_the_provider_suggests() -> None:
    """Alchemy's "this block range should work: [a, b]" sets the range in one step."""
    chain = MemChain(head=1000)

    def limited(method: str, params: list[Any]) -> Any:
        flt = params[0] if method == "eth_getLogs" else None
        if flt is not None and int(flt["toBlock"], 16) - int(flt["fromBlock"], 16) >= 5:
            raise FakeRpcError(
                -32602,
                "Log response size exceeded. You can make eth_getLogs "
                "requests with up to a 2K block range and no limit on the "
                "response size, or you can request any block range with a cap "
                "of 10K logs in the response. Based on your parameters, this "
                "block range should work: [0x0, 0x4]",
            )
        return chain(method, params)

    async with FakeRpc(limited) as fake, RpcClient([fake.url], log_range=1000, **FAST) as rpc:
        result = await rpc.get_range(0, 999, [ADDR], full_headers=False)
    assert result.to_block == 4
    assert fake.calls["eth_getLogs"] == 2


async def test_rpc_get_range_single_block_refused_raises_range_limit() -> None:
    """When even one block is refused the client stops with RangeLimitError."""
    async with (
        FakeRpc(MemChain(), max_logs_range=0) as fake,
        RpcClient([fake.url], log_range=4, **FAST) as rpc,
    ):
        with pytest.raises(RangeLimitError, match="1 block"):
            await rpc.get_range(0, 100, [ADDR], full_headers=False)


async def test_rpc_get_range_lagging_node_raises_then_succeeds() -> None:
    """A node that returns no logs and a null last header raises LaggingNode, then agrees."""
    async with FakeRpc(MemChain(), lagging=1) as fake, RpcClient([fake.url], **FAST) as rpc:
        with pytest.raises(LaggingNode):
            await rpc.get_range(0, 9, [ADDR], full_headers=False)
        result = await rpc.get_range(0, 9, [ADDR], full_headers=False)
    assert [entry.block_number for entry in result.logs] == [0, 3, 6, 9]


def _rewrite_header(n: int, **fields: Any) -> Any:
    def corrupt(method: str, params: list[Any], answer: dict[str, Any]) -> Any:
        if method == "eth_getBlockByNumber" and params[0] == hex(n):
            return {**answer, "result": {**answer["result"], **fields}}
        return answer

    return corrupt


def _rewrite_logs(fn: Any) -> Any:
    def corrupt(method: str, params: list[Any], answer: dict[str, Any]) -> Any:
        if method == "eth_getLogs":
            return {**answer, "result": fn(answer["result"])}
        return answer

    return corrupt


def _first(**fields: Any) -> Any:
    return _rewrite_logs(lambda logs: [{**logs[0], **fields}, *logs[1:]])


CORRUPTIONS = {
    "gap": _rewrite_header(5, number=hex(6)),
    "parent_hash": _rewrite_header(5, parentHash="0x" + "99" * 32),
    "foreign_block_hash": _first(blockHash="0x" + "77" * 32),
    "out_of_range": _first(blockNumber=hex(50)),
    "duplicate": _rewrite_logs(lambda logs: [*logs, logs[-1]]),
    "removed": _first(removed=True),
    "foreign_address": _first(address=OTHER),
    "bad_hex": _first(transactionHash="0xnothex"),
    "logs_not_list": _rewrite_logs(lambda logs: {"logs": logs}),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
async def test_rpc_get_range_rejects_corrupt_data(kind: str) -> None:
    """Each kind of corrupt answer is rejected with InvalidRpcData and counted."""
    before = sample("indexer_invalid_rpc_data_total", chain="corrupt")
    async with (
        FakeRpc(MemChain(), corrupt=CORRUPTIONS[kind]) as fake,
        RpcClient([fake.url], chain="corrupt", **FAST) as rpc,
    ):
        with pytest.raises(InvalidRpcData):
            await rpc.get_range(0, 9, [ADDR], full_headers=True)
    assert sample("indexer_invalid_rpc_data_total", chain="corrupt") == before + 1


async def test_rpc_get_range_caps_full_headers_to_one_batch() -> None:
    """With full headers the range is capped so that logs and headers fit one batch."""
    async with FakeRpc(MemChain()) as fake, RpcClient([fake.url], max_batch_size=10, **FAST) as rpc:
        result = await rpc.get_range(0, 100, [ADDR], full_headers=True)
    assert result.to_block == 8
    assert fake.http_requests == 1


async def test_rpc_get_logs_walks_the_whole_range() -> None:
    """get_logs returns every log of a range wider than the log range."""
    async with FakeRpc(MemChain()) as fake, RpcClient([fake.url], log_range=7, **FAST) as rpc:
        logs = await rpc.get_logs(0, 50, [ADDR])
    assert [entry.block_number for entry in logs] == list(range(0, 51, 3))
