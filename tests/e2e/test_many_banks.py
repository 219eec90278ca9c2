"""Many factory-made banks: the watched addresses go to the node in chunks of
``address_chunk`` (500 by default: thousands of banks are more than providers accept in one
filter). With chunks of one address, a dozen banks stand for thousands: every chunk path is
taken. A bank created and used in the same block is still never missed: its creation is
decoded from the range, and its logs from that block on are fetched (in chunks too) and
joined before the range commits."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.harness import indexer
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]
RUN = ("run", "--exit-when-caught-up", "--no-http")


def _signed(d: deploy.Deployment, call: Any, nonce: int) -> bytes:
    """A transaction of the admin key with a fixed gas limit (the second one of the block
    calls a bank that does not exist before the first runs: no estimate possible)."""
    params = {
        "from": deploy.address_of(deploy.ADMIN_KEY),
        "nonce": nonce,
        "chainId": 31337,
        "gas": 3_000_000,
        "maxFeePerGas": 10**11,
        "maxPriorityFeePerGas": 0,
    }
    tx = call.build_transaction(params)
    tx.pop("from", None)
    raw: bytes = Account.sign_transaction(tx, deploy.ADMIN_KEY).raw_transaction
    return raw


@pytest.mark.parametrize(
    "knob",
    ["address_chunk = 1", "topics_above = 0"],
    ids=["address-chunks-of-one", "by-topic0"],
)
def test_bank_created_and_used_in_one_block_with_addresses_in_chunks(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    knob: str,
) -> None:
    """Both fetch paths for many contracts, beside a second deployment of the same contracts
    that nobody watches (the same events, so a filter by topic0 brings its logs too): every
    log of every watched contract is indexed, the same-block bank's deposit included, and
    not one of the other deployment's."""
    d = deployment
    other = deploy.deploy_all(d.w3)  # same ABIs, same topics, not watched
    deploy.generate_traffic(d.w3, other, random.Random(4), 30)
    banks = [deploy.create_bank(d, deploy.product_id(f"many-{i}")) for i in range(12)]
    for i, bank in enumerate(banks[::3]):
        deploy.fund_bank(d, bank, 10 + i)

    # one block: the factory creates the bank, then the bank receives a deposit
    pid = deploy.product_id("same-block")
    predicted = d.factory.functions.predictBankAddress(pid).call()
    admin = deploy.address_of(deploy.ADMIN_KEY)
    deploy.mint(d, admin, 777)
    deploy.send(d.w3, d.token.functions.approve(predicted, 777), deploy.ADMIN_KEY)
    bank = deploy.at(d.w3, "ProductBank", predicted)
    nonce = d.w3.eth.get_transaction_count(admin, "pending")
    anvil.rpc("evm_setAutomine", [False])
    try:
        for i, call in enumerate(
            [
                d.factory.functions.createBank(pid, admin),
                bank.functions.deposit(d.token.address, 777),
            ]
        ):
            anvil.rpc("eth_sendRawTransaction", ["0x" + _signed(d, call, nonce + i).hex()])
        anvil.mine(1)
    finally:
        anvil.rpc("evm_setAutomine", [True])
    block = anvil.block_number()
    receipts = [
        anvil.rpc("eth_getTransactionReceipt", [tx["hash"]])
        for tx in anvil.rpc("eth_getBlockByNumber", [hex(block), True])["transactions"]
    ]
    assert [r["status"] for r in receipts] == ["0x1", "0x1"]
    anvil.mine(3)

    cfg = make_config()
    cfg.write_text(cfg.read_text().replace('finality = "', f'{knob}\nfinality = "'))
    out = indexer(cfg, *RUN)
    assert out.code == 0, out.stderr[-2000:]
    deposits = checks.db_fetch(
        db_dsn,
        "SELECT block_number, amount FROM funds_deposited WHERE contract = $1",
        predicted.lower(),
    )
    assert [(r["block_number"], int(r["amount"])) for r in deposits] == [(block, 777)]
    assert assert_all(db_dsn, anvil, d) > 0  # every bank's every log, nothing else
    foreign = [a.lower() for a in other.addresses.values()]
    for table in checks.EVENT_TABLES:
        assert not checks.db_fetch(
            db_dsn, f"SELECT 1 FROM {table} WHERE contract = ANY($1::text[])", foreign
        ), table
    modes = [e["by"] for e in out.named("log_filter")]
    assert modes == (["topic0"] if knob.startswith("topics") else [])
