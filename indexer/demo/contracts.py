"""Deploy and drive the project's contracts on a dev node (anvil) with sync web3.py.

Used by ``indexer demo``, the contract tests and the indexer's e2e tests (through
``tests/deploy.py``). Every transaction is signed locally and sent raw with an explicit nonce,
chain id, fees and gas (estimated first, so a revert raises before anything is mined, with the
custom error decodable by :func:`revert_error`). Roles: admin = ``ANVIL_DEV_KEYS[0]``
(deployer, bank owner), distributor = ``ANVIL_DEV_KEYS[1]``.
"""

from __future__ import annotations

import functools
import json
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode
from eth_account import Account
from eth_keys.datatypes import PrivateKey
from eth_typing import ChecksumAddress
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from indexer import eip712
from indexer.config import DEFAULT_ABI_DIR
from indexer.demo.devchain import ANVIL_DEV_KEYS

ABIS_DIR = DEFAULT_ABI_DIR
ADMIN_KEY = ANVIL_DEV_KEYS[0]
DISTRIBUTOR_KEY = ANVIL_DEV_KEYS[1]
MAX_FEE_WEI = 100 * 10**9
DEFAULT_DEADLINE_S = 3600
UNCAPPED = 2**256 - 1
ZERO_ADDRESS = "0x" + "00" * 20
PUSHER_MANAGER_ROLE = keccak(text="PUSHER_MANAGER_ROLE")
DISTRIBUTOR_ROLE = keccak(text="DISTRIBUTOR_ROLE")


@functools.cache
def _private_key(key: str) -> PrivateKey:
    # eth_keys' pure-Python backend spends ~5 ms deriving a public key: derive once per key.
    return PrivateKey(bytes.fromhex(key.removeprefix("0x")))


@functools.cache
def address_of(key: str) -> ChecksumAddress:
    """Checksum address of a private key."""
    return ChecksumAddress(_private_key(key).public_key.to_checksum_address())


_CHAIN_IDS: weakref.WeakKeyDictionary[Web3, int] = weakref.WeakKeyDictionary()


def chain_id(w3: Web3) -> int:
    """``eth_chainId``, asked once per Web3 object."""
    if w3 not in _CHAIN_IDS:
        _CHAIN_IDS[w3] = int(w3.eth.chain_id)
    return _CHAIN_IDS[w3]


def connect(url: str) -> Web3:
    """A sync web3 on ``url`` (an anvil URL), without the validation middleware (it asks
    ``eth_chainId`` before every request, doubling the round trips) and the ENS lookup."""
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    w3.middleware_onion.remove("validation")
    w3.middleware_onion.remove("ens_name_to_address")
    return w3


@functools.cache
def load_artifact(name: str) -> dict[str, Any]:
    """abis/<name>.json as written by scripts/compile_contracts.py."""
    return dict(json.loads((ABIS_DIR / f"{name}.json").read_text()))


def at(w3: Web3, name: str, address: str) -> Contract:
    """The web3 contract ``name`` at ``address``."""
    return w3.eth.contract(address=to_checksum_address(address), abi=load_artifact(name)["abi"])


# --- revert decoding -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevertError:
    """A decoded custom error: its name, arguments and every contract whose ABI declares it."""

    name: str
    args: tuple[Any, ...]
    contracts: tuple[str, ...]


@functools.cache
def _error_index() -> dict[bytes, tuple[str, list[str], tuple[str, ...]]]:
    index: dict[bytes, tuple[str, list[str], tuple[str, ...]]] = {}
    for path in sorted(ABIS_DIR.glob("*.json")):
        art = json.loads(path.read_text())
        for item in art["abi"]:
            if item["type"] != "error":
                continue
            types = [_abi_type(i) for i in item["inputs"]]
            sel = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            name, _, owners = index.get(sel, (item["name"], types, ()))
            index[sel] = (name, types, (*owners, art["contractName"]))
    return index


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][5:]}"
    return str(item["type"])


def decode_revert(data: bytes) -> RevertError:
    """Decode revert data with every ABI in abis/ (plus ``Error(string)`` and ``Panic``)."""
    if len(data) < 4:
        return RevertError("<empty>", (data,), ())
    builtin = {
        bytes.fromhex("08c379a0"): ("Error", ["string"], ()),
        bytes.fromhex("4e487b71"): ("Panic", ["uint256"], ()),
    }
    found = _error_index().get(data[:4]) or builtin.get(data[:4])
    if found is None:
        return RevertError(f"<unknown 0x{data[:4].hex()}>", (data,), ())
    name, types, owners = found
    values = decode(types, data[4:])
    args = tuple(
        to_checksum_address(v) if t == "address" else v for t, v in zip(types, values, strict=True)
    )
    return RevertError(name, args, owners)


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert data carried by a web3 exception, if any."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    return None


