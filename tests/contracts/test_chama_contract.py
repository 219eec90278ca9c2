"""ChamaSavings against a real anvil: create, join, contribute, rotate payouts, complete."""

from __future__ import annotations

import pytest

from tests import deploy as dp
from tests.contracts.support import OUTSIDER, USER1, USER2, addr, events, expect_revert

pytestmark = pytest.mark.anvil

ZERO = "0x" + "00" * 20
AMOUNT = 100
CREATOR = dp.ADMIN_KEY


def _full_chama(chain, size=3):
    """A chama of ``size`` members: the creator, then USER1, USER2 (join order)."""
    cid = dp.create_chama(chain.d, CREATOR, "Umoja", AMOUNT, size)
    for key in [USER1, USER2][: size - 1]:
        dp.join_chama(chain.d, key, cid)
    return cid


def _send(chain, call, key):
    return dp.send(chain.w3, call, key)


def test_chama_create_emits_created_and_joined(chain):
    """createChama emits ChamaCreated then ChamaJoined(creator) and stores the chama."""
    receipt = _send(chain, chain.d.chama.functions.createChama("Harambee ✓", AMOUNT, 2), USER1)
    assert events(receipt, chain.d.chama, "ChamaCreated") == [
        {"chamaId": 1, "name": "Harambee ✓", "creator": addr(USER1), "contributionAmount": AMOUNT}
    ]
    assert events(receipt, chain.d.chama, "ChamaJoined") == [{"chamaId": 1, "member": addr(USER1)}]
    assert chain.d.chama.functions.getChama(1).call() == [
        "Harambee ✓",
        addr(USER1),
        AMOUNT,
        2,
        1,
        1,
        0,
        False,
    ]
    assert chain.d.chama.functions.chamaCount().call() == 1


def test_chama_create_rejects_bad_parameters(chain):
    """createChama reverts ZeroAmount for 0 and InvalidMaxMembers outside 2..50."""
    fn = chain.d.chama.functions.createChama
    expect_revert(lambda: _send(chain, fn("x", 0, 2), USER1), "ChamaSavings.ZeroAmount")
    for size in (1, 51):
        err = expect_revert(
            lambda size=size: _send(chain, fn("x", 1, size), USER1),
            "ChamaSavings.InvalidMaxMembers",
        )
        assert err.args == (size,)


def test_chama_constructor_rejects_zero_token(chain):
    """Deploying ChamaSavings with token zero reverts ZeroAddress."""
    expect_revert(lambda: dp.deploy(chain.w3, "ChamaSavings", ZERO), "ChamaSavings.ZeroAddress")


def test_chama_join_emits_and_guards(chain):
    """joinChama emits ChamaJoined and refuses members twice, full chamas and unknown ids."""
    cid = dp.create_chama(chain.d, CREATOR, "Jenga", AMOUNT, 2)
    receipt = dp.join_chama(chain.d, USER1, cid)
    assert events(receipt, chain.d.chama, "ChamaJoined") == [
        {"chamaId": cid, "member": addr(USER1)}
    ]
    assert chain.d.chama.functions.getMembers(cid).call() == [addr(CREATOR), addr(USER1)]
    expect_revert(lambda: dp.join_chama(chain.d, USER2, cid), "ChamaSavings.ChamaFull")
    cid2 = dp.create_chama(chain.d, CREATOR, "Jenga 2", AMOUNT, 3)
    err = expect_revert(lambda: dp.join_chama(chain.d, CREATOR, cid2), "ChamaSavings.AlreadyMember")
    assert err.args == (cid2, addr(CREATOR))
    err = expect_revert(lambda: dp.join_chama(chain.d, USER1, 99), "ChamaSavings.ChamaNotFound")
    assert err.args == (99,)


def test_chama_contribute_emits_and_counts(chain):
    """contribute pulls the amount, emits ContributionMade with the block time, counts totals."""
    cid = _full_chama(chain)
    receipt = dp.contribute(chain.d, USER1, cid)
    (ev,) = events(receipt, chain.d.chama, "ContributionMade")
    block = chain.w3.eth.get_block(receipt["blockNumber"])
    assert ev == {
        "chamaId": cid,
        "contributor": addr(USER1),
        "amount": AMOUNT,
        "timestamp": block["timestamp"],
    }
    assert chain.d.chama.functions.getTotalContributed(cid, addr(USER1)).call() == AMOUNT
    assert chain.d.chama.functions.hasContributed(cid, 1, addr(USER1)).call()
    assert chain.d.token.functions.balanceOf(chain.d.chama.address).call() == AMOUNT


