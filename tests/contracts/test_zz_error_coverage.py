"""Every custom error in abis/ was triggered by a contract test (runs last in this folder)."""

from __future__ import annotations

import json

import pytest

from tests import deploy as dp
from tests.contracts.support import ERROR_LOG, MODULES_RUN

pytestmark = pytest.mark.anvil

SUITE = {
    "test_bank_contract",
    "test_chama_contract",
    "test_factory_contract",
    "test_pushpull_contract",
    "test_test_contracts",
}

# Declared in the ABI (inherited from OpenZeppelin) but unreachable through any entry point.
UNREACHABLE = {
    # EIP712's ShortStrings: the domain strings are short constants, stored inline.
    ("ProductBank", "StringTooLong"),
    ("ProductBank", "InvalidShortString"),
    # ERC20._transfer(from = 0): transferFrom(0, ..) fails earlier in _approve(owner = 0).
    ("TestToken", "ERC20InvalidSender"),
    ("HostileToken", "ERC20InvalidSender"),
}


def test_every_custom_error_is_triggered(chain):
    """Each (contract, error) of every ABI was seen by expect_revert, except UNREACHABLE."""
    ran = {m.rsplit(".", 1)[-1] for m in MODULES_RUN}
    if not SUITE.issubset(ran):
        pytest.skip(f"needs the whole contract suite; missing {sorted(SUITE - ran)}")
    declared = {
        (path.stem, item["name"])
        for path in sorted(dp.ABIS_DIR.glob("*.json"))
        for item in json.loads(path.read_text())["abi"]
        if item["type"] == "error"
    }
    missing = sorted(declared - UNREACHABLE - set(ERROR_LOG))
    assert not missing, f"custom errors no test triggers: {missing}"
    assert not UNREACHABLE - declared, "UNREACHABLE lists errors no ABI declares"
    assert not set(ERROR_LOG) - declared
