"""`indexer reconcile` on a real anvil and PostgreSQL: each discrepancy kind produced for real,
detected (exit 3, a discrepancies row), settled by `--fix` (then exit 0), and no false alarm
while reorgs happen above the finalized block.

The pusher is not built yet, so the daemon's bookkeeping (reward_batches and rewards rows) is
inserted by SQL where a scenario needs it. Configs use finality "depth" with a small
max_reorg_depth, so the compared block B = head - DEPTH is near the head."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from web3.contract import Contract

from indexer import config, daemon, eip712, ops
from tests import deploy
from tests.checks import db_fetch
from tests.e2e.test_reorgs import chama_tx
from tests.harness import Daemon, indexer, wait_synced
from tests.procs import ANVIL_KEYS, Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

DEPTH = 3
CHAIN_ID = 31337
CAMPAIGN = deploy.product_id("campaign")
USERS = ANVIL_KEYS[2:5]


def sync(cfg: Path) -> None:
    """Index up to the head and exit (in-process: a CLI start costs seconds)."""
    code = asyncio.run(daemon.run(config.load(cfg), exit_when_caught_up=True, serve_http=False))
    assert code == 0


def reconcile(cfg: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the real `indexer reconcile --json`; the exit code and the chain's report."""
    out = indexer(cfg, "reconcile", "--json", *args)
    assert out.code in (0, 3), out.stderr[-2000:]
    return out.code, json.loads(out.stdout)["chains"][0]


def reconcile_here(cfg: Path, *, fix: bool = False) -> tuple[int, dict[str, Any]]:
    """What `indexer reconcile [--fix] --json` does, in-process: its exit code and report."""
    settings = config.load(cfg)
    [report] = asyncio.run(ops.reconcile(settings, list(settings.chains), fix=fix))
    return (0 if report.consistent else 3), report.as_dict()


def found(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["kind"], f["subject"]) for f in report["found"]}


def discrepancies(dsn: str) -> list[dict[str, Any]]:
    rows = db_fetch(dsn, "SELECT kind, subject, resolved_at, resolution FROM discrepancies")
    return [dict(r) for r in rows]


def nonce_of(bank: Contract, batch_id: int) -> str:
    return "0x" + eip712.batch_nonce(CHAIN_ID, bank.address, batch_id).hex()


def new_bank(d: deploy.Deployment, label: str = "p") -> Contract:
    """A funded bank with an uncapped campaign."""
    bank = deploy.create_bank(d, deploy.product_id(label))
    deploy.fund_bank(d, bank, 10**24)
    deploy.allocate_budget(d, bank, CAMPAIGN, deploy.UNCAPPED)
    return bank


def push(d: deploy.Deployment, bank: Contract, batch_id: int, amounts: list[int]) -> int:
    """Push batch ``batch_id`` (its database nonce) to USERS; the block it landed in."""
    items = [(deploy.address_of(k), a) for k, a in zip(USERS, amounts, strict=False)]
    nonce = eip712.batch_nonce(CHAIN_ID, bank.address, batch_id)
    receipt = deploy.push_signed_batch(d, bank, CAMPAIGN, items, nonce=nonce)
    return int(receipt["blockNumber"])


def record_batch(
    dsn: str,
    d: deploy.Deployment,
    bank: Contract,
    batch_id: int,
    amounts: list[int],
    *,
    status: str,
    reward_status: str,
    block: int | None = None,
    deadline: int = 2**40,
) -> None:
    """Insert the bookkeeping the daemon would hold for batch ``batch_id`` and its rewards."""
    db_fetch(
        dsn,
        "INSERT INTO reward_batches (id, chain_id, bank, campaign_id, token, nonce, deadline, "
        "status, block_number) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        batch_id,
        CHAIN_ID,
        bank.address.lower(),
        "0x" + CAMPAIGN.hex(),
        d.token.address.lower(),
        nonce_of(bank, batch_id),
        deadline,
        status,
        block,
    )
    for key, amount in zip(USERS, amounts, strict=False):
        db_fetch(
            dsn,
            "INSERT INTO rewards (chain_id, bank, campaign_id, token, wallet, amount, "
            "external_key, status, batch_id, confirmed_block) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            CHAIN_ID,
            bank.address.lower(),
            "0x" + CAMPAIGN.hex(),
            d.token.address.lower(),
            deploy.address_of(key).lower(),
            amount,
            f"{batch_id}:{key[-6:]}",
            reward_status,
            batch_id,
            block if reward_status == "confirmed" else None,
        )


