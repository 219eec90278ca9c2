"""ProductBank against a real anvil: funds, budgets and signed reward batches."""

from __future__ import annotations

import pytest

from indexer import eip712
from tests import deploy as dp
from tests.contracts.support import (
    BANK_FUNDS,
    CAPPED,
    CAPPED_BUDGET,
    OUTSIDER,
    UNCAPPED_CAMPAIGN,
    USER1,
    USER2,
    addr,
    events,
    expect_revert,
)

pytestmark = pytest.mark.anvil

ZERO = "0x" + "00" * 20
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _push(chain, campaign, rewards, **kw):
    return dp.push_signed_batch(chain.d, chain.bank, campaign, rewards, **kw)


def _push_fails(chain, campaign, rewards, error, *, sender_key=dp.ADMIN_KEY, **kw):
    batch = dp.sign_batch(chain.d, chain.bank, campaign, rewards, **kw)
    call = chain.bank.functions.pushRewards(*batch.args())
    return expect_revert(lambda: dp.send(chain.w3, call, sender_key), error)


def _budget(chain, campaign):
    return chain.bank.functions.getCampaignBudget(campaign, chain.d.token.address).call()


# --- deposit / withdraw ---------------------------------------------------------------------


def test_bank_deposit_emits_and_credits(chain):
    """deposit pulls the tokens and emits FundsDeposited with the amount received."""
    receipt = dp.fund_bank(chain.d, chain.bank, 250)
    (ev,) = events(receipt, chain.bank, "FundsDeposited")
    assert ev == {"token": chain.d.token.address, "depositor": addr(dp.ADMIN_KEY), "amount": 250}
    assert chain.d.token.functions.balanceOf(chain.bank.address).call() == BANK_FUNDS + 250


def test_bank_deposit_rejects_zero_amount_and_zero_token(chain):
    """deposit reverts ZeroAmount for 0 and ZeroAddress for token zero."""
    fn = chain.bank.functions.deposit
    expect_revert(
        lambda: dp.send(chain.w3, fn(chain.d.token.address, 0), dp.ADMIN_KEY),
        "ProductBank.ZeroAmount",
    )
    expect_revert(lambda: dp.send(chain.w3, fn(ZERO, 1), dp.ADMIN_KEY), "ProductBank.ZeroAddress")


def test_bank_deposit_requires_owner(chain):
    """deposit by a non-owner reverts AccessControlUnauthorizedAccount."""
    call = chain.bank.functions.deposit(chain.d.token.address, 1)
    err = expect_revert(
        lambda: dp.send(chain.w3, call, OUTSIDER), "ProductBank.AccessControlUnauthorizedAccount"
    )
    assert err.args == (addr(OUTSIDER), b"\x00" * 32)


def test_bank_deposit_records_received_amount_of_fee_token(chain):
    """A fee-on-transfer deposit emits the amount actually received."""
    hostile = dp.deploy(chain.w3, "HostileToken")
    dp.send(chain.w3, hostile.functions.setMode(2), dp.ADMIN_KEY)
    receipt = dp.fund_bank(chain.d, chain.bank, 100, token=hostile)
    (ev,) = events(receipt, chain.bank, "FundsDeposited")
    assert ev["amount"] == 99


def test_bank_deposit_rejects_false_returning_token(chain):
    """A token whose transferFrom returns false makes deposit revert SafeERC20FailedOperation."""
    hostile = dp.deploy(chain.w3, "HostileToken")
    dp.send(chain.w3, hostile.functions.setMode(1), dp.ADMIN_KEY)
    call = chain.bank.functions.deposit(hostile.address, 5)
    err = expect_revert(
        lambda: dp.send(chain.w3, call, dp.ADMIN_KEY), "ProductBank.SafeERC20FailedOperation"
    )
    assert err.args == (hostile.address,)


def test_bank_deposit_rejects_reentrancy(chain):
    """A token re-entering the bank during deposit hits ReentrancyGuardReentrantCall."""
    hostile = dp.deploy(chain.w3, "HostileToken")
    dp.mint(chain.d, addr(dp.ADMIN_KEY), 10, hostile)
    dp.send(chain.w3, hostile.functions.approve(chain.bank.address, 10), dp.ADMIN_KEY)
    hook = chain.bank.encode_abi("deposit", [hostile.address, 1])
    dp.send(chain.w3, hostile.functions.setHook(chain.bank.address, hook), dp.ADMIN_KEY)
    dp.send(chain.w3, hostile.functions.setMode(3), dp.ADMIN_KEY)
    call = chain.bank.functions.deposit(hostile.address, 5)
    expect_revert(
        lambda: dp.send(chain.w3, call, dp.ADMIN_KEY), "ProductBank.ReentrancyGuardReentrantCall"
    )


