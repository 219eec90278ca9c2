"""RPC faults end to end (scenarios 18–22): FakeRpc in a thread between an `indexer`
subprocess and anvil. Transient faults are retried, range limits shrink the range, a lagging
node is waited for, corrupt data is never committed and a persistent fault halts the chain,
and a node whose head goes backwards with the same hashes causes no rewind."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer.loader import GROUP_RANGES
from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.fakes.rpc import RANGE_ERROR, FakeRpc, FakeRpcThread
from tests.faults.test_pg_faults import at_head, traffic, wait_until
from tests.harness import ChainCfg, Daemon, indexer, write_config
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]
RUN = ("run", "--exit-when-caught-up", "--no-http")


@pytest.fixture
def fakes() -> Iterator[list[FakeRpcThread]]:
    """FakeRpc servers started by a test, stopped at its end."""
    started: list[FakeRpcThread] = []
    yield started
    for f in started:
        f.stop()


def fake_config(
    tmp_path: Path, dsn: str, url: str, d: deploy.Deployment, batch_blocks: int = 2000
) -> Path:
    chain = ChainCfg(
        "local", 31337, url, d.addresses, start_block=d.block_number, batch_blocks=batch_blocks
    )
    return write_config(tmp_path / "indexer.toml", dsn, [chain])


def kinds(out_events: list[dict[str, Any]], event: str = "step_retry") -> list[str]:
    return [str(e.get("kind")) for e in out_events if e.get("event") == event]


def log_blocks(anvil: Anvil, d: deploy.Deployment) -> list[int]:
    """Blocks holding logs of MultiTokenPushPull (the ones corruption is aimed at)."""
    logs = anvil.rpc(
        "eth_getLogs",
        [{"fromBlock": hex(d.block_number), "address": d.addresses["MultiTokenPushPull"]}],
    )
    return sorted({int(lg["blockNumber"], 16) for lg in logs})


@pytest.mark.parametrize(
    ("seed", "error_kinds", "rate"),
    [
        (18, ("http_502", "jsonrpc_32000", "reset"), 0.2),
        pytest.param(
            1818, ("http_502", "jsonrpc_32000", "reset", "timeout"), 0.15, marks=pytest.mark.slow
        ),
    ],
    ids=["fast", "with-timeouts"],
)
def test_rpc_transient_faults_are_retried_to_canonical(
    seed: int,
    error_kinds: tuple[str, ...],
    rate: float,
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """Scenario 18: seeded HTTP 502, JSON-RPC -32000, resets (and timeouts): retried, never an
    exit, and the database ends equal to the chain."""
    print(f"seed={seed}: pytest 'tests/faults/test_rpc_faults.py' -k transient")
    d = deployment
    traffic(d, anvil, seed, rounds=6)
    fake = FakeRpc.start_in_thread(
        anvil.url, seed=seed, error_rate=rate, error_kinds=error_kinds, timeout_sleep_s=12
    )
    fakes.append(fake)
    cfg = fake_config(tmp_path, db_dsn, fake.url, d, batch_blocks=4)
    out = indexer(cfg, *RUN, timeout=300)
    assert out.code == 0, out.stderr[-2000:]
    assert sum(fake.fake.faults.values()) > 0
    assert out.named("rpc_retry") or out.named("step_retry")
    assert_all(db_dsn, anvil, d)


def test_rpc_range_limit_shrinks_range_then_single_block_refusal_halts(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """Scenario 19: "more than 10000 results" above 3 blocks: the range halves until it
    passes; a block refused even alone halts the chain with a clear error, nothing past it."""
    d = deployment
    traffic(d, anvil, 19, rounds=3)
    fake = FakeRpc.start_in_thread(anvil.url, max_logs_range=3)
    fakes.append(fake)
    cfg = fake_config(tmp_path, db_dsn, fake.url, d, batch_blocks=50)
    out = indexer(cfg, *RUN)
    assert out.code == 0, out.stderr[-2000:]
    assert fake.fake.faults["range"] > 0
    # ranges of at most 3 blocks; a commit takes up to GROUP_RANGES of them (commit groups)
    assert all(e["last"] - e["first"] < 3 * GROUP_RANGES for e in out.named("batch_committed"))
    assert_all(db_dsn, anvil, d)

    traffic(d, anvil, 190, rounds=2)
    bad = log_blocks(anvil, d)[-1]

    def refuse(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        if method == "eth_getLogs":
            lo, hi = (int(params[0][k], 16) for k in ("fromBlock", "toBlock"))
            if lo <= bad <= hi:
                return {"jsonrpc": "2.0", "id": answer.get("id"), "error": dict(RANGE_ERROR)}
        return answer

    fake.fake.corrupt = refuse
    halted = indexer(cfg, *RUN)
    assert halted.code == 1, halted.stderr[-2000:]
    (event,) = halted.named("chain_halted")
    assert event["kind"] == "RangeLimitError"
    assert f"block {bad}" in event["reason"]
    row = checks.db_fetch(db_dsn, "SELECT block_number, halted_reason FROM checkpoints")[0]
    assert row["block_number"] == bad - 1
    assert "RangeLimitError" in row["halted_reason"]


@pytest.mark.parametrize(
    "children",
    [False, True],
    ids=["static", "factory-children"],
)
def test_rpc_lagging_node_range_committed_only_when_complete(
    children: bool,
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """Scenario 20: the first answers for a range have no logs and no header for its last
    block (a lagging backend); nothing is committed until both agree, no event is missing."""
    d = deployment
    traffic(d, anvil, 20, rounds=4)
    fake = FakeRpc.start_in_thread(anvil.url, lagging=2)
    fakes.append(fake)
    watch = ChainCfg.watch if children else ("MultiTokenPushPull", "ChamaSavings")
    chain = ChainCfg(
        "local",
        31337,
        fake.url,
        d.addresses,
        start_block=d.block_number,
        batch_blocks=7,
        watch=watch,
        with_banks=children,
    )
    cfg = write_config(tmp_path / "indexer.toml", db_dsn, [chain])
    out = indexer(cfg, *RUN)
    assert out.code == 0, out.stderr[-2000:]
    assert fake.fake.faults["lagging"] > 0
    assert "LaggingNode" in kinds(out.events)
    if children:
        assert_all(db_dsn, anvil, d)
    else:
        static = [d.addresses[n] for n in watch]
        checks.assert_canonical(db_dsn, anvil, static, None, start=d.block_number)


def test_rpc_empty_logs_for_block_with_bloom_not_committed(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """Scenario 20 (bloom): the first eth_getLogs over a block whose bloom has logs answers
    [] while its header is correct; those logs must not be skipped."""
    d = deployment
    traffic(d, anvil, 200, rounds=2)
    bad = log_blocks(anvil, d)[0]
    seen: list[int] = []

    def empty_once(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        if method == "eth_getLogs" and not seen:
            lo, hi = (int(params[0][k], 16) for k in ("fromBlock", "toBlock"))
            if lo <= bad <= hi:
                seen.append(bad)
                return {**answer, "result": []}
        return answer

    fake = FakeRpc.start_in_thread(anvil.url, corrupt=empty_once)
    fakes.append(fake)
    out = indexer(fake_config(tmp_path, db_dsn, fake.url, d), *RUN)
    assert out.code == 0, out.stderr[-2000:]
    assert seen
    assert_all(db_dsn, anvil, d)


def _corruptions(bad: int) -> dict[str, Callable[[str, list[Any], dict[str, Any]], Any]]:
    """Ways a node lies about block ``bad`` (a block with logs, not the last one)."""

    def block(mutate: Callable[[dict[str, Any]], None]) -> Any:
        def hook(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
            if method == "eth_getBlockByNumber" and params[0] == hex(bad) and answer.get("result"):
                answer = copy.deepcopy(answer)
                mutate(answer["result"])
            return answer

        return hook

    def logs(mutate: Callable[[list[dict[str, Any]]], None]) -> Any:
        def hook(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
            if method == "eth_getLogs" and isinstance(answer.get("result"), list):
                lo, hi = (int(params[0][k], 16) for k in ("fromBlock", "toBlock"))
                if lo <= bad <= hi:
                    answer = copy.deepcopy(answer)
                    mutate(answer["result"])
            return answer

        return hook

    def at_bad(result: list[dict[str, Any]]) -> dict[str, Any]:
        return next(lg for lg in result if int(lg["blockNumber"], 16) == bad)

    def gap(header: dict[str, Any]) -> None:
        header["number"] = hex(bad + 1)

    def parent(header: dict[str, Any]) -> None:
        header["parentHash"] = "0x" + "ab" * 32

    def block_hash(result: list[dict[str, Any]]) -> None:
        at_bad(result)["blockHash"] = "0x" + "cd" * 32

    def outside(result: list[dict[str, Any]]) -> None:
        stray = dict(at_bad(result))
        stray["blockNumber"] = hex(bad + 10_000)
        result.append(stray)

    def duplicate(result: list[dict[str, Any]]) -> None:
        result.append(dict(at_bad(result)))

    return {
        "gap": block(gap),
        "broken_parent": block(parent),
        "log_block_hash": logs(block_hash),
        "log_outside_range": logs(outside),
        "duplicate_log": logs(duplicate),
    }


@pytest.mark.parametrize(
    "kind", ["gap", "broken_parent", "log_block_hash", "log_outside_range", "duplicate_log"]
)
def test_rpc_corrupt_data_never_committed_and_persistent_halts(
    kind: str,
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """Scenario 21: corrupt answers about one block are rejected (InvalidRpcData counted),
    nothing at or past it is committed, and when the node keeps lying the chain halts."""
    d = deployment
    traffic(d, anvil, 21, rounds=3)
    blocks = log_blocks(anvil, d)
    bad = blocks[len(blocks) // 2]
    anvil.mine(2)
    fake = FakeRpc.start_in_thread(anvil.url, corrupt=_corruptions(bad)[kind])
    fakes.append(fake)
    cfg = fake_config(tmp_path, db_dsn, fake.url, d, batch_blocks=3)
    out = indexer(cfg, *RUN)
    assert out.code == 1, out.stderr[-2000:]
    assert kinds(out.events).count("InvalidRpcData") >= 3
    (event,) = out.named("chain_halted")
    assert event["kind"] == "InvalidRpcData"
    number = checks.checkpoint(db_dsn)[0]
    assert number < bad
    assert not [k for k in checks.stored_keys(db_dsn) if k[0] >= bad], "corrupt data was committed"
    # the node is fixed: `indexer rewind` clears the halt and the chain catches up
    fake.fake.corrupt = None
    assert indexer(cfg, "rewind", "--chain", "local", "--to", str(number)).code == 0
    again = indexer(cfg, *RUN)
    assert again.code == 0, again.stderr[-2000:]
    assert_all(db_dsn, anvil, d)


def test_rpc_transient_corruption_is_retried_then_committed(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """Scenario 21: a node that lies twice then answers correctly: rejected twice, no halt,
    and the stored chain is canonical."""
    d = deployment
    traffic(d, anvil, 211, rounds=3)
    blocks = log_blocks(anvil, d)
    bad = blocks[len(blocks) // 2]
    anvil.mine(2)
    lie = _corruptions(bad)["log_block_hash"]
    lies: list[int] = []

    def twice(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        out = lie(method, params, answer)
        if out is not answer and len(lies) < 2:
            lies.append(1)
            return out  # type: ignore[no-any-return]
        return answer

    fake = FakeRpc.start_in_thread(anvil.url, corrupt=twice)
    fakes.append(fake)
    out = indexer(fake_config(tmp_path, db_dsn, fake.url, d, batch_blocks=3), *RUN)
    assert out.code == 0, out.stderr[-2000:]
    assert len(lies) == 2
    # A lie met by the prefetch of the next range drops that prefetch silently (the range is
    # fetched again by the step that needs it), so one or both lies show as step retries.
    assert 1 <= kinds(out.events).count("InvalidRpcData") <= 2
    assert not out.named("chain_halted")
    assert_all(db_dsn, anvil, d)


def test_rpc_wrong_chain_id_refused_before_writing(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """Scenario 21: an endpoint that answers eth_chainId for another chain: exit 2, one line,
    nothing written."""

    def other_chain(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "result": "0x1"} if method == "eth_chainId" else answer

    fake = FakeRpc.start_in_thread(anvil.url, corrupt=other_chain)
    fakes.append(fake)
    out = indexer(fake_config(tmp_path, db_dsn, fake.url, deployment), *RUN)
    assert out.code == 2, out.stderr[-2000:]
    text = [ln for ln in out.stderr.splitlines() if not ln.startswith("{")]
    assert len(text) == 1, out.stderr
    assert "chain id 1" in text[0]
    assert not checks.db_fetch(db_dsn, "SELECT 1 FROM checkpoints")


def test_rpc_head_going_backwards_with_same_hashes_waits(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
    daemons: list[Daemon],
) -> None:
    """Scenario 22: the node's head drops 3 blocks with the same hashes (a node behind): no
    rewind, no deletion, no reorg_detected; the daemon waits and then follows again."""
    d = deployment
    traffic(d, anvil, 22, rounds=3)
    fake = FakeRpc.start_in_thread(anvil.url)
    fakes.append(fake)
    daemon = Daemon(fake_config(tmp_path, db_dsn, fake.url, d), "--no-http")
    daemons.append(daemon)
    wait_until(lambda: at_head(db_dsn, anvil), timeout=60, what="sync")
    rows_before = len(checks.stored_keys(db_dsn))
    tip = checks.checkpoint(db_dsn)
    fake.fake.head_offset = 3
    daemon.wait_for(lambda e: e.get("event") == "node_behind")
    assert checks.checkpoint(db_dsn) == tip
    assert len(checks.stored_keys(db_dsn)) == rows_before
    fake.fake.head_offset = 0
    rng = random.Random(22)
    deploy.generate_traffic(d.w3, d, rng, 3)
    wait_until(lambda: at_head(db_dsn, anvil), timeout=60, what="catch-up")
    assert daemon.stop() == 0
    events = daemon.events()
    assert not [e for e in events if e.get("event") in ("reorg_detected", "rewound")]
    assert not checks.db_fetch(db_dsn, "SELECT 1 FROM reorgs")
    assert_all(db_dsn, anvil, d)


def test_rpc_head_below_checkpoint_is_a_metric_then_a_failover(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
    daemons: list[Daemon],
) -> None:
    """Endpoint #0's head stays 3 blocks below our checkpoint (same hashes): the daemon waits
    with indexer_node_behind_blocks 3 (the alert's input), and after NODE_BEHIND_FAILOVER_S
    moves to endpoint #1 and follows the new blocks; nothing is rolled back."""
    from tests.e2e.test_hostile_input import metric  # noqa: PLC0415

    d = deployment
    traffic(d, anvil, 221, rounds=2)
    fake = FakeRpc.start_in_thread(anvil.url)
    fakes.append(fake)
    cfg = fake_config(tmp_path, db_dsn, fake.url, d)
    cfg.write_text(
        cfg.read_text().replace(
            f'rpc_urls = ["{fake.url}"]', f'rpc_urls = ["{fake.url}", "{anvil.url}"]'
        )
    )
    daemon = Daemon(cfg)
    daemons.append(daemon)
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    wait_until(lambda: at_head(db_dsn, anvil), timeout=60, what="sync")
    fake.fake.head_offset = 3
    daemon.wait_for(lambda e: e.get("event") == "node_behind")
    assert metric(port, 'indexer_node_behind_blocks{chain="local"}') == 3
    moved = daemon.wait_for(
        lambda e: e.get("event") == "node_behind" and e.get("failover") is True, timeout=40
    )
    assert moved["behind_s"] >= 10
    deploy.generate_traffic(d.w3, d, random.Random(221), 3)
    wait_until(lambda: at_head(db_dsn, anvil), timeout=60, what="catch-up through #1")
    assert metric(port, 'indexer_node_behind_blocks{chain="local"}') == 0
    assert daemon.stop() == 0
    failovers = [e for e in daemon.events() if e.get("event") == "rpc_failover"]
    assert any(e.get("kind") == "behind_checkpoint" for e in failovers)
    assert not checks.db_fetch(db_dsn, "SELECT 1 FROM reorgs")
    assert_all(db_dsn, anvil, d)
