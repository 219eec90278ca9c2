"""The reward pusher and the rewards lifecycle (issues 4 and 5), on a real anvil.

INV-PUSH is checked from the chain's own RewardAdded events: every queued reward is paid
exactly once with its exact amount, whatever fails in between."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import checks, deploy
from tests.harness import INDEXER_BIN, Daemon, _env, indexer, wait_synced
from tests.procs import ANVIL_KEYS, Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

SIGNER_KEY = ANVIL_KEYS[1]  # holds DISTRIBUTOR_ROLE on banks made by tests.deploy.create_bank
SENDER_KEY = ANVIL_KEYS[3]  # pays gas; differs from the signer on purpose
ADDED_TOPIC = "0x" + deploy.keccak(text="RewardAdded(address,address,address,uint256)").hex()


def signer_toml(**kw: Any) -> str:
    opts = {"push_interval": 0.2, "max_batch": 50, "deadline": 3600, **kw}
    lines = [f'key = "{kw.pop("key", SIGNER_KEY)}"', f'sender_key = "{SENDER_KEY}"']
    lines += [f"{k} = {v}" for k, v in opts.items() if k != "key"]
    return "\n[signer]\n" + "\n".join(lines) + "\n"


def make_bank(
    d: deploy.Deployment, budget: int = deploy.UNCAPPED, fund: int = 10**24
) -> tuple[Any, bytes]:
    bank = deploy.create_bank(d, deploy.product_id(f"p-{uuid.uuid4().hex}"))
    campaign = deploy.product_id(f"c-{uuid.uuid4().hex}")
    if fund:
        deploy.fund_bank(d, bank, fund)
    deploy.allocate_budget(d, bank, campaign, budget)
    return bank, campaign


def queue(
    dsn: str,
    d: deploy.Deployment,
    bank: Any,
    campaign: bytes,
    n: int,
    base: int = 1000,
    wallets: list[tuple[str, int]] | None = None,
) -> list[tuple[str, int]]:
    """Queue ``n`` rewards with distinct amounts (so chain payments map 1:1 to rows); the
    backend's insert is idempotent by external_key."""
    out = []
    todo = wallets or [("0x" + uuid.uuid4().hex[:8].rjust(40, "7"), base + i) for i in range(n)]
    for wallet, amount in todo:
        checks.db_fetch(
            dsn,
            "INSERT INTO rewards (chain_id, bank, campaign_id, token, wallet, amount, "
            "external_key) VALUES (31337, $1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (external_key) DO NOTHING",
            bank.address.lower(),
            "0x" + campaign.hex(),
            d.token.address.lower(),
            wallet,
            amount,
            f"{bank.address}:{wallet}:{amount}",
        )
        out.append((wallet, amount))
    return out


def index_now(cfg: Path) -> None:
    """Index up to the head once, so that the banks the factory made are known (the pusher
    pushes only for watched banks)."""
    out = indexer(cfg, "run", "--exit-when-caught-up", "--no-http")
    assert out.code == 0, out.stderr[-1500:]


