"""Pure rules of the pusher and the chain judge (no node, no database)."""

from __future__ import annotations

import pytest

from indexer.config import default_max_fee_gwei
from indexer.outbox import is_refusal


@pytest.mark.parametrize(
    "message",
    [
        "insufficient funds for gas * price + value",
        "Insufficient funds for gas * price + value: balance 0",
        "transaction underpriced",
        "max fee per gas less than block base fee",
        "intrinsic gas too low",
        "exceeds block gas limit",
        "fee too low",
    ],
)
def test_refusals_release_the_account_nonce(message: str) -> None:
    """The node did not take the transaction: its account nonce stays free."""
    assert is_refusal(message)


@pytest.mark.parametrize(
    "message",
    [
        "already known",
        "eth_sendRawTransaction: transaction already imported (code -32003)",
        "nonce too low",
        "known transaction: 0xabc",
        "execution reverted",
    ],
)
def test_known_or_mined_are_not_refusals(message: str) -> None:
    """The node has it, or it was mined: the nonce is used, the watcher decides."""
    assert not is_refusal(message)


def test_fee_caps_per_chain() -> None:
    """Documented defaults: mainnet 200 gwei, Polygon 2000, L2s 5, anything else 100."""
    assert default_max_fee_gwei(1) == 200
    assert default_max_fee_gwei(137) == 2000
    assert default_max_fee_gwei(8453) == 5
    assert default_max_fee_gwei(31337) == 100
