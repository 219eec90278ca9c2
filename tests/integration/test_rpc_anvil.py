"""RpcClient and FakeRpc against a real anvil: fetch, failover, seeded faults, range limits,
lagging node, pinned eth_call, raw transactions."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from typing import Any

import pytest
from eth_account import Account
from prometheus_client import REGISTRY

from indexer.errors import LaggingNode, RangeLimitError, WrongChainId
from indexer.rpc import ExecutionReverted, RpcClient
from tests.fakes.rpc import FakeRpc
from tests.procs import ANVIL_KEYS, Anvil, free_port

pytestmark = pytest.mark.anvil

DEV = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
TOPIC = "0x" + "5e" * 32
FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.02, "timeout_s": 5.0}
SEED = int(os.environ.get("RPC_FAULT_SEED", "6"))

# Hand-assembled runtimes. EMITTER: copy calldata to memory, LOG1(calldata, TOPIC), return 42.
EMITTER = (
    "3660006000377f" + TOPIC[2:] + "366000a1"  # CALLDATACOPY(0,0,size); LOG1(0,size,TOPIC)
    "602a60005260206000f3"  # MSTORE(0, 42); RETURN(0, 32)
)
# REVERTER: revert with the 4-byte selector 0xdeadbeef, as a custom error would.
REVERTER = "63deadbeef60e01b60005260046000fd"


def creation_code(runtime_hex: str) -> str:
    """Init code that returns ``runtime_hex`` as the contract's code (CODECOPY + RETURN)."""
    size = len(runtime_hex) // 2
    assert size < 256
    return f"0x60{size:02x}600c60003960{size:02x}6000f3" + runtime_hex


def deploy(anvil: Anvil, runtime_hex: str) -> str:
    tx = anvil.rpc("eth_sendTransaction", [{"from": DEV, "data": creation_code(runtime_hex)}])
    return str(receipt(anvil, tx)["contractAddress"]).lower()


def receipt(anvil: Anvil, tx: str) -> dict[str, Any]:
    """The receipt of ``tx``; automine may answer the send a moment before the block exists."""
    deadline = time.monotonic() + 10
    while (found := anvil.rpc("eth_getTransactionReceipt", [tx])) is None:
        assert time.monotonic() < deadline, f"{tx} not mined"
        time.sleep(0.01)
    return dict(found)


def emit(anvil: Anvil, contract: str, payload: bytes) -> None:
    tx = anvil.rpc(
        "eth_sendTransaction", [{"from": DEV, "to": contract, "data": "0x" + payload.hex()}]
    )
    receipt(anvil, tx)


def emitter_chain(anvil: Anvil, n_events: int = 6, spacing: int = 3) -> str:
    """Deploy the emitter and make ``n_events`` logs, ``spacing`` blocks apart."""
    contract = deploy(anvil, EMITTER)
    for i in range(n_events):
        emit(anvil, contract, i.to_bytes(32, "big"))
        anvil.mine(spacing - 1)
    return contract


def anvil_logs(anvil: Anvil, contract: str, lo: int, hi: int) -> list[dict[str, Any]]:
    flt = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": [contract]}
    return list(anvil.rpc("eth_getLogs", [flt]))


