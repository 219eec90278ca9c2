"""``python -m bench --pusher``: how long the reward pusher needs to confirm N queued rewards
spread over M banks on anvil (issue 16, item 3; target: 100,000 rewards in < 15 min).

Steps: (1) a throwaway PostgreSQL and anvil (automine while setting up); (2) the project's
contracts and M ProductBanks made by the factory, each funded, with an uncapped campaign
budget and the signer granted DISTRIBUTOR_ROLE (``indexer.demo.contracts``, the helpers the
tests use); (3) a migrated database indexed up to the head (``indexer run
--exit-when-caught-up``), so that the clock does not count indexing the setup; (4) N rewards
queued by one ``INSERT ... SELECT`` (distinct wallets and amounts, unique external keys, round
robin over the banks); (5) anvil switched to one block per second (``--automine``: a block per
transaction, and an empty block each second so that the last batch gets its confirmation) and
``indexer run`` started with a ``[signer]`` (key files, ``max_batch`` 100, ``push_interval``
0.5 s, ``confirmations`` 1); the clock runs from its start to the
``confirmed_at`` of the last reward, progress sampled every second; (6) the daemon stopped
(peak RSS and CPU of exactly that process, from ``wait4``); the batches' receipts give gas and
transactions per block; the chain's own ``RewardAdded`` events (``eth_getLogs`` of
MultiTokenPushPull) must pay every queued reward exactly once with its amount: the multiset of
(bank, wallet, amount), and count and sum per bank, equal the table's.

``python -m bench.pusher --help`` has the knobs (block time, gas limit, push interval).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from eth_utils.crypto import keccak

from bench.run import CpuMeter, _create_db, _env, _rpc, services, start_daemon
from indexer.demo import contracts as dc
from tests.harness import INDEXER_BIN, ChainCfg, write_config
from tests.procs import ANVIL_KEYS, ROOT, Anvil

CHAIN_ID = 31337
SIGNER_KEY = dc.DISTRIBUTOR_KEY  # create_bank grants it DISTRIBUTOR_ROLE
SENDER_KEY = ANVIL_KEYS[3]  # pays the gas; not the signer, as in production
MAX_BATCH = 100  # the contract's MAX_BATCH_SIZE
CONFIRMATIONS = 1
WALLET_BASE = 0x5EED_0000_0000  # first synthetic wallet; the i-th reward pays WALLET_BASE + i
AMOUNT_BASE = 10**12  # the i-th reward pays AMOUNT_BASE + i (distinct: payments map 1:1 to rows)
BANK_FUND = 10**24  # tokens deposited into each bank (far above what it pays)
REWARD_ADDED = "0x" + keccak(text="RewardAdded(address,address,address,uint256)").hex()
LOG_EVENTS = (
    "reward_batch_sent",
    "reward_batch_replaced",
    "nonce_gap_filled",
    "reward_batch_tx_refused",
    "reward_batch_refused",
    "reward_batch_reverted",
    "broadcast_refused",
    "push_retry",
    "side_task_failed",
)


@dataclass
class Sample:
    """One progress sample: seconds since the daemon started, rewards by status, batches
    pending (signed, not yet confirmed), the daemon's RSS."""

    t: float
    rewards: dict[str, int]
    batches_pending: int
    rss_mb: float


@dataclass
class PusherResult:
    """What one run measured (one table)."""

    rewards: int
    banks: int
    mining: str
    analyzed: bool
    gas_limit: int
    setup_s: float
    wall_s: float  # daemon start -> confirmed_at of the last reward
    first_sent_s: float
    batches: int
    txs_sent: int  # first signatures broadcast (one per batch unless a node refused one)
    replaced: int
    gap_fills: int
    refusals: int
    gas: int
    gas_used_column: int  # batches whose reward_batches.gas_used the pusher recorded
    tx_blocks: int
    max_txs_per_block: int
    max_in_flight: int
    rss_mb: float
    cpu: tuple[float, float, float]
    paid_once: bool
    check: str
    rebroadcast_known: int = 0  # rebroadcasts the node answered "already imported/known"
    log_counts: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


# ---- setup ------------------------------------------------------------------------------


