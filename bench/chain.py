"""Build the benchmark chain once and cache it as an anvil state dump in ``bench/.cache/``.

Building 200,000 events takes a minute or two (400 transactions of 500 rewards each), so the
chain is built once per (event count, layout version) and every later run loads the dump with
``anvil --load-state``, which restores blocks, receipts and logs: the indexer sees the same
hashes on every run. The events come from the watched ``MultiTokenPushPull`` (an authorised
pusher calling ``pushRewards``), so the bench measures the path production takes; a few
``RewardClaimed`` and ``ContributionMade`` keep the other tables and the balances honest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from tests import deploy as dp
from tests.procs import ANVIL_KEYS, Anvil

CACHE = Path(__file__).resolve().parent / ".cache"
LAYOUT_VERSION = 1  # bump when the chain's layout changes: old dumps are then ignored
REWARDS_PER_TX = 500
TXS_PER_BLOCK = 4
GAP_BLOCKS = 20  # empty blocks after each event block (~21 blocks per event block)
TAIL_BLOCKS = 100  # empty blocks at the end, so the events lie below the reorg window
GAS_LIMIT = 400_000_000  # anvil block gas limit: four 500-reward pushes (~13 Mgas each)
PUSH_GAS = 15_000_000
USERS = 5_000  # distinct reward receivers (anvil accounts 1..4 among them, so they can claim)
MINTED = 10**40
WATCHED = ("MultiTokenPushPull", "ProductBankFactory", "ChamaSavings")  # as the bench config
ANVIL_ARGS = ("--gas-limit", str(GAS_LIMIT))
_PUSH_SELECTOR = keccak(text="pushRewards(address,(address,uint256)[])")[:4]
_PULL_SELECTOR = keccak(text="pullReward(address)")[:4]


@dataclass(frozen=True, slots=True)
class ChainInfo:
    """What a run needs to know about a cached chain."""

    events: int  # logs of the watched contracts in [start_block, head]
    reward_added: int
    start_block: int
    head: int
    addresses: dict[str, str]  # contract name -> lowercase address
    admin: str  # the authorised pusher (an unlocked anvil account)
    build_s: float
    state: str  # path of the anvil state dump

    @property
    def blocks(self) -> int:
        return self.head - self.start_block + 1


def _addr(key: str) -> str:
    return dp.address_of(key).lower()


def push_calldata(token: str, rewards: list[tuple[str, int]]) -> str:
    """``pushRewards(token, rewards)`` calldata (ABI-encoded once, sent raw)."""
    args = abi_encode(["address", "(address,uint256)[]"], [token, rewards])
    return "0x" + (_PUSH_SELECTOR + args).hex()


def user_address(i: int) -> str:
    """The ``i``-th synthetic reward receiver (anvil accounts 1..4 first: they claim)."""
    if i < 4:
        return _addr(ANVIL_KEYS[1 + i])
    return "0x" + (0x1000 + i).to_bytes(20, "big").hex()


def send_tx(node: Anvil, sender: str, to: str, data: str, gas: int = PUSH_GAS) -> str:
    """eth_sendTransaction from an unlocked anvil account (no signing, no gas estimate)."""
    tx = {"from": sender, "to": to, "data": data, "gas": hex(gas), "maxFeePerGas": hex(10**11)}
    return str(node.rpc("eth_sendTransaction", [tx]))


def _setup(node: Anvil) -> tuple[dict[str, str], int]:
    """Deploy the project's contracts, make the admin a pusher with an approved, minted
    token, and run one chama cycle (ContributionMade); automine is on here."""
    w3 = dp.connect(node.url)
    d = dp.deploy_all(w3)
    admin = dp.address_of(dp.ADMIN_KEY)
    mtpp = d.multi_token_push_pull
    dp.send(w3, mtpp.functions.authorizePusher(admin), dp.ADMIN_KEY)
    dp.mint(d, admin, MINTED)
    dp.send(w3, d.token.functions.approve(mtpp.address, MINTED), dp.ADMIN_KEY)
    members = ANVIL_KEYS[:3]
    amount = 10**18
    chama_id = dp.create_chama(d, members[0], "bench", amount, len(members))
    for key in members[1:]:
        dp.join_chama(d, key, chama_id)
    for _cycle in range(len(members)):
        for key in members:
            dp.contribute(d, key, chama_id, amount=amount)
        dp.process_payout(d, chama_id)
    return d.addresses, d.block_number


def _count_logs(node: Anvil, addresses: list[str], first: int, last: int) -> tuple[int, int]:
    reward_added = "0x" + keccak(text="RewardAdded(address,address,address,uint256)").hex()
    total = added = 0
    step = 500
    for start in range(first, last + 1, step):
        flt = {"fromBlock": hex(start), "toBlock": hex(min(last, start + step - 1))}
        logs = node.rpc("eth_getLogs", [{**flt, "address": addresses}])
        total += len(logs)
        added += sum(1 for lg in logs if lg["topics"][0] == reward_added)
    return total, added


def build(n_events: int, path: Path, meta: Path, wallets: int = USERS) -> ChainInfo:
    """Build a chain of about ``n_events`` watched events paying ``wallets`` distinct wallets
    (round robin) and dump it to ``path``."""
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # --prune-history: no state snapshot per block. Each block still costs anvil time in
    # proportion to the state (its root), so a chain paying 200,000 distinct wallets takes
    # minutes to build once; with per-block snapshots it took far longer.
    node = Anvil.start(*ANVIL_ARGS, "--prune-history", "--dump-state", str(tmp))
    try:
        addresses, start_block = _setup(node)
        admin = _addr(ANVIL_KEYS[0])
        token = addresses["TestToken"]
        mtpp = addresses["MultiTokenPushPull"]
        rng = random.Random(n_events)
        node.rpc("evm_setAutomine", [False])
        n_push = max(1, -(-(n_events - 20) // REWARDS_PER_TX))
        user = 0
        for i in range(n_push):
            rewards = []
            for _ in range(REWARDS_PER_TX):
                rewards.append((user_address(user % wallets), rng.randint(1, 10**18)))
                user += 1
            send_tx(node, admin, mtpp, push_calldata(token, rewards))
            if (i + 1) % TXS_PER_BLOCK == 0 or i + 1 == n_push:
                if (i // TXS_PER_BLOCK) % 10 == 9:  # now and then, claims (RewardClaimed)
                    for key in ANVIL_KEYS[1:5]:
                        data = "0x" + (_PULL_SELECTOR + abi_encode(["address"], [token])).hex()
                        send_tx(node, _addr(key), mtpp, data, gas=200_000)
                node.mine(1)
                node.mine(GAP_BLOCKS)
        for _ in range(TAIL_BLOCKS // 10):  # in pieces: with a large state a block takes seconds
            node.mine(10)
        node.rpc("evm_setAutomine", [True])
        head = node.block_number()
        watched = [addresses[c] for c in WATCHED]
        events, added = _count_logs(node, watched, start_block, head)
    finally:
        stop_dumping(node, timeout=120)
    return record(
        tmp,
        path,
        meta,
        ChainInfo(
            events=events,
            reward_added=added,
            start_block=start_block,
            head=head,
            addresses=addresses,
            admin=admin,
            build_s=round(time.perf_counter() - t0, 1),
            state=str(path),
        ),
    )


def stop_dumping(node: Anvil, timeout: float) -> None:
    """Stop a building anvil gracefully: it writes its ``--dump-state`` file on exit."""
    if node.proc.poll() is None:
        os.killpg(node.proc.pid, signal.SIGTERM)
        node.proc.wait(timeout=timeout)
    node.stop()  # its own HOME goes too


def record(tmp: Path, path: Path, meta: Path, info: ChainInfo) -> ChainInfo:
    """Move the finished dump into place and write its metadata beside it."""
    tmp.replace(path)
    meta.write_text(json.dumps(asdict(info), indent=1))
    return info


def cached_chain(n_events: int, *, wallets: int = USERS, echo: Any = print) -> ChainInfo:
    """The chain of ``n_events`` events paying ``wallets`` distinct wallets, from the cache,
    built first when missing."""
    stem = CACHE / f"chain-v{LAYOUT_VERSION}-{n_events}"
    if wallets != USERS:
        stem = stem.with_name(f"{stem.name}-w{wallets}")
    what = f"the {n_events:,}-event chain, {wallets:,} wallets"
    return from_cache(stem, what, lambda path, meta: build(n_events, path, meta, wallets), echo)


def from_cache(
    stem: Path, what: str, make: Callable[[Path, Path], ChainInfo], echo: Any = print
) -> ChainInfo:
    """The chain cached at ``stem`` (state dump and metadata), made by ``make(path, meta)``
    first when missing."""
    path, meta = stem.with_suffix(".state.json"), stem.with_suffix(".meta.json")
    if path.exists() and meta.exists():
        return ChainInfo(**json.loads(meta.read_text()))
    echo(f"building {what} (once; in {CACHE}) ...")
    info = make(path, meta)
    echo(f"  built in {info.build_s} s: {info.events:,} events over {info.blocks:,} blocks")
    return info


def start_node(info: ChainInfo) -> Anvil:
    """Anvil serving the cached chain."""
    return Anvil.start(*ANVIL_ARGS, "--load-state", info.state)
