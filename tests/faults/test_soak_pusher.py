"""Everything at once, the way production fails (issue 20): rewards queued and pushed while the
chain reorganises, the leader is killed with -9 and a standby takes over, a third pusher
(`indexer push`) is killed with -9 between its steps, and (optionally) the RPC misbehaves.

Blocks are mined on demand (``evm_mine`` on a timer) under the same lock as ``anvil_reorg``,
never by anvil's interval miner: the two racing break anvil itself. A reorg may drop the
block that carried a batch; the pusher must rebroadcast the same recorded transaction.

At the end, with the chain final: every event table equals the node's logs, balances equal the
contract views, every queued reward was paid on chain exactly once with its amount (from the
chain's own RewardAdded events), no batch is left draft or pending, `indexer reconcile` finds
nothing, and a fresh daemon's metrics agree with the tables (batches by status, queue,
checkpoint).

``SOAK_SECONDS`` (default 120: the 2-minute run of `make test`), ``SOAK_SEED`` and
``SOAK_RPC_FAULTS`` (a seeded fault rate of the RPC proxy between the processes and anvil,
default 0) reproduce a run; `make soak DURATION=3600 SEED=7` is the nightly one. The summary is
one JSON line on stdout; a failing run prints its seed and the first invariant that broke.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer.demo.traffic import DemoTraffic
from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.e2e.test_pusher import assert_paid_once, make_bank, queue, signer_toml, wait_rewards
from tests.e2e.test_reorgs import chama_tx
from tests.fakes.rpc import FakeRpc, FakeRpcThread
from tests.harness import INDEXER_BIN, ROOT, Daemon, _env, indexer, wait_synced
from tests.procs import ANVIL_KEYS, Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

MAX_DEPTH = 4
FINALITY = 8
DEADLINE = 25  # seconds: batches stranded by reorgs and kills reach the chain judge
SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
TRAFFIC_KEYS = tuple(ANVIL_KEYS[:3])  # never ANVIL_KEYS[3], the pusher's sender
PUSH_STEPS = (
    "pusher.round",
    "pusher.before_sign",
    "pusher.after_sign",
    "pusher.after_record",
    "pusher.after_broadcast",
)


class Chain(threading.Thread):
    """Mines a block every ``interval`` s and, with probability ``p_reorg`` per block, reorgs
    1..MAX_DEPTH blocks with a replacement transaction; both under one lock."""

    def __init__(self, anvil: Anvil, d: deploy.Deployment, seed: int) -> None:
        super().__init__(daemon=True)
        self.anvil, self.d, self.rng = anvil, d, random.Random(seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reorgs: Counter[int] = Counter()
        self.blocks = 0

    def run(self) -> None:
        while not self.stop.wait(0.4):
            with self.lock:
                self.anvil.mine(1)
                self.blocks += 1
                head = self.anvil.block_number()
                if head > self.d.block_number + MAX_DEPTH + 2 and self.rng.random() < 0.08:
                    depth = self.rng.randint(1, MAX_DEPTH)
                    tx = chama_tx(self.d, f"soak-{head}-{depth}")
                    self.anvil.rpc("anvil_reorg", [depth, [[tx, 0]]])
                    self.reorgs[depth] += 1


class Traffic(threading.Thread):
    """The demo's traffic mix beside the queued rewards: banks, deposits, budgets, withdrawals,
    campaign deactivations, claims, chama rounds (never from the pusher's sender). A dropped
    or refused transaction (a reorg took its block) is counted and the model starts afresh."""

    def __init__(self, d: deploy.Deployment, chain: Chain, seed: int) -> None:
        super().__init__(daemon=True)
        self.d, self.chain, self.rng = d, chain, random.Random(seed)
        self.stop = threading.Event()
        self.actions: Counter[str] = Counter()
        self.errors = 0

    def run(self) -> None:
        model = DemoTraffic(self.d, self.rng, users=TRAFFIC_KEYS)
        seen = 0
        while not self.stop.wait(0.05):
            reorgs = sum(self.chain.reorgs.values())
            if reorgs != seen:
                seen, model = reorgs, DemoTraffic(self.d, self.rng, users=TRAFFIC_KEYS)
            try:
                self.actions[model.step()] += 1
            except Exception:  # a reorg dropped it, or the model did not foresee a revert
                self.errors += 1
                model = DemoTraffic(self.d, self.rng, users=TRAFFIC_KEYS)


class PushKiller:
    """`indexer push` processes, one at a time, each killing itself (-9) at a random pusher
    step (failpoint ``kill@N``), or killed by us after 10 s if it never got there."""

    def __init__(self, cfg: Path, rng: random.Random, log_dir: Path) -> None:
        self.cfg, self.rng, self.log_dir = cfg, rng, log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.kills: Counter[str] = Counter()
        self._point = ""
        self._log: Any = None

    def tick(self) -> None:
        now = time.monotonic()
        if self.proc is not None:
            if self.proc.poll() is None and now - self.started < 10:
                return
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.kills["by_us"] += 1
            elif self.proc.returncode == -9:
                self.kills[self._point] += 1
            self.proc = None
            self._log.close()
        self._point = self.rng.choice(PUSH_STEPS)
        nth = self.rng.randint(1, 4)
        self._log = (self.log_dir / f"push-{time.monotonic_ns()}.log").open("w")
        self.proc = subprocess.Popen(
            [INDEXER_BIN, "--config", str(self.cfg), "--log-format", "json", "push"],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=_env({"INDEXER_FAILPOINTS": f"{self._point}=kill@{nth}"}),
            cwd=ROOT,
            start_new_session=True,
        )
        self.started = now

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()


@pytest.fixture
def rpc_proxy(anvil: Anvil) -> Iterator[FakeRpcThread | None]:
    """The fault-injecting RPC proxy when SOAK_RPC_FAULTS > 0 (seeded like the run)."""
    rate = float(os.environ.get("SOAK_RPC_FAULTS", "0"))
    if rate <= 0:
        yield None
        return
    seed = int(os.environ.get("SOAK_SEED", "20"))
    proxy = FakeRpc.start_in_thread(
        anvil.url, seed=seed, error_rate=rate, error_kinds=("http_502", "jsonrpc_32000", "reset")
    )
    try:
        yield proxy
    finally:
        proxy.stop()


def scrape(port: int) -> dict[str, float]:
    """/metrics as {sample with labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    return {
        ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
        for ln in lines
        if ln and not ln.startswith("#")
    }


def metrics_agree(cfg: Path, dsn: str, daemons: list[Daemon]) -> dict[str, Any]:
    """A fresh daemon's gauges against the tables: batches by status, the queue, the
    checkpoint (after its first pusher round)."""
    daemon = Daemon(cfg)
    daemons.append(daemon)
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    deadline = time.monotonic() + 60
    want = {
        r["status"]: r["n"]
        for r in checks.db_fetch(
            dsn, "SELECT status, count(*) AS n FROM reward_batches GROUP BY status"
        )
    }
    while True:
        got = scrape(port)
        batches = {
            status: got.get(f'indexer_pusher_batches{{chain="local",status="{status}"}}', 0.0)
            for status in want
        }
        if batches == {k: float(v) for k, v in want.items()} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert batches == {k: float(v) for k, v in want.items()}, (batches, want)
    assert got.get('indexer_pusher_queue_rewards{chain="local"}') == 0
    assert got.get('indexer_pusher_sender_balance{chain="local"}', 0.0) > 0  # the gas money
    top = checks.checkpoint(dsn)[0]
    assert got.get('indexer_checkpoint_block{chain="local"}') == top
    assert daemon.stop() == 0
    return {"batches_by_status": want}


@pytest.mark.timeout(SECONDS + 420)
def test_soak_pusher_reorgs_and_leader_kills_pay_each_reward_once(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
    rpc_proxy: FakeRpcThread | None,
    tmp_path: Path,
) -> None:
    """Two daemons (leader and standby, each with its pusher) and a third pusher on one
    database; rewards queued continuously over two banks; random reorgs; a random daemon
    killed with -9 every few seconds and started again; the third pusher killed between its
    steps. Every invariant holds at the end."""
    seed = int(os.environ.get("SOAK_SEED", "20"))
    rng = random.Random(seed)
    d = deployment
    banks = [make_bank(d) for _ in range(2)]
    anvil.rpc("evm_setAutomine", [False])
    cfg = make_config(
        extra=signer_toml(push_interval=0.3, max_batch=5, replace_after=4, deadline=DEADLINE),
        max_reorg_depth=FINALITY,
        batch_blocks=5,
    )
    if rpc_proxy is not None:
        cfg.write_text(cfg.read_text().replace(anvil.url, rpc_proxy.url))
    chain = Chain(anvil, d, seed + 1)
    chain.start()
    traffic = Traffic(d, chain, seed + 3)
    traffic.start()
    procs = [Daemon(cfg, "--no-http") for _ in range(2)]
    daemons.extend(procs)
    pushers = PushKiller(cfg, random.Random(seed + 2), tmp_path)
    kills = queued = 0
    started = time.monotonic()
    next_kill = started + rng.uniform(3, 8)
    try:
        while time.monotonic() - started < SECONDS:
            bank, campaign = rng.choice(banks)
            queued += len(
                queue(db_dsn, d, bank, campaign, rng.randint(1, 3), base=rng.randint(1, 10**9))
            )
            if time.monotonic() > next_kill:
                i = rng.randrange(2)
                procs[i].kill()
                kills += 1
                procs[i] = Daemon(cfg, "--no-http")
                daemons.append(procs[i])
                next_kill = time.monotonic() + rng.uniform(3, 8)
            pushers.tick()
            time.sleep(rng.uniform(0.1, 0.5))
    finally:
        traffic.stop.set()
        traffic.join(timeout=60)
        chain.stop.set()
        chain.join()
        pushers.close()
    anvil.rpc("evm_setAutomine", [True])
    anvil.mine(FINALITY + 2)
    summary: dict[str, Any] = {
        "seed": seed,
        "seconds": SECONDS,
        "rpc_fault_rate": float(os.environ.get("SOAK_RPC_FAULTS", "0")),
        "blocks": chain.blocks,
        "reorgs_by_depth": dict(sorted(chain.reorgs.items())),
        "daemon_kills": kills,
        "pusher_kills_by_step": dict(sorted(pushers.kills.items())),
        "rewards_queued": queued,
        "traffic": dict(sorted(traffic.actions.items())),
        "traffic_dropped": traffic.errors,
        "leader_takeovers": sum(
            1 for p in daemons for e in p.events() if e.get("event") == "leader"
        ),
    }
    try:
        wait_rewards(db_dsn, "confirmed", queued, timeout=180)
        anvil.mine(1)
        wait_synced(db_dsn, anvil, timeout=60)
        for proc in procs:
            assert proc.stop(timeout=30) == 0, "SIGTERM must end a daemon with exit 0"
        summary["rewards_paid"] = assert_paid_once(anvil, d, db_dsn)
        summary["events"] = assert_all(db_dsn, anvil, d)
        summary["reorgs_seen"] = checks.db_fetch(db_dsn, "SELECT count(*) AS n FROM reorgs")[0]["n"]
        assert summary["reorgs_seen"] <= sum(chain.reorgs.values()) + kills, "phantom reorgs"
        if rpc_proxy is not None:
            summary["rpc_faults"] = dict(rpc_proxy.fake.faults)
        rc = indexer(cfg, "reconcile", "--json")
        found = json.loads(rc.stdout)["chains"][0]["found"] if rc.stdout else rc.stderr
        assert rc.code == 0, f"reconcile found {found}"
        assert not checks.db_fetch(
            db_dsn, "SELECT kind, subject FROM discrepancies WHERE resolved_at IS NULL"
        )
        summary.update(metrics_agree(cfg, db_dsn, daemons))
        summary["verdict"] = "ok"
    except AssertionError as exc:
        summary["verdict"] = f"FAILED: {str(exc)[:400]}"
        print(json.dumps(summary))
        print(
            f"replay: SOAK_SEED={seed} SOAK_SECONDS={SECONDS} "
            f"SOAK_RPC_FAULTS={summary['rpc_fault_rate']} pytest {__file__}"
        )
        raise
    print(json.dumps(summary))
    assert summary["rewards_paid"] == queued