@pytest.fixture
def chain(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path]
) -> tuple[deploy.Deployment, Contract, Path]:
    """A deployment with one funded bank and a config with B = head - DEPTH."""
    bank = new_bank(deployment)
    return deployment, bank, make_config(max_reorg_depth=DEPTH)


def settle(anvil: Anvil, cfg: Path) -> None:
    """Mine past the finality window and index, so everything so far is at or below B."""
    anvil.mine(DEPTH + 1)
    sync(cfg)


def with_multicall(cfg: Path, address: str) -> Path:
    text = cfg.read_text().replace(
        'finality = "depth"\n', f'finality = "depth"\nmulticall3 = "{address}"\n'
    )
    cfg.write_text(text)
    return cfg


@pytest.mark.parametrize("batching", ["jsonrpc", "multicall3"])
def test_reconcile_clean_database_exits_0(
    batching: str, anvil: Anvil, chain: tuple[deploy.Deployment, Contract, Path], db_dsn: str
) -> None:
    """Pushes with their bookkeeping, claims and chama contributions compare equal through
    either view batching, so a consistent database exits 0 and records nothing."""
    d, bank, cfg = chain
    if batching == "multicall3":
        with_multicall(cfg, deploy.deploy(d.w3, "Multicall3").address)
    block = push(d, bank, 1001, [5, 7, 9])
    record_batch(
        db_dsn, d, bank, 1001, [5, 7, 9], status="confirmed", reward_status="confirmed", block=block
    )
    deploy.claim(d, USERS[0])
    chama = deploy.create_chama(d, d.admin_key, "Umoja", 10, 2)
    deploy.join_chama(d, USERS[1], chama)
    deploy.contribute(d, d.admin_key, chama)
    settle(anvil, cfg)
    code, report = reconcile(cfg)
    assert (code, report["found"]) == (0, []), report
    assert report["checked"]["balances"] == 3
    assert report["checked"]["contributions"] == 2
    assert discrepancies(db_dsn) == []


def test_reconcile_amount_mismatch_tampered_balance(
    anvil: Anvil, chain: tuple[deploy.Deployment, Contract, Path], db_dsn: str
) -> None:
    """A reward_balances row edited by hand disagrees with the contract's pending amount:
    amount_mismatch, and --fix recomputes the row from the events."""
    d, bank, cfg = chain
    block = push(d, bank, 1001, [5, 7])
    record_batch(
        db_dsn, d, bank, 1001, [5, 7], status="confirmed", reward_status="confirmed", block=block
    )
    settle(anvil, cfg)
    wallet = deploy.address_of(USERS[1]).lower()
    db_fetch(db_dsn, "UPDATE reward_balances SET added = added + 100 WHERE wallet = $1", wallet)
    code, report = reconcile(cfg)
    subject = f"pending:{d.addresses['MultiTokenPushPull']}:{d.token.address.lower()}:{wallet}"
    assert (code, found(report)) == (3, {("amount_mismatch", subject)})
    assert report["found"][0]["expected"] == "7"
    assert reconcile_here(cfg)[0] == 3
    assert len(discrepancies(db_dsn)) == 1, "a second run must not duplicate the open row"
    labels = {"chain": "local", "kind": "amount_mismatch"}
    assert REGISTRY.get_sample_value("indexer_discrepancies_open", labels) == 1
    last = REGISTRY.get_sample_value(
        "indexer_reconcile_last_run_timestamp_seconds", {"chain": "local"}
    )
    assert last is not None
    assert last > time.time() - 60
    items = {"chain": "local", "kind": "balances"}
    assert REGISTRY.get_sample_value("indexer_reconcile_items_checked_total", items)
    code, report = reconcile_here(cfg, fix=True)
    assert code == 3
    assert report["fixed"][subject].startswith("fixed: reward_balances recomputed")
    assert reconcile_here(cfg)[0] == 0
    assert REGISTRY.get_sample_value("indexer_discrepancies_open", labels) == 0
    [row] = discrepancies(db_dsn)
    assert row["resolved_at"] is not None
    assert row["resolution"].startswith("fixed: reward_balances recomputed")
    [bal] = db_fetch(db_dsn, "SELECT added FROM reward_balances WHERE wallet = $1", wallet)
    assert bal["added"] == 7


