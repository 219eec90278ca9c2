"""A small typed client of the HTTP API for Python backends (``[api]`` of the daemon).

    async with RewardsyncClient("http://127.0.0.1:9109", token=TOKEN) as api:
        await api.enqueue(chain_id=1, bank=BANK, campaign_id=CAMPAIGN, token=USDC,
                          wallet=WALLET, amount=10**6, external_key="order-42")
        print(await api.reward_status("order-42"))
        async for update in api.updates(WALLET):   # overview, reward, reorg; resumes by itself
            print(update.event, update.data)

Amounts go in as ``int`` and come back as decimal strings (uint256 does not fit a float).
Errors are ``ApiClientError`` with the status and the API's one message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypedDict, cast

import aiohttp
import orjson

RECONNECT_S = 2.0
READ_TIMEOUT_S = 60.0  # the server sends a keep-alive every 15 s


class Balance(TypedDict):
    """One (chain, token) of a wallet; amounts are decimal strings."""

    chain_id: int
    token: str
    claimable: str
    claimed: str
    in_flight: str
    queued: str
    failed: str
    last_error: str | None


class WalletOverview(TypedDict):
    wallet: str
    balances: list[Balance]


class Enqueued(TypedDict):
    id: int
    status: str
    external_key: str


class RewardStatus(TypedDict):
    id: int
    chain_id: int
    bank: str
    campaign_id: str
    token: str
    wallet: str
    amount: str
    external_key: str
    status: str
    batch_id: int | None
    batch_status: str | None
    tx_hash: str | None
    confirmed_block: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Update:
    """One live event: ``overview`` (a ``WalletOverview``), ``reward`` (a history item) or
    ``reorg`` (``chain_id``, ``common_ancestor``); ``id`` resumes the stream after it."""

    event: str
    id: str
    data: dict[str, Any]


class ApiClientError(Exception):
    """The API refused a request: its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class RewardsyncClient:
    """The API at ``base_url``; ``token`` is needed only by ``enqueue``."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout_s: float = 10) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RewardsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _call(self, method: str, path: str, body: object = None) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        data = None if body is None else orjson.dumps(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self._http().request(
            method, self._base + path, data=data, headers=headers, timeout=self._timeout
        ) as resp:
            payload = orjson.loads(await resp.read() or b"null")
            if resp.status >= 400:
                message = payload.get("error") if isinstance(payload, dict) else None
                raise ApiClientError(resp.status, str(message or resp.reason))
            return payload

    async def enqueue(  # noqa: PLR0913 (the reward's fields, keyword-only)
        self,
        *,
        chain_id: int,
        bank: str,
        campaign_id: str,
        token: str,
        wallet: str,
        amount: int,
        external_key: str,
    ) -> Enqueued:
        """Queue a reward; the same ``external_key`` with the same values returns the same
        reward, with other values raises ``ApiClientError`` 409."""
        body = {
            "chain_id": chain_id,
            "bank": bank,
            "campaign_id": campaign_id,
            "token": token,
            "wallet": wallet,
            "amount": str(amount),
            "external_key": external_key,
        }
        return cast(Enqueued, await self._call("POST", "/v1/rewards", body))

    async def reward_status(self, external_key: str) -> RewardStatus | None:
        """The reward's status, batch and transaction; None when no such key was queued."""
        try:
            found = await self._call("GET", f"/v1/rewards/{_quote(external_key)}")
        except ApiClientError as exc:
            if exc.status == 404:
                return None
            raise
        return cast(RewardStatus, found)

    async def wallet_overview(self, wallet: str) -> WalletOverview:
        return cast(WalletOverview, await self._call("GET", f"/v1/wallets/{wallet}"))

    async def updates(
        self, wallet: str, *, last_event_id: str | None = None, reconnect: bool = True
    ) -> AsyncIterator[Update]:
        """The wallet's live events; after a lost connection it reconnects with the last
        event id, so no update is lost (``reconnect=False`` ends the iteration instead)."""
        last = last_event_id
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = last
            timeout = aiohttp.ClientTimeout(total=None, sock_read=READ_TIMEOUT_S)
            try:
                async with self._http().get(
                    f"{self._base}/v1/stream", params={"wallet": wallet}, headers=headers,
                    timeout=timeout,
                ) as resp:  # fmt: skip
                    if resp.status >= 400:
                        body = orjson.loads(await resp.read() or b"null")
                        message = body.get("error") if isinstance(body, dict) else None
                        raise ApiClientError(resp.status, str(message or resp.reason))
                    async for update in _events(resp.content):
                        last = update.id or last
                        yield update
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError):
                if not reconnect:
                    raise
            if not reconnect:
                return
            await asyncio.sleep(RECONNECT_S)


def _quote(text: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    return quote(text, safe="")


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[Update]:
    """Server-Sent Events from a response body (event, id and data fields)."""
    event, event_id = "message", ""
    data: list[str] = []
    async for raw in content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield Update(event, event_id, orjson.loads("\n".join(data)))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
