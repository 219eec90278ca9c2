"""Hostile and broken input (issue 14): each case either quarantines the log with its reason or
halts the one chain with a named reason, the process never crashes or loops, and after the
operator's fix and a restart nothing committed is lost or duplicated.

Real anvil and PostgreSQL; FakeRpc (tests/fakes/rpc.py) in front of anvil for what anvil
cannot produce: absurd header timestamps, oversized answers, a lagging endpoint."""

from __future__ import annotations

import json
import random
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from indexer.loader import GROUP_RANGES
from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.e2e.test_hostile_logs import emit
from tests.fakes.rpc import FakeRpc, FakeRpcThread
from tests.faults.test_pg_faults import traffic, wait_until
from tests.faults.test_rpc_faults import log_blocks
from tests.harness import ChainCfg, Daemon, indexer, write_config
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]
RUN = ("run", "--exit-when-caught-up", "--no-http")

# An ABI of our own for LogEmitter: arrays and tuples holding text go to `other_events` as JSON.
TEXT_ABI = [
    {
        "type": "event",
        "name": "Names",
        "anonymous": False,
        "inputs": [{"name": "names", "type": "string[]", "indexed": False}],
    },
    {
        "type": "event",
        "name": "Pair",
        "anonymous": False,
        "inputs": [
            {
                "name": "pair",
                "type": "tuple",
                "indexed": False,
                "components": [
                    {"name": "id", "type": "uint256"},
                    {"name": "label", "type": "string"},
                ],
            }
        ],
    },
]
NAMES = keccak(text="Names(string[])")
PAIR = keccak(text="Pair((uint256,string))")


@pytest.fixture
def fakes() -> Iterator[list[FakeRpcThread]]:
    started: list[FakeRpcThread] = []
    yield started
    for f in started:
        f.stop()


def chain_cfg(url: str | list[str], d: deploy.Deployment, **kw: Any) -> ChainCfg:
    urls = [url] if isinstance(url, str) else url
    return ChainCfg("local", 31337, urls[0], d.addresses, start_block=d.block_number, **kw)


def config(
    tmp_path: Path,
    dsn: str,
    chain: ChainCfg,
    *,
    urls: list[str] | None = None,
    chain_keys: str = "",
    service: str = "",
    emitter_abi: Path | None = None,
) -> Path:
    """write_config, then: several rpc_urls, extra [[chains]] keys, extra [service] keys, and
    LogEmitter decoded with ``emitter_abi``."""
    path = write_config(tmp_path / "indexer.toml", dsn, [chain])
    text = path.read_text()
    if urls:
        text = text.replace(f'rpc_urls = ["{chain.rpc_url}"]', f"rpc_urls = {json.dumps(urls)}")
    if chain_keys:
        text = text.replace(
            f'finality = "{chain.finality}"\n', f'finality = "{chain.finality}"\n{chain_keys}\n'
        )
    if service:
        text = text.replace("[service]\n", f"[service]\n{service}\n", 1)
    if emitter_abi is not None:
        text = text.replace(
            'name = "LogEmitter"\n', f'name = "LogEmitter"\nabi = "{emitter_abi}"\n'
        )
    path.write_text(text)
    return path


def halted_reason(dsn: str) -> str | None:
    rows = checks.db_fetch(dsn, "SELECT halted_reason FROM checkpoints")
    return rows[0]["halted_reason"] if rows else None


