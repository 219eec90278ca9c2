"""The incremental reconciler (``indexer.reconcile.Coverage``) on a real anvil and PostgreSQL:
above ``max_views`` balance keys each run checks the balances touched since the last run plus
the next share of the table, so a tampered row nobody touches is found within the number of
runs the ``indexer_reconcile_coverage_runs`` gauge states, and a tampered row of a wallet just
paid is found by the very next run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from prometheus_client import REGISTRY

from indexer import config, db, eip712, runtime
from indexer.reconcile import Coverage, Reconciler, Report
from tests import deploy
from tests.checks import db_fetch
from tests.e2e.test_reconcile import CAMPAIGN, CHAIN_ID, DEPTH, new_bank, settle
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

WALLETS = 40
COVERAGE = Coverage(share=0.2, max_views=10)  # 40 keys > 10: incremental, 5 sampled per run


def run(cfg: Path, coverage: Coverage = COVERAGE) -> Report:
    """One reconcile run, recorded, as the daemon's periodic task runs it."""

    async def go() -> Report:
        settings = config.load(cfg)
        chain = settings.chains[0]
        pool = await db.create_pool(settings.database_url.reveal(), size=2)
        try:
            async with runtime.open_chain(chain, pool) as rt:
                rec = Reconciler(pool, chain, rt.rpc, rt.watch, coverage=coverage)
                try:
                    return await rec.run_once()
                finally:
                    await rec.close()
        finally:
            await pool.close()

    return asyncio.run(go())


def pay(d: deploy.Deployment, bank: Any, batch_id: int, wallets: list[str], base: int) -> None:
    items = [(w, base + i) for i, w in enumerate(wallets)]
    nonce = eip712.batch_nonce(CHAIN_ID, bank.address, batch_id)
    deploy.push_signed_batch(d, bank, CAMPAIGN, items, nonce=nonce)


def subjects(report: Report) -> set[str]:
    """The balances found wrong (the batches these tests push by hand are reported as
    ``missing_in_db`` besides: not what is tested here)."""
    return {f.subject for f in report.found if f.kind == "amount_mismatch"}


