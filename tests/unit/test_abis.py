"""abis/ is fresh against contracts/ and its events keep the project's public event signatures
(the contract of every table and of the backend's queries: a change is a breaking change)."""

# ruff: noqa: E501 (the canonical signatures are copied verbatim, one per line)

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from eth_utils import keccak

ROOT = Path(__file__).resolve().parent.parent.parent
ABIS = ROOT / "abis"

# The public event interface, one signature per line: the source of truth for the ABIs.
CANONICAL_EVENTS: dict[str, list[str]] = {
    "MultiTokenPushPull": [
        "RewardAdded(address indexed token, address indexed user, address indexed emitter, uint256 amount)",
        "RewardClaimed(address indexed token, address indexed user, uint256 amount)",
        "PusherAuthorized(address indexed pusher)",
        "PusherRevoked(address indexed pusher)",
    ],
    "ProductBankFactory": [
        "ProductBankCreated(bytes32 indexed productId, address indexed bank, address indexed owner)",
    ],
    "ProductBank": [
        "FundsDeposited(address indexed token, address indexed depositor, uint256 amount)",
        "FundsWithdrawn(address indexed token, address indexed recipient, uint256 amount)",
        "CampaignBudgetAllocated(bytes32 indexed campaignId, address indexed token, uint256 budget)",
        "CampaignDeactivated(bytes32 indexed campaignId)",
        "RewardsPushed(bytes32 indexed campaignId, address indexed token, bytes32 indexed nonce, uint256 totalAmount, uint256 count)",
    ],
    "ChamaSavings": [
        "ChamaCreated(uint256 indexed chamaId, string name, address indexed creator, uint256 contributionAmount)",
        "ChamaJoined(uint256 indexed chamaId, address indexed member)",
        "ContributionMade(uint256 indexed chamaId, address indexed contributor, uint256 amount, uint256 timestamp)",
        "PayoutProcessed(uint256 indexed chamaId, address indexed recipient, uint256 amount, uint256 cycleNumber)",
        "ChamaCompleted(uint256 indexed chamaId)",
    ],
}
# Events inherited from OpenZeppelin that production ABIs may carry besides the canonical ones.
INHERITED_EVENTS = {"RoleAdminChanged", "RoleGranted", "RoleRevoked", "EIP712DomainChanged"}
TEST_CONTRACTS = {"TestToken", "HostileToken", "LogEmitter"}

_PARAM_RE = re.compile(r"^\s*(\w+(?:\[\d*\])*)\s+(indexed\s+)?(\w+)\s*$")


def _parse(signature: str) -> tuple[str, tuple[tuple[str, bool, str], ...]]:
    """``Name(type [indexed] name, ...)`` -> (name, [(type, indexed, param name)])."""
    name, _, rest = signature.partition("(")
    params = []
    for part in filter(None, (p.strip() for p in rest.rstrip(")").split(","))):
        m = _PARAM_RE.match(part)
        assert m, f"cannot parse parameter {part!r} of {signature!r}"
        params.append((m.group(1), bool(m.group(2)), m.group(3)))
    return name.strip(), tuple(params)


def _topic0(name: str, params: tuple[tuple[str, bool, str], ...]) -> bytes:
    return keccak(text=f"{name}({','.join(t for t, _, _ in params)})")


def _abi_events(contract: str) -> dict[str, tuple[tuple[str, bool, str], ...]]:
    art = json.loads((ABIS / f"{contract}.json").read_text())
    return {
        e["name"]: tuple((i["type"], i["indexed"], i["name"]) for i in e["inputs"])
        for e in art["abi"]
        if e["type"] == "event"
    }


def _compile_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "compile_contracts", ROOT / "scripts" / "compile_contracts.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _artifacts() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(ABIS.glob("*.json"))}


def test_abis_are_fresh():
    """Every artifact's sourceHash equals the hash of today's sources (else: make contracts)."""
    script = _compile_script()
    if not script.OZ_PACKAGE.exists():
        pytest.skip("OpenZeppelin not installed in .tools: run `make setup`")
    current = script.source_hash()
    arts = _artifacts()
    stale = sorted(n for n, a in arts.items() if a["sourceHash"] != current)
    assert not stale, f"abis/ stale for {stale}: run .venv/bin/python scripts/compile_contracts.py"
    assert set(arts) == set(script.expected_contracts()), (
        "abis/ and contracts/ name different contracts"
    )


def test_artifacts_have_the_documented_keys():
    """Each artifact has contractName (= file name), abi, 0x bytecode, compiler and sourceHash."""
    for name, art in _artifacts().items():
        assert set(art) == {"contractName", "abi", "bytecode", "compiler", "sourceHash"}
        assert art["contractName"] == name
        assert re.fullmatch(r"0x([0-9a-f]{2})+", art["bytecode"])
        assert art["compiler"].startswith("solc 0.8.")


@pytest.mark.parametrize(
    ("contract", "signature"),
    [(c, s) for c, sigs in CANONICAL_EVENTS.items() for s in sigs],
)
def test_abi_event_matches_canonical_signature(contract, signature):
    """The ABI event has the canonical types, indexed flags and names, hence its topic0."""
    name, params = _parse(signature)
    events = _abi_events(contract)
    assert name in events, f"{contract} lacks event {name}"
    assert events[name] == params
    assert _topic0(name, events[name]) == _topic0(name, params)


@pytest.mark.parametrize("contract", sorted(CANONICAL_EVENTS))
def test_abi_has_no_unexpected_events(contract):
    """Production ABIs carry only the canonical events and OpenZeppelin's inherited ones."""
    canonical = {_parse(s)[0] for s in CANONICAL_EVENTS[contract]}
    assert set(_abi_events(contract)) - canonical <= INHERITED_EVENTS


def test_jenga_topic0_is_kept():
    """ChamaCreated and PayoutProcessed keep Jenga's topic0 (keccak of the type signature)."""
    events = _abi_events("ChamaSavings")
    for name, sig in [
        ("ChamaCreated", "ChamaCreated(uint256,string,address,uint256)"),
        ("PayoutProcessed", "PayoutProcessed(uint256,address,uint256,uint256)"),
    ]:
        assert _topic0(name, events[name]) == keccak(text=sig)


def test_log_emitter_look_alike_shares_topic0_not_layout():
    """LogEmitter's RewardClaimed shares MultiTokenPushPull's topic0 with another indexed layout."""
    ours = _abi_events("MultiTokenPushPull")["RewardClaimed"]
    alike = _abi_events("LogEmitter")["RewardClaimed"]
    assert _topic0("RewardClaimed", ours) == _topic0("RewardClaimed", alike)
    assert [i for _, i, _ in ours] != [i for _, i, _ in alike]
