"""The HTTP API (indexer.api) served in-process against a real PostgreSQL: every endpoint
against rows written into the tables, JSON shapes (decimal strings, EIP-55), history
pagination, enqueue's bearer token, errors and idempotency conflicts, the OpenAPI document
(valid, and equal to the routes), and the live stream driven by commits and rollbacks written
the way the sink writes them (rows, balances, checkpoint, reorg row, NOTIFY in one transaction).
The daemon end to end (anvil, the real sink) is tests/e2e/test_api_live.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from eth_utils.address import to_checksum_address
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from indexer import api, openapi
from indexer.client import ApiClientError, RewardsyncClient, Update
from indexer.config import ApiSettings, Secret
from indexer.db import Q

pytestmark = pytest.mark.pg

CHAIN = 31337
TOKEN_ADDR = "0x" + "ab" * 20
MTPP = "0x" + "cd" * 20
BANK = "0x" + "ef" * 20
CAMPAIGN = "0x" + "01" * 32
WALLET = "0x" + "5a" * 20
OTHER = "0x" + "6b" * 20
API_TOKEN = "test-token-0123456789"


def bad_checksum(address: str) -> str:
    """The EIP-55 form of ``address`` with the case of its last letter flipped."""
    good = to_checksum_address(address)
    i = max(i for i, c in enumerate(good) if c.isalpha() and i > 1)
    return good[:i] + good[i].swapcase() + good[i + 1 :]


@contextlib.asynccontextmanager
async def running(
    dsn: str, token: str | None = None, live: dict[int, dict[str, Any]] | None = None
) -> AsyncIterator[tuple[str, api.ApiServer]]:
    """The API on a free port with its LISTEN task running."""
    settings = ApiSettings(("127.0.0.1", 0), None if token is None else Secret(token))
    stop = asyncio.Event()
    async with api.serve(settings, dsn, lambda: live or {}) as server:
        listener = asyncio.create_task(server.hub.run(stop))
        await asyncio.wait_for(server.hub.listening.wait(), 10)
        try:
            yield f"http://127.0.0.1:{server.port}", server
        finally:
            stop.set()
            await listener


async def get(url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as resp:
        body = await resp.read()
        ctype = resp.headers.get("Content-Type", "")
        return resp.status, orjson.loads(body) if "json" in ctype else body.decode()


async def post(url: str, body: object, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as resp:
        return resp.status, orjson.loads(await resp.read())


def conforms(name: str, body: object) -> None:
    """``body`` is valid against the OpenAPI document's schema ``name``."""
    doc = openapi.document()
    OAS31Validator({"$ref": f"#/components/schemas/{name}", **doc}).validate(body)


async def commit(
    con: asyncpg.Connection, block: int, events: list[tuple[str, str, int]], log0: int = 0
) -> None:
    """One committed block as the sink writes it: event rows (kind, wallet, amount), the
    balances from them, the checkpoint, and NOTIFY naming the wallets."""
    async with con.transaction():
        for i, (kind, wallet, amount) in enumerate(events):
            table = "reward_added" if kind == "added" else "reward_claimed"
            extra = ", emitter" if kind == "added" else ""
            await con.execute(
                f"INSERT INTO {table} (chain_id, block_number, block_hash, tx_hash, log_index, "
                f"contract, token, wallet, amount{extra}) VALUES ($1, $2, $3, $4, $5, $6, $7, "
                f"$8, $9{', $10' if extra else ''})",
                CHAIN,
                block,
                "0x" + f"{block:064x}",
                "0x" + f"{block * 100 + i:064x}",
                log0 + i,
                MTPP,
                TOKEN_ADDR,
                wallet,
                amount,
                *([BANK] if extra else []),
            )
        wallets = await con.fetch(Q["add_balances"], CHAIN, block, block, 101)
        await con.execute(
            "INSERT INTO checkpoints (chain_id, block_number, block_hash) VALUES ($1, $2, $3) "
            "ON CONFLICT (chain_id) DO UPDATE SET block_number = $2, block_hash = $3",
            CHAIN,
            block,
            "0x" + f"{block:064x}",
        )
        note = {"chain_id": CHAIN, "kind": "commit", "from": block, "to": block,
                "tables": ["reward_added"], "wallets": sorted(r[0] for r in wallets),
                "wallets_truncated": False}  # fmt: skip
        await con.execute(Q["notify"], orjson.dumps(note).decode())


