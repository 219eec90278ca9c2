"""The two fix actions that need the node, each applied on its own on a real anvil and
PostgreSQL: ``RefetchEvents`` (a contract's events no table holds, fetched again) and
``RefetchRange`` (a final range fetched again and repaired). The database-only actions are
tested in tests/integration/test_fix_actions.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from indexer import config, db, runtime
from indexer.fixes import Finding, Fixer, RefetchEvents, RefetchRange
from tests import deploy
from tests.checks import db_fetch
from tests.e2e.test_reconcile import USERS, sync
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]


def _contribution_deleted(anvil: Anvil, d: deploy.Deployment, cfg: Path, dsn: str) -> str:
    """A contribution indexed below the finality window, then its row deleted."""
    chama = deploy.create_chama(d, d.admin_key, "Harambee", 10, 2)
    deploy.join_chama(d, USERS[0], chama)
    deploy.contribute(d, USERS[0], chama)
    anvil.mine(5)
    sync(cfg)
    member = deploy.address_of(USERS[0]).lower()
    db_fetch(dsn, "DELETE FROM contributions WHERE contributor = $1", member)
    return member


async def _fix(cfg: Path, findings: list[Finding], *, ranges: bool) -> dict[str, str]:
    settings = config.load(cfg)
    chain = settings.chains[0]
    pool = await db.create_pool(settings.database_url.reveal(), size=2)
    try:
        async with runtime.open_chain(chain, pool) as rt:
            fixer = Fixer(pool, chain, rt.rpc, rt.watch, lock_key=1, start_block=0)
            if ranges:
                return await fixer.refetch_ranges(findings)
            head = await rt.rpc.header(await rt.rpc.block_number() - 3)
            assert head is not None
            return await fixer.fix(findings, head)
    finally:
        await pool.close()


def _contributors(dsn: str) -> list[str]:
    return sorted(r["contributor"] for r in db_fetch(dsn, "SELECT contributor FROM contributions"))


def test_refetch_events_inserts_what_no_table_holds(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    d = deployment
    cfg = make_config(max_reorg_depth=3)
    member = _contribution_deleted(anvil, d, cfg, db_dsn)
    assert _contributors(db_dsn) == []
    chama = d.addresses["ChamaSavings"].lower()
    f = Finding("contribution_mismatch", "c", "2", "1", RefetchEvents(chama))
    actions = asyncio.run(_fix(cfg, [f], ranges=False))
    assert actions == {"c": f"fixed: 1 missing event(s) of {chama} refetched"}
    assert _contributors(db_dsn) == [member]


def test_refetch_range_repairs_a_final_range(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    d = deployment
    cfg = make_config(max_reorg_depth=3)
    member = _contribution_deleted(anvil, d, cfg, db_dsn)
    [cp] = db_fetch(db_dsn, "SELECT finalized_block FROM checkpoints")
    final = RefetchRange(d.block_number, cp["finalized_block"])
    f = Finding("range_incomplete", "r", "x", "y", final)
    assert asyncio.run(_fix(cfg, [f], ranges=True)) == {"r": "fixed: range fetched again"}
    assert member in _contributors(db_dsn)
    # Nothing left to repair: the same range again changes nothing.
    assert asyncio.run(_fix(cfg, [f], ranges=True)) == {"r": "refetched"}
