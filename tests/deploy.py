"""Deploy and drive the contracts on a test node (anvil) with sync web3.py.

The one implementation lives in ``indexer.demo.contracts`` and ``indexer.demo.traffic``
(``indexer demo`` needs them without the tests folder); this module re-exports them under the
names the tests use. Roles: admin = ``ANVIL_KEYS[0]``, distributor = ``ANVIL_KEYS[1]``.
"""

from __future__ import annotations

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from indexer.demo.contracts import (
    ABIS_DIR,
    ADMIN_KEY,
    DEFAULT_DEADLINE_S,
    DISTRIBUTOR_KEY,
    DISTRIBUTOR_ROLE,
    MAX_FEE_WEI,
    PUSHER_MANAGER_ROLE,
    UNCAPPED,
    ZERO_ADDRESS,
    Deployment,
    RevertError,
    SignedBatch,
    TxFailed,
    address_of,
    allocate_budget,
    at,
    chain_id,
    claim,
    connect,
    contribute,
    create_bank,
    create_chama,
    decode_revert,
    deploy,
    deploy_all,
    fund_bank,
    join_chama,
    load_artifact,
    mint,
    process_payout,
    product_id,
    push_signed_batch,
    revert_data,
    revert_error,
    send,
    sign_batch,
)
from indexer.demo.traffic import TRAFFIC_DEADLINE, generate_traffic

__all__ = [
    "ABIS_DIR",
    "ADMIN_KEY",
    "DEFAULT_DEADLINE_S",
    "DISTRIBUTOR_KEY",
    "DISTRIBUTOR_ROLE",
    "MAX_FEE_WEI",
    "PUSHER_MANAGER_ROLE",
    "TRAFFIC_DEADLINE",
    "UNCAPPED",
    "ZERO_ADDRESS",
    "Deployment",
    "RevertError",
    "SignedBatch",
    "TxFailed",
    "address_of",
    "allocate_budget",
    "at",
    "chain_id",
    "claim",
    "connect",
    "contribute",
    "create_bank",
    "create_chama",
    "decode_revert",
    "deploy",
    "deploy_all",
    "fund_bank",
    "generate_traffic",
    "join_chama",
    "keccak",
    "load_artifact",
    "mint",
    "process_payout",
    "product_id",
    "push_signed_batch",
    "revert_data",
    "revert_error",
    "send",
    "sign_batch",
    "to_checksum_address",
]