async def rollback(con: asyncpg.Connection, ancestor: int, old_tip: int) -> None:
    """A reorg rolled back to ``ancestor`` as the sink does it (rows, balances, checkpoint,
    reorgs row, NOTIFY without wallets)."""
    async with con.transaction():
        for table in ("reward_added", "reward_claimed"):
            await con.execute(
                f"DELETE FROM {table} WHERE chain_id = $1 AND block_number > $2", CHAIN, ancestor
            )
        await con.execute("DELETE FROM reward_balances WHERE chain_id = $1", CHAIN)
        await con.fetch(Q["add_balances"], CHAIN, 0, ancestor, 101)
        await con.execute(
            "UPDATE checkpoints SET block_number = $2, block_hash = $3 WHERE chain_id = $1",
            CHAIN,
            ancestor,
            "0x" + f"{ancestor:064x}",
        )
        await con.execute(
            Q["insert_reorg"], CHAIN, old_tip - ancestor, ancestor, None, None, "reorg"
        )
        note = {"chain_id": CHAIN, "kind": "rollback", "from": ancestor + 1, "to": old_tip,
                "tables": ["reward_added"]}  # fmt: skip
        await con.execute(Q["notify"], orjson.dumps(note).decode())


async def test_openapi_document_is_valid_and_names_every_route(db_dsn: str) -> None:
    """The served document validates as OpenAPI 3.1 and its (method, path) pairs are exactly
    the application's routes."""
    async with running(db_dsn) as (base, server):
        status, doc = await get(base + "/v1/openapi.json")
        assert status == 200
        validate(doc)
        documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
        app = api.make_app(None, ApiSettings(), dict, server.hub)  # type: ignore[arg-type]
        routes = {
            (r.method, r.resource.canonical)
            for r in app.router.routes()
            if r.method != "HEAD" and r.resource is not None
        }
        assert documented == routes
        assert doc == orjson.loads(orjson.dumps(openapi.document()))


