"""Endpoint identity and answer size (issue 14): an endpoint serves no request before its
eth_chainId matched, is asked again after it failed, and leaves rotation for good when it
names another chain (never data from it); an answer over the size cap is given up on while it
is read, not after."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from indexer.errors import RangeLimitError, RpcUnavailable, WrongChainId
from indexer.rpc import RpcClient
from tests.fakes.rpc import FakeRpc
from tests.procs import Anvil

pytestmark = pytest.mark.anvil

FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.02, "timeout_s": 5.0}


class Switch:
    """A FakeRpc corrupt hook whose answer to eth_chainId can be changed while it runs."""

    def __init__(self) -> None:
        self.chain_id: int | None = None  # None: the node's own

    def __call__(self, method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        if method == "eth_chainId" and self.chain_id is not None:
            return {**answer, "result": hex(self.chain_id)}
        return answer


def wrong_chain_gauge(endpoint: int) -> float:
    value = REGISTRY.get_sample_value(
        "indexer_rpc_endpoint_wrong_chain", {"chain": "idt", "endpoint": str(endpoint)}
    )
    return value or 0.0


async def test_endpoint_of_another_chain_never_serves_data(anvil: Anvil) -> None:
    """Endpoint #0 says chain 1: asked eth_chainId once, then out of rotation (gauge 1);
    every answer comes from #1, and no other method ever reached #0."""
    liar = Switch()
    liar.chain_id = 1
    async with (
        FakeRpc(anvil.url, corrupt=liar) as bad,
        FakeRpc(anvil.url) as good,
        RpcClient([bad.url, good.url], chain="idt", chain_id=31337, **FAST) as rpc,
    ):
        for _ in range(3):
            assert await rpc.block_number() == anvil.block_number()
        assert rpc.endpoint == 1
        assert set(bad.calls) == {"eth_chainId"}
        assert bad.calls["eth_chainId"] == 1
        assert good.calls["eth_blockNumber"] == 3
        assert wrong_chain_gauge(0) == 1
        async with RpcClient([bad.url], chain="idt", chain_id=31337, **FAST) as alone:
            with pytest.raises(WrongChainId, match="every RPC endpoint"):
                await alone.block_number()


async def test_endpoint_is_verified_again_after_it_failed(anvil: Anvil) -> None:
    """#0 serves, fails (HTTP 502 on everything), #1 takes over; #1 fails in turn and #0,
    back but now pointing at another chain, is asked eth_chainId again before any data and is
    dropped: the call fails as unavailable, never with #0's data."""
    switch = Switch()
    async with (
        FakeRpc(anvil.url, corrupt=switch, max_fail_streak=10**6) as first,
        FakeRpc(anvil.url, max_fail_streak=10**6) as second,
        RpcClient(
            [first.url, second.url], chain="idt", chain_id=31337, max_attempts=4, **FAST
        ) as rpc,
    ):
        assert await rpc.block_number() == anvil.block_number()
        assert rpc.endpoint == 0
        assert first.calls["eth_chainId"] == 1

        first.error_rate, first.error_kinds = 1.0, ("http_502",)
        assert await rpc.block_number() == anvil.block_number()
        assert rpc.endpoint == 1
        assert second.calls["eth_chainId"] == 1

        first.error_rate = 0.0
        switch.chain_id = 5
        second.error_rate, second.error_kinds = 1.0, ("http_502",)
        served_by_first = first.calls["eth_blockNumber"]
        with pytest.raises(RpcUnavailable):
            await rpc.block_number()
        assert first.calls["eth_chainId"] >= 2  # asked again after its failure
        assert first.calls["eth_blockNumber"] == served_by_first  # no data once it lied


async def test_oversized_answer_is_cut_while_read(anvil: Anvil) -> None:
    """A 3 MiB eth_getLogs answer with a 1 MiB cap: the range halves down to one block and
    then RangeLimitError names the cap."""
    padding = "0" * (3 * 1024 * 1024)

    def pad(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "padding": padding} if method == "eth_getLogs" else answer

    anvil.mine(8)
    head = anvil.block_number()
    async with (
        FakeRpc(anvil.url, corrupt=pad) as fake,
        RpcClient([fake.url], log_range=8, max_response_bytes=1024 * 1024, **FAST) as rpc,
    ):
        with pytest.raises(RangeLimitError, match="larger than 1048576 bytes"):
            await rpc.get_logs(max(0, head - 7), head, ["0x" + "11" * 20])
        assert rpc.log_range == 1


