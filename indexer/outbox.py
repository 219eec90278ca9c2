"""The sender's transactions (the outbox): signed and recorded before they are broadcast,
rebroadcast until mined, replaced at the same account nonce when stuck, and account-nonce gaps
filled.

A transaction is recorded in ``reward_batches`` under the sender's advisory lock before any
node sees it, so a crash at any instant leaves either nothing (sign again) or a recorded
transaction (broadcast it again): never a transaction we do not know about. A transaction the
node refuses ("insufficient funds", "fee too low", ...) never entered a pool, so its account
nonce is released and the batch is a draft again; "already known" and "nonce too low" are not
refusals. Two pushers never share an account nonce (the advisory lock per sender).
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

import asyncpg
import structlog
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from indexer import metrics
from indexer.config import ChainSettings
from indexer.db import Q
from indexer.errors import Retryable, RpcError
from indexer.rpc import ExecutionReverted, RpcClient

log = structlog.get_logger()

REBROADCAST_S = 3.0
FEE_BUMP = 1.25  # replacement fees (nodes require at least +10 %)
DEFAULT_TIP = 1_000_000_000
REFUSAL_BACKOFF_S = (15, 30, 60, 120, 300, 600)
# What a node says when it did NOT take a transaction into its pool (the account nonce stays
# free). "already known", "nonce too low", "already imported" mean it has it or mined it.
_REFUSED: Final = re.compile(
    r"insufficient funds|fee too low|underpriced|less than (the )?block base fee|"
    r"intrinsic gas too low|exceeds block gas limit|gas limit reached|tip above fee cap|"
    r"max fee per gas less than|invalid sender|transaction type not supported",
    re.IGNORECASE,
)
_KNOWN: Final = re.compile(r"already known|known transaction|nonce too low|already imported")


def is_refusal(message: str) -> bool:
    """Whether a node's answer to ``eth_sendRawTransaction`` means "not taken" (nonce free)."""
    return not _KNOWN.search(message.lower()) and bool(_REFUSED.search(message))


def refusal_wait_s(attempts: int) -> int:
    """How long a draft waits after its ``attempts``-th refusal (backoff, no hot loop)."""
    return REFUSAL_BACKOFF_S[min(attempts - 1, len(REFUSAL_BACKOFF_S) - 1)]


def sender_lock_key(chain_id: int, sender: str) -> int:
    """The advisory lock key of one sender's account nonces on one chain."""
    return int.from_bytes(
        keccak(text=f"rewardsync.sender.{chain_id}.{sender}")[:8], "big", signed=True
    )