async def test_read_endpoints_show_the_tables(db_dsn: str) -> None:
    """Overview, history (two pages, no item twice), reward status, campaigns, chamas and
    status read what the tables hold: amounts as decimal strings, addresses checksummed."""
    con = await asyncpg.connect(db_dsn)
    try:
        big = 2**255 + 7  # beyond a float: must come back exact
        await commit(con, 10, [("added", WALLET, big), ("added", OTHER, 5)])
        await commit(con, 11, [("added", WALLET, 3), ("claimed", WALLET, 2)])
        await commit(con, 12, [("added", WALLET, 4)])
        await con.execute(
            "SELECT * FROM rewardsync_api.enqueue_reward($1, $2, $3, $4, $5, 9, 'order-1')",
            CHAIN, BANK, CAMPAIGN, TOKEN_ADDR, WALLET,
        )  # fmt: skip
        await con.execute(
            "INSERT INTO campaign_budgets (chain_id, block_number, block_hash, tx_hash, "
            "log_index, contract, campaign_id, token, budget) "
            "VALUES ($1, 9, $2, $2, 0, $3, $4, $5, 1000)",
            CHAIN, "0x" + "00" * 32, BANK, CAMPAIGN, TOKEN_ADDR,
        )  # fmt: skip
        await con.execute(
            "INSERT INTO chamas (chain_id, block_number, block_hash, tx_hash, log_index, "
            "contract, chama_id, name, creator, contribution_amount) "
            "VALUES ($1, 9, $2, $2, 1, $3, 7, 'circle', $4, 50)",
            CHAIN, "0x" + "00" * 32, MTPP, WALLET,
        )  # fmt: skip
        await con.execute(
            "INSERT INTO chama_members (chain_id, block_number, block_hash, tx_hash, log_index, "
            "contract, chama_id, member) VALUES ($1, 9, $2, $2, 2, $3, 7, $4)",
            CHAIN, "0x" + "00" * 32, MTPP, OTHER,
        )  # fmt: skip
    finally:
        await con.close()
    live = {CHAIN: {"name": "local", "head": 15, "leader": True}}
    async with running(db_dsn, live=live) as (base, _):
        checksummed = to_checksum_address(WALLET)
        status, overview = await get(f"{base}/v1/wallets/{checksummed}")
        assert status == 200
        conforms("WalletOverview", overview)
        assert overview == {
            "wallet": checksummed,
            "balances": [
                {
                    "chain_id": CHAIN,
                    "token": to_checksum_address(TOKEN_ADDR),
                    "claimable": str(big + 3 + 4 - 2),
                    "claimed": "2",
                    "in_flight": "0",
                    "queued": "9",
                    "failed": "0",
                    "last_error": None,
                }
            ],
        }
        seen: list[tuple[int, int]] = []
        cursor = None
        pages = 0
        while pages == 0 or cursor is not None:
            params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
            status, page = await get(f"{base}/v1/wallets/{WALLET}/history", params=params)
            assert status == 200
            conforms("HistoryPage", page)
            seen += [(i["block_number"], i["log_index"]) for i in page["items"]]
            cursor, pages = page["next_cursor"], pages + 1
        assert seen == [(12, 0), (11, 1), (11, 0), (10, 0)]  # newest first, each once
        assert pages == 2
        status, page = await get(f"{base}/v1/wallets/{WALLET}/history")
        assert [i["kind"] for i in page["items"]] == ["added", "claimed", "added", "added"]
        assert page["items"][-1]["amount"] == str(big)
        assert page["items"][-1]["contract"] == to_checksum_address(MTPP)
        status, reward = await get(f"{base}/v1/rewards/order-1")
        assert (status, reward["status"], reward["amount"]) == (200, "pending", "9")
        conforms("RewardStatus", reward)
        assert reward["wallet"] == checksummed
        assert reward["bank"] == to_checksum_address(BANK)
        status, missing = await get(f"{base}/v1/rewards/order-none")
        conforms("Error", missing)
        assert (status, missing) == (404, {"error": "no reward with this external_key"})
        status, camps = await get(f"{base}/v1/campaigns", params={"bank": BANK})
        assert status == 200
        conforms("Campaigns", camps)
        (camp,) = camps["campaigns"]
        assert (camp["remaining"], camp["queued"], camp["uncapped"]) == ("1000", "9", False)
        status, same = await get(f"{base}/v1/campaigns/{CAMPAIGN.upper().replace('0X', '0x')}")
        assert (status, same) == (200, camps)
        assert (await get(f"{base}/v1/campaigns/{'0x' + '02' * 32}"))[1] == {"campaigns": []}
        status, chamas = await get(f"{base}/v1/chamas/7")
        assert status == 200
        conforms("Chamas", chamas)
        (chama,) = chamas["chamas"]
        assert (chama["name"], chama["members"], chama["current_round"]) == ("circle", 1, 1)
        assert chama["member_stats"] == [
            {"member": to_checksum_address(OTHER), "contributed": "0", "received": "0"}
        ]
        assert (await get(f"{base}/v1/chamas/8"))[0] == 404
        status, sync = await get(f"{base}/v1/status")
        conforms("Status", sync)
        (chain,) = sync["chains"]
        assert (chain["checkpoint"], chain["head"], chain["lag"], chain["name"]) == (
            12, 15, 3, "local",
        )  # fmt: skip
        bad = {
            f"/v1/wallets/{bad_checksum(WALLET)}": "address has mixed case but is not a valid",
            "/v1/wallets/0x123": "address is not a 20-byte 0x address",
            f"/v1/wallets/{WALLET}/history?cursor=nope": "cursor is not one this API returned",
            f"/v1/wallets/{WALLET}/history?limit=0": "limit must be an integer >= 1",
            "/v1/campaigns?campaign_id=0x12": "campaign_id is not a 32-byte 0x value",
            "/v1/chamas/x": "chama_id must be an integer >= 0",
        }
        for path, message in bad.items():
            status, body = await get(base + path)
            assert status == 400, path
            assert body["error"].startswith(message), (path, body)
        status, body = await get(base + "/v1/nothing")
        assert (status, body) == (404, {"error": "Not Found"})


