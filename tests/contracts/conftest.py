"""Contract-test fixtures: one anvil + deployment per module, each test isolated by
evm_snapshot/evm_revert (helpers live in support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import deploy as dp
from tests.contracts.support import (
    BANK_FUNDS,
    CAPPED,
    CAPPED_BUDGET,
    MODULES_RUN,
    UNCAPPED_CAMPAIGN,
    Chain,
)
from tests.procs import Anvil


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    """One anvil per module with deploy_all() and bank "p1" funded, with a capped and an
    uncapped campaign."""
    node = Anvil.start()
    try:
        w3 = dp.connect(node.url)
        d = dp.deploy_all(w3)
        bank = dp.create_bank(d, dp.product_id("p1"))
        dp.fund_bank(d, bank, BANK_FUNDS)
        dp.allocate_budget(d, bank, CAPPED, CAPPED_BUDGET)
        dp.allocate_budget(d, bank, UNCAPPED_CAMPAIGN, dp.UNCAPPED)
        yield Chain(node, w3, d, bank)
    finally:
        node.stop()


@pytest.fixture(autouse=True)
def _isolate(chain: Chain, request: pytest.FixtureRequest) -> Iterator[None]:
    MODULES_RUN.add(request.module.__name__)
    snap = chain.rpc("evm_snapshot")
    yield
    assert chain.rpc("evm_revert", [snap]) is True