def deploy_banks(
    node: Anvil, n_banks: int, say: Callable[[str], None]
) -> tuple[dc.Deployment, list[tuple[str, str]]]:
    """The contracts and ``n_banks`` banks (factory, fund, uncapped budget, distributor role),
    with the same helpers the tests use; [(bank, campaign id)], lowercase hex."""
    d = dc.deploy_all(dc.connect(node.url))
    banks = []
    t0 = time.perf_counter()
    for i in range(n_banks):
        bank = dc.create_bank(d, dc.product_id(f"bench-bank-{i}"))
        campaign = dc.product_id(f"bench-campaign-{i}")
        dc.fund_bank(d, bank, BANK_FUND)
        dc.allocate_budget(d, bank, campaign, dc.UNCAPPED)
        banks.append((bank.address.lower(), "0x" + campaign.hex()))
        if (i + 1) % 100 == 0:
            say(f"  {i + 1:,} banks ({time.perf_counter() - t0:.0f} s)")
    return d, banks


def signer_toml(tmp: Path, push_interval: float) -> str:
    """The ``[signer]`` table, keys in files next to the config (as production keeps them)."""
    (tmp / "signer.key").write_text(SIGNER_KEY + "\n")
    (tmp / "sender.key").write_text(SENDER_KEY + "\n")
    return (
        '\n[signer]\nkey_file = "signer.key"\nsender_key_file = "sender.key"\n'
        f"max_batch = {MAX_BATCH}\npush_interval = {push_interval}\ndeadline = 3600\n"
    )


async def queue_rewards(
    dsn: str, token: str, banks: list[tuple[str, str]], n: int, *, analyze: bool
) -> tuple[int, float]:
    """N rewards in one INSERT ... SELECT, round robin over the banks; (rows, seconds).

    With ``analyze``, then ``ANALYZE rewards``: what autovacuum does within its naptime (60 s)
    after a bulk load; a backend that queues as it goes keeps the statistics current anyway.
    Without it the planner takes the 100,000 new rows for a few hundred and the pusher's
    ``assign_rewards`` scans every pending row per draft (about 25 ms instead of 3 ms) until
    autovacuum's analyze."""
    con = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        status = await con.execute(
            "INSERT INTO rewards (chain_id, bank, campaign_id, token, wallet, amount, "
            "external_key) "
            "SELECT $1, ($2::text[])[g % $3 + 1], ($4::text[])[g % $3 + 1], $5, "
            "'0x' || lpad(to_hex($6::bigint + g), 40, '0'), $7::numeric + g, "
            "'bench-pusher-' || g "
            "FROM generate_series(0, $8 - 1) AS g",
            CHAIN_ID,
            [b for b, _ in banks],
            len(banks),
            [c for _, c in banks],
            token,
            WALLET_BASE,
            AMOUNT_BASE,
            n,
        )
        if analyze:
            await con.execute("ANALYZE rewards")
        return int(status.split()[-1]), time.perf_counter() - t0
    finally:
        await con.close()


# ---- the daemon -------------------------------------------------------------------------


def stop_daemon(proc: subprocess.Popen[bytes]) -> tuple[int, float, float]:
    """SIGTERM, then reap with ``wait4``: (exit code, peak RSS MB, CPU seconds) of exactly
    that process (not RUSAGE_CHILDREN, which holds initdb's and anvil's too)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            _pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def sender_nonce(node: Anvil) -> int:
    """The sender's next account nonce at the latest block (its mined transactions)."""
    return int(node.rpc("eth_getTransactionCount", [dc.address_of(SENDER_KEY), "latest"]), 16)


