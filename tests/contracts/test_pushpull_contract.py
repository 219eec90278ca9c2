"""MultiTokenPushPull against a real anvil: pushes by authorised pushers, claims, roles."""

from __future__ import annotations

import pytest

from tests import deploy as dp
from tests.contracts.support import OUTSIDER, USER1, USER2, addr, events, expect_revert

pytestmark = pytest.mark.anvil

ZERO = "0x" + "00" * 20
PUSHER = OUTSIDER  # an EOA authorised as pusher, to call pushRewards directly


def _authorise_eoa(chain, token=None, amount=10_000):
    """Authorise PUSHER, give it ``amount`` of ``token`` and approve MultiTokenPushPull."""
    mtpp = chain.d.multi_token_push_pull
    dp.send(chain.w3, mtpp.functions.authorizePusher(addr(PUSHER)), dp.ADMIN_KEY)
    tok = token or chain.d.token
    dp.mint(chain.d, addr(PUSHER), amount, tok)
    dp.send(chain.w3, tok.functions.approve(mtpp.address, amount), PUSHER)
    return mtpp, tok


def _push(chain, mtpp, token, rewards):
    return dp.send(chain.w3, mtpp.functions.pushRewards(token.address, rewards), PUSHER)


def test_pushpull_push_credits_each_entry(chain):
    """pushRewards pulls the sum, emits one RewardAdded per entry and updates the views."""
    mtpp, tok = _authorise_eoa(chain)
    receipt = _push(chain, mtpp, tok, [(addr(USER1), 3), (addr(USER2), 4), (addr(USER1), 5)])
    added = events(receipt, mtpp, "RewardAdded")
    assert [(e["user"], e["amount"]) for e in added] == [
        (addr(USER1), 3),
        (addr(USER2), 4),
        (addr(USER1), 5),
    ]
    assert {e["emitter"] for e in added} == {addr(PUSHER)}
    assert {e["token"] for e in added} == {tok.address}
    assert mtpp.functions.getPendingAmount(tok.address, addr(USER1)).call() == 8
    assert mtpp.functions.getTotalPending(tok.address).call() == 12
    assert tok.functions.balanceOf(mtpp.address).call() == 12


def test_pushpull_pull_reward_pays_pending(chain):
    """pullReward transfers everything pending, emits RewardClaimed and zeroes the pending."""
    mtpp, tok = _authorise_eoa(chain)
    _push(chain, mtpp, tok, [(addr(USER1), 30), (addr(USER2), 12)])
    receipt = dp.claim(chain.d, USER1)
    assert events(receipt, mtpp, "RewardClaimed") == [
        {"token": tok.address, "user": addr(USER1), "amount": 30}
    ]
    assert tok.functions.balanceOf(addr(USER1)).call() == 30
    assert mtpp.functions.getPendingAmount(tok.address, addr(USER1)).call() == 0
    assert mtpp.functions.getTotalPending(tok.address).call() == 12


def test_pushpull_pull_reward_nothing_to_claim_reverts(chain):
    """pullReward with nothing pending reverts NothingToClaim(token, user)."""
    err = expect_revert(lambda: dp.claim(chain.d, USER1), "MultiTokenPushPull.NothingToClaim")
    assert err.args == (chain.d.token.address, addr(USER1))


def test_pushpull_pull_rewards_claims_every_token(chain):
    """pullRewards pays each token with something pending and skips empty ones and repeats."""
    other = dp.deploy(chain.w3, "TestToken", "Other", "OTH")
    empty = dp.deploy(chain.w3, "TestToken", "Empty", "EMP")
    mtpp, tok = _authorise_eoa(chain)
    dp.mint(chain.d, addr(PUSHER), 100, other)
    dp.send(chain.w3, other.functions.approve(mtpp.address, 100), PUSHER)
    _push(chain, mtpp, tok, [(addr(USER1), 7)])
    _push(chain, mtpp, other, [(addr(USER1), 9)])
    tokens = [tok.address, empty.address, other.address, tok.address]
    receipt = dp.send(chain.w3, mtpp.functions.pullRewards(tokens), USER1)
    claimed = events(receipt, mtpp, "RewardClaimed")
    assert [(e["token"], e["amount"]) for e in claimed] == [(tok.address, 7), (other.address, 9)]


def test_pushpull_pull_rewards_rejects_empty_and_nothing(chain):
    """pullRewards reverts EmptyBatch for no tokens and NothingToClaim(0, user) when all empty."""
    fn = chain.d.multi_token_push_pull.functions.pullRewards
    expect_revert(lambda: dp.send(chain.w3, fn([]), USER1), "MultiTokenPushPull.EmptyBatch")
    err = expect_revert(
        lambda: dp.send(chain.w3, fn([chain.d.token.address]), USER1),
        "MultiTokenPushPull.NothingToClaim",
    )
    assert err.args == (ZERO, addr(USER1))


def test_pushpull_push_by_stranger_reverts(chain):
    """pushRewards by an account that is not an authorised pusher reverts NotAuthorizedPusher."""
    call = chain.d.multi_token_push_pull.functions.pushRewards(
        chain.d.token.address, [(addr(USER1), 1)]
    )
    err = expect_revert(
        lambda: dp.send(chain.w3, call, USER2), "MultiTokenPushPull.NotAuthorizedPusher"
    )
    assert err.args == (addr(USER2),)