def test_chama_contribute_guards(chain):
    """contribute refuses before the chama is full, strangers, twice a cycle, unknown ids."""
    cid = dp.create_chama(chain.d, CREATOR, "Tujenge", AMOUNT, 2)
    expect_revert(lambda: dp.contribute(chain.d, CREATOR, cid), "ChamaSavings.ChamaNotStarted")
    dp.join_chama(chain.d, USER1, cid)
    err = expect_revert(lambda: dp.contribute(chain.d, OUTSIDER, cid), "ChamaSavings.NotMember")
    assert err.args == (cid, addr(OUTSIDER))
    dp.contribute(chain.d, USER1, cid)
    err = expect_revert(
        lambda: dp.contribute(chain.d, USER1, cid), "ChamaSavings.AlreadyContributed"
    )
    assert err.args == (cid, addr(USER1), 1)
    expect_revert(lambda: dp.contribute(chain.d, USER1, 42), "ChamaSavings.ChamaNotFound")


def test_chama_contribute_without_allowance_reverts(chain):
    """Contributing without approving the token bubbles the token's ERC20InsufficientAllowance."""
    cid = _full_chama(chain, 2)
    expect_revert(
        lambda: dp.contribute(chain.d, USER1, cid, fund=False),
        "TestToken.ERC20InsufficientAllowance",
    )


def test_chama_payout_requires_every_contribution(chain):
    """processPayout before all members contributed reverts ContributionsIncomplete."""
    cid = _full_chama(chain)
    dp.contribute(chain.d, USER1, cid)
    err = expect_revert(
        lambda: dp.process_payout(chain.d, cid), "ChamaSavings.ContributionsIncomplete"
    )
    assert err.args == (cid, 1, 3)


def test_chama_full_rotation_pays_each_member_then_completes(chain):
    """Each cycle pays the pot to the next member in join order; the last emits ChamaCompleted."""
    cid = _full_chama(chain)
    members = [CREATOR, USER1, USER2]
    pot = AMOUNT * 3
    for cycle, recipient in enumerate(members, start=1):
        for key in members:
            dp.contribute(chain.d, key, cid)
        receipt = dp.process_payout(chain.d, cid, OUTSIDER)
        assert events(receipt, chain.d.chama, "PayoutProcessed") == [
            {"chamaId": cid, "recipient": addr(recipient), "amount": pot, "cycleNumber": cycle}
        ]
        done = events(receipt, chain.d.chama, "ChamaCompleted")
        assert done == ([{"chamaId": cid}] if cycle == 3 else [])
    for key in members:
        assert chain.d.chama.functions.getTotalContributed(cid, addr(key)).call() == AMOUNT * 3
        assert chain.d.chama.functions.getTotalReceived(cid, addr(key)).call() == pot
    assert chain.d.chama.functions.getChama(cid).call()[5:] == [4, 0, True]
    assert chain.d.token.functions.balanceOf(chain.d.chama.address).call() == 0
    expect_revert(lambda: dp.contribute(chain.d, USER1, cid), "ChamaSavings.ChamaAlreadyCompleted")
    expect_revert(lambda: dp.process_payout(chain.d, cid), "ChamaSavings.ChamaAlreadyCompleted")


def test_chama_false_returning_token_rejected(chain):
    """A token whose transferFrom returns false makes contribute revert SafeERC20FailedOperation."""
    hostile = dp.deploy(chain.w3, "HostileToken")
    chama = dp.deploy(chain.w3, "ChamaSavings", hostile.address)
    _send(chain, chama.functions.createChama("h", AMOUNT, 2), CREATOR)
    _send(chain, chama.functions.joinChama(1), USER1)
    _send(chain, hostile.functions.setMode(1), CREATOR)
    expect_revert(
        lambda: _send(chain, chama.functions.contribute(1), USER1),
        "ChamaSavings.SafeERC20FailedOperation",
    )


def test_chama_reentrant_contribution_rejected(chain):
    """A token re-entering contribute during the transfer hits ReentrancyGuardReentrantCall."""
    hostile = dp.deploy(chain.w3, "HostileToken")
    chama = dp.deploy(chain.w3, "ChamaSavings", hostile.address)
    _send(chain, chama.functions.createChama("h", AMOUNT, 2), CREATOR)
    _send(chain, chama.functions.joinChama(1), USER1)
    dp.mint(chain.d, addr(USER1), AMOUNT, hostile)
    _send(chain, hostile.functions.approve(chama.address, AMOUNT), USER1)
    _send(
        chain,
        hostile.functions.setHook(chama.address, chama.encode_abi("contribute", [1])),
        CREATOR,
    )
    _send(chain, hostile.functions.setMode(3), CREATOR)
    expect_revert(
        lambda: _send(chain, chama.functions.contribute(1), USER1),
        "ChamaSavings.ReentrancyGuardReentrantCall",
    )
