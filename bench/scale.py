"""``python -m bench --scale``: rewardsync at a reward platform's size — thousands of
factory-made banks, a million wallets — on one machine.

The chain (built once, cached like bench/chain.py's): the project's contracts, ``--banks``
ProductBanks created by the factory (a tenth of them then funded and given a campaign budget:
FundsDeposited, CampaignBudgetAllocated), ``--wallets`` RewardAdded each to a new wallet
(pushed through MultiTokenPushPull by an authorised pusher, 500 per transaction, 20
transactions per block), a few claims and a chama cycle, and Multicall3 for the reconciler.

Measured, in one run on a fresh PostgreSQL: (1) ``indexer backfill`` of it all, every bank
watched (the addresses in chunks of 500 per eth_getLogs), its wall time, events/s and peak
RSS; (2) one ``indexer reconcile`` run at that size with the default coverage (incremental:
the touched balances and a 5 % sample, at most 50,000 views per run), its wall time and the
requests the node received (counted by a pass-through proxy); (3) follow latency with every
bank watched, as in the main bench (a block of 200 events a second). The pusher's throughput
is ``python -m bench --pusher`` (bench/pusher.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from bench import run as bench_run
from bench.chain import (
    ANVIL_ARGS,
    CACHE,
    REWARDS_PER_TX,
    WATCHED,
    ChainInfo,
    _count_logs,
    _setup,
    from_cache,
    push_calldata,
    record,
    send_tx,
    stop_dumping,
)
from tests import deploy as dp
from tests.fakes.rpc import FakeRpc
from tests.harness import INDEXER_BIN
from tests.procs import ANVIL_KEYS, Anvil

LAYOUT_VERSION = 1
PUSHES_PER_BLOCK = 20
BANKS_PER_BLOCK = 100
CAMPAIGN = keccak(text="scale-campaign")


def _call(selector: str, types: list[str], args: list[object]) -> str:
    return "0x" + (keccak(text=selector)[:4] + abi_encode(types, args)).hex()


NOISE_PER_TX = 1_000  # unwatched logs per transaction of the LogEmitter
NOISE_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()


def _noise(node: Anvil, admin: str, emitter: str, token: str, noise: int, foreign: int) -> None:
    """Traffic of a contract nobody watches (the LogEmitter): ``noise`` logs of another
    signature (an ERC-20 Transfer's topic0) and ``foreign`` RewardAdded of the very signature
    MultiTokenPushPull emits, so that a filter by topic0 brings them too."""
    sent = 0
    for first in range(0, noise, NOISE_PER_TX):
        count = min(NOISE_PER_TX, noise - first)
        data = "0x" + (first + 1).to_bytes(32, "big").hex()
        raw = _call(
            "emitRawMany(uint8,bytes32[],bytes,uint256)",
            ["uint8", "bytes32[]", "bytes", "uint256"],
            [1, [bytes.fromhex(NOISE_TOPIC[2:])], bytes.fromhex(data[2:]), count],
        )
        send_tx(node, admin, emitter, raw, gas=3_000_000)
        sent += 1
        if sent % PUSHES_PER_BLOCK == 0:
            node.mine(1)
    for first in range(0, foreign, REWARDS_PER_TX):
        count = min(REWARDS_PER_TX, foreign - first)
        raw = _call(
            "emitRewardsAdded(address,address,uint160,uint256,uint256)",
            ["address", "address", "uint160", "uint256", "uint256"],
            [token, emitter, 0x3000000 + first, 1, count],
        )
        send_tx(node, admin, emitter, raw, gas=3_000_000)
        sent += 1
        if sent % PUSHES_PER_BLOCK == 0:
            node.mine(1)
    node.mine(1)


def build(
    banks: int, wallets: int, path: Path, meta: Path, noise: int = 0, foreign: int = 0
) -> ChainInfo:
    """Build the scale chain (see the module docstring) and dump it to ``path``."""
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    node = Anvil.start(*ANVIL_ARGS, "--prune-history", "--dump-state", str(tmp))
    try:
        addresses, start_block = _setup(node)
        w3 = dp.connect(node.url)
        addresses["Multicall3"] = dp.deploy(w3, "Multicall3").address.lower()
        admin = dp.address_of(dp.ADMIN_KEY).lower()
        token, mtpp = addresses["TestToken"], addresses["MultiTokenPushPull"]
        factory = addresses["ProductBankFactory"]
        node.rpc("evm_setAutomine", [False])
        made: list[str] = []
        for i in range(banks):
            pid = keccak(text=f"scale-bank-{i}")
            send_tx(node, admin, factory, _call("createBank(bytes32,address)",
                    ["bytes32", "address"], [pid, admin]), gas=4_000_000)  # fmt: skip
            made.append(
                str(
                    node.rpc(
                        "eth_call",
                        [{"to": factory, "data": _call("predictBankAddress(bytes32)",
                                                        ["bytes32"], [pid])}, "latest"],
                    )
                )[-40:]
            )  # fmt: skip
            if (i + 1) % BANKS_PER_BLOCK == 0:
                node.mine(1)
        node.mine(1)
        for n, hex40 in enumerate(made[::10]):  # a tenth of the banks: funds and a budget
            bank = "0x" + hex40
            approve = _call("approve(address,uint256)", ["address", "uint256"], [bank, 10**24])
            deposit = _call("deposit(address,uint256)", ["address", "uint256"], [token, 10**24])
            budget = _call(
                "allocateCampaignBudget(bytes32,address,uint256)",
                ["bytes32", "address", "uint256"],
                [CAMPAIGN, token, 10**22],
            )
            send_tx(node, admin, token, approve, gas=100_000)
            send_tx(node, admin, bank, deposit, gas=300_000)
            send_tx(node, admin, bank, budget, gas=300_000)
            if (n + 1) % 50 == 0:
                node.mine(1)
        node.mine(1)
        rng = random.Random(wallets)
        n_push = -(-wallets // REWARDS_PER_TX)
        for i in range(n_push):
            first = i * REWARDS_PER_TX
            rewards = [
                ("0x" + (0x2000000 + j).to_bytes(20, "big").hex(), rng.randint(1, 10**18))
                for j in range(first, min(wallets, first + REWARDS_PER_TX))
            ]
            send_tx(node, admin, mtpp, push_calldata(token, rewards))
            if (i + 1) % PUSHES_PER_BLOCK == 0 or i + 1 == n_push:
                for key in ANVIL_KEYS[1:3]:  # claims now and then
                    pull = _call("pullReward(address)", ["address"], [token])
                    send_tx(node, dp.address_of(key).lower(), mtpp, pull, gas=200_000)
                node.mine(1)
        if noise or foreign:
            _noise(node, admin, addresses["LogEmitter"], token, noise, foreign)
        for _ in range(10):  # the tail: below the reorg window
            node.mine(10)
        node.rpc("evm_setAutomine", [True])
        head = node.block_number()
        watched = [addresses[c] for c in WATCHED] + ["0x" + b for b in made]
        events = added = 0
        for k in range(0, len(watched), 500):
            e, a = _count_logs(node, watched[k : k + 500], start_block, head)
            events, added = events + e, added + a
    finally:
        stop_dumping(node, timeout=600)
    return record(
        tmp,
        path,
        meta,
        ChainInfo(
            events=events,
            reward_added=added,
            start_block=start_block,
            head=head,
            addresses=addresses,
            admin=admin,
            build_s=round(time.perf_counter() - t0, 1),
            state=str(path),
        ),
    )


def cached(banks: int, wallets: int, noise: int = 0, foreign: int = 0) -> ChainInfo:
    stem = CACHE / f"scale-v{LAYOUT_VERSION}-{banks}b-{wallets}w"
    what = f"the scale chain: {banks:,} banks, {wallets:,} wallets"
    if noise or foreign:
        stem = stem.with_name(f"{stem.name}-{noise}n-{foreign}f")
        what += f", {noise:,} + {foreign:,} unwatched logs"
    return from_cache(
        stem, what, lambda path, meta: build(banks, wallets, path, meta, noise, foreign)
    )


REORG_WINDOW = 3


def _shallow(cfg: Path) -> Path:
    """The config with a reorg window of REORG_WINDOW blocks (B = head - REORG_WINDOW)."""
    text = cfg.read_text().replace("max_reorg_depth = 64\n", f"max_reorg_depth = {REORG_WINDOW}\n")
    cfg.write_text(text)
    return cfg


async def _reconcile(pg: object, node: Anvil, info: ChainInfo, tmp: Path, dsn: str) -> str:
    """One `indexer reconcile --json` through a counting proxy; the report line."""
    import asyncpg  # noqa: PLC0415

    # The cached chain keeps the state of its last block only (built with --prune-history):
    # views pinned below it fail. Blocks mined now keep theirs: mine past the reorg window
    # and index them, so that the reconciler's block B has its state.
    # (with a million wallets in the state, a block takes anvil seconds: a short window, 3)
    for _ in range(REORG_WINDOW + 1):
        node.mine(1)
    follow = _shallow(bench_run._config(tmp, "scale_catch_up", dsn, node, info, 0.5))
    subprocess.run(  # noqa: ASYNC221 (nothing else runs meanwhile)
        [str(INDEXER_BIN), "--config", str(follow), "run", "--exit-when-caught-up", "--no-http"],
        capture_output=True,
        check=True,
    )
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("ANALYZE")  # as autovacuum would have, on a database this size
        keys = await con.fetchval("SELECT count(*) FROM reward_balances")
    finally:
        await con.close()
    proxy = FakeRpc.start_in_thread(node.url)
    try:
        cfg = _shallow(bench_run._config(tmp, "scale_reconcile", dsn, node, info, 0.5))
        text = cfg.read_text().replace(node.url, proxy.url)
        text = text.replace(
            'finality = "depth"\n',
            f'finality = "depth"\nmulticall3 = "{info.addresses["Multicall3"]}"\n',
        )
        cfg.write_text(text)
        proxy.fake.calls.clear()
        proxy.fake.http_requests = 0
        started = time.perf_counter()
        done = subprocess.run(  # noqa: ASYNC221 (nothing else runs meanwhile: it is timed)
            [str(INDEXER_BIN), "--config", str(cfg), "reconcile", "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        if done.returncode not in (0, 3):  # 3: discrepancies found, still a run
            raise RuntimeError(f"reconcile exited {done.returncode}: {done.stderr[-2000:]}")
        report = json.loads(done.stdout)["chains"][0]
        calls = dict(proxy.fake.calls)
    finally:
        proxy.stop()
    checked = report["checked"]
    return (
        f"reconcile at {keys:,} balance keys (default coverage): {wall:.1f} s wall, "
        f"{checked.get('balances', 0):,} balances compared "
        f"({checked.get('balances_touched', 0):,} touched), {sum(calls.values()):,} JSON-RPC "
        f"calls in {proxy.fake.http_requests:,} HTTP requests ({calls}), "
        f"{len(report['found'])} findings"
    )


async def run_scale(
    banks: int,
    wallets: int,
    follow_blocks: int = 30,
    repeat: int = 1,
    noise: int = 0,
    foreign: int = 0,
) -> int:
    info = cached(banks, wallets, noise, foreign)
    print(
        f"rewardsync scale bench — {dt.date.today()} — {platform.node()} ({os.cpu_count()} "
        f"cores, {platform.python_implementation()} {platform.python_version()})"
    )
    print(
        f"chain: {banks:,} banks made by the factory, {info.reward_added:,} RewardAdded to "
        f"{wallets:,} wallets, {info.events:,} watched events over {info.blocks:,} blocks"
        + (
            f"; beside them, unwatched: {noise:,} logs of another signature and {foreign:,} "
            "RewardAdded of the same one"
            if noise or foreign
            else ""
        )
    )
    tmp = Path(tempfile.mkdtemp(prefix="rewardsync-scale-"))
    with bench_run._services(info) as (pg, node):
        # both fetch paths for many contracts, taking turns (this VM's neighbours make single
        # runs wander by a third); the default (address chunks) last, so that the reconcile
        # and follow below run on its database
        walls: dict[str, list[float]] = {}
        for i in range(repeat):
            for label, name, knob in (
                ("by topic0 (topics_above = 0)", "scale_topics", "topics_above = 0"),
                ("in address chunks of 500 (the default)", "scale_backfill", None),
            ):
                back, _cfg = await bench_run.measure_backfill(
                    pg, node, info, tmp, name, chain_knob=knob
                )
                assert back.cpu is not None
                walls.setdefault(label, []).append(back.wall_s)
                print(
                    f"backfill {i + 1}, {label}: {back.wall_s:.2f} s wall, "
                    f"{back.events / back.wall_s:,.0f} events/s, peak RSS {back.rss_mb:.0f} MB;"
                    f" CPU s: indexer {back.cpu[0]:.2f}, PostgreSQL {back.cpu[1]:.2f}, "
                    f"anvil {back.cpu[2]:.2f}"
                )
        for label, w in walls.items():
            mid = statistics.median(w)
            print(f"backfill {label}: median {mid:.2f} s, {info.events / mid:,.0f} events/s")
        dsn = pg.dsn("scale_backfill")
        print(await _reconcile(pg, node, info, tmp, dsn))
        for ws in (True, False):
            fcfg = bench_run.follow_config(tmp, dsn, node, info, ws=ws)
            lat = await bench_run.measure_follow(fcfg, dsn, node, info, follow_blocks, tmp)
            how = "ws newHeads" if ws else "HTTP polling"
            print(
                f"follow latency with {banks:,} banks watched, {how} "
                f"(poll_interval {bench_run.FOLLOW_POLL_S:g} s), {len(lat)} blocks: "
                f"p50 {statistics.median(lat) * 1000:.0f} ms, "
                f"p99 {bench_run._pct(lat, 0.99) * 1000:.0f} ms"
            )
    print(f"logs: {tmp}")
    return 0