def sample(name: str, **labels: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def test_rpc_anvil_get_range_with_full_headers(anvil: Anvil) -> None:
    """A full-header fetch equals anvil's own logs and headers and is parent-linked."""
    contract = emitter_chain(anvil)
    head = anvil.block_number()
    async with RpcClient([anvil.url], **FAST) as rpc:
        result = await rpc.get_range(0, head, [contract], full_headers=True)
        assert await rpc.block_number() == head
    expected = anvil_logs(anvil, contract, 0, head)
    assert result.to_block == head
    assert len(result.logs) == len(expected) == 6
    for got, want in zip(result.logs, expected, strict=True):
        assert (got.block_number, got.log_index) == (
            int(want["blockNumber"], 16),
            int(want["logIndex"], 16),
        )
        assert got.block_hash == want["blockHash"].lower()
        assert got.tx_hash == want["transactionHash"].lower()
        assert got.topics == (TOPIC,)
        assert got.data == want["data"].lower()
    assert sorted(result.headers) == list(range(head + 1))
    tip = anvil.rpc("eth_getBlockByNumber", [hex(head), False])
    assert result.headers[head].hash == tip["hash"]
    assert result.headers[head].timestamp == int(tip["timestamp"], 16)


async def test_rpc_anvil_fails_over_from_dead_url(anvil: Anvil) -> None:
    """With a dead first endpoint every call still succeeds through anvil."""
    dead = f"http://127.0.0.1:{free_port()}"
    async with RpcClient([dead, anvil.url], **FAST) as rpc:
        await rpc.check_chain_id(31337)
        assert await rpc.chain_id() == 31337
        assert rpc.endpoint == 1
        header = await rpc.header("latest")
    assert header is not None
    assert header.number == anvil.block_number()


async def test_rpc_anvil_check_chain_id_rejects_another_chain(anvil: Anvil) -> None:
    """The configured chain id must match what the node serves."""
    async with RpcClient([anvil.url], **FAST) as rpc:
        with pytest.raises(WrongChainId, match="chain id 31337"):
            await rpc.check_chain_id(1)


async def test_rpc_anvil_seeded_faults_give_fault_free_results(anvil: Anvil) -> None:
    """5% seeded faults (502, -32000, reset, timeout) change no result and are counted."""
    contract = emitter_chain(anvil, n_events=10, spacing=4)
    head = anvil.block_number()
    async with RpcClient([anvil.url], log_range=3, **FAST) as rpc:
        expected = await rpc.get_logs(0, head, [contract])
        expected_headers = await rpc.headers(range(head + 1))
    before = sample("indexer_rpc_requests_total", outcome="error")
    async with (
        FakeRpc(anvil.url, seed=SEED, error_rate=0.05, timeout_sleep_s=2.0) as fake,
        RpcClient(
            [fake.url],
            log_range=3,
            max_batch_size=4,
            backoff_base_s=0.001,
            backoff_max_s=0.02,
            timeout_s=0.5,
        ) as rpc,
    ):
        got = await rpc.get_logs(0, head, [contract])
        full = [
            await rpc.get_range(n, head, [contract], full_headers=True)
            for n in range(0, head + 1, 3)
        ]
        got_headers = await rpc.headers(range(head + 1))
    print(f"seed={SEED} faults={dict(fake.faults)}")
    assert got == expected
    assert [entry for r in full for entry in r.logs] == expected
    assert got_headers == expected_headers
    assert set(fake.faults) - {"timeout"}, "the seed must inject at least one counted error"
    assert sample("indexer_rpc_requests_total", outcome="error") > before


async def test_rpc_anvil_range_limit_halves_to_what_passes(anvil: Anvil) -> None:
    """A provider limit of 5 blocks halves a 64-block range down to 4 and loses no log."""
    contract = emitter_chain(anvil, n_events=8, spacing=2)
    head = anvil.block_number()
    async with (
        FakeRpc(anvil.url, max_logs_range=5) as fake,
        RpcClient([fake.url], log_range=64, **FAST) as rpc,
    ):
        first = await rpc.get_range(0, head, [contract], full_headers=False)
        assert (first.to_block, rpc.log_range) == (3, 4)
        logs = await rpc.get_logs(0, head, [contract])
    assert fake.faults["range"] >= 2
    assert [(entry.block_number, entry.log_index) for entry in logs] == [
        (int(x["blockNumber"], 16), int(x["logIndex"], 16))
        for x in anvil_logs(anvil, contract, 0, head)
    ]


async def test_rpc_anvil_single_block_refused_is_range_limit_error(anvil: Anvil) -> None:
    """A provider that refuses even one block makes get_range raise RangeLimitError."""
    contract = emitter_chain(anvil, n_events=1)
    async with (
        FakeRpc(anvil.url, max_logs_range=0) as fake,
        RpcClient([fake.url], log_range=8, **FAST) as rpc,
    ):
        with pytest.raises(RangeLimitError):
            await rpc.get_range(0, anvil.block_number(), [contract], full_headers=False)


async def test_rpc_anvil_lagging_node_raises_then_succeeds(anvil: Anvil) -> None:
    """A lagging node's empty logs and null header raise LaggingNode; the retry has the logs."""
    contract = emitter_chain(anvil, n_events=3)
    head = anvil.block_number()
    async with FakeRpc(anvil.url, lagging=1) as fake, RpcClient([fake.url], **FAST) as rpc:
        with pytest.raises(LaggingNode):
            await rpc.get_range(0, head, [contract], full_headers=False)
        result = await rpc.get_range(0, head, [contract], full_headers=False)
    assert len(result.logs) == 3


async def test_rpc_anvil_head_offset_reports_an_older_head(anvil: Anvil) -> None:
    """head_offset makes the node look behind: lower head, "latest" and newer blocks follow."""
    anvil.mine(10)
    head = anvil.block_number()
    async with FakeRpc(anvil.url, head_offset=3) as fake, RpcClient([fake.url], **FAST) as rpc:
        assert await rpc.block_number() == head - 3
        latest = await rpc.header("latest")
        assert latest is not None
        assert latest.number == head - 3
        assert await rpc.header(head) is None


async def test_rpc_anvil_eth_call_pinned_to_block_hash(anvil: Anvil) -> None:
    """eth_call at a block hash sees the state of that block; a revert keeps its data."""
    before = anvil.rpc("eth_getBlockByNumber", ["latest", False])["hash"]
    contract = deploy(anvil, EMITTER)
    reverter = deploy(anvil, REVERTER)
    after = anvil.rpc("eth_getBlockByNumber", ["latest", False])["hash"]
    async with RpcClient([anvil.url], **FAST) as rpc:
        assert await rpc.eth_call(contract, b"", after) == (42).to_bytes(32, "big")
        assert await rpc.eth_call(contract, b"", before) == b""
        assert await rpc.eth_call("0x" + "00" * 19 + "99", b"\x01", after) == b""
        with pytest.raises(ExecutionReverted) as info:
            await rpc.eth_call(reverter, b"", after)
    assert info.value.data == "0xdeadbeef"


async def test_rpc_anvil_send_raw_transaction_returns_its_hash(anvil: Anvil) -> None:
    """A signed transaction is broadcast and its hash comes back lowercase."""
    account = Account.from_key(ANVIL_KEYS[1])
    tx = {
        "to": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "value": 1,
        "gas": 21000,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 1,
        "nonce": 0,
        "chainId": 31337,
        "type": 2,
    }
    signed = account.sign_transaction(tx)
    async with RpcClient([anvil.url], **FAST) as rpc:
        tx_hash = await rpc.send_raw_transaction(bytes(signed.raw_transaction))
    assert tx_hash == "0x" + bytes(signed.hash).hex()


def test_fake_rpc_runs_in_a_thread_for_sync_callers(anvil: Anvil) -> None:
    """start_in_thread serves from its own loop, so a sync client or subprocess can use it."""
    handle = FakeRpc.start_in_thread(anvil.url, head_offset=1)
    try:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
        ).encode()
        anvil.mine(3)
        request = urllib.request.Request(handle.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert int(answer["result"], 16) == anvil.block_number() - 1
        assert handle.fake.calls["eth_blockNumber"] == 1
    finally:
        handle.stop()
    assert not handle.thread.is_alive()


async def test_fake_rpc_timeout_fault_does_not_hold_up_shutdown(anvil: Anvil) -> None:
    """A request parked by a timeout fault ends when the fake stops."""
    async with FakeRpc(
        anvil.url, error_rate=1.0, error_kinds=["timeout"], timeout_sleep_s=60
    ) as fake:
        async with RpcClient([fake.url], max_attempts=1, timeout_s=0.2) as rpc:
            with pytest.raises(Exception, match="timeout"):
                await rpc.block_number()
        started = asyncio.get_running_loop().time()
    assert asyncio.get_running_loop().time() - started < 5
