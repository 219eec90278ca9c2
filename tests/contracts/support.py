"""Helpers shared by the contract tests (kept out of conftest.py so that there is one
instance of the error log however the test modules are imported)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from tests import deploy as dp
from tests.procs import ANVIL_KEYS, Anvil

ERROR_LOG: dict[tuple[str, str], str] = {}  # (contract, error) -> first test that triggered it
MODULES_RUN: set[str] = set()

USER1, USER2, OUTSIDER = ANVIL_KEYS[2], ANVIL_KEYS[3], ANVIL_KEYS[4]
CAPPED = dp.product_id("campaign-capped")
UNCAPPED_CAMPAIGN = dp.product_id("campaign-uncapped")
BANK_FUNDS = 10_000
CAPPED_BUDGET = 1_000


@dataclass(frozen=True)
class Chain:
    """A deployment plus a ready bank: funded, with a capped and an uncapped campaign."""

    anvil: Anvil
    w3: Web3
    d: dp.Deployment
    bank: Contract

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """One JSON-RPC call to the node."""
        return self.anvil.rpc(method, params)


def expect_revert(action: Callable[[], object], error: str) -> dp.RevertError:
    """Assert ``action`` reverts with custom error ``"Contract.Error"`` (the contract whose ABI
    declares it: the origin, which may be a callee); record it for the coverage test."""
    contract, _, name = error.partition(".")
    err = dp.revert_error(action)
    assert err.name == name, f"expected {error}, got {err}"
    assert contract in err.contracts, f"{name} is not declared by {contract}: {err.contracts}"
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    ERROR_LOG.setdefault((contract, name), test)
    return err


def events(receipt: dict[str, Any], contract: Contract, name: str) -> list[dict[str, Any]]:
    """The decoded args of ``contract``'s ``name`` events in ``receipt``, in log order."""
    decoded = contract.events[name]().process_receipt(receipt, errors=DISCARD)
    return [dict(e["args"]) for e in decoded if e["address"] == contract.address]


def addr(key: str) -> str:
    """Checksum address of an anvil key."""
    return dp.address_of(key)
