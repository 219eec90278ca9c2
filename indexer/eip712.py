"""EIP-712 hashing and signing of ProductBank reward batches, and batch nonces.

The digest is computed by hand (eth_abi + keccak) rather than through a generic typed-data
encoder so that the pusher depends on nothing but the two type strings below, which must match
``ProductBank.sol`` byte for byte; ``tests/unit/test_eip712.py`` checks the result against
eth_account's generic encoder and ``tests/contracts`` against the contract's own digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi.abi import encode
from eth_account import Account
from eth_utils.address import to_canonical_address
from eth_utils.crypto import keccak

DOMAIN_NAME = "ProductBank"
DOMAIN_VERSION = "1"
REWARD_TYPE = "Reward(address user,uint256 amount)"
REWARD_BATCH_TYPE = (
    "RewardBatch(bytes32 campaignId,address token,Reward[] rewards,bytes32 nonce,uint256 deadline)"
)
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"

DOMAIN_TYPEHASH = keccak(text=DOMAIN_TYPE)
REWARD_TYPEHASH = keccak(text=REWARD_TYPE)
# EIP-712 appends referenced struct types, sorted by name, to the primary type.
REWARD_BATCH_TYPEHASH = keccak(text=REWARD_BATCH_TYPE + REWARD_TYPE)

# Domain tag of batch_nonce(); bump the version suffix if the formula ever changes.
NONCE_TAG = keccak(text="rewardsync.RewardBatch.nonce.v2")

_UINT256_MAX = 2**256 - 1


@dataclass(frozen=True, slots=True)
class Reward:
    """One entry of a batch: credit ``amount`` (base units) of the batch's token to ``user``."""

    user: str
    amount: int


@dataclass(frozen=True, slots=True)
class RewardBatch:
    """The signed message: what a distributor authorises a bank to push."""

    campaign_id: bytes
    token: str
    rewards: tuple[Reward, ...]
    nonce: bytes
    deadline: int


def _bytes32(value: bytes, what: str) -> bytes:
    if len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(value)}")
    return value


def _uint256(value: int, what: str) -> int:
    if not 0 <= value <= _UINT256_MAX:
        raise ValueError(f"{what} out of uint256 range: {value}")
    return value


def domain_separator(chain_id: int, bank: str) -> bytes:
    """The bank's EIP-712 domain separator; equals ``ProductBank.domainSeparator()``."""
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                DOMAIN_TYPEHASH,
                keccak(text=DOMAIN_NAME),
                keccak(text=DOMAIN_VERSION),
                _uint256(chain_id, "chain_id"),
                to_canonical_address(bank),
            ],
        )
    )


def _reward_hash(reward: Reward) -> bytes:
    return keccak(
        encode(
            ["bytes32", "address", "uint256"],
            [REWARD_TYPEHASH, to_canonical_address(reward.user), _uint256(reward.amount, "amount")],
        )
    )


def struct_hash(batch: RewardBatch) -> bytes:
    """``hashStruct(RewardBatch)``: arrays of structs hash as keccak of the concatenated
    member hashes (EIP-712 ``encodeData``)."""
    rewards_hash = keccak(b"".join(_reward_hash(r) for r in batch.rewards))
    return keccak(
        encode(
            ["bytes32", "bytes32", "address", "bytes32", "bytes32", "uint256"],
            [
                REWARD_BATCH_TYPEHASH,
                _bytes32(batch.campaign_id, "campaign_id"),
                to_canonical_address(batch.token),
                rewards_hash,
                _bytes32(batch.nonce, "nonce"),
                _uint256(batch.deadline, "deadline"),
            ],
        )
    )


def batch_digest(chain_id: int, bank: str, batch: RewardBatch) -> bytes:
    """The 32-byte digest a distributor signs; equals ``ProductBank.hashRewardBatch(...)``."""
    return keccak(b"\x19\x01" + domain_separator(chain_id, bank) + struct_hash(batch))


def reward_batch_digest(  # noqa: PLR0913 (the EIP-712 fields, keyword-only)
    chain_id: int,
    bank: str,
    *,
    campaign_id: bytes,
    token: str,
    rewards: Sequence[Reward],
    nonce: bytes,
    deadline: int,
) -> bytes:
    """:func:`batch_digest` with the batch given field by field."""
    return batch_digest(
        chain_id, bank, RewardBatch(campaign_id, token, tuple(rewards), nonce, deadline)
    )


def sign_reward_batch(  # noqa: PLR0913 (the EIP-712 fields, keyword-only)
    private_key: str | bytes,
    chain_id: int,
    bank: str,
    *,
    campaign_id: bytes,
    token: str,
    rewards: Sequence[Reward],
    nonce: bytes,
    deadline: int,
) -> bytes:
    """The 65-byte ``r || s || v`` signature (v = 27/28, low s) that ``pushRewards`` accepts.

    Deterministic (RFC 6979), so re-signing a retried batch yields the same bytes. The batch
    fields are keyword-only: campaign id and nonce are both bytes32 and must not be swapped."""
    digest = reward_batch_digest(
        chain_id,
        bank,
        campaign_id=campaign_id,
        token=token,
        rewards=rewards,
        nonce=nonce,
        deadline=deadline,
    )
    signed = Account.unsafe_sign_hash(digest, private_key)
    return bytes(signed.signature)


def batch_content(campaign_id: bytes, token: str, rewards: Sequence[Reward]) -> bytes:
    """What a batch pays: ``keccak256(abi.encode(campaign_id, token, rewardsHash))`` with the
    EIP-712 ``rewardsHash`` of the entries in the signed order."""
    rewards_hash = keccak(b"".join(_reward_hash(r) for r in rewards))
    return keccak(
        encode(
            ["bytes32", "address", "bytes32"],
            [_bytes32(campaign_id, "campaign_id"), to_canonical_address(token), rewards_hash],
        )
    )


def batch_nonce(
    chain_id: int,
    bank: str,
    batch_id: int,
    *,
    salt: bytes = bytes(32),
    content: bytes = bytes(32),
) -> bytes:
    """The bytes32 nonce of database batch ``batch_id``:
    ``keccak256(abi.encode(NONCE_TAG, bytes32 salt, uint256 chain_id, address bank,
    uint256 batch_id, bytes32 content))`` with ``NONCE_TAG =
    keccak256("rewardsync.RewardBatch.nonce.v2")``, ``salt`` the database's random
    ``meta.nonce_salt`` and ``content`` :func:`batch_content`.

    A retry of the same batch reuses the nonce, so the bank accepts it at most once. The salt
    keeps a second database (or a reset sequence) from deriving a nonce another database used;
    the content keeps a restored backup from reusing an id's nonce for different rewards (the
    same id with the same rewards is the same payment, which the bank then refuses: paid)."""
    return keccak(
        encode(
            ["bytes32", "bytes32", "uint256", "address", "uint256", "bytes32"],
            [
                NONCE_TAG,
                _bytes32(salt, "salt"),
                _uint256(chain_id, "chain_id"),
                to_canonical_address(bank),
                _uint256(batch_id, "batch_id"),
                _bytes32(content, "content"),
            ],
        )
    )
