"""Factories in general (issue 19): two factories of different kinds on one chain — the
ProductBankFactory, whose creation event has its own table, and a second one whose creation
event lands in `other_events` — each child bound to its own factory's child ABI, found again
after a restart, and forgotten when a reorg removes its creation.

Before the fix every child was bound to the first factory's child ABI and a restart reloaded
children from `product_banks` only: the second factory's children were forgotten, their later
logs never indexed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from indexer import config as settings_file
from indexer import db, runtime
from tests import checks, deploy
from tests.e2e.test_follow import static
from tests.e2e.test_hostile_logs import emit
from tests.e2e.test_pusher import make_bank
from tests.harness import ChainCfg, indexer, write_config
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]
RUN = ("run", "--exit-when-caught-up", "--no-http")
SPAWNED = keccak(text="Spawned(address)")
SPAWNER_ABI = [
    {
        "type": "event",
        "name": "Spawned",
        "anonymous": False,
        "inputs": [{"name": "child", "type": "address", "indexed": False}],
    }
]


def config(tmp_path: Path, dsn: str, anvil: Anvil, d: deploy.Deployment) -> Path:
    """The usual chain plus a factory "Spawner" (LogEmitter's address, our ABI) whose
    children are TestToken contracts."""
    spawner = tmp_path / "Spawner.json"
    spawner.write_text(json.dumps(SPAWNER_ABI))
    chain = ChainCfg("local", 31337, anvil.url, d.addresses, start_block=d.block_number)
    extra = (
        f'[[chains.contracts]]\nname = "Spawner"\nabi = "{spawner}"\n'
        f'address = "{d.addresses["LogEmitter"]}"\nstart_block = {d.block_number}\n\n'
        f'[[chains.contracts]]\nname = "ChildToken"\nabi = "{deploy.ABIS_DIR / "TestToken.json"}"\n'
        'factory = { contract = "Spawner", event = "Spawned", parameter = "child" }\n'
    )
    path = write_config(tmp_path / "indexer.toml", dsn, [chain])
    text = path.read_text()
    # the extra contracts belong to the chain's table: before any later top-level table
    path.write_text(text.rstrip() + "\n\n" + extra)
    return path


def spawn(d: deploy.Deployment, child: str) -> int:
    """A creation event of the second factory; returns its block."""
    tx = emit(d, [SPAWNED], abi_encode(["address"], [child]))
    return int(d.w3.eth.get_transaction_receipt(tx)["blockNumber"])


def mint(d: deploy.Deployment, n: int, token: Any = None) -> None:
    admin = deploy.address_of(deploy.ADMIN_KEY)
    for i in range(n):
        deploy.mint(d, admin, 1000 + i, token)


def token_rows(dsn: str, token: Any) -> list[tuple[int, int, str]]:
    rows = checks.db_fetch(
        dsn,
        "SELECT block_number, log_index, event FROM other_events WHERE contract = $1 ORDER BY 1, 2",
        token.address.lower(),
    )
    return [(r["block_number"], r["log_index"], r["event"]) for r in rows]


def token_logs(anvil: Anvil, token: Any, first: int) -> list[tuple[int, int, str]]:
    """The node's Transfer logs of ``token`` from block ``first`` on."""
    logs = anvil.rpc(
        "eth_getLogs", [{"fromBlock": hex(first), "toBlock": "latest", "address": token.address}]
    )
    names = {
        "0x" + keccak(text=sig).hex(): sig.split("(")[0]
        for sig in ("Transfer(address,address,uint256)", "Approval(address,address,uint256)")
    }
    return [
        (int(lg["blockNumber"], 16), int(lg["logIndex"], 16), names[lg["topics"][0]]) for lg in logs
    ]


def assert_everything(dsn: str, anvil: Anvil, d: deploy.Deployment, created: int) -> None:
    """The stored rows are exactly the node's logs of the static contracts, the Spawner, every
    bank (from the start block) and the spawned token (from its creation block)."""
    top = checks.checkpoint(dsn)[0]
    watched = checks.watched_addresses(
        anvil, [*static(d), d.addresses["LogEmitter"]], d.addresses["ProductBankFactory"], top
    )

    def keys(address: Any, first: int) -> set[tuple[int, int, str]]:
        logs = anvil.rpc(
            "eth_getLogs", [{"fromBlock": hex(first), "toBlock": hex(top), "address": address}]
        )
        return {
            (int(lg["blockNumber"], 16), int(lg["logIndex"], 16), lg["blockHash"]) for lg in logs
        }

    expected = keys(watched, d.block_number) | keys(d.token.address, created)
    got = {(k[0], k[1], k[2]) for k in checks.stored_keys(dsn)}
    assert got == expected, (sorted(got - expected)[:3], sorted(expected - got)[:3])
    checks.assert_balances(dsn, anvil, d.addresses["MultiTokenPushPull"])


def test_two_factories_of_different_kinds_survive_a_restart_and_a_reorg(
    tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """A bank made by the ProductBankFactory and a TestToken "made" by the Spawner: both are
    indexed from their creation on; after a restart the token's new Transfers are indexed too
    (its own child ABI, its creation read back from `other_events`); a second token whose
    creation a reorg removes loses its rows and is watched no more."""
    d = deployment
    bank, _campaign = make_bank(d)
    created = spawn(d, d.token.address)
    mint(d, 2)
    cfg = config(tmp_path, db_dsn, anvil, d)
    first = indexer(cfg, *RUN)
    assert first.code == 0, first.stderr[-2000:]
    assert token_rows(db_dsn, d.token) == token_logs(anvil, d.token, created)
    assert len(token_rows(db_dsn, d.token)) == 2

    # restart: both factories' children come back from the database
    mint(d, 3)
    deploy.fund_bank(d, bank, 77)
    again = indexer(cfg, *RUN)
    assert again.code == 0, again.stderr[-2000:]
    assert token_rows(db_dsn, d.token) == token_logs(anvil, d.token, created)
    assert [r[2] for r in token_rows(db_dsn, d.token)].count("Transfer") >= 5
    deposits = checks.db_fetch(
        db_dsn, "SELECT amount FROM funds_deposited WHERE contract = $1", bank.address.lower()
    )
    assert 77 in [int(r["amount"]) for r in deposits]
    assert_everything(db_dsn, anvil, d, created)

    # a reorg that removes a creation: that child's rows go, and it is watched no more
    other = deploy.deploy(d.w3, "TestToken", "Other", "OTH")
    anvil.mine(2)
    spawned_at = spawn(d, other.address)
    mint(d, 2, other)
    assert indexer(cfg, *RUN).code == 0
    assert len(token_rows(db_dsn, other)) == 2
    anvil.reorg(anvil.block_number() - spawned_at + 1)
    mint(d, 1, other)  # on the new branch: `other` was never made by the Spawner here
    mint(d, 1)
    out = indexer(cfg, *RUN)
    assert out.code == 0, out.stderr[-2000:]
    assert out.named("reorg_detected")
    assert token_rows(db_dsn, other) == []
    assert token_rows(db_dsn, d.token) == token_logs(anvil, d.token, created)
    assert_everything(db_dsn, anvil, d, created)


def test_a_range_asked_for_before_the_one_ahead_decoded_gets_its_new_childrens_logs(
    anvil: Anvil, deployment: deploy.Deployment, make_config: Callable[..., Path], db_dsn: str
) -> None:
    """Below the finalized block the loader asks for two ranges ahead: the second is asked
    for before the first has decoded, so before the banks the first creates are watched.
    Range A holds a bank's creation, range B its first deposit, both asked for at once
    (what the follower does): B, when taken, is caught up with the bank's logs. Without
    the catch-up B lacks the deposit."""
    d = deployment
    bank = deploy.create_bank(d, deploy.product_id("ahead"))
    created = int(d.w3.eth.block_number)
    deploy.fund_bank(d, bank, 123)
    funded = int(d.w3.eth.block_number)
    cfg = make_config(max_reorg_depth=3)

    async def load() -> tuple[list[str], list[str], int]:
        settings = settings_file.load(cfg)
        pool = await db.create_pool(settings.database_url.reveal(), size=2)
        try:
            async with runtime.open_chain(settings.chains[0], pool) as rt:
                await rt.watch.ensure_loaded()
                loader = rt.follower.loader
                assert loader.start_prefetch(d.block_number, created, False) == created
                assert loader.start_prefetch(created + 1, funded, False) == funded
                a = await loader.take_prefetch(d.block_number, created, False)
                b = await loader.take_prefetch(created + 1, funded, False)
                assert a is not None
                assert b is not None
                names = [e.spec.name for e in a.events], [e.spec.name for e in b.events]
                deposits = [
                    int(e.args()["amount"])
                    for e in b.events
                    if e.spec.name == "FundsDeposited" and e.log.address == bank.address.lower()
                ]
                return names[0], names[1], sum(deposits)
        finally:
            await pool.close()

    in_a, in_b, deposited = asyncio.run(load())
    assert "ProductBankCreated" in in_a
    assert deposited == 123, in_b
