"""Money safety (issue 13): the chain, not our index, decides whether a batch was paid, and
nothing the pusher meets stops indexing. Real anvil, real PostgreSQL; payments are counted
from the chain's own RewardAdded events."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from eth_account import Account

from indexer import db
from tests import checks, deploy
from tests.e2e.test_pusher import (
    ADDED_TOPIC,
    SENDER_KEY,
    assert_paid_once,
    index_now,
    make_bank,
    queue,
    signer_toml,
    wait_rewards,
)
from tests.harness import INDEXER_BIN, Daemon, _env, indexer, wait_synced
from tests.procs import ROOT, Anvil, PgCluster

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

PUSHED_TOPIC = (
    "0x" + deploy.keccak(text="RewardsPushed(bytes32,address,bytes32,uint256,uint256)").hex()
)


def paid_by(anvil: Anvil, d: deploy.Deployment, bank: str) -> Counter[tuple[str, int]]:
    """(wallet, amount) credited by ``bank`` on chain, from RewardAdded events."""
    logs = anvil.rpc(
        "eth_getLogs",
        [
            {
                "fromBlock": "0x0",
                "toBlock": "latest",
                "address": d.multi_token_push_pull.address,
                "topics": [ADDED_TOPIC],
            }
        ],
    )
    return Counter(
        ("0x" + lg["topics"][2][-40:], int(lg["data"], 16))
        for lg in logs
        if "0x" + lg["topics"][3][-40:] == bank.lower()
    )


def pass_deadline(anvil: Anvil, seconds: int = 120, blocks: int = 10) -> None:
    """Move the chain's time past a batch deadline and make that time final (depth 5)."""
    anvil.rpc("evm_increaseTime", [seconds])
    anvil.mine(blocks)


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_bank_made_before_the_factory_start_block_is_never_paid(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """A bank the factory made before the configured start_block is not watched: its rewards
    stay pending with an error and a gauge, across three passed deadlines, and nothing is
    paid (the old code paid them again at every deadline)."""
    d = deployment
    bank, campaign = make_bank(d)
    queued = queue(db_dsn, d, bank, campaign, 3)
    cfg = make_config(
        extra=signer_toml(deadline=30, push_interval=0.1),
        start_block=anvil.block_number() + 1,
        max_reorg_depth=5,
    )
    daemon = Daemon(cfg)
    daemons.append(daemon)
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    for _ in range(3):
        pass_deadline(anvil)
        wait_synced(db_dsn, anvil)
        time.sleep(1.0)
    rows = checks.db_fetch(db_dsn, "SELECT status, batch_id, error FROM rewards")
    assert {r["status"] for r in rows} == {"pending"}
    assert all(r["batch_id"] is None for r in rows)
    assert all("bank not watched" in (r["error"] or "") for r in rows)
    assert not checks.db_fetch(db_dsn, "SELECT 1 FROM reward_batches")
    assert metric(port, "indexer_pusher_rewards_unwatched_bank") == len(queued)
    assert sum(paid_by(anvil, d, bank.address).values()) == 0


def test_event_missing_from_the_index_is_confirmed_from_the_chain(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """The batch was paid but our tables lost its RewardsPushed (the index "missed" it): after
    the deadline the judge reads isNonceUsed at a final block, finds the log on chain,
    confirms the batch with evidence 'chain', records missing_in_db, and pays nothing again."""
    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 4)
    cfg = make_config(extra=signer_toml(deadline=30), max_reorg_depth=5)
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    wait_rewards(db_dsn, "confirmed", 4)
    daemon.stop()
    [batch] = checks.db_fetch(db_dsn, "SELECT id, nonce, block_number FROM reward_batches")
    # What an incomplete index looks like: the event is not in our tables, the batch open.
    checks.db_fetch(db_dsn, "DELETE FROM rewards_pushed WHERE nonce = $1", batch["nonce"])
    checks.db_fetch(
        db_dsn,
        "UPDATE reward_batches SET status = 'pending', block_number = NULL, evidence = NULL, "
        "mined_block = NULL, confirmed_at = NULL WHERE id = $1",
        batch["id"],
    )
    checks.db_fetch(
        db_dsn,
        "UPDATE rewards SET status = 'pushed', confirmed_block = NULL WHERE batch_id = $1",
        batch["id"],
    )
    pass_deadline(anvil)
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    judged = daemon.wait_for(lambda e: e.get("event") == "batch_judged")
    assert judged["verdict"] == "confirmed"
    wait_rewards(db_dsn, "confirmed", 4)
    [after] = checks.db_fetch(
        db_dsn,
        "SELECT status, evidence, block_number FROM reward_batches WHERE id = $1",
        batch["id"],
    )
    assert (after["status"], after["evidence"]) == ("confirmed", "chain")
    assert after["block_number"] == batch["block_number"]
    [gap] = checks.db_fetch(
        db_dsn, "SELECT kind, subject FROM discrepancies WHERE resolved_at IS NULL"
    )
    assert gap["kind"] == "missing_in_db"
    assert batch["nonce"] in gap["subject"]
    pass_deadline(anvil)  # another deadline: still nothing paid twice
    wait_synced(db_dsn, anvil)
    time.sleep(1.0)
    assert assert_paid_once(anvil, d, db_dsn) == 4


async def _fresh_db(cluster_dsn: str, name: str, template: str | None) -> str:
    admin = await asyncpg.connect(cluster_dsn)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return cluster_dsn.rsplit("/", 1)[0] + "/" + name


def test_restored_backup_and_second_database_pay_each_reward_once(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
    pg_cluster: PgCluster,
    tmp_path: Path,
) -> None:
    """Database A queues rewards and a backup of it is taken; A pays them. The backup is
    restored as B (same salt, same id sequence, same keys) and B queues more: B's index sees
    A's push sent by its own sender, so B pauses pushing instead of paying A's rewards again.
    A second, freshly migrated database C (another salt, same signer and bank, its own
    sender) queues the same wallets and amounts: its nonces differ from A's, nothing of it is
    confirmed by A's events, and its rewards are paid once."""
    d = deployment
    bank, campaign = make_bank(d)
    first = queue(db_dsn, d, bank, campaign, 3)
    name_a = db_dsn.rsplit("/", 1)[1]
    suffix = uuid.uuid4().hex[:8]
    dsn_b = asyncio.run(_fresh_db(pg_cluster.dsn(), f"b_{suffix}", name_a))  # the backup
    dsn_c = asyncio.run(_fresh_db(pg_cluster.dsn(), f"c_{suffix}", None))
    asyncio.run(db.migrate(dsn_c))
    cfg_a = make_config(extra=signer_toml(deadline=30), max_reorg_depth=5)
    daemon = Daemon(cfg_a, "--no-http")
    daemons.append(daemon)
    wait_rewards(db_dsn, "confirmed", 3)
    daemon.stop()

    def cfg_for(dsn: str, sender: str = SENDER_KEY) -> Path:
        path = tmp_path / f"{dsn.rsplit('/', 1)[1]}.toml"
        path.write_text(cfg_a.read_text().replace(db_dsn, dsn).replace(SENDER_KEY, sender))
        return path

    salts = {
        checks.db_fetch(x, "SELECT value FROM meta WHERE key = 'nonce_salt'")[0]["value"]
        for x in (db_dsn, dsn_b, dsn_c)
    }
    assert len(salts) == 2  # B is A's backup; C has its own
    queue(dsn_b, d, bank, campaign, 2, base=5000)
    queue(dsn_c, d, bank, campaign, 3, wallets=first)

    restored = Daemon(cfg_for(dsn_b), "--no-http")
    daemons.append(restored)
    paused = restored.wait_for(lambda e: e.get("event") == "pusher_paused")
    assert "never made" in paused["reason"]
    pass_deadline(anvil)
    wait_synced(dsn_b, anvil)
    time.sleep(1.0)
    restored.stop()
    rows = checks.db_fetch(dsn_b, "SELECT status, error FROM rewards")
    assert {r["status"] for r in rows} == {"pending"}
    assert all("pusher paused" in r["error"] for r in rows)

    own = Account.create()  # C's own sender (a database never shares one)
    anvil.rpc("anvil_setBalance", [own.address, hex(10**20)])
    second = Daemon(cfg_for(dsn_c, sender="0x" + own.key.hex().removeprefix("0x")), "--no-http")
    daemons.append(second)
    wait_rewards(dsn_c, "confirmed", 3)
    wait_synced(dsn_c, anvil)
    second.stop()
    # A's rewards paid by A, and C's (another queue with the same wallets) by C: each once.
    assert paid_by(anvil, d, bank.address) == Counter(first) + Counter(first)
    nonces = [
        {r["nonce"] for r in checks.db_fetch(x, "SELECT nonce FROM reward_batches")}
        for x in (db_dsn, dsn_c)
    ]
    assert not nonces[0] & nonces[1]  # C never derived one of A's nonces
    evidence = {
        r["evidence"] for r in checks.db_fetch(dsn_c, "SELECT evidence FROM reward_batches")
    }
    assert evidence == {"index"}


def test_fee_cap_stops_escalation_and_the_batch_still_lands(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """A transaction that is never mined is replaced with higher fees until max_fee_gwei;
    then escalation stops (gauge, log) and the same bytes are rebroadcast; once blocks come
    again it lands, paid once, its fee never above the cap."""
    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 2)
    anvil.rpc("evm_setAutomine", [False])
    cap_gwei = 6
    cfg = make_config(extra=signer_toml(replace_after=1, max_fee_gwei=cap_gwei))
    daemon = Daemon(cfg)
    daemons.append(daemon)
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    daemon.wait_for(lambda e: e.get("event") == "pusher_fee_cap_reached", timeout=90)
    assert metric(port, "indexer_pusher_fee_capped_transactions") == 1
    [row] = checks.db_fetch(db_dsn, "SELECT max_fee, attempts FROM reward_batches")
    assert int(row["max_fee"]) <= cap_gwei * 10**9
    assert row["attempts"] >= 2  # replaced at least once before the cap
    anvil.rpc("evm_setAutomine", [True])
    anvil.mine(1)
    wait_rewards(db_dsn, "confirmed", 2)
    wait_synced(db_dsn, anvil)
    assert assert_paid_once(anvil, d, db_dsn) == 2


def test_refused_transaction_leaves_no_nonce_gap(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """The sender cannot pay for gas: the node refuses the transaction ("insufficient funds"),
    the batch goes back to draft and its account nonce is released; once funded, every batch
    lands at consecutive nonces from 0, each paid once."""
    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 6)
    sender = Account.create()
    cfg = make_config(extra=signer_toml(max_batch=2).replace(SENDER_KEY, sender.key.hex()))
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    refused = daemon.wait_for(lambda e: e.get("event") == "reward_batch_tx_refused")
    assert "insufficient funds" in refused["error"].lower()
    assert int(anvil.rpc("eth_getTransactionCount", [sender.address, "pending"]), 16) == 0
    anvil.rpc("anvil_setBalance", [sender.address, hex(10**20)])
    wait_rewards(db_dsn, "confirmed", 6, timeout=120)
    nonces = sorted(
        r["sender_nonce"]
        for r in checks.db_fetch(db_dsn, "SELECT sender_nonce FROM reward_batches")
    )
    assert nonces == [0, 1, 2]
    assert int(anvil.rpc("eth_getTransactionCount", [sender.address, "latest"]), 16) == 3
    wait_synced(db_dsn, anvil)
    assert assert_paid_once(anvil, d, db_dsn) == 6


def test_planted_nonce_gap_is_filled(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Account nonce k is held by no open batch while k+1 waits in the pool (its batch was
    given back as a draft): the pusher sends a no-op self-transfer at k, k+1 lands, the
    draft is signed again at a new nonce, and every reward is paid once."""
    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 4)
    cfg = make_config(extra=signer_toml(max_batch=2))
    index_now(cfg)
    anvil.rpc("evm_setAutomine", [False])
    out = indexer(cfg, "push", "--once")
    assert out.code == 0, out.stderr[-1500:]
    rows = checks.db_fetch(
        db_dsn, "SELECT id, tx_hash, sender_nonce FROM reward_batches ORDER BY sender_nonce"
    )
    assert len(rows) == 2
    low = rows[0]
    anvil.rpc("anvil_dropTransaction", [low["tx_hash"]])
    checks.db_fetch(
        db_dsn,
        "UPDATE reward_batches SET status = 'draft', raw_tx = NULL, tx_hash = NULL, "
        "sender = NULL, sender_nonce = NULL WHERE id = $1",
        low["id"],
    )
    anvil.rpc("evm_setAutomine", [True])
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    filled = daemon.wait_for(lambda e: e.get("event") == "nonce_gap_filled")
    assert filled["nonce"] == low["sender_nonce"]
    wait_rewards(db_dsn, "confirmed", 4)
    wait_synced(db_dsn, anvil)
    assert assert_paid_once(anvil, d, db_dsn) == 4


def test_reward_amount_must_fit_uint256(db_dsn: str) -> None:
    """2^256 - 1 is a valid amount; 2^256 is refused by the database itself."""
    sql = (
        "INSERT INTO rewards (chain_id, bank, campaign_id, token, wallet, amount, external_key) "
        "VALUES (1, $1, $2, $1, $1, $3, $4)"
    )
    addr, campaign = "0x" + "11" * 20, "0x" + "22" * 32
    checks.db_fetch(db_dsn, sql, addr, campaign, 2**256 - 1, "max")
    with pytest.raises(asyncpg.CheckViolationError, match="rewards_amount_uint256"):
        checks.db_fetch(db_dsn, sql, addr, campaign, 2**256, "over")


def test_batched_reward_cannot_change_its_amount(db_dsn: str) -> None:
    """Once in a batch, a reward's wallet and amount are what was signed: frozen."""
    addr, campaign = "0x" + "11" * 20, "0x" + "22" * 32
    [batch] = checks.db_fetch(
        db_dsn,
        "INSERT INTO reward_batches (chain_id, bank, campaign_id, token) "
        "VALUES (1, $1, $2, $1) RETURNING id",
        addr,
        campaign,
    )
    checks.db_fetch(
        db_dsn,
        "INSERT INTO rewards (chain_id, bank, campaign_id, token, wallet, amount, external_key, "
        "batch_id, status) VALUES (1, $1, $2, $1, $1, 5, 'k', $3, 'pushed')",
        addr,
        campaign,
        batch["id"],
    )
    with pytest.raises(asyncpg.RaiseError, match="cannot change"):
        checks.db_fetch(db_dsn, "UPDATE rewards SET amount = 6 WHERE external_key = 'k'")
    checks.db_fetch(db_dsn, "UPDATE rewards SET error = 'note' WHERE external_key = 'k'")


def test_pusher_faults_never_stop_the_follower(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Malformed receipts (a retried fault) and a pusher that raises every round (restarted
    with backoff): meanwhile the follower indexes new blocks and /readyz stays 200; once the
    receipts are sane again the rewards are paid once."""
    from tests.fakes.rpc import FakeRpc  # noqa: PLC0415

    broken = {"on": True}

    def bad_receipts(method: str, params: list[Any], answer: Any) -> Any:
        result = answer.get("result") if isinstance(answer, dict) else None
        if method == "eth_getTransactionReceipt" and broken["on"] and result is not None:
            return {**answer, "result": {**result, "status": "0x7", "logs": "nope"}}
        return answer

    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 3)
    fake = FakeRpc.start_in_thread(anvil.url, corrupt=bad_receipts)
    try:
        cfg = make_config(extra=signer_toml(), rpc_url=fake.url)
        daemon = Daemon(cfg, env={"INDEXER_FAILPOINTS": "pusher.round=crash@4"})
        daemons.append(daemon)
        port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
        daemon.wait_for(lambda e: e.get("event") == "push_retry" and "receipt" in e["error"])
        daemon.wait_for(lambda e: e.get("event") == "side_task_failed", timeout=90)
        before = checks.checkpoint(db_dsn)[0]
        anvil.mine(3)
        wait_synced(db_dsn, anvil)
        assert checks.checkpoint(db_dsn)[0] == before + 3
        ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status == 200
        assert metric(port, "indexer_task_restarts_total") >= 1
        broken["on"] = False
        wait_rewards(db_dsn, "confirmed", 3)
        wait_synced(db_dsn, anvil)
    finally:
        fake.stop()
    assert assert_paid_once(anvil, d, db_dsn) == 3


def test_two_pushers_racing_for_one_expired_lease_sign_once(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Pusher A takes a draft's lease and stalls (after its pre-flight) past it; pusher B takes
    the expired lease, signs and sends. A's signature is refused by the compare-and-set: one
    transaction, one account nonce, one payment."""
    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 3)
    cfg = make_config(extra=signer_toml(push_interval=0.05))
    index_now(cfg)
    anvil.rpc("evm_setAutomine", [False])  # B's transaction waits in the pool
    slow = subprocess.Popen(
        [INDEXER_BIN, "--config", str(cfg), "--log-format", "json", "push", "--once"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env({"INDEXER_FAILPOINTS": "pusher.after_sign=sleep:4"}),
        cwd=ROOT,
    )
    time.sleep(2.5)  # A holds the draft; its 1 s lease has expired
    fast = indexer(cfg, "push", "--once")
    assert fast.code == 0, fast.stderr[-1500:]
    _, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err[-1500:]
    assert "draft_lease_lost" in err
    [row] = checks.db_fetch(db_dsn, "SELECT attempts, sender_nonce FROM reward_batches")
    assert row["attempts"] == 1
    sender = deploy.address_of(SENDER_KEY)
    assert int(anvil.rpc("eth_getTransactionCount", [sender, "pending"]), 16) == 1
    anvil.rpc("evm_setAutomine", [True])
    anvil.mine(1)
    assert int(anvil.rpc("eth_getTransactionCount", [sender, "latest"]), 16) == 1
    daemons.append(Daemon(cfg, "--no-http"))
    wait_rewards(db_dsn, "confirmed", 3)
    wait_synced(db_dsn, anvil)
    assert assert_paid_once(anvil, d, db_dsn) == 3