def test_reconcile_missing_in_db_batch_pushed_outside_the_daemon(
    anvil: Anvil, chain: tuple[deploy.Deployment, Contract, Path], db_dsn: str
) -> None:
    """A batch pushed with no reward_batches row, and rewards credited straight through
    MultiTokenPushPull by a plain pusher, are missing_in_db; --fix records the batch as
    reconciled and acknowledges the direct credit for good."""
    d, bank, cfg = chain
    block = push(d, bank, 1001, [5, 7])
    mtpp = d.multi_token_push_pull
    admin = deploy.address_of(d.admin_key)
    deploy.send(d.w3, mtpp.functions.authorizePusher(admin), d.admin_key)
    deploy.mint(d, admin, 50)
    deploy.send(d.w3, d.token.functions.approve(mtpp.address, 50), d.admin_key)
    user = deploy.address_of(USERS[2])
    deploy.send(d.w3, mtpp.functions.pushRewards(d.token.address, [(user, 50)]), d.admin_key)
    settle(anvil, cfg)
    code, report = reconcile(cfg)
    batch = f"batch:{CHAIN_ID}:{bank.address.lower()}:{nonce_of(bank, 1001)}"
    assert code == 3
    assert {k for k, _ in found(report)} == {"missing_in_db"}
    assert ("missing_in_db", batch) in found(report)
    assert len(found(report)) == 2
    assert reconcile_here(cfg, fix=True)[0] == 3
    assert reconcile_here(cfg)[0] == 0
    [row] = db_fetch(db_dsn, "SELECT status, block_number, nonce FROM reward_batches")
    assert (row["status"], row["block_number"]) == ("reconciled", block)
    resolutions = sorted(r["resolution"].split(":")[0] for r in discrepancies(db_dsn))
    assert resolutions == ["acknowledged", "fixed"]