def revert_error(action: Callable[[], object]) -> RevertError:
    """Run ``action`` (a call, an estimate or :func:`send`), which must revert; decode why."""
    try:
        action()
    except Exception as exc:
        data = revert_data(exc)
        if data is None:
            raise AssertionError(f"reverted without revert data: {exc!r}") from exc
        return decode_revert(data)
    raise AssertionError("expected a revert, the call succeeded")


# --- transactions --------------------------------------------------------------------------


class TxFailed(AssertionError):
    """A mined transaction has status 0 (estimate_gas should normally have caught it)."""


def send(w3: Web3, call: Any, key: str, *, gas: int | None = None) -> dict[str, Any]:
    """Sign ``call`` (a bound contract function or constructor) with ``key``, send it raw and
    return the receipt. Raises the web3 revert error (with data) if the estimate reverts."""
    sender = address_of(key)
    params: dict[str, Any] = {
        "from": sender,
        "nonce": w3.eth.get_transaction_count(sender, "pending"),
        "chainId": chain_id(w3),
        "maxFeePerGas": MAX_FEE_WEI,
        "maxPriorityFeePerGas": 0,
        "value": 0,
    }
    if gas is None:
        gas = int(call.estimate_gas(params) * 1.25) + 20_000
    params["gas"] = gas
    tx = call.build_transaction(params)
    tx.pop("from", None)
    signed = Account.sign_transaction(tx, _private_key(key))
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = dict(w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30))
    if receipt["status"] != 1:
        raise TxFailed(f"transaction {tx_hash.hex()} failed: {receipt}")
    return receipt


def deploy(w3: Web3, name: str, *args: Any, sender: str = ADMIN_KEY) -> Contract:
    """Deploy contract ``name`` from abis/ with constructor ``args``; return it."""
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    receipt = send(w3, factory.constructor(*args), sender)
    return at(w3, name, receipt["contractAddress"])


@dataclass(frozen=True, slots=True)
class Deployment:
    """The contracts of one chain, as deployed by :func:`deploy_all`."""

    w3: Web3
    token: Contract
    multi_token_push_pull: Contract
    factory: Contract
    chama: Contract
    log_emitter: Contract
    block_number: int
    admin_key: str = ADMIN_KEY
    distributor_key: str = DISTRIBUTOR_KEY

    @property
    def addresses(self) -> dict[str, str]:
        """Contract name -> lowercase address (as the indexer's config and tables spell it)."""
        return {
            "TestToken": self.token.address.lower(),
            "MultiTokenPushPull": self.multi_token_push_pull.address.lower(),
            "ProductBankFactory": self.factory.address.lower(),
            "ChamaSavings": self.chama.address.lower(),
            "LogEmitter": self.log_emitter.address.lower(),
        }


def deploy_all(w3: Web3) -> Deployment:
    """Deploy token, MultiTokenPushPull, factory (with PUSHER_MANAGER_ROLE), ChamaSavings and
    LogEmitter from the admin account; ``block_number`` is the first deployment's block."""
    admin = address_of(ADMIN_KEY)
    token = deploy(w3, "TestToken", "Reward Token", "RWD")
    first_block = w3.eth.block_number
    mtpp = deploy(w3, "MultiTokenPushPull", admin)
    factory = deploy(w3, "ProductBankFactory", admin, mtpp.address)
    send(w3, mtpp.functions.grantRole(PUSHER_MANAGER_ROLE, factory.address), ADMIN_KEY)
    chama = deploy(w3, "ChamaSavings", token.address)
    emitter = deploy(w3, "LogEmitter")
    return Deployment(w3, token, mtpp, factory, chama, emitter, first_block)


# --- ProductBank ---------------------------------------------------------------------------


def product_id(label: str) -> bytes:
    """A bytes32 product (or campaign) id from a readable label."""
    return keccak(text=label)


def create_bank(
    d: Deployment,
    pid: bytes,
    *,
    owner_key: str = ADMIN_KEY,
    distributor: str | None = None,
) -> Contract:
    """Create the bank of ``pid`` owned by ``owner_key`` and grant DISTRIBUTOR_ROLE to
    ``distributor`` (default: the distributor key's address)."""
    owner = address_of(owner_key)
    send(d.w3, d.factory.functions.createBank(pid, owner), ADMIN_KEY)
    bank = at(d.w3, "ProductBank", d.factory.functions.getBank(pid).call())
    grantee = distributor or address_of(d.distributor_key)
    send(d.w3, bank.functions.grantRole(DISTRIBUTOR_ROLE, grantee), owner_key)
    return bank


def mint(d: Deployment, to: str, amount: int, token: Contract | None = None) -> None:
    """Mint test tokens (anyone may)."""
    send(d.w3, (token or d.token).functions.mint(to, amount), ADMIN_KEY)


def fund_bank(
    d: Deployment,
    bank: Contract,
    amount: int,
    *,
    token: Contract | None = None,
    owner_key: str = ADMIN_KEY,
) -> dict[str, Any]:
    """Mint ``amount`` to the owner, approve and deposit it into ``bank``."""
    tok = token or d.token
    owner = address_of(owner_key)
    mint(d, owner, amount, tok)
    send(d.w3, tok.functions.approve(bank.address, amount), owner_key)
    return send(d.w3, bank.functions.deposit(tok.address, amount), owner_key)


