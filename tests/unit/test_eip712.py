"""indexer.eip712 against eth_account's generic EIP-712 encoder (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer import eip712

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
bytes32 = st.binary(min_size=32, max_size=32)
uint256 = st.integers(min_value=0, max_value=2**256 - 1)
rewards = st.lists(st.builds(eip712.Reward, user=addresses, amount=uint256), min_size=0, max_size=8)
chain_ids = st.integers(min_value=1, max_value=2**64)


def _typed(chain_id: int, bank: str, batch: eip712.RewardBatch) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Reward": [
                {"name": "user", "type": "address"},
                {"name": "amount", "type": "uint256"},
            ],
            "RewardBatch": [
                {"name": "campaignId", "type": "bytes32"},
                {"name": "token", "type": "address"},
                {"name": "rewards", "type": "Reward[]"},
                {"name": "nonce", "type": "bytes32"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "RewardBatch",
        "domain": {
            "name": "ProductBank",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": bank,
        },
        "message": {
            "campaignId": batch.campaign_id,
            "token": batch.token,
            "rewards": [{"user": r.user, "amount": r.amount} for r in batch.rewards],
            "nonce": batch.nonce,
            "deadline": batch.deadline,
        },
    }


@settings(max_examples=60, deadline=None)
@given(chain_ids, addresses, bytes32, addresses, rewards, bytes32, uint256)
def test_digest_matches_eth_account(chain_id, bank, campaign, token, items, nonce, deadline):
    """The hand-made digest equals eth_account's encode_typed_data for random batches."""
    batch = eip712.RewardBatch(campaign, token, tuple(items), nonce, deadline)
    signable = encode_typed_data(full_message=_typed(chain_id, bank, batch))
    assert signable.header == eip712.domain_separator(chain_id, bank)
    assert signable.body == eip712.struct_hash(batch)
    expected = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert eip712.batch_digest(chain_id, bank, batch) == expected


@settings(max_examples=20, deadline=None)
@given(chain_ids, addresses, bytes32, addresses, rewards, bytes32, uint256)
def test_sign_matches_eth_account(chain_id, bank, campaign, token, items, nonce, deadline):
    """sign_reward_batch yields eth_account's sign_typed_data signature, recoverable to the key."""
    batch = eip712.RewardBatch(campaign, token, tuple(items), nonce, deadline)
    sig = eip712.sign_reward_batch(
        KEY,
        chain_id,
        bank,
        campaign_id=campaign,
        token=token,
        rewards=items,
        nonce=nonce,
        deadline=deadline,
    )
    signable = encode_typed_data(full_message=_typed(chain_id, bank, batch))
    assert sig == bytes(Account.sign_message(signable, KEY).signature)
    assert len(sig) == 65
    assert sig[64] in (27, 28)
    assert (
        int.from_bytes(sig[32:64], "big")
        <= 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
    )
    assert Account.recover_message(signable, signature=sig) == Account.from_key(KEY).address


def test_typehashes_match_the_contract_strings():
    """The type hashes are those of the exact type strings in ProductBank.sol."""
    assert keccak(text="Reward(address user,uint256 amount)") == eip712.REWARD_TYPEHASH
    assert (
        keccak(
            text="RewardBatch(bytes32 campaignId,address token,Reward[] rewards,bytes32 nonce,"
            "uint256 deadline)Reward(address user,uint256 amount)"
        )
        == eip712.REWARD_BATCH_TYPEHASH
    )


@given(chain_ids, addresses, st.integers(min_value=0, max_value=2**63 - 1))
def test_batch_nonce_is_deterministic_and_bound(chain_id, bank, batch_id):
    """batch_nonce is a pure bytes32 function of (salt, chain, bank, id, content) that changes
    with each of them."""
    salt, content = b"\x01" * 32, b"\x02" * 32
    nonce = eip712.batch_nonce(chain_id, bank, batch_id, salt=salt, content=content)
    assert len(nonce) == 32
    assert nonce == eip712.batch_nonce(chain_id, bank.lower(), batch_id, salt=salt, content=content)
    assert nonce != eip712.batch_nonce(chain_id, bank, batch_id + 1, salt=salt, content=content)
    assert nonce != eip712.batch_nonce(chain_id + 1, bank, batch_id, salt=salt, content=content)
    assert nonce != eip712.batch_nonce(chain_id, bank, batch_id, salt=b"\x03" * 32, content=content)
    assert nonce != eip712.batch_nonce(chain_id, bank, batch_id, salt=salt, content=b"\x04" * 32)


def test_batch_nonce_formula():
    """batch_nonce follows the documented formula (a golden value guards against drift)."""
    bank = "0x" + "11" * 20
    salt, content = b"\xaa" * 32, b"\xbb" * 32
    expected = keccak(
        eip712.NONCE_TAG
        + salt
        + (31337).to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex("11" * 20)
        + (7).to_bytes(32, "big")
        + content
    )
    assert eip712.batch_nonce(31337, bank, 7, salt=salt, content=content) == expected
    assert keccak(text="rewardsync.RewardBatch.nonce.v2") == eip712.NONCE_TAG


def test_batch_content_depends_on_every_entry_and_its_order():
    """Two batches of the same id are one payment only when they pay the same entries."""
    campaign, token = b"\x05" * 32, "0x" + "33" * 20
    a = eip712.Reward("0x" + "44" * 20, 10)
    b = eip712.Reward("0x" + "55" * 20, 20)
    base = eip712.batch_content(campaign, token, [a, b])
    assert base == eip712.batch_content(campaign, token, [a, b])
    assert base != eip712.batch_content(campaign, token, [b, a])
    assert base != eip712.batch_content(campaign, token, [a, eip712.Reward(b.user, 21)])
    assert base != eip712.batch_content(b"\x06" * 32, token, [a, b])


_BANK = "0x" + "22" * 20


@pytest.mark.parametrize(
    "batch",
    [
        eip712.RewardBatch(b"\x00" * 31, _BANK, (), b"\x00" * 32, 0),
        eip712.RewardBatch(b"\x00" * 32, _BANK, (), b"\x00" * 33, 0),
        eip712.RewardBatch(b"\x00" * 32, _BANK, (), b"\x00" * 32, -1),
        eip712.RewardBatch(b"\x00" * 32, _BANK, (eip712.Reward(_BANK, 2**256),), b"\x00" * 32, 0),
    ],
)
def test_digest_rejects_malformed_values(batch):
    """Wrong-size bytes32 and out-of-range integers raise ValueError instead of mis-hashing."""
    with pytest.raises(ValueError, match=r"32 bytes|uint256"):
        eip712.batch_digest(1, _BANK, batch)
