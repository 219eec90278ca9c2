"""The reward pusher: queued rewards go on chain in signed batches, at most once each (P4).

A round: (1) take ``pending`` rewards (``FOR UPDATE SKIP LOCKED``), group them by (bank,
campaign, token), cut batches of at most ``max_batch`` as ``draft`` rows whose nonce derives
from their database id; (2) for each due draft: sign the EIP-712 batch, pre-flight it with
``eth_estimateGas`` (a refusal such as ``InsufficientBudget`` is recorded, the draft waits with
backoff: no hot loop, no gas spent), sign an EIP-1559 transaction, record the raw transaction
and its hash (``pending``) BEFORE broadcasting it (the outbox); (3) for each pending batch:
rebroadcast the same raw transaction until it is mined (a dropped connection or a reorg that
removed its block changes nothing: same bytes, same hash), replace it with higher fees at the
same account nonce when it stays unmined, and send a reverted batch back to draft.

Safety does not rest on the pusher: the contract refuses a used batch nonce, a batch counts as
confirmed only from its indexed ``RewardsPushed(nonce)`` (``indexer/rewards.py``), and a batch
is given up (rewards re-queued under a new nonce) only when its deadline has passed at a
finalized block without that event. Two pushers never share a reward (row locks) nor an
account nonce (an advisory lock per sender).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

import asyncpg
import structlog
from eth_abi.abi import encode
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from indexer import failpoints, metrics
from indexer.config import ChainSettings, SignerSettings
from indexer.db import CONNECTION_ERRORS, Q
from indexer.eip712 import Reward, batch_nonce, sign_reward_batch
from indexer.errors import LaggingNode, Retryable, RpcError, SignerNotAuthorized
from indexer.rpc import ExecutionReverted, RpcClient
from indexer.types import BlockHeader

log = structlog.get_logger()

DISTRIBUTOR_ROLE = keccak(text="DISTRIBUTOR_ROLE")
HAS_ROLE = keccak(text="hasRole(bytes32,address)")[:4]
PUSH_REWARDS = keccak(
    text="pushRewards(bytes32,address,(address,uint256)[],bytes32,uint256,bytes)"
)[:4]
TAKE_LIMIT = 5_000  # rewards taken per round
REBROADCAST_S = 3.0
FEE_BUMP = 1.25  # replacement fees (nodes require at least +10 %)
GAS_MARGIN = 1.25
# P7: RPC and database faults are retried next round, never an exit.
_RETRIED: tuple[type[BaseException], ...] = (Retryable, *CONNECTION_ERRORS)
REFUSAL_BACKOFF_S = (15, 30, 60, 120, 300, 600)


def _error_selectors(abi: tuple[dict[str, Any], ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in abi:
        if entry.get("type") == "error":
            sig = f"{entry['name']}({','.join(i['type'] for i in entry.get('inputs', []))})"
            out["0x" + keccak(text=sig)[:4].hex()] = str(entry["name"])
    return out


def _sender_lock_key(chain_id: int, sender: str) -> int:
    return int.from_bytes(
        keccak(text=f"rewardsync.sender.{chain_id}.{sender}")[:8], "big", signed=True
    )


@dataclass(frozen=True, slots=True)
class PushRound:
    """What one round did (for logs and tests)."""

    created: int
    signed: int
    broadcast: int
    refused: int


class Pusher:
    """The pusher of one chain."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        rpc: RpcClient,
        chain: ChainSettings,
        signer: SignerSettings,
        bank_abi: tuple[dict[str, Any], ...],
    ) -> None:
        self.pool = pool
        self.rpc = rpc
        self.chain = chain
        self.settings = signer
        self._signer_key = signer.key.reveal()
        self._sender_key = (signer.sender_key or signer.key).reveal()
        self.signer = Account.from_key(self._signer_key).address.lower()
        self.sender = Account.from_key(self._sender_key).address.lower()
        self.errors = _error_selectors(bank_abi)
        self.lock_key = _sender_lock_key(chain.chain_id, self.sender)

    # ---- checks -------------------------------------------------------------------------

    async def check_roles(self) -> None:
        """Refuse to push when the signer is not a distributor of a bank with queued rewards."""
        async with self.pool.acquire() as con:
            banks = [
                r["bank"] for r in await con.fetch(Q["banks_with_pending"], self.chain.chain_id)
            ]
        if not banks:
            return
        latest = await self._latest()
        missing = []
        for bank in banks:
            data = HAS_ROLE + encode(["bytes32", "address"], [DISTRIBUTOR_ROLE, self.signer])
            out = await self.rpc.eth_call(bank, data, latest.hash)
            if not out or int.from_bytes(out[-32:], "big") != 1:
                missing.append(bank)
        if missing:
            raise SignerNotAuthorized(
                f"signer {self.signer} lacks DISTRIBUTOR_ROLE on bank(s) {', '.join(missing)} "
                f"on chain {self.chain.name}"
            )

    async def _latest(self) -> BlockHeader:
        header = await self.rpc.header("latest")
        if header is None:
            raise LaggingNode("the node has no latest block")
        return header

    # ---- the round ----------------------------------------------------------------------

    async def run_once(self) -> PushRound:
        created = await self._create_batches()
        signed = refused = 0
        while True:
            outcome = await self._sign_one()
            if outcome is None:
                break
            signed += outcome == "signed"
            refused += outcome == "refused"
        broadcast = await self._watch_pending()
        await self._update_metrics()
        return PushRound(created, signed, broadcast, refused)

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds every ``push_interval`` until ``stop``; transient faults are retried."""
        while not stop.is_set():
            try:
                result = await self.run_once()
                if result.created or result.signed or result.refused:
                    log.info(
                        "push_round",
                        chain=self.chain.name,
                        created=result.created,
                        signed=result.signed,
                        broadcast=result.broadcast,
                        refused=result.refused,
                    )
            except _RETRIED as exc:
                log.warning("push_retry", chain=self.chain.name, error=str(exc) or repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.push_interval_s)

    async def _create_batches(self) -> int:
        latest = await self._latest()
        deadline = latest.timestamp + self.settings.deadline_s
        cid = self.chain.chain_id
        created = 0
        async with self.pool.acquire() as con, con.transaction():
            rows = await con.fetch(Q["take_pending_rewards"], cid, TAKE_LIMIT)
            for (bank, campaign, token), group in groupby(
                rows, key=lambda r: (r["bank"], r["campaign_id"], r["token"])
            ):
                items = list(group)
                for i in range(0, len(items), self.settings.max_batch):
                    chunk = items[i : i + self.settings.max_batch]
                    batch_id = await con.fetchval(
                        Q["insert_batch"], cid, bank, campaign, token, deadline
                    )
                    nonce = "0x" + batch_nonce(cid, bank, batch_id).hex()
                    await con.execute(Q["set_batch_nonce"], batch_id, nonce)
                    await con.execute(Q["assign_rewards"], batch_id, [r["id"] for r in chunk])
                    created += 1
        return created

    async def _claim_draft(self) -> asyncpg.Record | None:
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(Q["drafts_due"] + " LIMIT 1", self.chain.chain_id)
            if row is not None:
                # A lease, so that two pushers do not both sign it (harmless, but wasteful).
                lease = min(max(5 * self.settings.push_interval_s, 1.0), 60.0)
                await con.execute(Q["batch_note"], row["id"], None, lease)
            return row

    async def _sign_one(self) -> str | None:
        """Sign, pre-flight, record and broadcast one due draft; None when there is none."""
        draft = await self._claim_draft()
        if draft is None:
            return None
        await failpoints.hit("pusher.before_sign")
        async with self.pool.acquire() as con:
            entries = await con.fetch(Q["batch_rewards"], draft["id"])
        rewards = [Reward(r["wallet"], int(r["amount"])) for r in entries]
        signature = sign_reward_batch(
            self._signer_key,
            self.chain.chain_id,
            draft["bank"],
            campaign_id=bytes.fromhex(draft["campaign_id"][2:]),
            token=draft["token"],
            rewards=rewards,
            nonce=bytes.fromhex(draft["nonce"][2:]),
            deadline=draft["deadline"],
        )
        data = PUSH_REWARDS + encode(
            ["bytes32", "address", "(address,uint256)[]", "bytes32", "uint256", "bytes"],
            [
                bytes.fromhex(draft["campaign_id"][2:]),
                draft["token"],
                [(r.user, r.amount) for r in rewards],
                bytes.fromhex(draft["nonce"][2:]),
                draft["deadline"],
                signature,
            ],
        )
        call = {"from": self.sender, "to": draft["bank"], "data": "0x" + data.hex()}
        try:
            gas = int(await self.rpc.request("eth_estimateGas", [call]), 16)
        except ExecutionReverted as exc:
            await self._refused(draft["id"], self._error_name(exc), draft["deadline"])
            return "refused"
        await failpoints.hit("pusher.after_sign")
        raw, tx_hash = await self._record(draft["id"], draft["bank"], data, int(gas * GAS_MARGIN))
        await failpoints.hit("pusher.after_record")
        await self._broadcast(draft["id"], raw)
        await failpoints.hit("pusher.after_broadcast")
        log.info(
            "reward_batch_sent",
            chain=self.chain.name,
            batch=draft["id"],
            tx_hash=tx_hash,
            rewards=len(rewards),
        )
        metrics.REWARDS_PUSHED.labels("sent").inc(len(rewards))
        return "signed"

    def _error_name(self, exc: ExecutionReverted) -> str:
        return self.errors.get(exc.data[:10], f"revert {exc.data[:10]}")

    async def _refused(self, batch_id: int, error: str, deadline: int) -> None:
        """Record a refusal; the draft waits (backoff) and keeps its nonce (P4)."""
        async with self.pool.acquire() as con, con.transaction():
            attempts = await con.fetchval(Q["count_refusal"], batch_id)
            wait = REFUSAL_BACKOFF_S[min(attempts - 1, len(REFUSAL_BACKOFF_S) - 1)]
            await con.execute(Q["batch_note"], batch_id, error, wait)
            await con.execute(Q["rewards_error"], batch_id, error)
        metrics.PUSHER_ERRORS.labels(self.chain.name, error.split("(", maxsplit=1)[0]).inc()
        log.warning(
            "reward_batch_refused",
            chain=self.chain.name,
            batch=batch_id,
            error=error,
            retry_in_s=wait,
            deadline=deadline,
        )

    async def _fees(self) -> tuple[int, int]:
        block = await self.rpc.request("eth_getBlockByNumber", ["latest", False])
        base = int(block.get("baseFeePerGas") or "0x0", 16)
        try:
            prio = int(await self.rpc.request("eth_maxPriorityFeePerGas", []), 16)
        except RpcError:
            prio = 1_000_000_000
        return 2 * base + prio, prio

    async def _record(
        self,
        batch_id: int,
        bank: str,
        data: bytes,
        gas: int,
        *,
        nonce: int | None = None,
        fees: tuple[int, int] | None = None,
    ) -> tuple[str, str]:
        """Sign the transaction and record it, under the sender lock, before any broadcast."""
        node_nonce = int(
            await self.rpc.request("eth_getTransactionCount", [self.sender, "pending"]), 16
        )
        max_fee, prio = fees or await self._fees()
        async with self.pool.acquire() as con, con.transaction():
            await con.execute(Q["sender_lock"], self.lock_key)
            if nonce is None:
                used = await con.fetchval(Q["max_sender_nonce"], self.chain.chain_id, self.sender)
                nonce = max(node_nonce, (used + 1) if used is not None else 0)
            tx = {
                "type": 2,
                "chainId": self.chain.chain_id,
                "nonce": nonce,
                "to": to_checksum_address(bank),
                "data": "0x" + data.hex(),
                "value": 0,
                "gas": gas,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": prio,
            }
            signed = Account.sign_transaction(tx, self._sender_key)
            raw = "0x" + bytes(signed.raw_transaction).hex()
            tx_hash = "0x" + bytes(signed.hash).hex()
            await con.execute(
                Q["record_signed"],
                batch_id,
                raw,
                tx_hash,
                self.sender,
                nonce,
                max_fee,
                prio,
                "0x" + data.hex(),
                gas,
            )
        return raw, tx_hash

    async def _broadcast(self, batch_id: int, raw: str) -> bool:
        try:
            await self.rpc.send_raw_transaction(bytes.fromhex(raw[2:]))
        except RpcError as exc:
            # "already known" / "nonce too low": the node has it or it was mined; watch decides.
            log.info("broadcast_refused", chain=self.chain.name, batch=batch_id, error=str(exc))
        except Retryable as exc:
            log.warning("broadcast_failed", chain=self.chain.name, batch=batch_id, error=str(exc))
            return False
        async with self.pool.acquire() as con:
            await con.execute(Q["mark_broadcast"], batch_id)
        return True

    async def _watch_pending(self) -> int:
        async with self.pool.acquire() as con:
            rows = await con.fetch(
                Q["pending_batches"].replace(" FOR UPDATE SKIP LOCKED", ""), self.chain.chain_id
            )
        sent = 0
        now = datetime.now(UTC)
        stuck = 0
        for row in rows:
            receipt = await self.rpc.request("eth_getTransactionReceipt", [row["tx_hash"]])
            if receipt is not None:
                await self._mined(row, receipt)
                continue
            age = (now - row["submitted_at"]).total_seconds() if row["submitted_at"] else 0
            if age > self.settings.replace_after_s:
                stuck += 1
                await self._replace(row)
                sent += 1
            elif (
                row["broadcast_at"] is None
                or (now - row["broadcast_at"]).total_seconds() > REBROADCAST_S
            ):
                sent += await self._broadcast(row["id"], row["raw_tx"])
        metrics.PUSHER_STUCK.labels(self.chain.name).set(stuck)
        return sent

    async def _mined(self, row: asyncpg.Record, receipt: dict[str, Any]) -> None:
        gas = int(receipt.get("gasUsed", "0x0"), 16)
        if int(receipt.get("status", "0x1"), 16) == 1:
            async with self.pool.acquire() as con:
                first_time = await con.fetchval(Q["record_mined"], row["id"], gas)
            if first_time is not None:
                metrics.PUSHER_GAS.labels(self.chain.name).inc(gas)
            return
        # Reverted: find out why with a pre-flight of the same call now.
        decoded = await self._why_reverted(row["bank"], row["call_data"])
        if decoded == "NonceAlreadyUsed":
            # Someone else's transaction carried this batch: its indexed event confirms it.
            log.info("reward_batch_pushed_by_other", chain=self.chain.name, batch=row["id"])
            async with self.pool.acquire() as con:
                await con.execute(
                    Q["batch_note"],
                    row["id"],
                    "NonceAlreadyUsed: confirmed by another transaction's RewardsPushed",
                    0,
                )
            return
        async with self.pool.acquire() as con, con.transaction():
            await con.execute(
                Q["batch_refused"], row["id"], decoded or "reverted", REFUSAL_BACKOFF_S[0]
            )
            await con.execute(Q["rewards_error"], row["id"], decoded or "reverted")
        metrics.PUSHER_ERRORS.labels(self.chain.name, (decoded or "reverted").split("(")[0]).inc()
        log.warning("reward_batch_reverted", chain=self.chain.name, batch=row["id"], error=decoded)

    async def _why_reverted(self, bank: str, call_data: str) -> str | None:
        call = {"from": self.sender, "to": bank, "data": call_data}
        try:
            await self.rpc.request("eth_estimateGas", [call])
        except ExecutionReverted as exc:
            return self._error_name(exc)
        return None

    async def _replace(self, row: asyncpg.Record) -> None:
        """Same account nonce, fees raised: the stuck transaction is replaced, re-recorded first."""
        max_fee, prio = await self._fees()
        max_fee = max(max_fee, int(int(row["max_fee"]) * FEE_BUMP) + 1)
        prio = max(prio, int(int(row["priority_fee"]) * FEE_BUMP) + 1)
        raw, tx_hash = await self._record(
            row["id"],
            row["bank"],
            bytes.fromhex(row["call_data"][2:]),
            row["gas_limit"],
            nonce=row["sender_nonce"],
            fees=(max_fee, prio),
        )
        log.warning(
            "reward_batch_replaced", chain=self.chain.name, batch=row["id"], tx_hash=tx_hash
        )
        await self._broadcast(row["id"], raw)

    async def _update_metrics(self) -> None:
        cid, name = self.chain.chain_id, self.chain.name
        async with self.pool.acquire() as con:
            stats = await con.fetchrow(Q["pusher_stats"], cid)
            counts = await con.fetch(Q["batch_counts"], cid)
        metrics.PUSHER_QUEUE.labels(name).set(stats["n"] if stats else 0)
        metrics.PUSHER_OLDEST_PENDING.labels(name).set(float(stats["oldest"] or 0) if stats else 0)
        for r in counts:
            metrics.PUSHER_BATCHES.labels(name, r["status"]).set(r["n"])