def test_bank_withdraw_emits_and_pays(chain):
    """withdraw sends the tokens to the recipient and emits FundsWithdrawn."""
    call = chain.bank.functions.withdraw(chain.d.token.address, addr(USER1), 300)
    receipt = dp.send(chain.w3, call, dp.ADMIN_KEY)
    (ev,) = events(receipt, chain.bank, "FundsWithdrawn")
    assert ev == {"token": chain.d.token.address, "recipient": addr(USER1), "amount": 300}
    assert chain.d.token.functions.balanceOf(addr(USER1)).call() == 300


def test_bank_withdraw_rejects_bad_requests(chain):
    """withdraw reverts on more than the balance, a zero recipient, a zero amount, a stranger."""
    tok, fn = chain.d.token.address, chain.bank.functions.withdraw
    err = expect_revert(
        lambda: dp.send(chain.w3, fn(tok, addr(USER1), BANK_FUNDS + 1), dp.ADMIN_KEY),
        "ProductBank.InsufficientBalance",
    )
    assert err.args == (BANK_FUNDS, BANK_FUNDS + 1)
    expect_revert(
        lambda: dp.send(chain.w3, fn(tok, ZERO, 1), dp.ADMIN_KEY), "ProductBank.ZeroAddress"
    )
    expect_revert(
        lambda: dp.send(chain.w3, fn(tok, addr(USER1), 0), dp.ADMIN_KEY), "ProductBank.ZeroAmount"
    )
    expect_revert(
        lambda: dp.send(chain.w3, fn(tok, addr(OUTSIDER), 1), OUTSIDER),
        "ProductBank.AccessControlUnauthorizedAccount",
    )


def test_bank_renounce_role_needs_confirmation(chain):
    """renounceRole for another account reverts AccessControlBadConfirmation."""
    call = chain.bank.functions.renounceRole(dp.DISTRIBUTOR_ROLE, addr(dp.DISTRIBUTOR_KEY))
    expect_revert(
        lambda: dp.send(chain.w3, call, dp.ADMIN_KEY), "ProductBank.AccessControlBadConfirmation"
    )


# --- budgets --------------------------------------------------------------------------------


def test_bank_budget_capped_and_uncapped_state(chain):
    """A capped budget reads capped with its amount; UNCAPPED reads uncapped with 2**256-1."""
    assert _budget(chain, CAPPED) == [True, True, CAPPED_BUDGET, 0]
    assert _budget(chain, UNCAPPED_CAMPAIGN) == [True, False, dp.UNCAPPED, 0]
    assert _budget(chain, dp.product_id("never")) == [False, True, 0, 0]


def test_bank_budget_allocation_emits_and_overwrites(chain):
    """allocateCampaignBudget emits CampaignBudgetAllocated and sets (not adds) the budget."""
    receipt = dp.allocate_budget(chain.d, chain.bank, CAPPED, 42)
    (ev,) = events(receipt, chain.bank, "CampaignBudgetAllocated")
    assert ev == {"campaignId": CAPPED, "token": chain.d.token.address, "budget": 42}
    assert _budget(chain, CAPPED) == [True, True, 42, 0]


def test_bank_budget_rejects_zero_and_strangers(chain):
    """allocateCampaignBudget reverts on budget 0, token zero and a non-owner."""
    fn = chain.bank.functions.allocateCampaignBudget
    expect_revert(
        lambda: dp.send(chain.w3, fn(CAPPED, chain.d.token.address, 0), dp.ADMIN_KEY),
        "ProductBank.ZeroAmount",
    )
    expect_revert(
        lambda: dp.send(chain.w3, fn(CAPPED, ZERO, 1), dp.ADMIN_KEY), "ProductBank.ZeroAddress"
    )
    expect_revert(
        lambda: dp.send(chain.w3, fn(CAPPED, chain.d.token.address, 1), OUTSIDER),
        "ProductBank.AccessControlUnauthorizedAccount",
    )


def test_bank_capped_budget_spent_to_zero_stays_capped(chain):
    """Spending a capped budget to exactly 0 leaves it capped, so the next push is refused."""
    _push(chain, CAPPED, [(addr(USER1), CAPPED_BUDGET)])
    assert _budget(chain, CAPPED) == [True, True, 0, CAPPED_BUDGET]
    err = _push_fails(chain, CAPPED, [(addr(USER1), 1)], "ProductBank.InsufficientBudget")
    assert err.args == (0, 1)


