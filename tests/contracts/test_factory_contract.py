"""ProductBankFactory against a real anvil: CREATE2 banks authorised as pushers."""

from __future__ import annotations

import pytest
from eth_utils import keccak, to_checksum_address

from tests import deploy as dp
from tests.contracts.support import OUTSIDER, addr, events, expect_revert

pytestmark = pytest.mark.anvil

ZERO = "0x" + "00" * 20


def _create2(factory: str, salt: bytes) -> str:
    init_hash = keccak(hexstr=dp.load_artifact("ProductBank")["bytecode"])
    raw = keccak(b"\xff" + bytes.fromhex(factory[2:]) + salt + init_hash)
    return to_checksum_address(raw[12:])


def test_factory_create_bank_at_predicted_address(chain):
    """createBank deploys at predictBankAddress(productId) = CREATE2(factory, productId, code)."""
    pid = dp.product_id("fresh")
    predicted = chain.d.factory.functions.predictBankAddress(pid).call()
    assert predicted == _create2(chain.d.factory.address, pid)
    receipt = dp.send(
        chain.w3, chain.d.factory.functions.createBank(pid, addr(OUTSIDER)), dp.ADMIN_KEY
    )
    assert events(receipt, chain.d.factory, "ProductBankCreated") == [
        {"productId": pid, "bank": predicted, "owner": addr(OUTSIDER)}
    ]
    assert chain.d.factory.functions.getBank(pid).call() == predicted
    bank = dp.at(chain.w3, "ProductBank", predicted)
    assert bank.functions.productId().call() == pid
    assert bank.functions.factory().call() == chain.d.factory.address
    assert bank.functions.pushPull().call() == chain.d.multi_token_push_pull.address
    assert bank.functions.hasRole(b"\x00" * 32, addr(OUTSIDER)).call()
    assert not bank.functions.hasRole(b"\x00" * 32, chain.d.factory.address).call()


def test_factory_authorises_new_bank_as_pusher(chain):
    """The new bank is an authorised pusher, with PusherAuthorized in the creation receipt."""
    pid = dp.product_id("pusher")
    receipt = dp.send(
        chain.w3, chain.d.factory.functions.createBank(pid, addr(OUTSIDER)), dp.ADMIN_KEY
    )
    bank = chain.d.factory.functions.getBank(pid).call()
    mtpp = chain.d.multi_token_push_pull
    assert events(receipt, mtpp, "PusherAuthorized") == [{"pusher": bank}]
    assert mtpp.functions.isAuthorizedPusher(bank).call()


def test_factory_rejects_second_bank_for_product(chain):
    """A second createBank for the same product reverts BankAlreadyExists."""
    pid = dp.product_id("p1")
    call = chain.d.factory.functions.createBank(pid, addr(OUTSIDER))
    err = expect_revert(
        lambda: dp.send(chain.w3, call, dp.ADMIN_KEY), "ProductBankFactory.BankAlreadyExists"
    )
    assert err.args == (pid, chain.bank.address)


def test_factory_rejects_zero_owner_and_zero_push_pull(chain):
    """createBank with owner zero, and a factory with pushPull zero, revert ZeroAddress."""
    call = chain.d.factory.functions.createBank(dp.product_id("z"), ZERO)
    expect_revert(lambda: dp.send(chain.w3, call, dp.ADMIN_KEY), "ProductBankFactory.ZeroAddress")
    expect_revert(
        lambda: dp.deploy(chain.w3, "ProductBankFactory", addr(dp.ADMIN_KEY), ZERO),
        "ProductBankFactory.ZeroAddress",
    )


def test_factory_create_bank_needs_creator_role(chain):
    """createBank by an account without BANK_CREATOR_ROLE reverts."""
    call = chain.d.factory.functions.createBank(dp.product_id("x"), addr(OUTSIDER))
    expect_revert(
        lambda: dp.send(chain.w3, call, OUTSIDER),
        "ProductBankFactory.AccessControlUnauthorizedAccount",
    )


def test_factory_without_manager_role_cannot_create(chain):
    """A factory lacking PUSHER_MANAGER_ROLE fails on authorizePusher, so no bank appears."""
    rogue = dp.deploy(
        chain.w3, "ProductBankFactory", addr(dp.ADMIN_KEY), chain.d.multi_token_push_pull.address
    )
    call = rogue.functions.createBank(dp.product_id("rogue"), addr(OUTSIDER))
    err = expect_revert(
        lambda: dp.send(chain.w3, call, dp.ADMIN_KEY),
        "MultiTokenPushPull.AccessControlUnauthorizedAccount",
    )
    assert err.args == (rogue.address, dp.PUSHER_MANAGER_ROLE)


def test_factory_renounce_role_needs_confirmation(chain):
    """renounceRole naming another account reverts AccessControlBadConfirmation."""
    call = chain.d.factory.functions.renounceRole(b"\x00" * 32, addr(OUTSIDER))
    expect_revert(
        lambda: dp.send(chain.w3, call, dp.ADMIN_KEY),
        "ProductBankFactory.AccessControlBadConfirmation",
    )


def test_factory_bank_parameters_are_empty_outside_creation(chain):
    """bankParameters() is zero between creations (it only feeds the bank's constructor)."""
    assert chain.d.factory.functions.bankParameters().call() == [
        b"\x00" * 32,
        ZERO,
        chain.d.multi_token_push_pull.address,
    ]