def wait_rewards(dsn: str, status: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = checks.db_fetch(dsn, "SELECT count(*) AS n FROM rewards WHERE status = $1", status)
        if rows[0]["n"] == n:
            return
        time.sleep(0.1)
    rows = checks.db_fetch(
        dsn, "SELECT status, error, count(*) AS n FROM rewards GROUP BY status, error"
    )
    batches = checks.db_fetch(dsn, "SELECT id, status, error, tx_hash FROM reward_batches")
    raise AssertionError(f"rewards {[dict(r) for r in rows]} batches {[dict(b) for b in batches]}")


def assert_paid_once(anvil: Anvil, d: deploy.Deployment, dsn: str) -> int:
    """INV-PUSH: the chain's RewardAdded events from banks = the queued rewards, each once."""
    rows = checks.db_fetch(dsn, "SELECT bank, wallet, amount FROM rewards")
    banks = {r["bank"] for r in rows}
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
    paid = Counter(
        ("0x" + lg["topics"][3][-40:], "0x" + lg["topics"][2][-40:], int(lg["data"], 16))
        for lg in logs
        if "0x" + lg["topics"][3][-40:] in banks
    )
    queued = Counter((r["bank"], r["wallet"], int(r["amount"])) for r in rows)
    assert paid == queued, f"paid {sum(paid.values())} vs queued {sum(queued.values())}"
    assert max(paid.values(), default=1) == 1
    stuck = checks.db_fetch(
        dsn, "SELECT id, status FROM reward_batches WHERE status IN ('draft', 'pending')"
    )
    assert not stuck, stuck
    return len(rows)


def test_pusher_pays_queued_rewards_once_and_confirms(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """120 queued rewards over two campaigns: batched (<= 50), signed, sent, confirmed from
    the indexed RewardsPushed; queueing the same external_key twice changes nothing."""
    d = deployment
    bank, campaign = make_bank(d)
    _, campaign2 = bank, deploy.product_id("second")
    deploy.allocate_budget(d, bank, campaign2, deploy.UNCAPPED)
    first = queue(db_dsn, d, bank, campaign, 70)
    queue(db_dsn, d, bank, campaign2, 50, base=5000)
    queue(db_dsn, d, bank, campaign, 70, wallets=first)  # idempotent by external_key
    daemons.append(Daemon(make_config(extra=signer_toml()), "--no-http"))
    wait_rewards(db_dsn, "confirmed", 120)
    wait_synced(db_dsn, anvil)
    assert assert_paid_once(anvil, d, db_dsn) == 120
    batches = checks.db_fetch(
        db_dsn, "SELECT status, block_number, gas_used, sender FROM reward_batches"
    )
    assert len(batches) == 3
    assert {b["status"] for b in batches} == {"confirmed"}
    assert {b["sender"] for b in batches} == {deploy.address_of(SENDER_KEY).lower()}
    confirmed = checks.db_fetch(
        db_dsn, "SELECT count(*) AS n FROM rewards WHERE confirmed_block IS NOT NULL"
    )
    assert confirmed[0]["n"] == 120


def test_lifecycle_reorg_unconfirms_then_batch_lands_again_once(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """A reorg that drops the batch's block moves it back (batch pending, rewards pushed);
    the same signed transaction is rebroadcast and the rewards are paid exactly once."""
    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 5)
    daemon = Daemon(make_config(extra=signer_toml()), "--no-http")
    daemons.append(daemon)
    wait_rewards(db_dsn, "confirmed", 5)
    [batch] = checks.db_fetch(db_dsn, "SELECT block_number, tx_hash FROM reward_batches")
    depth = anvil.block_number() - batch["block_number"] + 1
    anvil.reorg(depth)
    daemon.wait_for(lambda e: e.get("event") == "batches_unconfirmed")
    wait_rewards(db_dsn, "confirmed", 5, timeout=60)
    wait_synced(db_dsn, anvil)
    assert daemon.stop() == 0
    assert assert_paid_once(anvil, d, db_dsn) == 5
    [again] = checks.db_fetch(db_dsn, "SELECT tx_hash FROM reward_batches")
    assert again["tx_hash"] == batch["tx_hash"]  # the same signed transaction landed


@pytest.mark.parametrize(
    "point",
    ["pusher.before_sign", "pusher.after_sign", "pusher.after_record", "pusher.after_broadcast"],
)
def test_pusher_kill_at_each_step_pays_once(
    point: str,
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """kill -9 before signing, after signing, after recording (before broadcast) and after
    broadcast: a restart pays every reward exactly once."""
    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 8)
    cfg = make_config(extra=signer_toml(push_interval=0.05))
    index_now(cfg)
    killed = indexer(cfg, "push", "--once", env={"INDEXER_FAILPOINTS": f"{point}=kill"})
    assert killed.code == -9, killed.stderr[-1500:]
    daemons.append(Daemon(cfg, "--no-http"))
    wait_rewards(db_dsn, "confirmed", 8)
    wait_synced(db_dsn, anvil)
    assert assert_paid_once(anvil, d, db_dsn) == 8


def test_pusher_two_pushers_at_once_pay_once(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Two `indexer push` processes and a daemon with its own pusher on one queue: each
    reward is paid exactly once."""
    d = deployment
    bank, campaign = make_bank(d)
    cfg = make_config(extra=signer_toml(push_interval=0.05, max_batch=7))
    daemons.append(Daemon(cfg, "--no-http"))
    pushers = [
        subprocess.Popen(
            [INDEXER_BIN, "--config", str(cfg), "--log-format", "json", "push"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(None),
        )
        for _ in range(2)
    ]
    try:
        queue(db_dsn, d, bank, campaign, 60)
        wait_rewards(db_dsn, "confirmed", 60, timeout=90)
        wait_synced(db_dsn, anvil)
    finally:
        for p in pushers:
            p.terminate()
            p.wait(timeout=15)
    assert assert_paid_once(anvil, d, db_dsn) == 60


def test_lifecycle_batch_sent_by_someone_else_is_confirmed(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """The recorded batch is carried by another account's transaction first: ours reverts with
    NonceAlreadyUsed and the batch is confirmed from the indexed event, not failed."""
    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 4)
    cfg = make_config(extra=signer_toml())
    index_now(cfg)
    killed = indexer(cfg, "push", "--once", env={"INDEXER_FAILPOINTS": "pusher.after_record=kill"})
    assert killed.code == -9
    [row] = checks.db_fetch(db_dsn, "SELECT call_data, bank FROM reward_batches")
    other = deploy.address_of(ANVIL_KEYS[4])
    anvil.rpc(
        "eth_sendTransaction",
        [{"from": other, "to": row["bank"], "data": row["call_data"], "gas": hex(3_000_000)}],
    )
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    wait_rewards(db_dsn, "confirmed", 4)
    wait_synced(db_dsn, anvil)
    [batch] = checks.db_fetch(db_dsn, "SELECT status, tx_hash FROM reward_batches")
    assert batch["status"] == "confirmed"
    receipt = anvil.rpc("eth_getTransactionReceipt", [batch["tx_hash"]])
    assert receipt["from"].lower() == other.lower()
    assert assert_paid_once(anvil, d, db_dsn) == 4


def test_pusher_replaces_a_stuck_transaction(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """A sent transaction that is dropped and never mined is replaced (same account nonce,
    higher fees, recorded first); the rewards are paid once."""
    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 3)
    anvil.rpc("evm_setAutomine", [False])
    daemon = Daemon(make_config(extra=signer_toml(replace_after=2)), "--no-http")
    daemons.append(daemon)
    sent = daemon.wait_for(lambda e: e.get("event") == "reward_batch_sent")
    anvil.rpc("anvil_dropTransaction", [sent["tx_hash"]])
    replaced = daemon.wait_for(lambda e: e.get("event") == "reward_batch_replaced")
    assert replaced["tx_hash"] != sent["tx_hash"]
    anvil.rpc("evm_setAutomine", [True])
    anvil.mine(1)
    wait_rewards(db_dsn, "confirmed", 3)
    wait_synced(db_dsn, anvil)
    assert assert_paid_once(anvil, d, db_dsn) == 3


@pytest.mark.parametrize("shortfall", ["InsufficientBudget", "InsufficientBalance"])
def test_pusher_refusal_keeps_rewards_waiting_without_hot_loop(
    shortfall: str,
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """A budget or balance shortfall: the batch is not sent, the rewards carry the decoded
    error, the metric counts it, and the pusher backs off instead of looping."""
    d = deployment
    if shortfall == "InsufficientBudget":
        bank, campaign = make_bank(d, budget=10)
    else:
        bank, campaign = make_bank(d, fund=0)
    queue(db_dsn, d, bank, campaign, 3)
    daemon = Daemon(make_config(extra=signer_toml(push_interval=0.05)))
    daemons.append(daemon)
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    daemon.wait_for(lambda e: e.get("event") == "reward_batch_refused")
    time.sleep(2)
    [batch] = checks.db_fetch(db_dsn, "SELECT status, attempts, error FROM reward_batches")
    assert batch["status"] == "draft"
    assert batch["error"] == shortfall
    assert batch["attempts"] == 1  # 40 rounds in 2 s, one attempt: backoff, no hot loop
    errors = {r["error"] for r in checks.db_fetch(db_dsn, "SELECT error FROM rewards")}
    assert errors == {shortfall}
    import urllib.request  # noqa: PLC0415

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f'indexer_pusher_errors_total{{chain="local",error="{shortfall}"}} 1.0' in text
    assert not [
        lg
        for lg in anvil.rpc("eth_getLogs", [{"fromBlock": "0x0", "address": bank.address}])
        if lg["topics"][0]
        == "0x" + deploy.keccak(text="RewardsPushed(bytes32,address,bytes32,uint256,uint256)").hex()
    ]


def test_lifecycle_expired_batch_fails_and_rewards_are_requeued_once(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """A batch that cannot land before its deadline fails once its deadline is below a
    finalized block's time; its rewards are batched again under a new nonce and paid once."""
    d = deployment
    bank, campaign = make_bank(d, budget=10)
    queue(db_dsn, d, bank, campaign, 3)
    cfg = make_config(extra=signer_toml(deadline=30), max_reorg_depth=5)
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    daemon.wait_for(lambda e: e.get("event") == "reward_batch_refused")
    [first] = checks.db_fetch(db_dsn, "SELECT id, nonce FROM reward_batches")
    anvil.rpc("evm_increaseTime", [120])
    anvil.mine(10)  # the deadline is now below the time of a finalized block (head - 5)
    daemon.wait_for(lambda e: e.get("event") == "batches_expired")
    deploy.allocate_budget(d, bank, campaign, deploy.UNCAPPED)
    wait_rewards(db_dsn, "confirmed", 3)
    wait_synced(db_dsn, anvil)
    batches = checks.db_fetch(db_dsn, "SELECT id, nonce, status FROM reward_batches ORDER BY id")
    assert batches[0]["id"] == first["id"]
    assert batches[0]["status"] == "failed"
    assert batches[-1]["status"] == "confirmed"
    assert batches[-1]["nonce"] != first["nonce"]
    assert_paid_once(anvil, d, db_dsn)


def test_pusher_refuses_to_start_without_distributor_role(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """A signer that is not a distributor of a bank with queued rewards: one clear line,
    exit 2, nothing sent."""
    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 2)
    cfg = make_config(extra=signer_toml(key=f'"{ANVIL_KEYS[2]}"'.strip('"')))
    index_now(cfg)
    out = indexer(cfg, "push", "--once")
    assert out.code == 2
    assert "lacks DISTRIBUTOR_ROLE" in out.stderr
    assert ANVIL_KEYS[2][2:] not in out.stderr
    assert not checks.db_fetch(db_dsn, "SELECT 1 FROM reward_batches")


def test_pusher_rpc_accepts_transaction_then_drops_the_reply(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """The node takes the transaction but the reply is lost (twice): the pusher resends the
    same recorded bytes, and every reward is paid exactly once."""
    from tests.fakes.rpc import FakeRpc  # noqa: PLC0415

    dropped: list[str] = []

    def drop_send_replies(method: str, params: list[Any], answer: Any) -> Any:
        if method == "eth_sendRawTransaction" and len(dropped) < 2:
            dropped.append(method)
            return None
        return answer

    d = deployment
    bank, campaign = make_bank(d)
    queue(db_dsn, d, bank, campaign, 6)
    fake = FakeRpc.start_in_thread(anvil.url, corrupt=drop_send_replies)
    try:
        daemons.append(Daemon(make_config(extra=signer_toml(), rpc_url=fake.url), "--no-http"))
        wait_rewards(db_dsn, "confirmed", 6)
        wait_synced(db_dsn, anvil)
        assert len(dropped) == 2
        assert fake.fake.calls["eth_sendRawTransaction"] >= 2
    finally:
        fake.stop()
    assert assert_paid_once(anvil, d, db_dsn) == 6