def text_lines(stderr: str) -> list[str]:
    """stderr without the JSON log lines: what a person reads."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("{")]


def absurd_times(bad: int, timestamp: int) -> Any:
    """A FakeRpc hook: headers of block ``bad`` and later carry ``timestamp``."""

    def hook(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        result = answer.get("result")
        if (
            method == "eth_getBlockByNumber"
            and isinstance(result, dict)
            and int(result["number"], 16) >= bad
        ):
            return {**answer, "result": {**result, "timestamp": hex(timestamp)}}
        return answer

    return hook


def fixed_rewound_equal(
    fake: FakeRpcThread, cfg: Path, chain: str, to: int, dsn: str, anvil: Anvil, d: Any
) -> None:
    """The node fixed, `rewind --to`, a re-run: the tables equal the chain."""
    fake.fake.corrupt = None
    assert indexer(cfg, "rewind", "--chain", chain, "--to", str(to)).code == 0
    again = indexer(cfg, *RUN)
    assert again.code == 0, again.stderr[-2000:]
    assert_all(dsn, anvil, d)


# ---- bad data: quarantined ----------------------------------------------------------------


def test_nul_inside_arrays_and_tuples_is_quarantined_not_a_halt(
    tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """A string[] or a tuple's string holding NUL (JSONB refuses \\u0000): the log goes to
    quarantine with its reason, its clean neighbours to other_events; no halt, and a rewind
    and re-run store the same rows."""
    d = deployment
    abi = tmp_path / "LogEmitterText.json"
    abi.write_text(json.dumps(TEXT_ABI))
    txs = {
        "clean": emit(d, [NAMES], abi_encode(["string[]"], [["ok", "0xNotAnAddress"]])),
        "nul_array": emit(d, [NAMES], abi_encode(["string[]"], [["ok", "bad\x00name"]])),
        "nul_tuple": emit(d, [PAIR], abi_encode(["(uint256,string)"], [(7, "a\x00b")])),
        "clean_tuple": emit(d, [PAIR], abi_encode(["(uint256,string)"], [(2**256 - 1, "t\tab")])),
    }
    chain = chain_cfg(anvil.url, d, watch=(*ChainCfg.watch, "LogEmitter"))
    cfg = config(tmp_path, db_dsn, chain, emitter_abi=abi)
    out = indexer(cfg, *RUN)
    assert out.code == 0, out.stderr[-2000:]
    assert not out.named("chain_halted")
    assert halted_reason(db_dsn) is None
    quarantined = {
        r["tx_hash"]: r["reason"]
        for r in checks.db_fetch(db_dsn, "SELECT tx_hash, reason FROM quarantine")
    }
    assert quarantined == {
        txs["nul_array"]: "Names: string contains NUL",
        txs["nul_tuple"]: "Pair: string contains NUL",
    }
    stored = {
        r["tx_hash"]: json.loads(r["args"])
        for r in checks.db_fetch(
            db_dsn,
            "SELECT tx_hash, args::text AS args FROM other_events WHERE contract = $1",
            d.addresses["LogEmitter"].lower(),
        )
    }
    assert stored == {
        txs["clean"]: {"names": ["ok", "0xNotAnAddress"]},  # text is never lowercased
        txs["clean_tuple"]: {"pair": [str(2**256 - 1), "t\tab"]},
    }
    before = checks.db_fetch(db_dsn, "SELECT * FROM quarantine ORDER BY block_number, log_index")
    assert indexer(cfg, "rewind", "--chain", "local", "--to", str(d.block_number)).code == 0
    again = indexer(cfg, *RUN)
    assert again.code == 0, again.stderr[-2000:]
    assert checks.db_fetch(db_dsn, "SELECT * FROM quarantine ORDER BY block_number, log_index") == (
        before
    )


# ---- an unreliable node: the chain halts with a named reason -----------------------------


@pytest.mark.parametrize("timestamp", [2**40, 2**64], ids=["2^40", "2^64"])
def test_absurd_header_timestamp_halts_the_chain_then_continues_after_the_fix(
    timestamp: int,
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """Headers from block X on carry a timestamp past year 9999 (2^40: datetime overflows;
    2^64: BIGINT and asyncpg overflow): refused at the RPC edge as InvalidRpcData, the chain
    halts with that reason (exit 1, no crash loop, no endless retry), nothing at or past X is
    committed; the node fixed and `rewind` run, the chain catches up exactly."""
    d = deployment
    traffic(d, anvil, 14, rounds=3)
    bad = log_blocks(anvil, d)[1]
    anvil.mine(2)

    fake = FakeRpc.start_in_thread(anvil.url, corrupt=absurd_times(bad, timestamp))
    fakes.append(fake)
    cfg = config(tmp_path, db_dsn, chain_cfg(fake.url, d, batch_blocks=3))
    out = indexer(cfg, *RUN, timeout=180)
    assert out.code == 1, out.stderr[-2000:]
    (event,) = out.named("chain_halted")
    assert event["kind"] == "InvalidRpcData"
    assert "block timestamp" in event["reason"]
    assert "out of range" in event["reason"]
    assert "timestamp" in (halted_reason(db_dsn) or "")
    number = checks.checkpoint(db_dsn)[0]
    assert number < bad
    assert not [k for k in checks.stored_keys(db_dsn) if k[0] >= bad]
    assert not text_lines(out.stderr) or "Traceback" not in out.stderr

    fixed_rewound_equal(fake, cfg, "local", number, db_dsn, anvil, d)


def test_one_chain_halted_by_its_node_leaves_the_process_and_the_other_chain_running(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """Two chains in one live daemon; chain "one" reads through a node whose headers from
    block X on are dated past year 9999. "one" halts with that reason (indexer_halted 1,
    /readyz names it), while the process stays up and chain "two" keeps indexing its new
    blocks; after the fix, `rewind` and a restart, both equal their chains."""
    d = deployment
    traffic(d, anvil, 147, rounds=2)
    bad = log_blocks(anvil, d)[-1]
    other = Anvil.start(chain_id=31338)
    daemon: Daemon | None = None
    try:
        d2 = deploy.deploy_all(deploy.connect(other.url))
        fake = FakeRpc.start_in_thread(anvil.url, corrupt=absurd_times(bad, 2**40))
        fakes.append(fake)
        one = ChainCfg("one", 31337, fake.url, d.addresses, start_block=d.block_number)
        two = ChainCfg("two", 31338, other.url, d2.addresses, start_block=d2.block_number)
        cfg = write_config(tmp_path / "two.toml", db_dsn, [one, two])
        daemon = Daemon(cfg)
        port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
        daemon.wait_for(lambda e: e.get("event") == "chain_halted", timeout=90)
        before = checks.checkpoint(db_dsn, 31338)[0]
        deploy.generate_traffic(d2.w3, d2, random.Random(3), 10)
        wait_until(
            lambda: checks.checkpoint(db_dsn, 31338)[0] == other.block_number() > before,
            timeout=60,
            what="chain two to follow its new blocks",
        )
        assert daemon.proc.poll() is None, "the process exited"
        assert metric(port, 'indexer_halted{chain="one"}') == 1
        assert metric(port, 'indexer_halted{chain="two"}') == 0
        ready = readyz(port)
        assert ready["chains"]["one"]["halted"] is True
        assert ready["chains"]["two"]["halted"] is False
        assert checks.checkpoint(db_dsn, 31337)[0] < bad
        assert daemon.stop() == 0

        fake.fake.corrupt = None
        top = checks.checkpoint(db_dsn, 31337)[0]
        assert indexer(cfg, "rewind", "--chain", "one", "--to", str(top)).code == 0
        again = indexer(cfg, *RUN)
        assert again.code == 0, again.stderr[-2000:]
        assert_all(db_dsn, anvil, d)
        checks.assert_balances(db_dsn, other, d2.addresses["MultiTokenPushPull"], 31338)
    finally:
        if daemon is not None:
            daemon.close()
        other.stop()


def metric(port: int, sample: str) -> float:
    """One sample of /metrics, by its name and labels as printed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {sample}")