def rss_mb(pid: int) -> float:
    """Current resident set of ``pid`` (0 when gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pre_index(cfg: Path, tmp: Path) -> None:
    """Index the setup blocks before the clock starts (the banks must be known)."""
    cmd = [INDEXER_BIN, "--config", str(cfg), "--log-format", "json", "--log-level", "warning"]
    with (tmp / "preindex.log").open("w") as err:
        out = subprocess.run(
            [*cmd, "run", "--exit-when-caught-up", "--no-http"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(),
            cwd=ROOT,
            check=False,
        )
    if out.returncode != 0:
        raise RuntimeError(f"pre-index exited {out.returncode}; log: {tmp / 'preindex.log'}")


async def sample(con: asyncpg.Connection, pid: int, t: float) -> Sample:
    rows = await con.fetch("SELECT status, count(*) AS n FROM rewards GROUP BY status")
    pending = await con.fetchval(
        "SELECT count(*) FROM reward_batches WHERE status = 'pending' AND tx_hash IS NOT NULL"
    )
    return Sample(t, {r["status"]: int(r["n"]) for r in rows}, int(pending), rss_mb(pid))


def progress_line(s: Sample, n: int) -> str:
    r = s.rewards
    return (
        f"  {s.t:7.1f} s  confirmed {r.get('confirmed', 0):>7,}/{n:,}  pushed "
        f"{r.get('pushed', 0):>6,}  pending {r.get('pending', 0):>7,}  failed "
        f"{r.get('failed', 0):>3,}  batches in flight {s.batches_pending:>4}  RSS {s.rss_mb:.0f} MB"
    )


# ---- the checks -------------------------------------------------------------------------


async def _batch_rpc(
    session: aiohttp.ClientSession, url: str, calls: list[tuple[str, list[Any]]]
) -> list[Any]:
    """One JSON-RPC batch; results in call order."""
    body = orjson.dumps(
        [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    )
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        answers = orjson.loads(await r.read())
    by_id = {a["id"]: a for a in answers}
    if any("error" in a for a in answers):
        raise RuntimeError(f"batch: {next(a['error'] for a in answers if 'error' in a)}")
    return [by_id[i]["result"] for i in range(len(calls))]


async def receipts(url: str, tx_hashes: list[str]) -> list[dict[str, Any]]:
    """The receipts of ``tx_hashes`` (JSON-RPC batches of 200)."""
    out: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s:
        for i in range(0, len(tx_hashes), 200):
            calls = [("eth_getTransactionReceipt", [h]) for h in tx_hashes[i : i + 200]]
            out += await _batch_rpc(s, url, calls)
    return out


async def chain_payments(
    url: str, mtpp: str, first: int, last: int
) -> Counter[tuple[str, str, int]]:
    """(bank, wallet, amount) of every RewardAdded of MultiTokenPushPull in [first, last]."""
    paid: Counter[tuple[str, str, int]] = Counter()
    step = 100
    async with aiohttp.ClientSession() as s:
        for start in range(first, last + 1, step):
            flt = {
                "fromBlock": hex(start),
                "toBlock": hex(min(last, start + step - 1)),
                "address": mtpp,
                "topics": [REWARD_ADDED],
            }
            for lg in await _rpc(s, url, "eth_getLogs", [flt]):
                t = lg["topics"]
                paid["0x" + t[3][-40:], "0x" + t[2][-40:], int(lg["data"], 16)] += 1
    return paid


async def check_paid_once(
    con: asyncpg.Connection, url: str, mtpp: str, first: int, last: int
) -> tuple[bool, str]:
    """Every queued reward paid exactly once with its amount, by the chain's own events."""
    rows = await con.fetch("SELECT bank, wallet, amount FROM rewards")
    queued = Counter((r["bank"], r["wallet"], int(r["amount"])) for r in rows)
    paid = await chain_payments(url, mtpp, first, last)
    per_bank_db: dict[str, tuple[int, int]] = {
        r["bank"]: (int(r["n"]), int(r["s"]))
        for r in await con.fetch(
            "SELECT bank, count(*) AS n, sum(amount) AS s FROM rewards GROUP BY bank"
        )
    }
    per_bank_chain: dict[str, list[int]] = {}
    for (bank, _w, amount), k in paid.items():
        acc = per_bank_chain.setdefault(bank, [0, 0])
        acc[0] += k
        acc[1] += k * amount
    bank_diffs = [
        b
        for b in set(per_bank_db) | set(per_bank_chain)
        if tuple(per_bank_chain.get(b, (0, 0))) != per_bank_db.get(b, (0, 0))
    ]
    twice = sum(1 for k in paid.values() if k > 1)
    ok = paid == queued and not bank_diffs and twice == 0
    detail = (
        f"{sum(paid.values()):,} RewardAdded on chain for {len(queued):,} queued rewards; "
        f"{len(per_bank_db)} banks, count and sum equal on "
        f"{len(per_bank_db) - len(bank_diffs)}; paid twice: {twice}; "
        f"missing: {sum((queued - paid).values())}; unexpected: {sum((paid - queued).values())}"
    )
    return ok, detail


# ---- the run ----------------------------------------------------------------------------


