"""Everything at once, the way production fails (issue 20, first part): rewards queued and
pushed while the chain reorganises and the leader is killed with -9 and a standby takes over.

Blocks are mined on demand (``evm_mine`` on a timer) under the same lock as ``anvil_reorg``,
never by anvil's interval miner: the two racing break anvil itself. A reorg may drop the
block that carried a batch; the pusher must rebroadcast the same recorded transaction. At the
end, with the chain final: every event table equals the node's logs, balances equal the
contract views, and every queued reward was paid on chain exactly once (from the chain's own
RewardAdded events). ``SOAK_SECONDS`` (default 100) and ``SOAK_SEED`` reproduce a run; the
summary is one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.e2e.test_pusher import assert_paid_once, make_bank, queue, signer_toml, wait_rewards
from tests.e2e.test_reorgs import chama_tx
from tests.harness import Daemon, wait_synced
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

MAX_DEPTH = 4
FINALITY = 8


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


@pytest.mark.timeout(float(os.environ.get("SOAK_SECONDS", "100")) + 320)
def test_soak_pusher_reorgs_and_leader_kills_pay_each_reward_once(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Two daemons (leader and standby, each with its pusher) on one database; rewards queued
    continuously over two banks; random reorgs; a random daemon killed with -9 every few
    seconds and started again. Every invariant holds at the end."""
    seed = int(os.environ.get("SOAK_SEED", "20"))
    seconds = float(os.environ.get("SOAK_SECONDS", "100"))
    rng = random.Random(seed)
    d = deployment
    banks = [make_bank(d) for _ in range(2)]
    anvil.rpc("evm_setAutomine", [False])
    cfg = make_config(
        extra=signer_toml(push_interval=0.3, max_batch=5, replace_after=4),
        max_reorg_depth=FINALITY,
        batch_blocks=5,
    )
    chain = Chain(anvil, d, seed + 1)
    chain.start()
    procs = [Daemon(cfg, "--no-http") for _ in range(2)]
    daemons.extend(procs)
    kills = queued = 0
    started = time.monotonic()
    next_kill = started + rng.uniform(3, 8)
    try:
        while time.monotonic() - started < seconds:
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
            time.sleep(rng.uniform(0.1, 0.5))
    finally:
        chain.stop.set()
        chain.join()
    anvil.rpc("evm_setAutomine", [True])
    anvil.mine(FINALITY + 2)
    summary = {
        "seed": seed,
        "seconds": seconds,
        "blocks": chain.blocks,
        "reorgs_by_depth": dict(sorted(chain.reorgs.items())),
        "kills": kills,
        "rewards_queued": queued,
    }
    try:
        wait_rewards(db_dsn, "confirmed", queued, timeout=120)
        anvil.mine(1)
        wait_synced(db_dsn, anvil, timeout=60)
        summary["rewards_paid"] = assert_paid_once(anvil, d, db_dsn)
        summary["events"] = assert_all(db_dsn, anvil, d)
        reorgs = checks.db_fetch(db_dsn, "SELECT count(*) AS n FROM reorgs")[0]["n"]
        summary["reorgs_seen"] = reorgs
        summary["verdict"] = "ok"
    except AssertionError as exc:
        summary["verdict"] = f"FAILED: {str(exc)[:300]}"
        print(json.dumps(summary))
        print(f"replay: SOAK_SEED={seed} SOAK_SECONDS={seconds} pytest {__file__}")
        raise
    print(json.dumps(summary))
    assert summary["rewards_paid"] == queued
