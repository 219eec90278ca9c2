"""The test-only contracts: LogEmitter's raw and bulk logs, the tokens' ERC-20 errors."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from tests import deploy as dp
from tests.contracts.support import USER1, USER2, addr, events, expect_revert

pytestmark = pytest.mark.anvil

ZERO = "0x" + "00" * 20


@pytest.mark.parametrize("n_topics", [0, 1, 2, 3, 4])
def test_log_emitter_emit_raw_is_verbatim(chain, n_topics):
    """emitRaw emits exactly the first n topics and the data given."""
    topics = [bytes([i + 1]) * 32 for i in range(4)]
    data = b"\xde\xad\xbe\xef" * 3 + b"\x01"
    em = chain.d.log_emitter
    receipt = dp.send(chain.w3, em.functions.emitRaw(n_topics, topics, data), dp.ADMIN_KEY)
    (log,) = receipt["logs"]
    assert log["address"] == em.address
    assert [bytes(t) for t in log["topics"]] == topics[:n_topics]
    assert bytes(log["data"]) == data


def test_log_emitter_rejects_bad_topic_count(chain):
    """More than 4 topics, or fewer topics than announced, revert InvalidTopicCount."""
    fn = chain.d.log_emitter.functions.emitRaw
    err = expect_revert(
        lambda: dp.send(chain.w3, fn(5, [b"\x00" * 32] * 5, b""), dp.ADMIN_KEY),
        "LogEmitter.InvalidTopicCount",
    )
    assert err.args == (5, 5)
    err = expect_revert(
        lambda: dp.send(chain.w3, fn(2, [b"\x00" * 32], b""), dp.ADMIN_KEY),
        "LogEmitter.InvalidTopicCount",
    )
    assert err.args == (2, 1)


def test_log_emitter_bulk_events_decode_with_push_pull_abi(chain):
    """emitRewardsAdded emits well-formed RewardAdded logs; emitRawMany repeats a raw log."""
    em = chain.d.log_emitter
    call = em.functions.emitRewardsAdded(chain.d.token.address, addr(USER2), 0x1000, 7, 50)
    receipt = dp.send(chain.w3, call, dp.ADMIN_KEY)
    as_mtpp = dp.at(chain.w3, "MultiTokenPushPull", em.address)
    added = events(receipt, as_mtpp, "RewardAdded")
    assert len(added) == 50
    assert added[3] == {
        "token": chain.d.token.address,
        "user": dp.to_checksum_address("0x" + f"{0x1003:040x}"),
        "emitter": addr(USER2),
        "amount": 10,
    }
    receipt = dp.send(chain.w3, em.functions.emitRawMany(1, [b"\x09" * 32], b"", 20), dp.ADMIN_KEY)
    assert len(receipt["logs"]) == 20


def test_log_emitter_foreign_reward_claimed_shares_topic0(chain):
    """The look-alike RewardClaimed has MultiTokenPushPull's topic0 but two topics, not three."""
    call = chain.d.log_emitter.functions.emitForeignRewardClaimed(
        addr(USER1), chain.d.token.address, 5
    )
    (log,) = dp.send(chain.w3, call, dp.ADMIN_KEY)["logs"]
    assert bytes(log["topics"][0]) == keccak(text="RewardClaimed(address,address,uint256)")
    assert len(log["topics"]) == 2


@pytest.mark.parametrize("name", ["TestToken", "HostileToken"])
def test_token_erc20_errors(chain, name):
    """The test tokens revert with OpenZeppelin's ERC-20 errors (balance, allowance, zeros)."""
    tok = chain.d.token if name == "TestToken" else dp.deploy(chain.w3, "HostileToken")
    fn = tok.functions
    dp.mint(chain.d, addr(USER1), 10, tok)
    assert fn.balanceOf(addr(USER1)).call() == 10
    cases = [
        (fn.transfer(addr(USER2), 11), f"{name}.ERC20InsufficientBalance"),
        (fn.transferFrom(addr(USER2), addr(USER1), 1), f"{name}.ERC20InsufficientAllowance"),
        (fn.transfer(ZERO, 1), f"{name}.ERC20InvalidReceiver"),
        (fn.approve(ZERO, 1), f"{name}.ERC20InvalidSpender"),
        (fn.transferFrom(ZERO, addr(USER2), 0), f"{name}.ERC20InvalidApprover"),
    ]
    for call, error in cases:
        expect_revert(lambda call=call: dp.send(chain.w3, call, USER1), error)