def allocate_budget(  # noqa: PLR0913 (the test helper names every field of a budget)
    d: Deployment,
    bank: Contract,
    campaign_id: bytes,
    budget: int,
    *,
    token: Contract | None = None,
    owner_key: str = ADMIN_KEY,
) -> dict[str, Any]:
    """Set the budget of (campaign_id, token); ``UNCAPPED`` for no cap."""
    tok = (token or d.token).address
    return send(d.w3, bank.functions.allocateCampaignBudget(campaign_id, tok, budget), owner_key)


@dataclass(frozen=True, slots=True)
class SignedBatch:
    """A batch with its signature, ready for ``ProductBank.pushRewards``."""

    campaign_id: bytes
    token: str
    rewards: tuple[eip712.Reward, ...]
    nonce: bytes
    deadline: int
    signature: bytes

    def args(self) -> tuple[Any, ...]:
        """The positional arguments of ``pushRewards``."""
        items = [(to_checksum_address(r.user), r.amount) for r in self.rewards]
        return (self.campaign_id, self.token, items, self.nonce, self.deadline, self.signature)


def sign_batch(  # noqa: PLR0913 (a test helper that can forge every field of a batch)
    d: Deployment,
    bank: Contract,
    campaign_id: bytes,
    rewards: Sequence[tuple[str, int] | eip712.Reward],
    *,
    token: Contract | str | None = None,
    nonce: bytes | None = None,
    deadline: int | None = None,
    signer_key: str | None = None,
    domain_chain_id: int | None = None,
    verifying_contract: str | None = None,
) -> SignedBatch:
    """Sign a batch for ``bank`` (overrides let tests sign for the wrong chain or bank)."""
    tok = token if isinstance(token, str) else (token or d.token).address
    items = tuple(r if isinstance(r, eip712.Reward) else eip712.Reward(*r) for r in rewards)
    if deadline is None:
        deadline = int(d.w3.eth.get_block("latest")["timestamp"]) + DEFAULT_DEADLINE_S
    nonce = nonce if nonce is not None else os.urandom(32)
    sig = eip712.sign_reward_batch(
        signer_key or d.distributor_key,
        domain_chain_id if domain_chain_id is not None else chain_id(d.w3),
        verifying_contract or bank.address,
        campaign_id=campaign_id,
        token=tok,
        rewards=items,
        nonce=nonce,
        deadline=deadline,
    )
    return SignedBatch(campaign_id, tok, items, nonce, deadline, sig)


def push_signed_batch(
    d: Deployment,
    bank: Contract,
    campaign_id: bytes,
    rewards: Sequence[tuple[str, int] | eip712.Reward],
    *,
    sender_key: str = ADMIN_KEY,
    **sign_kwargs: Any,
) -> dict[str, Any]:
    """Sign (see :func:`sign_batch`) and submit a batch from ``sender_key``; the receipt."""
    batch = sign_batch(d, bank, campaign_id, rewards, **sign_kwargs)
    return send(d.w3, bank.functions.pushRewards(*batch.args()), sender_key)


def claim(d: Deployment, user_key: str, token: Contract | None = None) -> dict[str, Any]:
    """``pullReward(token)`` from ``user_key``."""
    tok = (token or d.token).address
    return send(d.w3, d.multi_token_push_pull.functions.pullReward(tok), user_key)


# --- ChamaSavings --------------------------------------------------------------------------


def create_chama(d: Deployment, key: str, name: str, amount: int, max_members: int) -> int:
    """Create a chama from ``key``; return its id."""
    receipt = send(d.w3, d.chama.functions.createChama(name, amount, max_members), key)
    (event,) = d.chama.events.ChamaCreated().process_receipt(receipt, errors=DISCARD)
    return int(event["args"]["chamaId"])


def join_chama(d: Deployment, key: str, chama_id: int) -> dict[str, Any]:
    """Join chama ``chama_id`` from ``key``."""
    return send(d.w3, d.chama.functions.joinChama(chama_id), key)


def contribute(
    d: Deployment, key: str, chama_id: int, *, fund: bool = True, amount: int | None = None
) -> dict[str, Any]:
    """Contribute to ``chama_id`` from ``key``; with ``fund``, mint and approve the
    contribution amount first (``amount`` saves looking it up)."""
    if fund:
        if amount is None:
            amount = int(d.chama.functions.getChama(chama_id).call()[2])
        mint(d, address_of(key), amount)
        send(d.w3, d.token.functions.approve(d.chama.address, amount), key)
    return send(d.w3, d.chama.functions.contribute(chama_id), key)


def process_payout(d: Deployment, chama_id: int, key: str = ADMIN_KEY) -> dict[str, Any]:
    """Pay the current cycle of ``chama_id`` (anyone may)."""
    return send(d.w3, d.chama.functions.processPayout(chama_id), key)