def test_bank_push_over_budget_reverts(chain):
    """A batch above the remaining capped budget reverts InsufficientBudget."""
    err = _push_fails(
        chain, CAPPED, [(addr(USER1), 600), (addr(USER2), 401)], "ProductBank.InsufficientBudget"
    )
    assert err.args == (CAPPED_BUDGET, 1001)


def test_bank_uncapped_budget_is_never_decremented(chain):
    """Pushes on an uncapped campaign keep remaining at UNCAPPED and grow spent."""
    _push(chain, UNCAPPED_CAMPAIGN, [(addr(USER1), 5000)])
    assert _budget(chain, UNCAPPED_CAMPAIGN) == [True, False, dp.UNCAPPED, 5000]


def test_bank_deactivation_is_final(chain):
    """deactivateCampaign emits, blocks pushes and re-allocation, and cannot repeat."""
    receipt = dp.send(chain.w3, chain.bank.functions.deactivateCampaign(CAPPED), dp.ADMIN_KEY)
    assert events(receipt, chain.bank, "CampaignDeactivated") == [{"campaignId": CAPPED}]
    assert chain.bank.functions.isCampaignDeactivated(CAPPED).call()
    assert _budget(chain, CAPPED)[0] is False
    err = _push_fails(chain, CAPPED, [(addr(USER1), 1)], "ProductBank.CampaignNotActive")
    assert err.args == (CAPPED, chain.d.token.address)
    expect_revert(
        lambda: dp.allocate_budget(chain.d, chain.bank, CAPPED, 5), "ProductBank.CampaignNotActive"
    )
    call = chain.bank.functions.deactivateCampaign(CAPPED)
    expect_revert(
        lambda: dp.send(chain.w3, call, dp.ADMIN_KEY), "ProductBank.CampaignAlreadyDeactivated"
    )


def test_bank_push_unallocated_campaign_reverts(chain):
    """A campaign without a budget for the token is not active."""
    _push_fails(chain, dp.product_id("nope"), [(addr(USER1), 1)], "ProductBank.CampaignNotActive")


# --- pushRewards ----------------------------------------------------------------------------


def test_bank_push_valid_signature_credits_users(chain):
    """A distributor-signed batch, sent by anyone, credits each user and emits RewardsPushed."""
    nonce = eip712.batch_nonce(31337, chain.bank.address, 1)
    rewards = [(addr(USER1), 10), (addr(USER2), 20), (addr(USER1), 5)]
    receipt = _push(chain, CAPPED, rewards, nonce=nonce, sender_key=OUTSIDER)
    (pushed,) = events(receipt, chain.bank, "RewardsPushed")
    assert pushed == {
        "campaignId": CAPPED,
        "token": chain.d.token.address,
        "nonce": nonce,
        "totalAmount": 35,
        "count": 3,
    }
    mtpp = chain.d.multi_token_push_pull
    added = events(receipt, mtpp, "RewardAdded")
    assert [(e["user"], e["amount"], e["emitter"]) for e in added] == [
        (u, a, chain.bank.address) for u, a in rewards
    ]
    assert mtpp.functions.getPendingAmount(chain.d.token.address, addr(USER1)).call() == 15
    assert mtpp.functions.getTotalPending(chain.d.token.address).call() == 35
    assert chain.bank.functions.isNonceUsed(nonce).call()
    assert _budget(chain, CAPPED) == [True, True, CAPPED_BUDGET - 35, 35]
    assert chain.d.token.functions.allowance(chain.bank.address, mtpp.address).call() == 0


def test_bank_digest_matches_python(chain):
    """hashRewardBatch and domainSeparator equal indexer.eip712's digest and separator."""
    items = (eip712.Reward(addr(USER1), 7), eip712.Reward(addr(USER2), 9))
    batch = eip712.RewardBatch(CAPPED, chain.d.token.address, items, b"\x07" * 32, 123)
    on_chain = chain.bank.functions.hashRewardBatch(
        CAPPED, chain.d.token.address, [(r.user, r.amount) for r in items], b"\x07" * 32, 123
    ).call()
    assert on_chain == eip712.batch_digest(31337, chain.bank.address, batch)
    assert chain.bank.functions.domainSeparator().call() == eip712.domain_separator(
        31337, chain.bank.address
    )


def test_bank_push_replayed_nonce_reverts(chain):
    """Re-submitting a used nonce reverts NonceAlreadyUsed, even with a fresh signature."""
    nonce = b"\x01" * 32
    _push(chain, CAPPED, [(addr(USER1), 1)], nonce=nonce)
    err = _push_fails(
        chain, CAPPED, [(addr(USER2), 2)], "ProductBank.NonceAlreadyUsed", nonce=nonce
    )
    assert err.args == (nonce,)