async def test_address_chunks_fetch_exactly_what_one_filter_does(anvil: Anvil) -> None:
    """Thousands of banks: addresses go in chunks, one eth_getLogs each, in the same batch as
    the headers. On a chain of six emitting contracts, chunks of 1 and 4 give exactly the logs
    one filter gives (order and all), for full and sparse headers alike."""
    from tests.integration.test_rpc_anvil import EMITTER, emit  # noqa: PLC0415
    from tests.integration.test_rpc_anvil import deploy as deploy_code  # noqa: PLC0415

    contracts = [deploy_code(anvil, EMITTER) for _ in range(6)]
    for i in range(12):
        emit(anvil, contracts[i % 6], bytes([i]) * 8)
        emit(anvil, contracts[(i * 5) % 6], bytes([i + 1]) * 8)
    head = anvil.block_number()
    results = {}
    for chunk in (500, 4, 1):
        async with RpcClient([anvil.url], address_chunk=chunk, log_range=64, **FAST) as rpc:
            results[chunk] = (
                await rpc.get_logs(0, head, contracts),
                (await rpc.get_range(0, head, contracts, full_headers=True)).logs,
            )
    assert len(results[500][0]) == 24
    assert results[500][0] == results[500][1]
    assert results[4] == results[500]
    assert results[1] == results[500]


def test_chunked_fetching_equals_one_filter_on_a_generated_chain(anvil: Anvil) -> None:
    """Property (Hypothesis, on one generated chain): for any subset of the watched contracts,
    any chunk size and any block range, ``get_range`` in address chunks, and by topic0 with
    no address then kept by the subset (the loader's filter above ``topics_above``), return
    exactly the logs (order included) and headers that one filter of all the addresses
    returns. Every contract emits the same topic, so the topic filter brings the others'
    logs too."""
    from tests.integration.test_rpc_anvil import EMITTER, TOPIC, emit  # noqa: PLC0415
    from tests.integration.test_rpc_anvil import deploy as deploy_code  # noqa: PLC0415

    rng = random.Random(16)
    contracts = [deploy_code(anvil, EMITTER) for _ in range(9)]
    for i in range(40):  # a log of one to three of the contracts per block, or none
        for c in rng.sample(contracts, rng.randint(0, 3)):
            emit(anvil, c, bytes([i]) * rng.randint(1, 40))
        if rng.random() < 0.3:
            anvil.mine(1)
    head = anvil.block_number()

    async def fetch(addresses: list[str], first: int, last: int, chunk: int) -> Any:
        async with RpcClient([anvil.url], address_chunk=chunk, log_range=4096, **FAST) as rpc:
            got = await rpc.get_range(first, last, addresses, full_headers=True)
            return got.to_block, got.logs, got.headers

    async def by_topic(addresses: list[str], first: int, last: int) -> Any:
        async with RpcClient([anvil.url], log_range=4096, **FAST) as rpc:
            got = await rpc.get_range(first, last, addresses, full_headers=True, topics=[TOPIC])
            kept = {a.lower() for a in addresses}
            return got.to_block, [lg for lg in got.logs if lg.address in kept], got.headers

    assert len(asyncio.run(fetch(contracts, 0, head, 10_000))[1]) > 30

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        subset=st.lists(st.sampled_from(contracts), min_size=1, unique=True),
        chunk=st.integers(1, 10),
        first=st.integers(0, head),
        span=st.integers(0, head),
    )
    def prop(subset: list[str], chunk: int, first: int, span: int) -> None:
        last = min(head, first + span)
        one_filter = asyncio.run(fetch(subset, first, last, 10_000))
        assert asyncio.run(fetch(subset, first, last, chunk)) == one_filter
        assert asyncio.run(by_topic(subset, first, last)) == one_filter

    prop()