def test_reconcile_status_mismatch_failed_pending_and_astray_reward(
    anvil: Anvil, chain: tuple[deploy.Deployment, Contract, Path], db_dsn: str
) -> None:
    """Batches whose final RewardsPushed exists but that say failed or pending, and a reward
    confirmed in a batch that is not, are status_mismatch; --fix settles the batches as
    reconciled with their rewards confirmed, and the stray reward follows its batch."""
    d, bank, cfg = chain
    b1 = push(d, bank, 1001, [5])
    push(d, bank, 1002, [6])
    settle(anvil, cfg)
    record_batch(db_dsn, d, bank, 1001, [5], status="failed", reward_status="pending")
    db_fetch(
        db_dsn,
        "UPDATE rewards SET batch_id = NULL, error = 'requeued: batch 1001 expired' "
        "WHERE batch_id = 1001",
    )
    record_batch(db_dsn, d, bank, 1002, [6], status="pending", reward_status="pushed")
    record_batch(db_dsn, d, bank, 1003, [8], status="pending", reward_status="confirmed")
    code, report = reconcile(cfg)
    assert code == 3
    subjects = {s for k, s in found(report) if k == "status_mismatch"}
    assert f"batch:{CHAIN_ID}:{bank.address.lower()}:{nonce_of(bank, 1001)}" in subjects
    assert f"batch:{CHAIN_ID}:{bank.address.lower()}:{nonce_of(bank, 1002)}" in subjects
    assert f"reward:{CHAIN_ID}:1003:{USERS[0][-6:]}" in subjects
    assert len(report["found"]) == 3, report["found"]
    assert reconcile_here(cfg, fix=True)[0] == 3
    assert reconcile_here(cfg)[0] == 0
    batches = {r["id"]: r for r in db_fetch(db_dsn, "SELECT * FROM reward_batches")}
    assert (batches[1001]["status"], batches[1001]["block_number"]) == ("reconciled", b1)
    assert batches[1002]["status"] == "reconciled"
    assert batches[1003]["status"] == "pending"
    rewards = {r["external_key"]: r for r in db_fetch(db_dsn, "SELECT * FROM rewards")}
    first = rewards[f"1001:{USERS[0][-6:]}"]
    assert (first["status"], first["batch_id"], first["confirmed_block"]) == ("confirmed", 1001, b1)
    assert rewards[f"1003:{USERS[0][-6:]}"]["status"] == "pushed"
    assert all(r["resolved_at"] is not None for r in discrepancies(db_dsn))


def test_reconcile_expired_deadline_fails_the_batch(
    anvil: Anvil, chain: tuple[deploy.Deployment, Contract, Path], db_dsn: str
) -> None:
    """A batch still pending after its deadline passed at a final block, with no
    RewardsPushed anywhere, is status_mismatch; --fix fails it and requeues its rewards."""
    d, bank, cfg = chain
    deploy.create_chama(d, d.admin_key, "tick", 10, 2)
    settle(anvil, cfg)
    record_batch(
        db_dsn, d, bank, 1001, [5, 6], status="pending", reward_status="pushed", deadline=1
    )
    code, report = reconcile(cfg)
    subject = f"batch:{CHAIN_ID}:{bank.address.lower()}:{nonce_of(bank, 1001)}"
    assert (code, found(report)) == (3, {("status_mismatch", subject)})
    assert reconcile_here(cfg, fix=True)[0] == 3
    assert reconcile_here(cfg)[0] == 0
    [batch] = db_fetch(db_dsn, "SELECT status FROM reward_batches")
    assert batch["status"] == "failed"
    rows = db_fetch(db_dsn, "SELECT status, batch_id FROM rewards")
    assert [(r["status"], r["batch_id"]) for r in rows] == [("pending", None)] * 2


def test_reconcile_missing_on_chain_after_a_reorg_removed_a_confirmed_batch(
    anvil: Anvil, chain: tuple[deploy.Deployment, Contract, Path], db_dsn: str
) -> None:
    """A batch recorded confirmed whose RewardsPushed a reorg removed is missing_on_chain once
    that height is final; --fix puts it back in flight (pending, rewards pushed)."""
    d, bank, cfg = chain
    block = push(d, bank, 1001, [5, 7])
    sync(cfg)
    record_batch(
        db_dsn, d, bank, 1001, [5, 7], status="confirmed", reward_status="confirmed", block=block
    )
    depth = anvil.block_number() - block + 1
    anvil.reorg(depth, [[chama_tx(d, "fork"), 0]])
    settle(anvil, cfg)
    assert db_fetch(db_dsn, "SELECT 1 FROM rewards_pushed") == []
    # The lifecycle may already have moved the batch back; the scenario is bookkeeping that
    # still says confirmed (a daemon without the lifecycle, or a row written by hand).
    db_fetch(db_dsn, "UPDATE reward_batches SET status = 'confirmed', block_number = $1", block)
    db_fetch(db_dsn, "UPDATE rewards SET status = 'confirmed', confirmed_block = $1", block)
    code, report = reconcile(cfg)
    subject = f"batch:{CHAIN_ID}:{bank.address.lower()}:{nonce_of(bank, 1001)}"
    assert (code, found(report)) == (3, {("missing_on_chain", subject)})
    assert report["found"][0]["expected"].startswith("no RewardsPushed")
    assert reconcile_here(cfg, fix=True)[0] == 3
    assert reconcile_here(cfg)[0] == 0
    [batch] = db_fetch(db_dsn, "SELECT status, block_number FROM reward_batches")
    assert (batch["status"], batch["block_number"]) == ("pending", None)
    statuses = {r["status"] for r in db_fetch(db_dsn, "SELECT status FROM rewards")}
    assert statuses == {"pushed"}