def test_bank_push_expired_deadline_reverts(chain):
    """A batch whose deadline is before the block timestamp reverts DeadlineExpired."""
    past = chain.w3.eth.get_block("latest")["timestamp"] - 1
    err = _push_fails(
        chain, CAPPED, [(addr(USER1), 1)], "ProductBank.DeadlineExpired", deadline=past
    )
    assert err.args[0] == past


def test_bank_push_wrong_signer_reverts(chain):
    """A signature by an account without DISTRIBUTOR_ROLE reverts InvalidSignature."""
    _push_fails(
        chain, CAPPED, [(addr(USER1), 1)], "ProductBank.InvalidSignature", signer_key=OUTSIDER
    )


def test_bank_push_signature_for_other_chain_reverts(chain):
    """A signature over another chain id's domain reverts InvalidSignature."""
    _push_fails(
        chain, CAPPED, [(addr(USER1), 1)], "ProductBank.InvalidSignature", domain_chain_id=1
    )


def test_bank_push_signature_for_other_bank_reverts(chain):
    """A signature for another bank (verifying contract) reverts InvalidSignature."""
    other = dp.create_bank(chain.d, dp.product_id("p2"))
    _push_fails(
        chain,
        CAPPED,
        [(addr(USER1), 1)],
        "ProductBank.InvalidSignature",
        verifying_contract=other.address,
    )


@pytest.mark.parametrize("mangle", ["short", "high_s", "bad_v"])
def test_bank_push_malformed_signature_reverts(chain, mangle):
    """Truncated, high-s (malleable) and bad-v signatures revert InvalidSignature."""
    batch = dp.sign_batch(chain.d, chain.bank, CAPPED, [(addr(USER1), 1)])
    sig = batch.signature
    if mangle == "short":
        sig = sig[:64]
    elif mangle == "high_s":
        s = SECP256K1_N - int.from_bytes(sig[32:64], "big")
        sig = sig[:32] + s.to_bytes(32, "big") + bytes([55 - sig[64]])
    else:
        sig = sig[:64] + b"\x05"
    args = (*batch.args()[:5], sig)
    call = chain.bank.functions.pushRewards(*args)
    expect_revert(lambda: dp.send(chain.w3, call, dp.ADMIN_KEY), "ProductBank.InvalidSignature")


def test_bank_push_over_balance_reverts(chain):
    """A batch above the bank's token balance reverts InsufficientBalance."""
    err = _push_fails(
        chain, UNCAPPED_CAMPAIGN, [(addr(USER1), BANK_FUNDS + 1)], "ProductBank.InsufficientBalance"
    )
    assert err.args == (BANK_FUNDS, BANK_FUNDS + 1)


@pytest.mark.parametrize("size", [0, 101])
def test_bank_push_invalid_batch_size_reverts(chain, size):
    """Empty and 101-entry batches revert InvalidBatchSize."""
    rewards = [(addr(USER1), 1)] * size
    err = _push_fails(chain, UNCAPPED_CAMPAIGN, rewards, "ProductBank.InvalidBatchSize")
    assert err.args == (size, 100)


def test_bank_push_max_batch_size_accepted(chain):
    """A 100-entry batch is accepted and emits 100 RewardAdded."""
    rewards = [(addr(USER1), 1), (addr(USER2), 2)] * 50
    receipt = _push(chain, UNCAPPED_CAMPAIGN, rewards)
    assert len(events(receipt, chain.d.multi_token_push_pull, "RewardAdded")) == 100


def test_bank_push_zero_user_or_amount_reverts(chain):
    """An entry with user zero reverts ZeroAddress; one with amount zero reverts ZeroAmount."""
    _push_fails(chain, CAPPED, [(addr(USER1), 1), (ZERO, 1)], "ProductBank.ZeroAddress")
    _push_fails(chain, CAPPED, [(addr(USER1), 1), (addr(USER2), 0)], "ProductBank.ZeroAmount")


def test_bank_push_unauthorised_bank_reverts(chain):
    """A bank revoked on MultiTokenPushPull fails with its NotAuthorizedPusher, nothing spent."""
    mtpp = chain.d.multi_token_push_pull
    dp.send(chain.w3, mtpp.functions.revokePusher(chain.bank.address), dp.ADMIN_KEY)
    err = _push_fails(chain, CAPPED, [(addr(USER1), 1)], "MultiTokenPushPull.NotAuthorizedPusher")
    assert err.args == (chain.bank.address,)
    assert _budget(chain, CAPPED) == [True, True, CAPPED_BUDGET, 0]
