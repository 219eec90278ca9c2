"""Each reconciler detector on its own: rows and view values in, typed findings out."""

from __future__ import annotations

from typing import Any

from indexer import detectors
from indexer.fixes import (
    Acknowledge,
    FailBatch,
    FollowBatch,
    RecomputeBalance,
    RecordPush,
    RefetchEvents,
    SettleBatch,
    UnsettleBatch,
)
from indexer.types import RawLog

C, T, W, W2 = "0x" + "c1" * 20, "0x" + "a1" * 20, "0x" + "b1" * 20, "0x" + "b2" * 20
BANK, NONCE = "0x" + "ba" * 20, "0x" + "0e" * 32


def balance(wallet: str, *, events: int, stored: int, drift: bool = False) -> dict[str, Any]:
    return {
        "contract": C,
        "token": T,
        "wallet": wallet,
        "events_at_b": events,
        "stored_at_b": stored,
        "events_added": events,
        "events_claimed": 0,
        "stored_added": events + (1 if drift else 0),
        "stored_claimed": 0,
    }


def test_balances_agreeing_find_nothing() -> None:
    rows = [balance(W, events=5, stored=5), balance(W2, events=7, stored=7)]
    assert detectors.balance_keys(rows) == [(C, T)]
    assert detectors.balances(rows, [5, 7], [12]) == []


def test_a_stored_balance_off_is_recomputed_from_the_events() -> None:
    (f,) = detectors.balances([balance(W, events=5, stored=4)], [5], [5])
    assert (f.kind, f.subject, f.expected) == ("amount_mismatch", f"pending:{C}:{T}:{W}", "5")
    assert f.fix == RecomputeBalance(C, T, W, events_wrong=False)


def test_events_off_from_the_chain_refetch_before_recomputing() -> None:
    found = detectors.balances([balance(W, events=5, stored=5)], [9], [9])
    assert [f.fix for f in found] == [
        RecomputeBalance(C, T, W, events_wrong=True),
        RefetchEvents(C),  # the total pending disagrees too
    ]


def test_added_claimed_drift_is_found_even_when_pending_agrees() -> None:
    (f,) = detectors.balances([balance(W, events=5, stored=5, drift=True)], [5], [5])
    assert f.fix == RecomputeBalance(C, T, W, events_wrong=False)


def test_contributions() -> None:
    rows = [
        {"contract": C, "chama_id": 3, "member": W, "total": 10},
        {"contract": C, "chama_id": 3, "member": W2, "total": 4},
    ]
    (f,) = detectors.contributions(rows, [10, 6])
    assert (f.kind, f.subject, f.expected, f.actual) == (
        "contribution_mismatch",
        f"contribution:{C}:3:{W2}",
        "6",
        "contributions 4",
    )
    assert f.fix == RefetchEvents(C)


def batch(status: str, **kw: Any) -> dict[str, Any]:
    row = {
        "id": 1,
        "bank": BANK,
        "nonce": NONCE,
        "status": status,
        "event_block": None,
        "event_tx": None,
        "block_number": None,
        "unconfirmed_rewards": 0,
        "event_anywhere": False,
        "deadline": None,
    }
    return row | kw


def test_pending_batch_with_a_final_event_is_settled() -> None:
    row = batch("pending", event_block=90, event_tx="0xt", event_anywhere=True)
    found, ask = detectors.batches([row], 7, b=100, confirmed_below=95, final_time=None)
    assert ask == []
    assert [(f.kind, f.subject, f.fix) for f in found] == [
        ("status_mismatch", f"batch:7:{BANK}:{NONCE}", SettleBatch(1, 90, "0xt"))
    ]


def test_pending_batch_whose_event_is_not_confirmed_yet_waits() -> None:
    row = batch("pending", event_block=99, event_tx="0xt", event_anywhere=True)
    assert detectors.batches([row], 7, b=100, confirmed_below=95, final_time=None) == ([], [])


def test_confirmed_batch_at_the_wrong_block_is_settled_again() -> None:
    row = batch("confirmed", event_block=90, event_tx="0xt", block_number=91)
    found, _ = detectors.batches([row], 7, b=100, confirmed_below=95, final_time=None)
    assert [f.fix for f in found] == [SettleBatch(1, 90, "0xt")]


def test_confirmed_batch_without_its_event_asks_the_chain() -> None:
    row = batch("confirmed", block_number=80)
    found, ask = detectors.batches([row], 7, b=100, confirmed_below=95, final_time=None)
    assert (found, ask) == ([], [row])
    above = batch("confirmed", block_number=120)  # confirmed above B: not B's business
    assert detectors.batches([above], 7, b=100, confirmed_below=95, final_time=None) == ([], [])


def test_unseen_push_on_chain_is_missing_in_db_else_missing_on_chain() -> None:
    row = batch("confirmed", block_number=80, deadline=500)
    log = RawLog(
        address=BANK,
        topics=(),
        data="0x",
        block_number=80,
        block_hash="0x" + "11" * 32,
        tx_hash="0x" + "22" * 32,
        tx_index=0,
        log_index=0,
    )
    on_chain = detectors.unseen_push(row, 7, 100, [log])
    assert (on_chain.kind, on_chain.fix) == ("missing_in_db", RefetchEvents(BANK))
    nowhere = detectors.unseen_push(row, 7, 100, [])
    assert (nowhere.kind, nowhere.fix) == ("missing_on_chain", UnsettleBatch(1, 500))


def test_deadline_passed_at_a_final_block_goes_to_the_judge() -> None:
    row = batch("pending", deadline=1_000)
    found, _ = detectors.batches([row], 7, b=100, confirmed_below=95, final_time=1_001)
    assert [f.fix for f in found] == [FailBatch(1)]
    not_yet = detectors.batches([row], 7, b=100, confirmed_below=95, final_time=999)
    assert not_yet == ([], [])
    seen = batch("pending", deadline=1_000, event_anywhere=True)  # an event above B: wait
    assert detectors.batches([seen], 7, b=100, confirmed_below=95, final_time=1_001) == ([], [])


def test_pushes_outside_the_database_and_direct_credits() -> None:
    push = {
        "contract": BANK,
        "nonce": NONCE,
        "block_number": 50,
        "count": 2,
        "total_amount": 30,
    }
    direct = {"tx_hash": "0xt", "emitter": W, "token": T, "n": 1, "block_number": 51, "total": 5}
    found = detectors.pushes([push], [direct], set(), 7)
    assert [f.fix for f in found] == [RecordPush(push), Acknowledge(W)]
    acknowledged = {f"direct:7:0xt:{W}:{T}"}
    assert [f.fix for f in detectors.pushes([], [direct], acknowledged, 7)] == []


def test_confirmed_reward_of_an_unconfirmed_batch_follows_it() -> None:
    rows = [{"id": 4, "external_key": "k", "batch_id": 2, "batch_status": "failed"}]
    (f,) = detectors.rewards_astray(rows, 7)
    assert (f.subject, f.fix) == ("reward:7:k", FollowBatch(4))
    assert f.expected == "batch 2 is failed: not confirmed"