async def test_enqueue_needs_the_token_and_is_idempotent(db_dsn: str) -> None:
    """POST /v1/rewards: 403 with no token configured; with one, 401 without a bearer token,
    403 with a wrong one; checksummed input is queued once per external_key, the same key
    with another amount is 409, a bad field 400; the token never appears in an answer."""
    reward = {"chain_id": CHAIN, "bank": to_checksum_address(BANK), "campaign_id": CAMPAIGN,
              "token": to_checksum_address(TOKEN_ADDR), "wallet": to_checksum_address(WALLET),
              "amount": "1000000", "external_key": "order-9"}  # fmt: skip
    async with running(db_dsn) as (base, _):
        status, body = await post(base + "/v1/rewards", reward, API_TOKEN)
        assert (status, body) == (403, {"error": "enqueue is disabled: no API token is configured"})
    async with running(db_dsn, token=API_TOKEN) as (base, _):
        status, body = await post(base + "/v1/rewards", reward)
        assert (status, body) == (401, {"error": "a bearer token is required"})
        status, body = await post(base + "/v1/rewards", reward, "wrong-token-0123456789")
        assert (status, body) == (403, {"error": "the bearer token is not valid"})
        status, first = await post(base + "/v1/rewards", reward, API_TOKEN)
        assert (status, first["status"]) == (200, "pending")
        status, again = await post(base + "/v1/rewards", reward | {"wallet": WALLET}, API_TOKEN)
        assert (status, again["id"]) == (200, first["id"])
        status, body = await post(base + "/v1/rewards", reward | {"amount": "7"}, API_TOKEN)
        assert status == 409
        assert body == {"error": "external_key 'order-9' is already queued with other values"}
        bad = {
            "amount": ("1e6", "amount must be a decimal string of a positive integer"),
            "wallet": (bad_checksum(WALLET), "wallet has mixed case but is not a valid EIP-55"),
            "bank": ("0x12", "bank is not a 20-byte 0x address"),
            "chain_id": (0, "chain_id must be a positive integer"),
            "campaign_id": ("0x01", "campaign_id is not a 32-byte 0x value"),
            "external_key": ("", "external_key must be a string of 1 to 200 characters"),
        }
        for field, (value, message) in bad.items():
            body = reward | {field: value, "external_key": f"bad-{field}"}
            if field == "external_key":
                body[field] = value
            status, answer = await post(base + "/v1/rewards", body, API_TOKEN)
            assert status == 400, field
            assert answer["error"].startswith(message), (field, answer)
            assert API_TOKEN not in answer["error"]
        status, answer = await post(
            base + "/v1/rewards", {"amount": "1"} | reward | {"x": 1}, API_TOKEN
        )
        assert (status, answer) == (400, {"error": "unknown field: x"})
        async with RewardsyncClient(base, token=API_TOKEN) as client:
            done = await client.enqueue(
                chain_id=CHAIN, bank=BANK, campaign_id=CAMPAIGN, token=TOKEN_ADDR,
                wallet=WALLET, amount=5, external_key="order-10",
            )  # fmt: skip
            found = await client.reward_status("order-10")
            assert found is not None
            assert (found["id"], found["amount"]) == (done["id"], "5")
            assert await client.reward_status("order-none") is None
            overview = await client.wallet_overview(WALLET)
            assert overview["balances"][0]["queued"] == str(1000000 + 5)
            with pytest.raises(ApiClientError, match="409"):
                await client.enqueue(
                    chain_id=CHAIN, bank=BANK, campaign_id=CAMPAIGN, token=TOKEN_ADDR,
                    wallet=WALLET, amount=6, external_key="order-10",
                )  # fmt: skip


async def next_update(stream: AsyncIterator[Update], event: str | None = None) -> Update:
    """The next update (of kind ``event``), within 10 s."""
    while True:
        update = await asyncio.wait_for(anext(stream), 10)
        if event is None or update.event == event:
            return update


