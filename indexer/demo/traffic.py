"""Seeded, always-valid contract traffic that emits every watched event.

:func:`generate_traffic` is the tests' mix (banks, deposits, budgets, signed pushes, claims,
chamas); :class:`DemoTraffic` is ``indexer demo``'s: the same minus the direct pushes (in the
demo every reward goes through the database and the daemon's pusher, so the reconciler has
nothing to report) plus withdrawals and campaign deactivations, so that every typed event
table of the catalogue (indexer/catalogue.py) fills.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from web3 import Web3
from web3.contract import Contract

from indexer import eip712
from indexer.demo.contracts import (
    ADMIN_KEY,
    UNCAPPED,
    ZERO_ADDRESS,
    Deployment,
    address_of,
    allocate_budget,
    chain_id,
    claim,
    contribute,
    create_bank,
    create_chama,
    fund_bank,
    join_chama,
    process_payout,
    push_signed_batch,
    send,
)
from indexer.demo.devchain import ANVIL_DEV_KEYS

TRAFFIC_DEADLINE = 2**40  # far future: traffic never waits for a block to learn the time


@dataclass
class _Bank:
    contract: Contract
    balance: int = 0
    budgets: dict[bytes, int | None] = field(default_factory=dict)  # None = uncapped


@dataclass
class _Chama:
    chama_id: int
    amount: int
    members: list[str]
    max_members: int
    cycle: int = 1
    paid: set[str] = field(default_factory=set)


@dataclass
class Traffic:
    """A local model of what is on chain, so that every action is valid without asking.

    It models only what it created itself, so a reorg that drops some of its transactions
    makes it wrong: after a reorg, start a new one."""

    d: Deployment
    rng: random.Random
    users: Sequence[str] = ANVIL_DEV_KEYS  # keys that join chamas, contribute and claim
    banks: list[_Bank] = field(default_factory=list)
    chamas: list[_Chama] = field(default_factory=list)
    pending: Counter[str] = field(default_factory=Counter)
    batches: int = 0

    def create_bank(self) -> None:
        pid = self.rng.randbytes(32)
        while self.d.factory.functions.getBank(pid).call() != ZERO_ADDRESS:
            pid = self.rng.randbytes(32)  # an earlier call with the same seed took it
        self.banks.append(_Bank(create_bank(self.d, pid)))

    def deposit(self, bank: _Bank | None = None) -> None:
        bank = bank or self.rng.choice(self.banks)
        amount = self.rng.randint(10**18, 10**21)
        fund_bank(self.d, bank.contract, amount)
        bank.balance += amount

    def budget(self) -> None:
        bank = self.rng.choice(self.banks)
        cid = self.rng.randbytes(32)
        capped = self.rng.random() >= 0.3
        budget = self.rng.randint(10**18, 10**22) if capped else UNCAPPED
        allocate_budget(self.d, bank.contract, cid, budget)
        bank.budgets[cid] = budget if capped else None

    def push(self) -> None:
        bank = self.rng.choice([b for b in self.banks if b.budgets])
        cid = self.rng.choice(sorted(bank.budgets))
        remaining = bank.budgets[cid]
        cap = bank.balance if remaining is None else min(bank.balance, remaining)
        n = self.rng.randint(1, 5)
        if cap < n:
            self.deposit(bank)
            return
        keys = [self.rng.choice(self.users[2:]) for _ in range(n)]
        items = [(address_of(k), self.rng.randint(1, cap // n)) for k in keys]
        self.batches += 1
        nonce = eip712.batch_nonce(chain_id(self.d.w3), bank.contract.address, self.batches)
        push_signed_batch(self.d, bank.contract, cid, items, nonce=nonce, deadline=TRAFFIC_DEADLINE)
        total = sum(a for _, a in items)
        bank.balance -= total
        if remaining is not None:
            bank.budgets[cid] = remaining - total
        for key, (_, amount) in zip(keys, items, strict=True):
            self.pending[key] += amount

    def claim(self) -> None:
        keys = sorted(k for k, v in self.pending.items() if v > 0)
        if keys:
            key = self.rng.choice(keys)
            claim(self.d, key)
            self.pending[key] = 0

    def chama_create(self) -> None:
        key = self.rng.choice(self.users)
        size = self.rng.randint(2, 3)
        name = self.rng.choice(["Umoja", "Harambee", "Jenga", "Tujenge \U0001f3e0", ""])
        amount = self.rng.randint(1, 100) * 10**18
        self.chamas.append(
            _Chama(create_chama(self.d, key, name, amount, size), amount, [key], size)
        )

    def chama_step(self) -> None:
        c = self.rng.choice(self.chamas)
        if len(c.members) < c.max_members:
            key = self.rng.choice([k for k in self.users if k not in c.members])
            join_chama(self.d, key, c.chama_id)
            c.members.append(key)
        elif len(c.paid) < len(c.members):
            key = self.rng.choice([k for k in c.members if k not in c.paid])
            contribute(self.d, key, c.chama_id, amount=c.amount)
            c.paid.add(key)
        else:
            process_payout(self.d, c.chama_id, self.rng.choice(self.users))
            c.paid.clear()
            c.cycle += 1
            if c.cycle > c.max_members:
                self.chamas.remove(c)

    def options(self) -> list[tuple[str, float]]:
        opts = [("create_bank", 0.3 if self.banks else 5.0), ("chama_create", 0.5)]
        budgeted = any(b.budgets for b in self.banks)
        if self.banks:
            opts += [("deposit", 1.0), ("budget", 1.0 if budgeted else 3.0)]
        if budgeted:
            opts += [("push", 4.0), ("claim", 1.5)]
        if self.chamas:
            opts.append(("chama_step", 4.0))
        return opts


def generate_traffic(
    w3: Web3, deployment: Deployment, rng: random.Random, n_actions: int
) -> Counter[str]:
    """Perform ``n_actions`` seeded actions that emit every watched event: bank creation,
    deposits, budgets, signed pushes, claims, chama create/join/contribute/payout/complete.

    Each call models only what it creates itself (its own banks, campaigns and chamas), so it
    may be called repeatedly on one deployment. Returns how many times each action ran. Equal
    seeds on equal chains give equal transactions."""
    if chain_id(w3) != chain_id(deployment.w3):
        raise ValueError("w3 and deployment are on different chains")
    t = Traffic(deployment, rng)
    done: Counter[str] = Counter()
    for _ in range(n_actions):
        names, weights = zip(*t.options(), strict=True)
        action = rng.choices(names, weights)[0]
        getattr(t, action)()
        done[action] += 1
    return done


# The pusher's sender (ANVIL_DEV_KEYS[4]) is never used by the demo's traffic: two writers of
# one account would race for its nonces.
DEMO_USERS: tuple[str, ...] = ANVIL_DEV_KEYS[:4]


@dataclass
class DemoTraffic(Traffic):
    """The demo's mix: no direct pushes (rewards are queued in the database instead), plus
    withdrawals and campaign deactivations; claims ask the chain what is pending, since the
    daemon's pusher, not this model, pays the rewards."""

    users: Sequence[str] = DEMO_USERS

    def chama_create(self) -> None:
        key = self.rng.choice(self.users)
        amount = self.rng.randint(1, 100) * 10**18
        name = self.rng.choice(["Umoja", "Harambee", "Jenga", "Tujenge \U0001f3e0"])
        chama_id = create_chama(self.d, key, name, amount, 2)
        self.chamas.append(_Chama(chama_id, amount, [key], 2))

    def withdraw(self) -> None:
        bank = self.rng.choice([b for b in self.banks if b.balance > 0])
        amount = self.rng.randint(1, max(bank.balance // 4, 1))
        call = bank.contract.functions.withdraw(self.d.token.address, address_of(ADMIN_KEY), amount)
        send(self.d.w3, call, ADMIN_KEY)
        bank.balance -= amount

    def deactivate(self) -> None:
        bank = self.rng.choice([b for b in self.banks if b.budgets])
        cid = self.rng.choice(sorted(bank.budgets))
        send(self.d.w3, bank.contract.functions.deactivateCampaign(cid), ADMIN_KEY)
        del bank.budgets[cid]

    def claim(self) -> None:
        view = self.d.multi_token_push_pull.functions.getPendingAmount
        keys = list(self.users)
        self.rng.shuffle(keys)
        for key in keys:
            if int(view(self.d.token.address, address_of(key)).call()) > 0:
                claim(self.d, key)
                return

    def options(self) -> list[tuple[str, float]]:
        opts: list[tuple[str, float]] = [("create_bank", 0.3 if self.banks else 5.0)]
        # Mostly one chama at a time, of two members: one completes between two reorgs.
        opts.append(("chama_create", 3.0 if not self.chamas else 0.05))
        opts.append(("claim", 1.5))
        if self.banks:
            opts += [("deposit", 1.0), ("budget", 1.0)]
        if any(b.balance > 0 for b in self.banks):
            opts.append(("withdraw", 0.5))
        if any(b.budgets for b in self.banks):
            opts.append(("deactivate", 0.8))
        if self.chamas:
            opts.append(("chama_step", 6.0))
        return opts

    def step(self) -> str:
        """One seeded action; returns its name."""
        names, weights = zip(*self.options(), strict=True)
        action: str = self.rng.choices(names, weights)[0]
        getattr(self, action)()
        return action
