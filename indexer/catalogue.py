"""The one catalogue of event tables: which event (canonical signature, indexed flags and
parameter names, so an event of another shape with the same topic0 never lands in a table it
does not fit) fills which table with which columns, and what it does to ``reward_balances``.

The decoders (``indexer.decode``), the COPY layouts and rollbacks (``indexer.sink``), verify and
repair (``indexer.verify``), the invariant checker of the tests and the demo's summary all read
it; ``tests/integration/test_catalogue.py`` holds it equal to ``schema.sql`` (columns, primary
key). Tables of the same name in this list share one table (``pusher_changes``: authorized and
revoked, told apart by an ``authorized`` column).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

BASE_COLUMNS: Final = (
    "chain_id",
    "block_number",
    "block_hash",
    "block_time",
    "tx_hash",
    "log_index",
    "contract",
)
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def column_name(param: str) -> str:
    """snake_case column for an event parameter; ``user`` is ``wallet`` (a reserved word)."""
    if param == "user":
        return "wallet"
    return _CAMEL.sub("_", param).lower()


@dataclass(frozen=True, slots=True)
class EventTable:
    """One event and the table it fills."""

    table: str
    signature: str  # canonical, as keccak'd for topic0
    indexed: tuple[bool, ...]
    params: tuple[str, ...]
    balance: Literal["added", "claimed"] | None = None  # its effect on reward_balances

    @property
    def columns(self) -> tuple[str, ...]:
        """The event's own columns, after BASE_COLUMNS."""
        if self.table == "pusher_changes":
            return ("pusher", "authorized")
        return tuple(column_name(p) for p in self.params)


_T, _F = True, False
EVENTS: Final[tuple[EventTable, ...]] = (
    EventTable(
        "reward_added",
        "RewardAdded(address,address,address,uint256)",
        (_T, _T, _T, _F),
        ("token", "user", "emitter", "amount"),
        balance="added",
    ),
    EventTable(
        "reward_claimed",
        "RewardClaimed(address,address,uint256)",
        (_T, _T, _F),
        ("token", "user", "amount"),
        balance="claimed",
    ),
    EventTable("pusher_changes", "PusherAuthorized(address)", (_T,), ("pusher",)),
    EventTable("pusher_changes", "PusherRevoked(address)", (_T,), ("pusher",)),
    EventTable(
        "product_banks",
        "ProductBankCreated(bytes32,address,address)",
        (_T, _T, _T),
        ("productId", "bank", "owner"),
    ),
    EventTable(
        "funds_deposited",
        "FundsDeposited(address,address,uint256)",
        (_T, _T, _F),
        ("token", "depositor", "amount"),
    ),
    EventTable(
        "funds_withdrawn",
        "FundsWithdrawn(address,address,uint256)",
        (_T, _T, _F),
        ("token", "recipient", "amount"),
    ),
    EventTable(
        "campaign_budgets",
        "CampaignBudgetAllocated(bytes32,address,uint256)",
        (_T, _T, _F),
        ("campaignId", "token", "budget"),
    ),
    EventTable("campaign_deactivations", "CampaignDeactivated(bytes32)", (_T,), ("campaignId",)),
    EventTable(
        "rewards_pushed",
        "RewardsPushed(bytes32,address,bytes32,uint256,uint256)",
        (_T, _T, _T, _F, _F),
        ("campaignId", "token", "nonce", "totalAmount", "count"),
    ),
    EventTable(
        "chamas",
        "ChamaCreated(uint256,string,address,uint256)",
        (_T, _F, _T, _F),
        ("chamaId", "name", "creator", "contributionAmount"),
    ),
    EventTable("chama_members", "ChamaJoined(uint256,address)", (_T, _T), ("chamaId", "member")),
    EventTable(
        "contributions",
        "ContributionMade(uint256,address,uint256,uint256)",
        (_T, _T, _F, _F),
        ("chamaId", "contributor", "amount", "timestamp"),
    ),
    EventTable(
        "payouts",
        "PayoutProcessed(uint256,address,uint256,uint256)",
        (_T, _T, _F, _F),
        ("chamaId", "recipient", "amount", "cycleNumber"),
    ),
    EventTable("chama_completions", "ChamaCompleted(uint256)", (_T,), ("chamaId",)),
)

# (canonical signature, indexed flags, parameter names) -> table, for the decoders.
BY_SHAPE: Final = {(e.signature, e.indexed, e.params): e.table for e in EVENTS}
# The typed tables, in catalogue order, each once.
TABLES: Final[tuple[str, ...]] = tuple(dict.fromkeys(e.table for e in EVENTS))
# Every table the follower writes events into (also the rollback whitelist).
ALL_TABLES: Final[tuple[str, ...]] = (*sorted(TABLES), "other_events", "quarantine")
# The tables whose events reward_balances folds.
BALANCE_TABLES: Final[tuple[str, ...]] = tuple(e.table for e in EVENTS if e.balance)
# Each of those tables' column of reward_balances ("added" or "claimed").
BALANCE_COLUMN: Final[dict[str, str]] = {e.table: e.balance for e in EVENTS if e.balance}
