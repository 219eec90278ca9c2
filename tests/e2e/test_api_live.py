"""The HTTP API of a real daemon (anvil, PostgreSQL, the pusher, the sink's NOTIFY), driven
through indexer.client: every read endpoint equals the SQL API after a demo-like run; a reward
queued with checksummed input over HTTP is pushed, confirmed and seen live; an anvil_reorg
gives a `reorg` event; a reconnect with Last-Event-ID gets what was missed, nothing twice; the
ops page, loaded in headless Chromium, shows the chain, the reorg and the batch."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from eth_utils.address import to_checksum_address

from indexer.client import RewardsyncClient, Update
from tests import deploy
from tests.e2e.test_pusher import assert_paid_once, make_bank, signer_toml
from tests.e2e.test_reorgs import chama_tx
from tests.harness import Daemon, wait_synced
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

TOKEN = "e2e-api-token-0123456789"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def api_toml() -> str:
    return '\n[api]\nlisten = "127.0.0.1:0"\ntoken_file = "api.token"\n'


async def get(base: str, path: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(base + path, params=params) as resp:
        assert resp.status == 200, (path, await resp.text())
        return await resp.json()


async def next_of(stream: AsyncIterator[Update], event: str) -> Update:
    """The next update of kind ``event`` (others are skipped), within 60 s."""
    deadline = time.monotonic() + 60
    while True:
        update = await asyncio.wait_for(anext(stream), max(deadline - time.monotonic(), 0.1))
        if update.event == event:
            return update


def dec(value: Any) -> str | None:
    """A NUMERIC as the API writes it (a decimal integer string)."""
    return None if value is None else str(int(value))


async def sql_rows(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    con = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await con.fetch(query, *args)]
    finally:
        await con.close()


async def assert_reads_equal_the_sql_api(base: str, dsn: str) -> int:
    """Every read endpoint against the rewardsync_api views and functions; returns how many
    wallets were compared."""
    wallets = [
        r["wallet"] for r in await sql_rows(dsn, "SELECT DISTINCT wallet FROM reward_balances")
    ]
    assert wallets
    for wallet in wallets:
        body = await get(base, f"/v1/wallets/{wallet}")
        rows = await sql_rows(dsn, "SELECT * FROM rewardsync_api.wallet_overview($1)", wallet)
        assert [(b["chain_id"], b["token"].lower(), b["claimable"], b["claimed"]) for b in
                body["balances"]] == [(r["chain_id"], r["token"], dec(r["claimable"]),
                                       dec(r["claimed"])) for r in rows]  # fmt: skip
        items, cursor = [], None
        while True:
            params = {"limit": "7"} | ({"cursor": cursor} if cursor else {})
            page = await get(base, f"/v1/wallets/{wallet}/history", **params)
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        events = await sql_rows(
            dsn,
            "SELECT block_number, log_index FROM reward_added WHERE wallet = $1 UNION ALL "
            "SELECT block_number, log_index FROM reward_claimed WHERE wallet = $1",
            wallet,
        )
        got = sorted((i["block_number"], i["log_index"]) for i in items if i["kind"] != "pushed")
        assert got == sorted((e["block_number"], e["log_index"]) for e in events)
    camps = (await get(base, "/v1/campaigns"))["campaigns"]
    rows = await sql_rows(dsn, "SELECT * FROM rewardsync_api.campaign_budgets ORDER BY 1, 2, 3, 4")
    assert [(c["bank"].lower(), c["campaign_id"], c["pushed"], c["remaining"]) for c in camps] == [
        (r["bank"], r["campaign_id"], dec(r["pushed"]),
         dec(r["remaining"])) for r in rows
    ]  # fmt: skip
    for chama in await sql_rows(dsn, "SELECT * FROM rewardsync_api.chama_stats"):
        (got_chama,) = (await get(base, f"/v1/chamas/{chama['chama_id']}"))["chamas"]
        assert (got_chama["contributed"], got_chama["paid_out"], got_chama["members"]) == (
            dec(chama["contributed"]), dec(chama["paid_out"]), chama["members"],
        )  # fmt: skip
        assert len(got_chama["member_stats"]) == chama["members"]
    (chain,) = (await get(base, "/v1/status"))["chains"]
    (cp,) = await sql_rows(dsn, "SELECT block_number FROM checkpoints")
    assert chain["checkpoint"] <= cp["block_number"]
    assert (chain["name"], chain["leader"]) == ("local", True)
    assert chain["head"] >= chain["checkpoint"]
    return len(wallets)


def dump_dom(url: str) -> str:
    assert CHROMIUM, "chromium is not installed (scripts/setup.sh installs it)"
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


async def test_api_of_a_running_daemon(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    d = deployment
    await asyncio.to_thread(deploy.generate_traffic, d.w3, d, random.Random(18), 40)
    bank, campaign = await asyncio.to_thread(make_bank, d)
    (tmp_path / "api.token").write_text(TOKEN + "\n")
    daemon = Daemon(make_config(extra=signer_toml() + api_toml()))
    daemons.append(daemon)
    listening = await asyncio.to_thread(
        daemon.wait_for, lambda e: e.get("event") == "api_listening"
    )
    assert listening["enqueue"] is True
    base = f"http://127.0.0.1:{listening['port']}"
    await asyncio.to_thread(wait_synced, db_dsn, anvil)
    assert await assert_reads_equal_the_sql_api(base, db_dsn) > 0

    wallet = to_checksum_address("0x" + uuid.uuid4().hex.ljust(40, "9"))
    reward = {"chain_id": 31337, "bank": to_checksum_address(bank.address),
              "campaign_id": "0x" + campaign.hex(), "token": to_checksum_address(d.token.address),
              "wallet": wallet}  # fmt: skip
    async with RewardsyncClient(base, token=TOKEN) as client:
        stream = client.updates(wallet, reconnect=False)
        first = await next_of(stream, "overview")
        assert first.data == {"wallet": wallet, "balances": []}
        await client.enqueue(**reward, amount=1234, external_key="e2e-1")
        items = {u.data["kind"]: u.data for u in
                 [await next_of(stream, "reward"), await next_of(stream, "reward")]}  # fmt: skip
        assert (items["added"]["amount"], items["pushed"]["amount"]) == ("1234", "1234")
        assert items["pushed"]["external_keys"] == ["e2e-1"]
        # RewardsPushed comes before the RewardAdded it pays, in the same transaction.
        assert items["pushed"]["log_index"] < items["added"]["log_index"]
        assert items["pushed"]["tx_hash"] == items["added"]["tx_hash"]
        overview = await next_of(stream, "overview")
        assert overview.data["balances"][0]["claimable"] == "1234"
        status = await client.reward_status("e2e-1")
        assert status is not None
        assert (status["status"], status["wallet"]) == ("confirmed", wallet)
        assert status["tx_hash"] == items["added"]["tx_hash"]

        await asyncio.to_thread(anvil.mine, 3)
        await asyncio.to_thread(wait_synced, db_dsn, anvil)
        head = anvil.block_number()
        await asyncio.to_thread(anvil.reorg, 2, [[chama_tx(d, "api-fork"), 0]])
        reorg = await next_of(stream, "reorg")
        assert reorg.data == {"chain_id": 31337, "common_ancestor": head - 2}
        last = await next_of(stream, "overview")
        assert last.data["balances"][0]["claimable"] == "1234"  # the reward was below the fork
        await stream.aclose()

        await client.enqueue(**reward, amount=777, external_key="e2e-2")  # while away
        for _ in range(600):
            found = await client.reward_status("e2e-2")
            if found is not None and found["status"] == "confirmed":
                break
            await asyncio.sleep(0.1)
        resumed = client.updates(wallet, last_event_id=last.id, reconnect=False)
        got = [await next_of(resumed, "reward"), await next_of(resumed, "reward")]
        assert sorted((u.data["kind"], u.data["amount"]) for u in got) == [
            ("added", "777"), ("pushed", "777"),
        ]  # fmt: skip
        final = await next_of(resumed, "overview")
        assert final.data["balances"][0]["claimable"] == str(1234 + 777)
        await resumed.aclose()

    assert await asyncio.to_thread(assert_paid_once, anvil, d, db_dsn) >= 2
    dom = await asyncio.to_thread(dump_dom, base + "/")
    assert '<meta http-equiv="refresh" content="5">' in dom
    chains = dom[dom.index('<section id="chains">') : dom.index('<section id="reorgs">')]
    assert "31337" in chains
    assert "following" in chains
    reorgs = dom[dom.index('<section id="reorgs">') : dom.index('<section id="discrepancies">')]
    assert f"<td>{head - 2}</td>" in reorgs  # the common ancestor of the reorg above
    batches = dom[dom.index('<section id="batches">') :]
    assert batches.count("<td>confirmed</td>") >= 2
    assert TOKEN not in dom
    daemon.stop()
    assert TOKEN not in daemon.log_path.read_text()