def test_incremental_reconcile_finds_a_tampered_row_within_the_coverage_runs(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    d = deployment
    bank = new_bank(d)
    wallets = ["0x" + uuid.uuid4().hex[:10].rjust(40, "5") for _ in range(WALLETS)]
    pay(d, bank, 7001, wallets, 1000)
    cfg = make_config(max_reorg_depth=DEPTH)
    settle(anvil, cfg)
    db_fetch(db_dsn, "ANALYZE reward_balances")  # the sample is sized from the planner's count
    pushpull = d.addresses["MultiTokenPushPull"]
    token = d.token.address.lower()

    first = run(cfg)
    assert subjects(first) == set()
    runs = REGISTRY.get_sample_value("indexer_reconcile_coverage_runs", {"chain": "local"})
    assert runs == WALLETS // 5  # 40 keys, 5 a run
    window = REGISTRY.get_sample_value("indexer_reconcile_drift_window_seconds", {"chain": "local"})
    assert window == runs * 600
    assert first.checked["balances"] == 5
    assert first.checked["balances_touched"] == 0

    # The wallet last in key order: the sample reaches it last. Tampered now, it must be
    # found within `runs` runs, and each run asks at most max_views views.
    order = [r["wallet"] for r in db_fetch(db_dsn, "SELECT wallet FROM reward_balances ORDER BY 1")]
    assert sorted(order) == sorted(w.lower() for w in wallets)
    victim = order[-1]
    db_fetch(db_dsn, "UPDATE reward_balances SET added = added + 9 WHERE wallet = $1", victim)
    subject = f"pending:{pushpull}:{token}:{victim}"
    found_at = None
    for n in range(1, int(runs) + 1):
        report = run(cfg)
        assert report.checked["balances"] <= COVERAGE.max_views
        if subject in subjects(report):
            found_at = n
            break
        assert subjects(report) == set()
    assert found_at is not None, f"not found within {runs} runs"
    assert found_at >= runs - 1  # the first run's sample and 6 more before it reached the end
    # the next run samples other keys: it cannot say the row was cleared, so it stays open
    later = run(cfg)
    assert subject not in subjects(later)
    [row] = db_fetch(
        db_dsn, "SELECT expected, resolved_at FROM discrepancies WHERE subject = $1", subject
    )
    assert row["resolved_at"] is None
    assert row["expected"] == str(
        1000 + wallets.index(next(w for w in wallets if w.lower() == victim))
    )

    # A wallet paid since the last run is checked by the next one, wherever the sample is.
    late = "0x" + uuid.uuid4().hex[:10].rjust(40, "3")
    pay(d, bank, 7002, [late], 5000)
    settle(anvil, cfg)
    db_fetch(db_dsn, "UPDATE reward_balances SET added = added + 1 WHERE wallet = $1", late)
    report = run(cfg)
    assert report.checked["balances_touched"] == 1
    assert f"pending:{pushpull}:{token}:{late}" in subjects(report)


def test_small_chains_are_reconciled_in_full(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """At most max_views keys: every run compares every balance (no cursor is kept)."""
    d = deployment
    bank = new_bank(d)
    wallets = ["0x" + uuid.uuid4().hex[:10].rjust(40, "6") for _ in range(8)]
    pay(d, bank, 7003, wallets, 1000)
    cfg = make_config(max_reorg_depth=DEPTH)
    settle(anvil, cfg)
    report = run(cfg)
    assert subjects(report) == set()
    assert report.checked["balances"] == 8
    assert "balances_touched" not in report.checked
    assert db_fetch(db_dsn, "SELECT count(*) AS n FROM reconcile_cursor")[0]["n"] == 0


def test_thousands_of_balances_go_through_multicall_in_requests_a_node_accepts(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """4,500 balances compared through Multicall3: five aggregate3 calls of at most 1,000
    views, each in a request of its own (a node caps a request's body: anvil refused a 3 MB
    batch with "Invalid request"; the old batching sent calls of 2,000 views in one 2.3 MB
    batch and this test fails on it). Every balance agrees, and a tampered one is found."""
    d = deployment
    admin = deploy.address_of(deploy.ADMIN_KEY)
    mtpp = d.multi_token_push_pull
    deploy.send(d.w3, mtpp.functions.authorizePusher(admin), deploy.ADMIN_KEY)
    deploy.mint(d, admin, 10**30)
    deploy.send(d.w3, d.token.functions.approve(mtpp.address, 10**30), deploy.ADMIN_KEY)
    wallets = ["0x" + (0x3000000 + i).to_bytes(20, "big").hex() for i in range(4500)]
    for k in range(0, len(wallets), 500):
        batch = [(to_checksum_address(w), 1 + i) for i, w in enumerate(wallets[k : k + 500])]
        deploy.send(d.w3, mtpp.functions.pushRewards(d.token.address, batch), deploy.ADMIN_KEY)
    multicall = deploy.deploy(d.w3, "Multicall3").address
    cfg = make_config(max_reorg_depth=DEPTH)
    cfg.write_text(
        cfg.read_text().replace(
            'finality = "depth"\n', f'finality = "depth"\nmulticall3 = "{multicall}"\n'
        )
    )
    settle(anvil, cfg)
    report = run(cfg, Coverage(max_views=10_000))
    assert report.checked["balances"] == 4500
    assert subjects(report) == set()
    db_fetch(
        db_dsn, "UPDATE reward_balances SET added = added + 1 WHERE wallet = $1", wallets[1234]
    )
    report = run(cfg, Coverage(max_views=10_000))
    token = d.token.address.lower()
    # (the token's total is compared with the events', which nobody touched)
    assert subjects(report) == {f"pending:{mtpp.address.lower()}:{token}:{wallets[1234]}"}
