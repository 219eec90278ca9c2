"""Scenario 23: hostile logs from a watched address (LogEmitter) never crash the daemon; the
undecodable ones land in `quarantine` and `indexer_quarantined_logs_total`, the odd but valid
ones are stored exactly, and a rewind plus re-run stores exactly the same rows."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from tests import checks, deploy
from tests.fakes.rpc import FakeRpc, FakeRpcThread
from tests.harness import ChainCfg, Daemon, indexer, wait_synced, write_config
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]
RUN = ("run", "--exit-when-caught-up", "--no-http")
MAX = 2**256 - 1
BIG_LOG_INDEX = 0xFFFFFFE2
REWARD_ADDED = keccak(text="RewardAdded(address,address,address,uint256)")


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def addr_topic(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def emit(d: deploy.Deployment, topics: list[bytes], data: bytes) -> str:
    """One raw log from LogEmitter; returns the transaction hash."""
    call = d.log_emitter.functions.emitRaw(len(topics), [*topics, bytes(32)], data)
    receipt = deploy.send(d.w3, call, deploy.ADMIN_KEY)
    return "0x" + bytes(receipt["transactionHash"]).hex()


def hostile(d: deploy.Deployment) -> dict[str, str]:
    """Emit the hostile logs; returns kind -> transaction hash."""
    a = d.addresses
    token, user = addr_topic(a["TestToken"]), addr_topic(deploy.address_of(deploy.ADMIN_KEY))
    return {
        "unknown_topic0": emit(d, [keccak(text="Unknown(uint256)")], word(1)),
        "truncated_data": emit(d, [REWARD_ADDED, token, user, token], b"\x01" * 16),
        "wrong_topic_count": emit(d, [REWARD_ADDED, token], word(5)),
        "anonymous": emit(d, [], word(7)),
        # anvil refuses a 1 MB request body: the node "returns" the 1 MB (see the hook)
        "one_megabyte": emit(d, [keccak(text="Blob(bytes)")], abi_encode(["bytes"], [b"x"])),
        "max_values": emit(d, [REWARD_ADDED, token, user, token], word(MAX)),
    }


@pytest.fixture
def fake(anvil: Anvil) -> Iterator[FakeRpcThread]:
    """FakeRpc over anvil (its corrupt hook sets the huge log index)."""
    server = FakeRpc.start_in_thread(anvil.url)
    try:
        yield server
    finally:
        server.stop()


BLOB = "0x" + abi_encode(["bytes"], [b"\xab" * (1024 * 1024)]).hex()


def node_hook(big_index_tx: str, blob_tx: str) -> Any:
    """In every eth_getLogs answer: the log of ``big_index_tx`` gets log index 0xffffffe2, the
    log of ``blob_tx`` a 1 MB ``bytes`` value as its data."""

    def rewrite(lg: dict[str, Any]) -> dict[str, Any]:
        if lg["transactionHash"] == big_index_tx:
            return {**lg, "logIndex": hex(BIG_LOG_INDEX)}
        if lg["transactionHash"] == blob_tx:
            return {**lg, "data": BLOB}
        return lg

    def hook(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        if method == "eth_getLogs" and isinstance(answer.get("result"), list):
            return {**answer, "result": [rewrite(lg) for lg in answer["result"]]}
        return answer

    return hook


def quarantine(dsn: str) -> list[tuple[Any, ...]]:
    rows = checks.db_fetch(
        dsn,
        "SELECT block_number, block_hash, tx_hash, log_index, contract, topics, "
        "length(data) AS n, md5(data) AS h, reason FROM quarantine ORDER BY 1, 4",
    )
    return [tuple(r.values()) for r in rows]


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_hostile_logs_quarantined_counted_and_identical_after_rewind(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fake: FakeRpcThread,
    daemons: list[Daemon],
) -> None:
    """Unknown topic0, truncated data, wrong topic count, anonymous, 1 MB of data land in
    quarantine (5 rows, metric 5); 2^256-1 is stored exactly; log index 0xffffffe2 is kept;
    a rewind and re-run reproduce the same rows."""
    d = deployment
    txs = hostile(d)
    fake.fake.corrupt = node_hook(txs["unknown_topic0"], txs["one_megabyte"])
    chain = ChainCfg(
        "local",
        31337,
        fake.url,
        d.addresses,
        start_block=d.block_number,
        watch=(*ChainCfg.watch, "LogEmitter"),
    )
    cfg = write_config(tmp_path / "indexer.toml", db_dsn, [chain])
    daemon = Daemon(cfg)
    daemons.append(daemon)
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    wait_synced(db_dsn, anvil)
    assert metric(port, "indexer_quarantined_logs_total") == 5
    assert daemon.stop() == 0

    first = quarantine(db_dsn)
    by_tx = {r[2]: r for r in first}
    assert set(by_tx) == {txs[k] for k in txs if k != "max_values"}
    assert by_tx[txs["unknown_topic0"]][3] == BIG_LOG_INDEX
    assert "unknown topic0" in by_tx[txs["unknown_topic0"]][-1]
    assert "topics" in by_tx[txs["wrong_topic_count"]][-1]
    assert "data length" in by_tx[txs["truncated_data"]][-1]
    assert "anonymous" in by_tx[txs["anonymous"]][-1]
    assert by_tx[txs["one_megabyte"]][6] > 2 * 1024 * 1024
    amounts = checks.db_fetch(
        db_dsn, "SELECT amount FROM reward_added WHERE tx_hash = $1", txs["max_values"]
    )
    assert [int(r["amount"]) for r in amounts] == [MAX]

    assert indexer(cfg, "rewind", "--chain", "local", "--to", str(d.block_number)).code == 0
    assert not quarantine(db_dsn)
    again = indexer(cfg, *RUN)
    assert again.code == 0, again.stderr[-1500:]
    assert quarantine(db_dsn) == first
    assert not [e for e in [*daemon.events(), *again.events] if e.get("level") == "error"]


def test_hostile_logs_overflowing_balances_never_crash_loop(
    tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """Ten RewardAdded of 2^256-1 for one wallet overflow NUMERIC(78,0) balances: the daemon
    does not crash or loop; it either stores them or halts with one clear error, nothing
    partial."""
    d = deployment
    token, user = addr_topic(d.addresses["TestToken"]), addr_topic(d.addresses["TestToken"])
    call = d.log_emitter.functions.emitRawMany(4, [REWARD_ADDED, token, user, token], word(MAX), 10)
    deploy.send(d.w3, call, deploy.ADMIN_KEY)
    chain = ChainCfg(
        "local",
        31337,
        anvil.url,
        d.addresses,
        start_block=d.block_number,
        watch=(*ChainCfg.watch, "LogEmitter"),
    )
    cfg = write_config(tmp_path / "indexer.toml", db_dsn, [chain])
    out = indexer(cfg, *RUN)
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    number = checks.checkpoint(db_dsn)[0]
    assert not [k for k in checks.stored_keys(db_dsn) if k[0] > number]
    if out.code != 0:
        assert out.code == 1
        (event,) = out.named("chain_halted")
        assert "NumericValueOutOfRange" in event["kind"]
        print("overflowing balances halt the chain:", event["reason"])