class Outbox:
    """One sender's transactions on one chain (see the module docstring)."""

    def __init__(
        self, pool: asyncpg.Pool, rpc: RpcClient, chain: ChainSettings, key: str, max_fee: int
    ) -> None:
        self.pool = pool
        self.rpc = rpc
        self.chain = chain
        self._sender_key = key
        self.sender = Account.from_key(key).address.lower()
        self.lock_key = sender_lock_key(chain.chain_id, self.sender)
        self.max_fee = max_fee
        self._gap_seen: dict[int, float] = {}

    def _sign(self, tx: dict[str, Any]) -> tuple[str, str]:
        """(raw transaction, hash), both 0x hex."""
        signed = Account.sign_transaction(tx, self._sender_key)
        return "0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex()

    async def fees(self) -> tuple[int, int]:
        """(max fee, priority fee) for a new transaction, both within the fee cap."""
        base, tip = await self.rpc.fee_data()
        prio = min(tip if tip is not None else DEFAULT_TIP, self.max_fee)
        return min(2 * base + prio, self.max_fee), prio

    async def record(  # noqa: PLR0913 (what a transaction carries; the modes keyword-only)
        self,
        batch_id: int,
        bank: str,
        data: bytes,
        gas: int,
        *,
        lease: int | None = None,
        replacing: asyncpg.Record | None = None,
        fees: tuple[int, int] | None = None,
    ) -> tuple[str, str] | None:
        """Sign the transaction and record it, under the sender lock, before any broadcast.

        A first signature needs our ``lease`` on the draft; a replacement needs the pending
        row to still carry the transaction it replaces. None when that no longer holds."""
        node_nonce = await self.rpc.transaction_count(self.sender, "pending")
        max_fee, prio = fees or await self.fees()
        async with self.pool.acquire() as con, con.transaction():
            await con.execute(Q["sender_lock"], self.lock_key)
            if replacing is not None:
                nonce = int(replacing["sender_nonce"])
            else:
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
            raw, tx_hash = self._sign(tx)
            args = (batch_id, raw, tx_hash, self.sender, nonce, max_fee, prio)
            if replacing is not None:
                done = await con.fetchval(Q["record_replacement"], *args, replacing["tx_hash"])
            else:
                done = await con.fetchval(Q["record_signed"], *args, "0x" + data.hex(), gas, lease)
        return (raw, tx_hash) if done is not None else None

    async def broadcast(self, batch_id: int, raw: str, tx_hash: str, *, first: bool) -> bool:
        """Hand the raw transaction to the node. A first broadcast the node refuses frees the
        account nonce: the batch is a draft again (same batch nonce), retried with backoff."""
        try:
            await self.rpc.send_raw_transaction(bytes.fromhex(raw[2:]))
        except ExecutionReverted as exc:
            log.info("broadcast_refused", chain=self.chain.name, batch=batch_id, error=str(exc))
        except RpcError as exc:
            message = str(exc)
            if first and is_refusal(message):
                await self._unsign(batch_id, tx_hash, message)
                return False
            # "already known" / "nonce too low": the node has it or it was mined; watch decides.
            log.info("broadcast_refused", chain=self.chain.name, batch=batch_id, error=message)
        except Retryable as exc:
            log.warning("broadcast_failed", chain=self.chain.name, batch=batch_id, error=str(exc))
            return False
        async with self.pool.acquire() as con:
            await con.execute(Q["mark_broadcast"], batch_id)
        return True

    async def _unsign(self, batch_id: int, tx_hash: str, message: str) -> None:
        error = f"transaction refused by the node: {message[:200]}"
        async with self.pool.acquire() as con, con.transaction():
            attempts = await con.fetchval(Q["count_refusal"], batch_id)
            wait = refusal_wait_s(attempts)
            done = await con.fetchval(Q["unsign_batch"], batch_id, tx_hash, error, wait)
            if done is not None:
                await con.execute(Q["rewards_error"], batch_id, error)
        metrics.PUSHER_ERRORS.labels(self.chain.name, "node_refused").inc()
        log.warning("reward_batch_tx_refused", chain=self.chain.name, batch=batch_id, error=message)

    async def replace(self, row: asyncpg.Record) -> str:
        """Same account nonce, fees raised (never above the cap): the stuck transaction is
        replaced, re-recorded first. "capped" when the cap leaves no room for a bump a node
        accepts (+10 %): the same transaction is rebroadcast instead."""
        old_fee, old_prio = int(row["max_fee"]), int(row["priority_fee"])
        max_fee, prio = await self.fees()
        max_fee = min(max(max_fee, int(old_fee * FEE_BUMP) + 1), self.max_fee)
        prio = min(max(prio, int(old_prio * FEE_BUMP) + 1), max_fee)
        if max_fee < int(old_fee * 1.1) + 1 or prio < int(old_prio * 1.1) + 1:
            return "capped"
        recorded = await self.record(
            row["id"],
            row["bank"],
            bytes.fromhex(row["call_data"][2:]),
            row["gas_limit"],
            replacing=row,
            fees=(max_fee, prio),
        )
        if recorded is None:
            return "lost"
        raw, tx_hash = recorded
        log.warning(
            "reward_batch_replaced", chain=self.chain.name, batch=row["id"], tx_hash=tx_hash
        )
        await self.broadcast(row["id"], raw, tx_hash, first=False)
        return "replaced"

    async def fill_gaps(self) -> None:
        """Account nonces between the node's next one and our highest open one that no open
        batch holds (its transaction was refused, or its batch was settled by another
        transaction) stall every later batch: after a second look, each is filled by a no-op
        self-transfer; a recorded one the node lacks is resent."""
        pending = await self.rpc.transaction_count(self.sender, "pending")
        async with self.pool.acquire() as con, con.transaction():
            await con.execute(Q["sender_lock"], self.lock_key)
            rows = await con.fetch(
                Q["open_sender_nonces"], self.chain.chain_id, self.sender, pending
            )
        held = {int(r["sender_nonce"]): r for r in rows}
        if not held:
            self._gap_seen.clear()
            return
        now = time.monotonic()
        missing = [k for k in range(pending, max(held)) if k not in held]
        self._gap_seen = {k: self._gap_seen.get(k, now) for k in missing}
        if pending in held:
            r = held[pending]
            await self.broadcast(r["id"], r["raw_tx"], r["tx_hash"], first=False)
            metrics.PUSHER_NONCE_GAPS.labels(self.chain.name, "resend").inc()
        for k in missing:
            if now - self._gap_seen[k] < REBROADCAST_S:
                continue  # seen for the first time: another pusher may be recording it
            await self._send_noop(k)
            self._gap_seen.pop(k, None)

    async def _send_noop(self, nonce: int) -> None:
        max_fee, prio = await self.fees()
        tx = {
            "type": 2,
            "chainId": self.chain.chain_id,
            "nonce": nonce,
            "to": to_checksum_address(self.sender),
            "value": 0,
            "gas": 21_000,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": prio,
        }
        raw, _ = self._sign(tx)
        try:
            await self.rpc.send_raw_transaction(bytes.fromhex(raw[2:]))
        except RpcError as exc:
            log.warning(
                "nonce_gap_fill_refused", chain=self.chain.name, nonce=nonce, error=str(exc)
            )
            return
        metrics.PUSHER_NONCE_GAPS.labels(self.chain.name, "noop").inc()
        log.warning("nonce_gap_filled", chain=self.chain.name, nonce=nonce, sender=self.sender)
