"""The reward pusher: queued rewards go on chain in signed batches, at most once each (P4).

A round: (0) the chain judge (``indexer/settlement.py``) settles open batches from the banks'
own state at a final block: whether a batch was paid is never inferred from our tables;
(1) take ``pending`` rewards of banks this chain watches (a configured ProductBank or one the
factory made) on which the signer holds DISTRIBUTOR_ROLE (``FOR UPDATE SKIP LOCKED``), group
them by (bank, campaign, token), cut batches of at most ``max_batch`` as ``draft`` rows whose
nonce derives from the database's salt, the batch id and what it pays; rewards of other banks
stay pending with an ``error``; (2) for each due draft: take its lease (a compare-and-set
token), sign the EIP-712 batch, pre-flight it with ``eth_estimateGas`` (a refusal such as
``InsufficientBudget`` is recorded, the draft waits with backoff: no hot loop, no gas spent),
sign an EIP-1559 transaction and record it (``pending``) BEFORE broadcasting it (the outbox),
only if the lease is still ours; (3) for each pending batch: rebroadcast the same raw
transaction until it is mined, replace it with higher fees (capped by ``max_fee_gwei``) at the
same account nonce when it stays unmined, take a successful receipt carrying the batch's
``RewardsPushed`` as evidence (``mined_block``: the judge confirms it once final), send a
reverted batch back to draft; (4) fill account-nonce gaps the node lacks (resend the recorded
transaction, or a no-op self-transfer).

Transactions (record before broadcast, rebroadcast, replacement, nonce gaps) are the
sender's outbox's (``indexer.outbox``). Two pushers never share a reward (row locks), never
both sign a draft (the lease token), nor an account nonce (an advisory lock per sender).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

import asyncpg
import structlog
from eth_abi.abi import encode
from eth_account import Account
from eth_utils.crypto import keccak

from indexer import failpoints, metrics
from indexer.config import ChainSettings, SignerSettings, default_max_fee_gwei
from indexer.db import TRANSIENT_FAULTS, Q, nonce_salt
from indexer.eip712 import Reward, batch_content, batch_nonce, sign_reward_batch
from indexer.errors import LaggingNode, SignerNotAuthorized
from indexer.outbox import REBROADCAST_S, REFUSAL_BACKOFF_S, Outbox, refusal_wait_s
from indexer.rpc import ExecutionReverted, RpcClient
from indexer.settlement import REWARDS_PUSHED, Judge
from indexer.types import BlockHeader, Receipt

log = structlog.get_logger()

DISTRIBUTOR_ROLE = keccak(text="DISTRIBUTOR_ROLE")
HAS_ROLE = keccak(text="hasRole(bytes32,address)")[:4]
PUSH_REWARDS = keccak(
    text="pushRewards(bytes32,address,(address,uint256)[],bytes32,uint256,bytes)"
)[:4]
TAKE_LIMIT = 5_000  # rewards taken per round
GAS_MARGIN = 1.25
ROLE_TTL_S = (300.0, 30.0)  # how long a role check holds: granted, missing
# New batches are made only when the index is this close to the head, so that a push the
# index has not seen yet (a restored backup's original) cannot be missed by the interlock.
PUSH_MAX_LAG_BLOCKS = 5


def _error_selectors(abi: tuple[dict[str, Any], ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in abi:
        if entry.get("type") == "error":
            sig = f"{entry['name']}({','.join(i['type'] for i in entry.get('inputs', []))})"
            out["0x" + keccak(text=sig)[:4].hex()] = str(entry["name"])
    return out


def configured_banks(chain: ChainSettings) -> list[str]:
    """Addresses of configured contracts that take reward batches (a ``pushRewards`` ABI)."""
    return sorted(
        c.address
        for c in chain.contracts
        if c.address is not None
        and any(e.get("type") == "function" and e.get("name") == "pushRewards" for e in c.abi)
    )


@dataclass(frozen=True, slots=True)
class PushRound:
    """What one round did (for logs and tests)."""

    created: int
    signed: int
    broadcast: int
    refused: int
    settled: int = 0


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
        self.signer = Account.from_key(self._signer_key).address.lower()
        self.errors = _error_selectors(bank_abi)
        gwei = signer.max_fee_gwei or default_max_fee_gwei(chain.chain_id)
        sender_key = (signer.sender_key or signer.key).reveal()
        self.outbox = Outbox(pool, rpc, chain, sender_key, int(gwei * 1_000_000_000))
        self.sender = self.outbox.sender
        self.judge = Judge(pool, rpc, chain)
        self._roles: dict[str, tuple[bool, float]] = {}
        self._salt: bytes | None = None
        self._senders: dict[str, str | None] = {}  # tx hash -> from, of foreign pushes
        self.paused: str | None = None

    # ---- checks -------------------------------------------------------------------------

    async def check_roles(self) -> None:
        """For ``indexer push``: refuse to start when the signer is not a distributor of a
        bank with queued rewards (the daemon skips such banks instead, see ``_banks``)."""
        async with self.pool.acquire() as con:
            banks = [
                r["bank"] for r in await con.fetch(Q["banks_with_pending"], self.chain.chain_id)
            ]
        missing = [b for b in banks if not await self._has_role(b)]
        if missing:
            raise SignerNotAuthorized(
                f"signer {self.signer} lacks DISTRIBUTOR_ROLE on bank(s) {', '.join(missing)} "
                f"on chain {self.chain.name}"
            )

    async def _has_role(self, bank: str) -> bool:
        cached = self._roles.get(bank)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        latest = await self._latest()
        data = HAS_ROLE + encode(["bytes32", "address"], [DISTRIBUTOR_ROLE, self.signer])
        try:
            out = await self.rpc.eth_call(bank, data, latest.hash)
        except ExecutionReverted:
            out = b""
        ok = len(out) >= 32 and int.from_bytes(out[-32:], "big") == 1
        self._roles[bank] = (ok, time.monotonic() + ROLE_TTL_S[0 if ok else 1])
        return ok

    async def _latest(self) -> BlockHeader:
        header = await self.rpc.header("latest")
        if header is None:
            raise LaggingNode("the node has no latest block")
        return header

    async def _banks(self, con: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> list[str]:
        """Banks we may push for: watched on this chain and the signer a distributor there.
        Rewards of the others stay pending with an ``error`` and a gauge."""
        cid, name = self.chain.chain_id, self.chain.name
        known = sorted(
            set(configured_banks(self.chain))
            | {r["bank"] for r in await con.fetch(Q["known_banks"], cid)}
        )
        queued = {r["bank"] for r in await con.fetch(Q["banks_with_pending"], cid)}
        unwatched = await con.fetchval(
            Q["mark_unwatched"],
            cid,
            known,
            "bank not watched: no configured or factory-made ProductBank of this chain",
        )
        metrics.PUSHER_UNWATCHED.labels(name).set(unwatched or 0)
        no_role = [b for b in sorted(queued & set(known)) if not await self._has_role(b)]
        if no_role:
            await con.execute(
                Q["mark_bank_error"],
                cid,
                no_role,
                f"signer {self.signer} lacks DISTRIBUTOR_ROLE on this bank",
            )
            log.warning("pusher_banks_without_role", chain=name, banks=no_role)
        metrics.PUSHER_NO_ROLE.labels(name).set(len(no_role))
        return [b for b in known if b not in set(no_role)]

    # ---- the round ----------------------------------------------------------------------

    async def run_once(self) -> PushRound:
        await failpoints.hit("pusher.round")
        settled = len([v for v in await self.judge.settle_due() if v.verdict != "waiting"])
        created = await self._create_batches()
        signed = refused = 0
        while True:
            outcome = await self._sign_one()
            if outcome is None:
                break
            signed += outcome == "signed"
            refused += outcome == "refused"
        broadcast = await self._watch_pending()
        await self.outbox.fill_gaps()
        await self._update_metrics()
        return PushRound(created, signed, broadcast, refused, settled)

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds every ``push_interval`` until ``stop``; transient faults are retried (any
        other error ends the task: the daemon restarts it with backoff)."""
        while not stop.is_set():
            try:
                result = await self.run_once()
                if result.created or result.signed or result.refused or result.settled:
                    log.info(
                        "push_round",
                        chain=self.chain.name,
                        created=result.created,
                        signed=result.signed,
                        broadcast=result.broadcast,
                        refused=result.refused,
                        settled=result.settled,
                    )
            except TRANSIENT_FAULTS as exc:  # P7: retried next round, never an exit
                log.warning("push_retry", chain=self.chain.name, error=str(exc) or repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.push_interval_s)

    async def _hold_reason(self, latest: BlockHeader) -> str | None:
        """Why no new batch may be made now (None: go on).

        The interlock (P4 across databases): an indexed RewardsPushed that no batch of ours
        made, sent by OUR sender, means another database pushes with our keys, typically the
        original of a restored backup whose queue still holds rewards it paid. Pushing stops
        for the chain (gauge ``indexer_pusher_paused``, an error on the queued rewards) until
        an operator settles those rewards (docs/runbook.md, "PusherPaused")."""
        cid = self.chain.chain_id
        async with self.pool.acquire() as con:
            position = await con.fetchval(Q["index_position"], cid)
            if position is None or position < latest.number - PUSH_MAX_LAG_BLOCKS:
                return "waiting for the index to reach the head"
            foreign = [r["tx_hash"] for r in await con.fetch(Q["foreign_pushes"], cid)]
        for tx in foreign:
            if tx not in self._senders:
                self._senders[tx] = await self.rpc.transaction_sender(tx)
            if self._senders[tx] == self.sender:
                return (
                    f"pusher paused: transaction {tx} of sender {self.sender} pushed a batch this "
                    "database never made (a restored backup, or another database sharing the "
                    "sender key)"
                )
        return None

    async def _create_batches(self) -> int:
        latest = await self._latest()
        deadline = latest.timestamp + self.settings.deadline_s
        cid = self.chain.chain_id
        hold = await self._hold_reason(latest)
        paused = hold is not None and hold.startswith("pusher paused")
        metrics.PUSHER_PAUSED.labels(self.chain.name).set(1 if paused else 0)
        if hold is not None:
            if paused:
                async with self.pool.acquire() as con:
                    await con.execute(Q["mark_all_pending"], cid, hold)
                if self.paused != hold:
                    log.error("pusher_paused", chain=self.chain.name, reason=hold)
            self.paused = hold
            return 0
        self.paused = None
        created = 0
        async with self.pool.acquire() as con, con.transaction():
            if self._salt is None:
                self._salt = await nonce_salt(con)
            banks = await self._banks(con)
            rows = await con.fetch(Q["take_pending_rewards"], cid, TAKE_LIMIT, banks)
            for _, group in groupby(rows, key=lambda r: (r["bank"], r["campaign_id"], r["token"])):
                items = list(group)
                for i in range(0, len(items), self.settings.max_batch):
                    chunk = items[i : i + self.settings.max_batch]
                    created += await self._create_one(con, chunk, deadline, latest.number)
        return created

    async def _create_one(
        self,
        con: asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
        chunk: Sequence[asyncpg.Record],
        deadline: int,
        block: int,
    ) -> int:
        """One draft for ``chunk``; 0 when its nonce is already recorded (a restored backup
        whose batch of the same id paid exactly these entries): the rewards wait, flagged."""
        cid = self.chain.chain_id
        bank, campaign, token = chunk[0]["bank"], chunk[0]["campaign_id"], chunk[0]["token"]
        entries = [Reward(r["wallet"], int(r["amount"])) for r in chunk]
        content = batch_content(bytes.fromhex(campaign[2:]), token, entries)
        ids = [r["id"] for r in chunk]
        try:
            async with con.transaction():  # a savepoint: a taken nonce undoes only this draft
                batch_id = await con.fetchval(
                    Q["insert_batch"], cid, bank, campaign, token, deadline
                )
                assert self._salt is not None
                nonce = batch_nonce(cid, bank, batch_id, salt=self._salt, content=content)
                await con.execute(
                    Q["set_batch_nonce"],
                    batch_id,
                    "0x" + nonce.hex(),
                    len(entries),
                    sum(e.amount for e in entries),
                    block,
                )
                await con.execute(Q["assign_rewards"], batch_id, ids)
        except asyncpg.UniqueViolationError:
            error = "batch nonce already recorded by another batch: check `indexer reconcile`"
            await con.execute(Q["rewards_error_ids"], ids, error)
            log.error("batch_nonce_taken", chain=self.chain.name, bank=bank, rewards=len(ids))
            return 0
        return 1

    async def _claim_draft(self) -> tuple[asyncpg.Record, int] | None:
        """The next due draft and our lease token on it: only the holder of the current
        token may record a signed transaction for it (two pushers never both sign)."""
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(Q["drafts_due"] + " LIMIT 1", self.chain.chain_id)
            if row is None:
                return None
            token = secrets.randbits(62)
            lease = min(max(5 * self.settings.push_interval_s, 1.0), 60.0)
            await con.execute(Q["lease_draft"], row["id"], token, lease)
            return row, token

    async def _sign_one(self) -> str | None:
        """Sign, pre-flight, record and broadcast one due draft; None when there is none."""
        if self.paused is not None and self.paused.startswith("pusher paused"):
            return None
        claimed = await self._claim_draft()
        if claimed is None:
            return None
        draft, lease = claimed
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
            gas = await self.rpc.estimate_gas(call)
        except ExecutionReverted as exc:
            await self._refused(draft["id"], self._error_name(exc), draft["deadline"])
            return "refused"
        await failpoints.hit("pusher.after_sign")
        recorded = await self.outbox.record(
            draft["id"], draft["bank"], data, int(gas * GAS_MARGIN), lease=lease
        )
        if recorded is None:
            log.warning("draft_lease_lost", chain=self.chain.name, batch=draft["id"])
            return "lost"
        raw, tx_hash = recorded
        await failpoints.hit("pusher.after_record")
        await self.outbox.broadcast(draft["id"], raw, tx_hash, first=True)
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
            wait = refusal_wait_s(attempts)
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

    async def _watch_pending(self) -> int:
        async with self.pool.acquire() as con:
            rows = await con.fetch(Q["pending_batches"], self.chain.chain_id)
        sent = stuck = capped = 0
        now = datetime.now(UTC)
        for row in rows:
            if (row["error"] or "").startswith("NonceAlreadyUsed"):
                continue  # mined and reverted: the judge settles it
            receipt = await self.rpc.receipt(row["tx_hash"])
            if receipt is not None:
                await self._mined(row, receipt)
                continue
            age = (now - row["submitted_at"]).total_seconds() if row["submitted_at"] else 0
            if age > self.settings.replace_after_s:
                stuck += 1
                outcome = await self.outbox.replace(row)
                if outcome == "replaced":
                    sent += 1
                    continue
                capped += outcome == "capped"
            if (
                row["broadcast_at"] is None
                or (now - row["broadcast_at"]).total_seconds() > REBROADCAST_S
            ):
                sent += await self.outbox.broadcast(
                    row["id"], row["raw_tx"], row["tx_hash"], first=False
                )
        metrics.PUSHER_STUCK.labels(self.chain.name).set(stuck)
        metrics.PUSHER_FEE_CAPPED.labels(self.chain.name).set(capped)
        if capped:
            log.warning("pusher_fee_cap_reached", chain=self.chain.name, transactions=capped)
        return sent

    async def _mined(self, row: asyncpg.Record, receipt: Receipt) -> None:
        if receipt.status == 1:
            pushed = any(
                lg.address == row["bank"]
                and len(lg.topics) == 4
                and lg.topics[0] == REWARDS_PUSHED
                and lg.topics[3] == row["nonce"]
                for lg in receipt.logs
            )
            if not pushed:
                log.error(
                    "receipt_without_rewards_pushed",
                    chain=self.chain.name,
                    batch=row["id"],
                    tx_hash=receipt.tx_hash,
                )
                return
            async with self.pool.acquire() as con:
                first_time = await con.fetchval(
                    Q["record_mined"], row["id"], receipt.gas_used, receipt.block_number
                )
            if first_time is not None:
                metrics.PUSHER_GAS.labels(self.chain.name).inc(receipt.gas_used)
            return
        # Reverted: find out why with a pre-flight of the same call now.
        decoded = await self._why_reverted(row["bank"], row["call_data"])
        if decoded == "NonceAlreadyUsed":
            # Another transaction carried this batch's nonce: the judge reads the bank.
            log.info("reward_batch_pushed_by_other", chain=self.chain.name, batch=row["id"])
            async with self.pool.acquire() as con:
                await con.execute(
                    Q["batch_note"],
                    row["id"],
                    "NonceAlreadyUsed: settled by the chain judge from the bank's state",
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
            await self.rpc.estimate_gas(call)
        except ExecutionReverted as exc:
            return self._error_name(exc)
        return None

    async def _update_metrics(self) -> None:
        cid, name = self.chain.chain_id, self.chain.name
        async with self.pool.acquire() as con:
            stats = await con.fetchrow(Q["pusher_stats"], cid)
            counts = await con.fetch(Q["batch_counts"], cid)
        metrics.PUSHER_QUEUE.labels(name).set(stats["n"] if stats else 0)
        metrics.PUSHER_OLDEST_PENDING.labels(name).set(float(stats["oldest"] or 0) if stats else 0)
        for r in counts:
            metrics.PUSHER_BATCHES.labels(name, r["status"]).set(r["n"])
        wei = await self.rpc.balance(self.sender)  # the gas money that keeps rewards moving
        metrics.PUSHER_SENDER_BALANCE.labels(name).set(wei / 10**18)