def test_pushpull_push_rejects_malformed_batches(chain):
    """Empty batch, token zero, user zero and amount zero each revert with their error."""
    mtpp, tok = _authorise_eoa(chain)
    fn = mtpp.functions.pushRewards
    cases = [
        (fn(tok.address, []), "MultiTokenPushPull.EmptyBatch"),
        (fn(ZERO, [(addr(USER1), 1)]), "MultiTokenPushPull.ZeroAddress"),
        (fn(tok.address, [(addr(USER1), 1), (ZERO, 1)]), "MultiTokenPushPull.ZeroAddress"),
        (fn(tok.address, [(addr(USER1), 0)]), "MultiTokenPushPull.ZeroAmount"),
    ]
    for call, error in cases:
        expect_revert(lambda call=call: dp.send(chain.w3, call, PUSHER), error)


def test_pushpull_authorize_and_revoke(chain):
    """authorizePusher/revokePusher emit their events, flip isAuthorizedPusher and refuse no-ops."""
    mtpp = chain.d.multi_token_push_pull
    fn = mtpp.functions
    receipt = dp.send(chain.w3, fn.authorizePusher(addr(USER1)), dp.ADMIN_KEY)
    assert events(receipt, mtpp, "PusherAuthorized") == [{"pusher": addr(USER1)}]
    assert fn.isAuthorizedPusher(addr(USER1)).call()
    expect_revert(
        lambda: dp.send(chain.w3, fn.authorizePusher(addr(USER1)), dp.ADMIN_KEY),
        "MultiTokenPushPull.PusherAlreadyAuthorized",
    )
    receipt = dp.send(chain.w3, fn.revokePusher(addr(USER1)), dp.ADMIN_KEY)
    assert events(receipt, mtpp, "PusherRevoked") == [{"pusher": addr(USER1)}]
    assert not fn.isAuthorizedPusher(addr(USER1)).call()
    expect_revert(
        lambda: dp.send(chain.w3, fn.revokePusher(addr(USER1)), dp.ADMIN_KEY),
        "MultiTokenPushPull.NotAuthorizedPusher",
    )
    expect_revert(
        lambda: dp.send(chain.w3, fn.authorizePusher(ZERO), dp.ADMIN_KEY),
        "MultiTokenPushPull.ZeroAddress",
    )


def test_pushpull_pusher_management_needs_role(chain):
    """authorizePusher by an account without PUSHER_MANAGER_ROLE reverts."""
    fn = chain.d.multi_token_push_pull.functions
    err = expect_revert(
        lambda: dp.send(chain.w3, fn.authorizePusher(addr(USER1)), USER1),
        "MultiTokenPushPull.AccessControlUnauthorizedAccount",
    )
    assert err.args == (addr(USER1), dp.PUSHER_MANAGER_ROLE)


def test_pushpull_renounce_role_needs_confirmation(chain):
    """renounceRole naming another account reverts AccessControlBadConfirmation."""
    call = chain.d.multi_token_push_pull.functions.renounceRole(
        dp.PUSHER_MANAGER_ROLE, chain.d.factory.address
    )
    expect_revert(
        lambda: dp.send(chain.w3, call, dp.ADMIN_KEY),
        "MultiTokenPushPull.AccessControlBadConfirmation",
    )


def test_pushpull_constructor_rejects_zero_admin(chain):
    """Deploying with admin zero reverts ZeroAddress."""
    expect_revert(
        lambda: dp.deploy(chain.w3, "MultiTokenPushPull", ZERO), "MultiTokenPushPull.ZeroAddress"
    )


def test_pushpull_fee_on_transfer_token_rejected(chain):
    """A token delivering less than the sum makes pushRewards revert TransferAmountMismatch."""
    hostile = dp.deploy(chain.w3, "HostileToken")
    mtpp, _ = _authorise_eoa(chain, hostile)
    dp.send(chain.w3, hostile.functions.setMode(2), dp.ADMIN_KEY)
    call = mtpp.functions.pushRewards(hostile.address, [(addr(USER1), 50)])
    err = expect_revert(
        lambda: dp.send(chain.w3, call, PUSHER), "MultiTokenPushPull.TransferAmountMismatch"
    )
    assert err.args == (50, 49)


def test_pushpull_false_returning_token_rejected(chain):
    """A token whose transferFrom returns false makes pushRewards revert SafeERC20."""
    hostile = dp.deploy(chain.w3, "HostileToken")
    mtpp, _ = _authorise_eoa(chain, hostile)
    dp.send(chain.w3, hostile.functions.setMode(1), dp.ADMIN_KEY)
    call = mtpp.functions.pushRewards(hostile.address, [(addr(USER1), 50)])
    expect_revert(
        lambda: dp.send(chain.w3, call, PUSHER), "MultiTokenPushPull.SafeERC20FailedOperation"
    )


def test_pushpull_reentrant_claim_rejected(chain):
    """A token re-entering pullReward during the payout hits ReentrancyGuardReentrantCall."""
    hostile = dp.deploy(chain.w3, "HostileToken")
    mtpp, _ = _authorise_eoa(chain, hostile)
    _push(chain, mtpp, hostile, [(addr(USER1), 50)])
    hook = mtpp.encode_abi("pullReward", [hostile.address])
    dp.send(chain.w3, hostile.functions.setHook(mtpp.address, hook), dp.ADMIN_KEY)
    dp.send(chain.w3, hostile.functions.setMode(3), dp.ADMIN_KEY)
    expect_revert(
        lambda: dp.claim(chain.d, USER1, hostile), "MultiTokenPushPull.ReentrancyGuardReentrantCall"
    )
    assert mtpp.functions.getPendingAmount(hostile.address, addr(USER1)).call() == 50