def readyz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:  # 503 while a chain is halted: the body says why
        body = exc.read()
    return dict(json.loads(body))


def test_oversized_answers_shrink_the_range_and_one_oversized_block_halts(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """max_response_mb = 1. An eth_getLogs answer over 1 MiB for any range wider than two
    blocks: read in chunks and given up on at the cap, the range shrinks until it passes and
    every event lands. Then a block whose own answer is over the cap: the chain halts naming
    the cap (RangeLimitError), nothing past it committed; fixed and rewound, it catches up."""
    d = deployment
    traffic(d, anvil, 141, rounds=3)
    padding = "0" * (1024 * 1024 + 10)

    def pad(wide: int, only: int | None) -> Any:
        def hook(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
            if method != "eth_getLogs":
                return answer
            lo, hi = (int(params[0][k], 16) for k in ("fromBlock", "toBlock"))
            if hi - lo + 1 > wide or (only is not None and lo <= only <= hi):
                return {**answer, "padding": padding}  # parsed by nobody, read by everybody
            return answer

        return hook

    fake = FakeRpc.start_in_thread(anvil.url, corrupt=pad(2, None))
    fakes.append(fake)
    cfg = config(
        tmp_path, db_dsn, chain_cfg(fake.url, d, batch_blocks=50), chain_keys="max_response_mb = 1"
    )
    out = indexer(cfg, *RUN, timeout=180)
    assert out.code == 0, out.stderr[-2000:]
    assert out.named("rpc_log_range_changed")
    # ranges of at most 2 blocks; a commit takes up to GROUP_RANGES of them (commit groups)
    assert all(e["last"] - e["first"] < 2 * GROUP_RANGES for e in out.named("batch_committed"))
    assert_all(db_dsn, anvil, d)

    traffic(d, anvil, 142, rounds=2)
    bad = log_blocks(anvil, d)[-1]
    fake.fake.corrupt = pad(10**9, bad)
    halted = indexer(cfg, *RUN, timeout=180)
    assert halted.code == 1, halted.stderr[-2000:]
    (event,) = halted.named("chain_halted")
    assert event["kind"] == "RangeLimitError"
    assert f"block(s) from {bad}" in event["reason"]
    assert "larger than 1048576 bytes" in event["reason"]
    assert checks.checkpoint(db_dsn)[0] == bad - 1
    fixed_rewound_equal(fake, cfg, "local", bad - 1, db_dsn, anvil, d)


# ---- the command line: one line, the documented exit code ----------------------------------


def test_a_task_group_failure_is_one_line_and_a_traceback_only_in_debug(
    tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """A follower that raises what nobody expects (an ExceptionGroup out of the TaskGroup):
    exit 1 and one line naming the error, no traceback; with --log-level debug the traceback
    follows. `rewind --to` above the checkpoint: exit 2, one line."""
    d = deployment
    cfg = config(tmp_path, db_dsn, chain_cfg(anvil.url, d))
    env = {"INDEXER_FAILPOINTS": "sink.before_begin=crash@1"}
    out = indexer(cfg, *RUN, env=env)
    assert out.code == 1, out.stderr[-2000:]
    lines = text_lines(out.stderr)
    assert len(lines) == 1, out.stderr[-2000:]
    assert lines[0].startswith("error: unexpected FailpointCrash")
    assert "Traceback" not in out.stderr

    debug = indexer(cfg, "--log-level", "debug", *RUN, env=env)
    assert debug.code == 1
    assert "Traceback" in debug.stderr
    assert text_lines(debug.stderr)[-1].startswith("error: unexpected FailpointCrash")

    assert indexer(cfg, *RUN).code == 0
    top = checks.checkpoint(db_dsn)[0]
    above = indexer(cfg, "rewind", "--chain", "local", "--to", str(top + 100))
    assert above.code == 2, above.stderr
    assert text_lines(above.stderr) == [
        f"error: checkpoint is {top}; nothing above {top + 100} to roll back"
    ]


def test_abi_with_impossible_types_is_exit_2_naming_file_event_and_field(
    tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """uint300, bytes40 and a nameless event: refused at config load (exit 2), one line naming
    the file, the event and the input, before anything connects."""
    abi = tmp_path / "Broken.json"
    abi.write_text(
        json.dumps(
            [
                {
                    "type": "event",
                    "name": "Odd",
                    "inputs": [
                        {"name": "big", "type": "uint300", "indexed": False},
                        {"name": "wide", "type": "bytes40", "indexed": False},
                    ],
                },
                {"type": "event", "inputs": []},
            ]
        )
    )
    chain = chain_cfg(anvil.url, deployment, watch=(*ChainCfg.watch, "LogEmitter"))
    cfg = config(tmp_path, db_dsn, chain, emitter_abi=abi)
    out = indexer(cfg, *RUN)
    assert out.code == 2, out.stderr
    (line,) = text_lines(out.stderr)
    assert str(abi) in line
    assert "event Odd, input 0 (big): unknown or non-canonical type 'uint300'" in line
    assert "event Odd, input 1 (wide): unknown or non-canonical type 'bytes40'" in line
    assert "event entry 1 has no valid name" in line
    assert not checks.db_fetch(db_dsn, "SELECT 1 FROM checkpoints")


# ---- shutdown ----------------------------------------------------------------------------


def test_shutdown_grace_cancels_a_stuck_commit_and_loses_nothing(
    tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """A commit stuck inside its transaction (failpoint: 60 s after the events are written)
    and SIGTERM with shutdown_grace = 2: the process exits 0 within a few seconds, logging
    shutdown_grace_expired; the open transaction rolled back (no row of that batch); a restart
    indexes everything exactly once."""
    d = deployment
    traffic(d, anvil, 145, rounds=2)
    cfg = config(tmp_path, db_dsn, chain_cfg(anvil.url, d), service="shutdown_grace = 2")
    daemon = Daemon(cfg, "--no-http", env={"INDEXER_FAILPOINTS": "sink.after_events=sleep:60"})
    try:
        wait_until(
            lambda: "failpoint sink.after_events: sleep" in daemon.log_path.read_text(),
            timeout=60,
            what="the stuck commit",
        )
        sent = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = daemon.proc.wait(timeout=20)
        took = time.monotonic() - sent
    finally:
        daemon.close()
    assert code == 0, daemon.log_path.read_text()[-2000:]
    assert took < 12, took
    events = daemon.events()
    assert [e for e in events if e.get("event") == "shutdown_grace_expired"]
    assert not checks.stored_keys(db_dsn), "the stuck batch was committed"
    assert not [e for e in events if e.get("event") == "batch_committed"]
    again = indexer(cfg, *RUN)
    assert again.code == 0, again.stderr[-2000:]
    assert_all(db_dsn, anvil, d)


# ---- completeness of final ranges --------------------------------------------------------


def test_a_lagging_endpoint_final_range_is_caught_by_the_second_endpoint_and_refetched(
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
    fakes: list[FakeRpcThread],
) -> None:
    """Endpoint #0 answers eth_getLogs with [] for one block and hides it in the bloom: the
    follower commits the range without its logs. `reconcile` asks endpoint #1 (anvil): a
    `range_incomplete` discrepancy, and the range is fetched again; while #0 still lies the
    discrepancy stays open, once #0 is fixed the refetch repairs it, the next run clears it
    and the tables equal the chain."""
    d = deployment
    traffic(d, anvil, 146, rounds=3)
    hidden = log_blocks(anvil, d)[1]
    anvil.mine(12)

    def lag(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        result = answer.get("result")
        if method == "eth_getLogs" and isinstance(result, list):
            return {
                **answer,
                "result": [lg for lg in result if int(lg["blockNumber"], 16) != hidden],
            }
        if (
            method == "eth_getBlockByNumber"
            and isinstance(result, dict)
            and int(result["number"], 16) == hidden
        ):
            return {**answer, "result": {**result, "logsBloom": "0x" + "00" * 256}}
        return answer

    fake = FakeRpc.start_in_thread(anvil.url, corrupt=lag)
    fakes.append(fake)
    chain = chain_cfg(fake.url, d, max_reorg_depth=4)
    cfg = config(tmp_path, db_dsn, chain, urls=[fake.url, anvil.url])
    assert indexer(cfg, *RUN).code == 0
    assert not [k for k in checks.stored_keys(db_dsn) if k[0] == hidden]

    def ranges_open() -> list[dict[str, Any]]:
        return checks.db_fetch(
            db_dsn,
            "SELECT subject, expected, actual, resolution FROM discrepancies "
            "WHERE kind = 'range_incomplete' ORDER BY id",
        )

    first = indexer(cfg, "reconcile", "--json")
    assert first.code == 3, first.stderr[-2000:]
    found = [
        f for f in json.loads(first.stdout)["chains"][0]["found"] if f["kind"] == "range_incomplete"
    ]
    assert len(found) == 1, found
    (row,) = ranges_open()
    assert row["resolution"] is None
    assert "endpoint #1" in row["expected"]
    assert not [k for k in checks.stored_keys(db_dsn) if k[0] == hidden]  # #0 still lies
    fixing = indexer(cfg, "reconcile", "--fix")  # a range finding goes through --fix too
    assert fixing.code == 3, fixing.stderr[-2000:]
    assert not [k for k in checks.stored_keys(db_dsn) if k[0] == hidden]

    fake.fake.corrupt = None
    second = indexer(cfg, "reconcile")
    assert second.code == 3, second.stderr[-2000:]
    assert [e for e in second.events if e.get("event") == "range_refetched"]
    assert [k for k in checks.stored_keys(db_dsn) if k[0] == hidden]
    third = indexer(cfg, "reconcile", "--json")
    assert not [
        f for f in json.loads(third.stdout)["chains"][0]["found"] if f["kind"] == "range_incomplete"
    ]
    assert all(r["resolution"] is not None for r in ranges_open())
    assert_all(db_dsn, anvil, d)