async def test_stream_commits_rollbacks_and_resume(db_dsn: str) -> None:
    """A client gets the overview at once; a commit naming its wallet sends the new item and
    overview (another wallet's commit sends nothing); a rollback sends `reorg` with the
    common ancestor; a client resuming with the last event id gets exactly what it missed,
    the replacement items after a reorg included."""
    con = await asyncpg.connect(db_dsn)
    try:
        await commit(con, 5, [("added", WALLET, 1)])
        async with running(db_dsn) as (base, _), RewardsyncClient(base) as client:
            stream = client.updates(WALLET, reconnect=False)
            first = await next_update(stream)
            assert first.event == "overview"
            assert first.data["balances"][0]["claimable"] == "1"
            await commit(con, 6, [("added", OTHER, 50)])
            await commit(con, 7, [("added", WALLET, 2)])
            item = await next_update(stream)
            assert (item.event, item.data["block_number"], item.data["amount"]) == (
                "reward", 7, "2",
            )  # fmt: skip
            overview = await next_update(stream)
            assert overview.event == "overview"
            assert overview.data["balances"][0]["claimable"] == "3"
            await rollback(con, 6, 7)
            reorg = await next_update(stream)
            assert (reorg.event, reorg.data) == ("reorg", {"chain_id": CHAIN, "common_ancestor": 6})
            after = await next_update(stream)
            assert after.event == "overview"
            assert after.data["balances"][0]["claimable"] == "1"
            last_id = after.id
            await stream.aclose()
            # Disconnected: a replacement block, then a reorg under it and two more blocks.
            await commit(con, 7, [("added", WALLET, 4)])
            await rollback(con, 6, 7)
            await commit(con, 7, [("added", WALLET, 8), ("claimed", WALLET, 1)])
            await commit(con, 8, [("added", WALLET, 16)])
            resumed = client.updates(WALLET, last_event_id=last_id, reconnect=False)
            got = [await next_update(resumed) for _ in range(5)]
            assert [u.event for u in got] == ["reorg", "reward", "reward", "reward", "overview"]
            assert [(u.data["block_number"], u.data["amount"]) for u in got[1:4]] == [
                (7, "8"), (7, "1"), (8, "16"),
            ]  # fmt: skip
            assert got[-1].data["balances"][0]["claimable"] == str(1 + 8 - 1 + 16)
            again = client.updates(WALLET, last_event_id=got[2].id, reconnect=False)
            tail = [await next_update(again) for _ in range(2)]
            assert [(u.event, u.data.get("amount")) for u in tail] == [
                ("reward", "16"), ("overview", None),
            ]  # fmt: skip
            await resumed.aclose()
            await again.aclose()
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{base}/v1/stream", params={"wallet": WALLET}) as resp,
            ):  # what a browser's EventSource needs
                assert resp.headers["Content-Type"] == "text/event-stream"
                assert resp.headers["Cache-Control"] == "no-cache"
                assert await resp.content.readline() == b"retry: 2000\n"
            status, body = await get(f"{base}/v1/stream?wallet={WALLET}",
                                     headers={"Last-Event-ID": "garbage"})  # fmt: skip
            assert (status, body) == (
                400,
                {"error": "Last-Event-ID is not an event id of this stream"},
            )
    finally:
        await con.close()


async def until_closed(stream: AsyncIterator[Update]) -> int:
    """Read until the server ends the stream; the number of updates read."""
    n = 0
    try:
        while True:
            await next_update(stream)
            n += 1
    except (aiohttp.ClientError, StopAsyncIteration):
        return n


async def test_stream_drops_a_client_that_takes_no_wake_ups(db_dsn: str) -> None:
    """A client whose bounded queue of wake-ups fills (it is not being served) is dropped and
    counted (indexer_api_stream_dropped_total{reason="queue_full"}); others stay."""
    from indexer import metrics, stream  # noqa: PLC0415

    dropped = metrics.API_STREAM_DROPPED.labels("queue_full")
    before = dropped._value.get()
    note = orjson.dumps(
        {"chain_id": CHAIN, "kind": "commit", "from": 1, "to": 1, "tables": [],
         "wallets": [WALLET], "wallets_truncated": False}
    )  # fmt: skip
    async with running(db_dsn) as (base, server), RewardsyncClient(base) as client:
        slow = client.updates(WALLET, reconnect=False)
        calm = client.updates(OTHER, reconnect=False)
        assert (await next_update(slow)).event == "overview"
        assert (await next_update(calm)).event == "overview"
        for _ in range(stream.QUEUE_SIZE + 1):  # no await between: the handler cannot drain
            server.hub.publish(note.decode())
        await until_closed(slow)  # the server ends it (a timeout here fails the test)
        assert dropped._value.get() == before + 1
        assert len(server.hub) == 1  # the calm client is still served
        await calm.aclose()


