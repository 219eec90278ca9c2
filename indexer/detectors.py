"""The reconciler's detectors: each compares one kind of row read at block B with what the
chain says and returns typed findings (``indexer.fixes.Finding``, each with its fix).

Pure functions of rows and view values: the reconciler reads the rows (one repeatable-read
snapshot) and the views (pinned to B's hash) and calls these, so each rule can be tested on
its own without a node or a database. Rows are mappings (asyncpg records or dicts) with the
columns of the ``rc_*`` queries in ``indexer/sql``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Final

import asyncpg

from indexer.fixes import (
    Acknowledge,
    FailBatch,
    Finding,
    FollowBatch,
    RecomputeBalance,
    RecordPush,
    RefetchEvents,
    SettleBatch,
    UnsettleBatch,
)
from indexer.settlement import batch_subject
from indexer.types import RawLog

Row = Mapping[str, Any] | asyncpg.Record  # a query row, or a dict in tests
CONFIRMED: Final = ("confirmed", "reconciled")


def balance_keys(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """The (contract, token) pairs whose total pending the chain is asked for, in order."""
    return sorted({(r["contract"], r["token"]) for r in rows})


def balances(
    rows: Sequence[Row], pending: Sequence[int], totals: Sequence[int] | None
) -> list[Finding]:
    """``amount_mismatch``: per (contract, token, wallet) the contract's pending amount, the
    fold of the events and ``reward_balances`` at B must agree (and added/claimed must match
    the events'); per (contract, token) the total pending must equal the events' sum.
    ``pending`` follows ``rows``, ``totals`` follows :func:`balance_keys` (None: the rows are
    a sample, whose sums say nothing of the totals; see :func:`totals`)."""
    found: list[Finding] = []
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for r, chain_value in zip(rows, pending, strict=True):
        events, stored = int(r["events_at_b"]), int(r["stored_at_b"])
        sums[(r["contract"], r["token"])] += events
        drift = (r["stored_added"], r["stored_claimed"]) != (r["events_added"], r["events_claimed"])
        if chain_value == events == stored and not drift:
            continue
        key = (r["contract"], r["token"], r["wallet"])
        found.append(
            Finding(
                "amount_mismatch",
                "pending:" + ":".join(key),
                str(chain_value),
                f"reward_balances {stored}, events {events}",
                RecomputeBalance(*key, events_wrong=chain_value != events),
            )
        )
    if totals is None:
        return found
    for (contract, token), chain_value in zip(balance_keys(rows), totals, strict=True):
        if chain_value != sums[(contract, token)]:
            found.append(
                Finding(
                    "amount_mismatch",
                    f"total_pending:{contract}:{token}",
                    str(chain_value),
                    f"events {sums[(contract, token)]}",
                    RefetchEvents(contract),
                )
            )
    return found


def in_doubt(rows: Sequence[Row], pending: Sequence[int]) -> list[tuple[str, str, str]]:
    """The first look of an incremental run: the keys (contract, token, wallet) whose
    ``reward_balances`` taken back to B (``stored_at_b``) differ from the contract's pending
    amount. Only those get the full comparison (:func:`balances`), which folds their events."""
    return [
        (r["contract"], r["token"], r["wallet"])
        for r, chain_value in zip(rows, pending, strict=True)
        if chain_value != int(r["stored_at_b"])
    ]


def totals(rows: Sequence[Row], values: Sequence[int]) -> list[Finding]:
    """``amount_mismatch`` of a token's total pending (the contract's ``getTotalPending``) and
    the sum of ``reward_balances`` at B (``total_at_b``), once per cycle of an incremental
    reconciler: a wallet the sample has not reached yet whose row is wrong shows here."""
    return [
        Finding(
            "amount_mismatch",
            f"total_pending:{r['contract']}:{r['token']}",
            str(value),
            f"reward_balances {int(r['total_at_b'])}",
            RefetchEvents(r["contract"]),
        )
        for r, value in zip(rows, values, strict=True)
        if value != int(r["total_at_b"])
    ]


def contributions(rows: Sequence[Row], values: Sequence[int]) -> list[Finding]:
    """``contribution_mismatch``: contributions per (chama, member) at B vs the contract's
    ``getTotalContributed``."""
    return [
        Finding(
            "contribution_mismatch",
            f"contribution:{r['contract']}:{int(r['chama_id'])}:{r['member']}",
            str(value),
            f"contributions {int(r['total'])}",
            RefetchEvents(r["contract"]),
        )
        for r, value in zip(rows, values, strict=True)
        if value != int(r["total"])
    ]


def batches(
    rows: Sequence[Row],
    chain_id: int,
    b: int,
    confirmed_below: int,
    final_time: int | None,
) -> tuple[list[Finding], list[Row]]:
    """``status_mismatch`` of batches against their RewardsPushed at or below B, and the
    confirmed batches without one in our tables: those need the chain's own logs
    (:func:`unseen_push`) before anything may be said about them."""
    found: list[Finding] = []
    ask_chain: list[Row] = []
    for r in rows:
        subject = batch_subject(chain_id, r["bank"], r["nonce"])
        status, event_block = r["status"], r["event_block"]
        settle = SettleBatch(r["id"], event_block, r["event_tx"])
        if status in CONFIRMED:
            if event_block is None:
                if r["block_number"] is None or r["block_number"] <= b:
                    ask_chain.append(r)
            elif r["block_number"] != event_block or r["unconfirmed_rewards"]:
                found.append(
                    Finding(
                        "status_mismatch",
                        subject,
                        f"RewardsPushed at block {event_block}, all rewards confirmed",
                        f"{status} at block {r['block_number']}, "
                        f"{r['unconfirmed_rewards']} reward(s) not confirmed",
                        settle,
                    )
                )
        elif event_block is not None and event_block <= confirmed_below:
            found.append(
                Finding(
                    "status_mismatch",
                    subject,
                    f"RewardsPushed at block {event_block}: confirmed",
                    status,
                    settle,
                )
            )
        elif (
            status in ("draft", "pending")
            and not r["event_anywhere"]
            and r["deadline"] is not None
            and final_time is not None
            and r["deadline"] < final_time
        ):
            found.append(
                Finding(
                    "status_mismatch",
                    subject,
                    f"deadline {r['deadline']} passed at a final block (time {final_time}) "
                    "without RewardsPushed: failed",
                    status,
                    FailBatch(r["id"]),
                )
            )
    return found, ask_chain


def unseen_push(r: Row, chain_id: int, b: int, logs: Sequence[RawLog]) -> Finding:
    """A batch said confirmed without a RewardsPushed in our tables, given the chain's logs of
    its nonce at or below B: ``missing_in_db`` when the chain has it (the index is
    incomplete), ``missing_on_chain`` when it does not."""
    subject = batch_subject(chain_id, r["bank"], r["nonce"])
    if logs:
        return Finding(
            "missing_in_db",
            subject,
            f"RewardsPushed at block {logs[0].block_number} on chain",
            "event not in the indexed tables",
            RefetchEvents(r["bank"]),
        )
    return Finding(
        "missing_on_chain",
        subject,
        f"no RewardsPushed at or below block {b}",
        f"{r['status']} at block {r['block_number']}",
        UnsettleBatch(r["id"], r["deadline"]),
    )


def pushes(
    unrecorded: Sequence[Row], direct: Sequence[Row], acknowledged: set[str], chain_id: int
) -> list[Finding]:
    """``missing_in_db``: a RewardsPushed without its batch row (pushed outside this
    database), and RewardAdded credited straight through MultiTokenPushPull by a pusher that
    is no bank (unless acknowledged before)."""
    found = [
        Finding(
            "missing_in_db",
            f"batch:{chain_id}:{e['contract']}:{e['nonce']}",
            f"RewardsPushed at block {e['block_number']}: {int(e['count'])} reward(s), "
            f"total {int(e['total_amount'])}",
            "no reward_batches row",
            RecordPush(dict(e)),
        )
        for e in unrecorded
    ]
    for d in direct:
        subject = f"direct:{chain_id}:{d['tx_hash']}:{d['emitter']}:{d['token']}"
        if subject not in acknowledged:
            found.append(
                Finding(
                    "missing_in_db",
                    subject,
                    f"{int(d['n'])} RewardAdded by {d['emitter']} at block "
                    f"{d['block_number']}, total {int(d['total'])}",
                    "no batch accounts for them",
                    Acknowledge(d["emitter"]),
                )
            )
    return found


def rewards_astray(rows: Sequence[Row], chain_id: int) -> list[Finding]:
    """``status_mismatch``: a confirmed reward whose batch is not confirmed."""
    return [
        Finding(
            "status_mismatch",
            f"reward:{chain_id}:{r['external_key']}",
            f"batch {r['batch_id']} is {r['batch_status'] or 'absent'}: not confirmed",
            "reward confirmed",
            FollowBatch(r["id"]),
        )
        for r in rows
    ]