def test_reconcile_contribution_mismatch_deleted_row_is_refetched(
    anvil: Anvil, chain: tuple[deploy.Deployment, Contract, Path], db_dsn: str
) -> None:
    """A contributions row deleted from the database disagrees with getTotalContributed:
    contribution_mismatch; --fix refetches the missing event from the node."""
    d, _bank, cfg = chain
    chama = deploy.create_chama(d, d.admin_key, "Harambee", 10, 2)
    deploy.join_chama(d, USERS[0], chama)
    deploy.contribute(d, USERS[0], chama)
    settle(anvil, cfg)
    member = deploy.address_of(USERS[0]).lower()
    db_fetch(db_dsn, "DELETE FROM contributions WHERE contributor = $1", member)
    code, report = reconcile(cfg)
    subject = f"contribution:{d.addresses['ChamaSavings']}:{chama}:{member}"
    assert (code, found(report)) == (3, {("contribution_mismatch", subject)})
    assert reconcile_here(cfg, fix=True)[0] == 3
    assert reconcile_here(cfg)[0] == 0
    assert len(db_fetch(db_dsn, "SELECT 1 FROM contributions WHERE contributor = $1", member)) == 1


def test_reconcile_during_reorgs_never_raises_a_false_alarm(
    anvil: Anvil,
    chain: tuple[deploy.Deployment, Contract, Path],
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """Claims reorged away above the finalized block, while the daemon follows and reconciles
    every second and `reconcile` runs from the CLI, never produce a discrepancy: both sides
    are compared at B = head - DEPTH only."""
    d, bank, cfg = chain
    rng = random.Random(4)
    print("seed", 4)
    block = push(d, bank, 1001, [5, 7, 9])
    record_batch(
        db_dsn, d, bank, 1001, [5, 7, 9], status="confirmed", reward_status="confirmed", block=block
    )
    chama = deploy.create_chama(d, d.admin_key, "Jenga", 10, 2)
    deploy.join_chama(d, USERS[0], chama)
    deploy.contribute(d, d.admin_key, chama)
    anvil.mine(DEPTH + 1)
    cfg.write_text(cfg.read_text().replace("[service]\n", "[service]\nreconcile_interval = 0.5\n"))
    daemon = Daemon(cfg, "--no-http")
    daemons.append(daemon)
    wait_synced(db_dsn, anvil)
    for i in range(6):
        if i < len(USERS):
            deploy.claim(d, USERS[i])
        else:
            deploy.create_chama(d, d.admin_key, f"c{i}", 10, 2)
        anvil.reorg(rng.randint(1, DEPTH), [[chama_tx(d, f"fork-{i}"), 0]])
        code, report = reconcile_here(cfg)
        assert (code, report["found"]) == (0, []), report
        time.sleep(0.3)
    wait_synced(db_dsn, anvil)
    daemon.wait_for(lambda e: e.get("event") == "reconciled" and e.get("block", 0) > block)
    assert daemon.stop() == 0
    assert not [e for e in daemon.events() if e.get("event") == "reconcile_failed"]
    assert not [e for e in daemon.events() if e.get("event") == "reconciled" and e["found"]]
    assert discrepancies(db_dsn) == []