async def test_client_reconnects_by_itself_and_loses_nothing(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """updates() with reconnect: when the server drops the stream, the client comes back with
    its last event id and receives the commit made while it was away, once."""
    from indexer import client as client_module  # noqa: PLC0415
    from indexer import stream  # noqa: PLC0415

    monkeypatch.setattr(client_module, "RECONNECT_S", 0.2)
    con = await asyncpg.connect(db_dsn)
    try:
        await commit(con, 3, [("added", WALLET, 10)])
        async with running(db_dsn) as (base, server), RewardsyncClient(base) as client:
            updates = client.updates(WALLET)
            assert (await next_update(updates)).event == "overview"
            note = {"chain_id": CHAIN, "kind": "commit", "wallets": [WALLET],
                    "wallets_truncated": False}  # fmt: skip
            for _ in range(stream.QUEUE_SIZE + 1):  # dropped as too slow
                server.hub.publish(orjson.dumps(note).decode())
            await commit(con, 4, [("added", WALLET, 20)])  # while it reconnects
            item = await next_update(updates, "reward")
            assert (item.data["block_number"], item.data["amount"]) == (4, "20")
            overview = await next_update(updates, "overview")
            assert overview.data["balances"][0]["claimable"] == "30"
            await commit(con, 5, [("added", WALLET, 40)])
            later = await next_update(updates, "reward")
            assert (later.data["block_number"], later.data["amount"]) == (5, "40")
            await updates.aclose()
    finally:
        await con.close()


async def test_ops_page_escapes_what_it_shows(db_dsn: str) -> None:
    """The ops page lists a halted chain, a reorg, an open discrepancy and a batch, with
    whatever text they carry escaped."""
    hostile = "<script>alert(1)</script>"
    con = await asyncpg.connect(db_dsn)
    try:
        await commit(con, 3, [("added", WALLET, 10)])
        await con.execute("UPDATE checkpoints SET halted_reason = $1", "deep reorg " + hostile)
        await con.execute(Q["insert_reorg"], CHAIN, 2, 1, None, None, "reorg")
        await con.execute(
            "INSERT INTO discrepancies (chain_id, kind, subject, expected, actual) "
            "VALUES ($1, 'balance', $2, '1', '2')",
            CHAIN,
            hostile,
        )
        await con.execute(
            "INSERT INTO reward_batches (chain_id, bank, campaign_id, token, status, "
            "reward_count, total_amount) VALUES ($1, $2, $3, $4, 'pending', 3, 99)",
            CHAIN, BANK, CAMPAIGN, TOKEN_ADDR,
        )  # fmt: skip
    finally:
        await con.close()
    async with running(db_dsn, live={CHAIN: {"name": "local", "head": 9, "leader": True}}) as (
        base,
        _,
    ):
        status, page = await get(base + "/")
    assert status == 200
    assert hostile not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "1 chain(s) halted" in page
    assert '<td class="bad">halted: deep reorg &lt;script&gt;' in page
    chains = page[page.index('id="chains"') : page.index('id="reorgs"')]
    assert "<td>local</td>" in chains
    assert "<td>6</td>" in chains  # lag: head 9 - checkpoint 3
    batches = page[page.index('id="batches"') :]
    assert "<td>pending</td><td>3</td><td>99</td>" in batches


async def test_stream_drops_a_client_that_does_not_read(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that stops reading while a long catch-up is written is dropped after the
    write timeout (indexer_api_stream_dropped_total{reason="write_timeout"}), not buffered."""
    import socket  # noqa: PLC0415

    from indexer import metrics, stream  # noqa: PLC0415

    monkeypatch.setattr(stream, "WRITE_TIMEOUT_S", 0.5)
    dropped = metrics.API_STREAM_DROPPED.labels("write_timeout")
    before = dropped._value.get()
    con = await asyncpg.connect(db_dsn)
    try:
        await con.execute(
            "INSERT INTO reward_added (chain_id, block_number, block_hash, tx_hash, log_index, "
            "contract, token, wallet, emitter, amount) SELECT $1, n, $2, $2, 0, $3, $4, $5, $3, n "
            "FROM generate_series(1, 30000) n",
            CHAIN, "0x" + "11" * 32, MTPP, TOKEN_ADDR, WALLET,
        )  # fmt: skip
        await con.execute(
            "INSERT INTO checkpoints (chain_id, block_number, block_hash) VALUES ($1, 30000, $2)",
            CHAIN,
            "0x" + "11" * 32,
        )
    finally:
        await con.close()
    async with running(db_dsn) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            f"GET /v1/stream?wallet={WALLET} HTTP/1.1\r\nHost: x\r\n"
            f"Last-Event-ID: r0,{CHAIN}:0\r\n\r\n".encode()
        )  # 30,000 reward events due (about 12 MB), and this client reads none of them
        try:
            for _ in range(300):
                if dropped._value.get() == before + 1 and len(server.hub) == 0:
                    break
                await asyncio.sleep(0.1)
            assert dropped._value.get() == before + 1
            assert len(server.hub) == 0
        finally:
            sock.close()


async def test_a_long_resume_comes_in_rounds_each_item_once(db_dsn: str) -> None:
    """Resuming far behind (4,500 items: three rounds of at most 2,000) delivers every item
    once, in order, then one overview."""
    from indexer import stream  # noqa: PLC0415

    con = await asyncpg.connect(db_dsn)
    try:
        await con.execute(
            "INSERT INTO reward_added (chain_id, block_number, block_hash, tx_hash, log_index, "
            "contract, token, wallet, emitter, amount) SELECT $1, n / 2, $2, $2, n % 2, $3, $4, "
            "$5, $3, n FROM generate_series(2, 4501) n",
            CHAIN, "0x" + "11" * 32, MTPP, TOKEN_ADDR, WALLET,
        )  # fmt: skip
        await con.fetch(Q["add_balances"], CHAIN, 0, 3000, 101)
        await con.execute(
            "INSERT INTO checkpoints (chain_id, block_number, block_hash) VALUES ($1, 3000, $2)",
            CHAIN,
            "0x" + "11" * 32,
        )
    finally:
        await con.close()
    assert stream.ROUND < 4500 / 2
    async with running(db_dsn) as (base, _), RewardsyncClient(base) as client:
        updates = client.updates(WALLET, last_event_id=f"r0,{CHAIN}:0", reconnect=False)
        got = []
        while True:
            update = await next_update(updates)
            if update.event == "overview":
                break
            got.append((update.data["block_number"], update.data["log_index"]))
        assert got == sorted(set(got))
        assert len(got) == 4500
        assert update.data["balances"][0]["claimable"] == str(sum(range(2, 4502)))
        await updates.aclose()


async def test_stream_survives_the_loss_of_its_listen_connection(db_dsn: str) -> None:
    """The hub's LISTEN connection is terminated by the server and opened again; a commit
    made meanwhile (its NOTIFY may reach no listener) still reaches the client, since every
    client catches up after a reconnect."""
    from indexer import stream  # noqa: PLC0415

    con = await asyncpg.connect(db_dsn)
    try:
        await commit(con, 3, [("added", WALLET, 10)])
        async with running(db_dsn) as (base, server), RewardsyncClient(base) as client:
            updates = client.updates(WALLET, reconnect=False)
            assert (await next_update(updates)).event == "overview"
            find = (
                "SELECT pid FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()"
            )
            before = await con.fetchval(find, stream.LISTEN_APP_NAME)
            assert await con.fetchval("SELECT pg_terminate_backend($1)", before)
            await commit(con, 4, [("added", WALLET, 20)])  # its NOTIFY reaches no listener
            item = await next_update(updates, "reward")
            assert (item.data["block_number"], item.data["amount"]) == (4, "20")
            await asyncio.wait_for(server.hub.listening.wait(), 10)
            after = await con.fetchval(find, stream.LISTEN_APP_NAME)
            assert after not in (None, before)  # listening again, on a new connection
            await updates.aclose()
    finally:
        await con.close()