async def measure(  # the run's knobs, each a README figure
    n_rewards: int,
    n_banks: int,
    *,
    block_time: float | None,
    gas_limit: int,
    push_interval: float,
    give_up_s: float,
    analyze: bool,
    say: Callable[[str], None],
) -> PusherResult:
    tmp = Path(tempfile.mkdtemp(prefix="rewardsync-bench-pusher-"))
    mining = "automine" if block_time is None else f"block time {block_time:g} s"
    with services(lambda: Anvil.start("--gas-limit", str(gas_limit))) as (pg, node):
        t0 = time.perf_counter()
        say(f"setup: contracts and {n_banks:,} banks on anvil (automine) ...")
        d, banks = deploy_banks(node, n_banks, say)
        dsn = await _create_db(pg, "bench_pusher")
        chain = ChainCfg(
            name="bench",
            chain_id=CHAIN_ID,
            rpc_url=node.url,
            addresses=d.addresses,
            start_block=d.block_number,
            confirmations=CONFIRMATIONS,
            poll_interval=0.2,
        )
        cfg = write_config(tmp / "pusher.toml", dsn, [chain], signer_toml(tmp, push_interval))
        pre_index(cfg, tmp)
        token = d.token.address.lower()
        queued, insert_s = await queue_rewards(dsn, token, banks, n_rewards, analyze=analyze)
        setup_s = time.perf_counter() - t0
        say(
            f"setup done in {setup_s:.0f} s ({queued:,} rewards queued by one INSERT ... SELECT "
            f"{'and ANALYZE ' if analyze else ''}in {insert_s:.2f} s); now {mining}, gas limit "
            f"{gas_limit:,}"
        )
        if block_time is not None:
            node.rpc("evm_setIntervalMining", [int(block_time)])  # whole seconds only
        first_block = node.block_number() + 1
        sender_nonce0 = sender_nonce(node)
        con = await asyncpg.connect(dsn)
        log_path = tmp / "daemon.log"
        try:
            with log_path.open("w") as log:
                meter = CpuMeter(pg, node)
                started = dt.datetime.now(dt.UTC)
                t_start = time.perf_counter()
                proc = start_daemon(cfg, log, "info")  # its batch events are counted
                samples: list[Sample] = []
                try:
                    while True:
                        await asyncio.sleep(1.0)
                        if block_time is None:  # automine: a chain that stops when the
                            node.mine(1)  # pusher does would leave the last batch unconfirmed
                        s = await sample(con, proc.pid, time.perf_counter() - t_start)
                        samples.append(s)
                        if len(samples) % 10 == 0:
                            say(progress_line(s, queued))
                        if s.rewards.get("confirmed", 0) == queued:
                            break
                        if proc.poll() is not None:
                            raise RuntimeError(f"the daemon exited {proc.returncode}; {log_path}")
                        if s.t > give_up_s:
                            raise RuntimeError(
                                f"not confirmed after {give_up_s:.0f} s: {s.rewards}; {log_path}"
                            )
                finally:
                    code, peak_rss, own_cpu = stop_daemon(proc)
                cpu = meter.stop(own_cpu)
            say(progress_line(samples[-1], queued))
            if code != 0:
                raise RuntimeError(f"the daemon exited {code} on SIGTERM; {log_path}")
            last = node.block_number()
            end = await con.fetchval("SELECT max(confirmed_at) FROM rewards")
            first_sent = await con.fetchval("SELECT min(submitted_at) FROM reward_batches")
            batches = await con.fetch(
                "SELECT status, tx_hash, sender_nonce, gas_used FROM reward_batches"
            )
            statuses = Counter(b["status"] for b in batches)
            if set(statuses) != {"confirmed"}:
                raise RuntimeError(f"batches not all confirmed: {dict(statuses)}")
            nonces = sorted(int(b["sender_nonce"]) for b in batches)
            sender_nonce1 = sender_nonce(node)
            got = await receipts(node.url, [b["tx_hash"] for b in batches])
            if any(r is None or int(r["status"], 16) != 1 for r in got):
                raise RuntimeError("a confirmed batch has no successful receipt")
            per_block = Counter(int(r["blockNumber"], 16) for r in got)
            ok, detail = await check_paid_once(
                con, node.url, d.addresses["MultiTokenPushPull"], first_block, last
            )
        finally:
            await con.close()
    events = [orjson.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    counts = Counter(e.get("event") for e in events)
    known = sum(
        1
        for e in events
        if e.get("event") == "broadcast_refused" and "already" in str(e.get("error", ""))
    )
    contiguous = nonces == list(range(nonces[0], nonces[0] + len(nonces)))
    if not contiguous:
        detail += "; batch account nonces NOT contiguous"
    detail += (
        f"; account nonces {nonces[0]}..{nonces[-1]} contiguous, one per batch"
        if contiguous
        else ""
    )
    detail += f"; sender account nonce {sender_nonce0} -> {sender_nonce1}"
    return PusherResult(
        rewards=queued,
        banks=n_banks,
        mining=mining,
        analyzed=analyze,
        gas_limit=gas_limit,
        setup_s=setup_s,
        wall_s=(end - started).total_seconds(),
        first_sent_s=(first_sent - started).total_seconds(),
        batches=len(batches),
        txs_sent=counts["reward_batch_sent"],
        replaced=counts["reward_batch_replaced"],
        gap_fills=counts["nonce_gap_filled"],
        refusals=counts["reward_batch_tx_refused"] + counts["reward_batch_refused"],
        gas=sum(int(r["gasUsed"], 16) for r in got),
        gas_used_column=sum(1 for b in batches if b["gas_used"] is not None),
        tx_blocks=len(per_block),
        max_txs_per_block=max(per_block.values()),
        max_in_flight=max(s.batches_pending for s in samples),
        rss_mb=peak_rss,
        cpu=cpu,
        paid_once=ok and contiguous,
        check=detail,
        log_counts={k: counts[k] for k in LOG_EVENTS if counts[k]},
        rebroadcast_known=known,
        samples=samples,
    )


def table(r: PusherResult) -> str:
    """The run as one table, in the bench's layout."""
    head = (
        f"{'measure':<42} {'rewards':>9} {'rewards/s':>10} {'wall s':>7} {'RSS MB':>7}  "
        f"{'CPU s: own':>10} {'PG':>6} {'anvil':>6}"
    )
    name = f"pusher: {r.banks} banks, {r.mining}"
    row = (
        f"{name:<42} {r.rewards:>9,} {r.rewards / r.wall_s:>10,.0f} {r.wall_s:>7.1f} "
        f"{r.rss_mb:>7.0f}  {r.cpu[0]:>10.1f} {r.cpu[1]:>6.1f} {r.cpu[2]:>6.1f}"
    )
    extra = [
        f"batches {r.batches:,} of ≤ {MAX_BATCH}; transactions sent {r.txs_sent:,}, replaced "
        f"{r.replaced}, nonce gaps filled {r.gap_fills}, refused {r.refusals}, rebroadcasts "
        f"the node already held {r.rebroadcast_known}; first sent {r.first_sent_s:.1f} s after "
        "start",
        f"gas used {r.gas:,} ({r.gas / r.rewards:,.0f} per reward, {r.gas / r.batches:,.0f} per "
        f"batch; reward_batches.gas_used recorded for {r.gas_used_column:,} of {r.batches:,} "
        f"batches); block gas limit {r.gas_limit:,}",
        f"in flight: up to {r.max_in_flight} batches signed and unconfirmed at a sample, up to "
        f"{r.max_txs_per_block} of the sender's transactions in one block; {r.tx_blocks} blocks",
        f"paid exactly once: {'yes' if r.paid_once else 'NO'} ({r.check})",
        f"setup (deploy, banks, pre-index, queue{', ANALYZE' if r.analyzed else ''}; not timed "
        f"above): {r.setup_s:.0f} s; "
        f"target: {r.rewards:,} rewards in < {900 * r.rewards / 100_000:.0f} s "
        f"(100k in 15 min, pro rata)",
    ]
    if r.log_counts:
        extra.append("daemon log events: " + ", ".join(f"{k} {v}" for k, v in r.log_counts.items()))
    return "\n".join([head, row, *extra])


async def run_pusher(
    rewards: int,
    banks: int,
    *,
    block_time: float | None = 1.0,
    gas_limit: int = 30_000_000,
    push_interval: float = 0.5,
    give_up_s: float = 1800.0,
    analyze: bool = True,
) -> int:
    """The bench's entry (``python -m bench --pusher``): one run, one table; 1 when a reward
    was not paid exactly once."""
    say = print
    say(
        f"rewardsync pusher bench — {dt.date.today()} — {platform.node()} ({os.cpu_count()} "
        f"cores, {platform.python_implementation()} {platform.python_version()})"
    )
    r = await measure(
        rewards,
        banks,
        block_time=block_time,
        gas_limit=gas_limit,
        push_interval=push_interval,
        give_up_s=give_up_s,
        analyze=analyze,
        say=say,
    )
    say("")
    say(table(r))
    return 0 if r.paid_once else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pusher", description=__doc__.split("\n\n")[0])
    p.add_argument("--rewards", type=int, default=100_000)
    p.add_argument("--banks", type=int, default=500)
    p.add_argument("--block-time", type=int, default=1, help="anvil's block time (whole s)")
    p.add_argument("--automine", action="store_true", help="a block per transaction instead")
    p.add_argument("--gas-limit", type=int, default=30_000_000, help="anvil's block gas limit")
    p.add_argument("--push-interval", type=float, default=0.5)
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after (s)")
    p.add_argument(
        "--no-analyze", action="store_true", help="no ANALYZE after the bulk queue (stale stats)"
    )
    a = p.parse_args(argv)
    return asyncio.run(
        run_pusher(
            a.rewards,
            a.banks,
            block_time=None if a.automine else a.block_time,
            gas_limit=a.gas_limit,
            push_interval=a.push_interval,
            give_up_s=a.timeout,
            analyze=not a.no_analyze,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
