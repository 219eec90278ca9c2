"""The reconciler: the database against the chain at a finalized block, every disagreement
recorded in ``discrepancies`` and, on request (``fix``), settled with "the chain wins".

One run picks block B: the node's ``finalized`` block (``finality = "tag"``, when the node has
one) or head - ``max_reorg_depth``, capped at the checkpoint so that nothing above what is
indexed is compared. Every contract view is an ``eth_call`` pinned to B's hash (EIP-1898), and
the database side is computed AT B from the event tables (rows above B left out), so a reorg
above B or blocks indexed after B can never raise a false alarm. Views go out batched: one
Multicall3 ``aggregate3`` of up to MULTICALL_CHUNK views per request when ``multicall3`` is
configured, else one ``eth_call`` each, in JSON-RPC batches.

Kinds (``Finding.kind``):
- ``amount_mismatch``: pending per (token, wallet) or total per token at B differs between the
  contract's view, the fold of the events and ``reward_balances`` taken back to B;
- ``contribution_mismatch``: contributions per (chama, member) at B vs ``getTotalContributed``;
- ``missing_in_db``: a ``RewardsPushed`` at or below B without its ``reward_batches`` row (a
  batch pushed outside the daemon), ``RewardAdded`` credited straight through
  MultiTokenPushPull by a pusher that is no bank, or a confirmed batch whose ``RewardsPushed``
  is on chain but not in our tables (the index is incomplete; the chain judge records the
  same subject when it confirms a batch from the chain);
- ``missing_on_chain``: a batch recorded confirmed (at or below B) whose ``RewardsPushed`` is
  nowhere on chain at or below B;
- ``range_incomplete``: a finalized range whose logs on another endpoint of the chain differ
  from our rows (``indexer.crosscheck``; only with two or more endpoints); the range is then
  fetched again and repaired at once, fix or not (it is the chain's own data);
- ``status_mismatch``: a batch or reward whose status disagrees with the events at or below B
  (failed or pending though its event is final, confirmed at another block, its rewards not
  confirmed, still pending after its deadline passed at a final block, a confirmed reward
  whose batch is not).

Size (``Coverage``). While a chain holds at most ``max_views`` balance keys every run compares
every balance (a full run). Above that a run is incremental: it checks the balances touched
since the last run (the reward events after the stored ``touched_block``, bounded so that the
run asks at most ``max_views`` views; the rest waits for the next run) plus the next
``share`` of the table in key order (a rotating sample whose cursor is kept in
``reconcile_cursor``). Only the keys whose stored balance differs from the contract's get the
full comparison with their events; the run that ends a cycle of the sample also compares each
token's total pending with the sum of ``reward_balances``. A wrong balance row nobody touches
is therefore seen within ``ceil(keys / sample)`` runs, the sample being ``share × keys`` capped
at half of ``max_views`` (20 runs at the default 5 % up to 500,000 keys, 40 at a million):
``indexer_reconcile_coverage_runs`` and ``indexer_reconcile_drift_window_seconds`` (that many
runs times ``reconcile_interval``) say it for the chain's current size.

A discrepancy is one row per (chain, kind, subject); a later run updates it while it holds and
closes it (``cleared``) once it no longer does. ``fix`` acts, then checks again at the same B:
what the second look no longer finds is closed with the action taken (``fixed: ...``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
import structlog
from eth_hash.auto import keccak

from indexer import detectors, metrics
from indexer.config import ChainSettings
from indexer.crosscheck import CrossChecker, parse_subject
from indexer.db import Q
from indexer.fixes import Finding, Fixer, RefetchRange
from indexer.rpc import RpcClient
from indexer.types import BlockHeader
from indexer.watch import Watchlist

log = structlog.get_logger()

KINDS: Final = (
    "amount_mismatch",
    "contribution_mismatch",
    "missing_in_db",
    "missing_on_chain",
    "nonce_collision",
    "range_incomplete",
    "status_mismatch",
)
LOCK_NAMESPACE: Final = 0x7263  # "rc": high bits of the per-chain reconciler lock
# Views per Multicall3 ``aggregate3``, sized by gas and by bytes: an eth_call gets the node's
# RPC gas cap (geth 50M, many providers 25M+) and a getPendingAmount costs under 10,000 gas
# cold (two SLOADs and the call), so 1,000 views stay under 10M; each view adds ~256 bytes of
# calldata, ~0.5 MB of JSON per call. Nodes cap a request's body (anvil took a 1 MB batch and
# refused a 3 MB one with -32600 "Invalid request"; geth's limit is 5 MB), so each aggregate3
# goes in a request of its own, MULTICALL_PARALLEL at a time.
MULTICALL_GAS: Final = 10_000_000
VIEW_GAS: Final = 10_000
MULTICALL_CHUNK: Final = MULTICALL_GAS // VIEW_GAS
MULTICALL_PARALLEL: Final = 4
_GET_PENDING: Final = keccak(b"getPendingAmount(address,address)")[:4]
_GET_TOTAL_PENDING: Final = keccak(b"getTotalPending(address)")[:4]
_GET_CONTRIBUTED: Final = keccak(b"getTotalContributed(uint256,address)")[:4]
_AGGREGATE3: Final = keccak(b"aggregate3((address,bool,bytes)[])")[:4]
_REWARDS_PUSHED: Final = (
    "0x" + keccak(b"RewardsPushed(bytes32,address,bytes32,uint256,uint256)").hex()
)


@dataclass(frozen=True, slots=True)
class Coverage:
    """How much of a large chain one run checks (see the module docstring)."""

    share: float = 0.05  # of the balance keys, per run, in the rotating sample
    max_views: int = 50_000  # at most this many balance views per run; also the full-run size


Key = tuple[str, str, str]  # (contract, token, wallet) of reward_balances


@dataclass(frozen=True, slots=True)
class BalancePlan:
    """Which balances one run compares: every one (``full``), or the touched and sampled
    ``keys``, and where the cursor goes once the run is recorded."""

    full: bool
    keys: frozenset[Key] = frozenset()
    touched: int = 0
    since: int = -1  # reward events after this block and up to ``upto`` are looked at
    upto: int = -1
    cursor: tuple[str, str, str] = ("", "", "")  # (wallet, contract, token) to go on after
    ends_cycle: bool = False  # the sample wrapped: compare the totals too
    coverage_runs: int = 1

    def covers(self, subject: str) -> bool:
        """Whether this run looked at ``subject`` (an open discrepancy it did not look at
        stays open: an incremental run cannot say it cleared). Direct credits are looked
        for in new blocks only, and final blocks never lose one: they stay open until fixed
        (acknowledged) or a full run no longer finds them."""
        if self.full:
            return True
        kind, _, rest = subject.partition(":")
        if kind == "pending":
            return tuple(rest.split(":")) in self.keys
        if kind == "total_pending":
            return self.ends_cycle
        return kind != "direct"


@dataclass(slots=True)
class Report:
    """What one run compared and found (``as_dict`` is the ``--json`` output)."""

    chain: str
    block: int | None = None
    block_hash: str | None = None
    checked: dict[str, int] = field(default_factory=dict)
    found: list[Finding] = field(default_factory=list)
    fixed: dict[str, str] = field(default_factory=dict)  # subject -> resolution
    remaining: list[Finding] = field(default_factory=list)
    opened: int = 0
    cleared: int = 0
    elapsed_s: float = 0.0

    @property
    def consistent(self) -> bool:
        return not self.found

    def as_dict(self) -> dict[str, Any]:
        def row(f: Finding) -> dict[str, str]:
            return {
                "kind": f.kind,
                "subject": f.subject,
                "expected": f.expected,
                "actual": f.actual,
            }

        return {
            "chain": self.chain,
            "block": self.block,
            "block_hash": self.block_hash,
            "consistent": self.consistent,
            "checked": self.checked,
            "found": [row(f) for f in self.found],
            "fixed": self.fixed,
            "remaining": [row(f) for f in self.remaining],
            "opened": self.opened,
            "cleared": self.cleared,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def _contracts_with(chain: ChainSettings, function: str) -> list[str]:
    """Addresses of the configured contracts whose ABI has view ``function``."""
    return sorted(
        c.address
        for c in chain.contracts
        if c.address is not None
        and any(e.get("type") == "function" and e.get("name") == function for e in c.abi)
    )


class Reconciler:
    """Compares one chain's database with its contracts' views at a finalized block."""

    def __init__(  # noqa: PLR0913 (the chain's parts, then keyword-only knobs)
        self,
        pool: asyncpg.Pool,
        chain: ChainSettings,
        rpc: RpcClient,
        watch: Watchlist,
        *,
        coverage: Coverage | None = None,
        interval_s: float = 600.0,
    ) -> None:
        self.pool = pool
        self.coverage = coverage or Coverage()
        self.interval_s = interval_s
        self.chain = chain
        self.rpc = rpc
        self.watch = watch
        self.lock_key = (LOCK_NAMESPACE << 48) | (chain.chain_id & 0xFFFF_FFFF_FFFF)
        self.crosscheck = CrossChecker(chain)
        self.fixer = Fixer(
            pool, chain, rpc, watch, lock_key=self.lock_key, start_block=self._start_block()
        )
        self.pushpull = _contracts_with(chain, "getPendingAmount")
        self.chamas = _contracts_with(chain, "getTotalContributed")

    async def close(self) -> None:
        """Close the witness clients of the cross-check."""
        await self.crosscheck.close()

    # ---- the run ------------------------------------------------------------------------

    async def run_once(self, *, fix: bool = False) -> Report:
        """Compare at B, record the findings, optionally fix and look again; never raises for
        a finding (only RPC and database errors propagate, and then nothing is recorded)."""
        started = time.monotonic()
        report = Report(self.chain.name)
        header = await self.pick_block()
        if header is not None:
            report.block, report.block_hash = header.number, header.hash
            plan = await self.plan(header.number)
            report.found = await self.detect(header, report.checked, plan)
            ranges = await self._cross_check(header, report.checked)
            report.found += ranges
            report.opened, first_pass = await self._record(report.found, header.number, {}, plan)
            closed = len(first_pass)
            report.remaining = report.found
            refetched = await self.fixer.refetch_ranges(ranges)
            if fix and report.found:
                actions = await self.fixer.fix(report.found, header)
                actions.update(refetched)
                report.remaining = await self.detect(header, {}, plan)
                report.remaining += await self._cross_check(header, {}, only=ranges)
                _, fixed = await self._record(report.remaining, header.number, actions, plan)
                left = {(f.kind, f.subject) for f in report.remaining}
                report.fixed = {
                    f.subject: actions[f.subject]
                    for f in report.found
                    if (f.kind, f.subject) not in left and f.subject in actions
                }
                closed += len(fixed)
            report.cleared = closed
            await self._advance(plan)
        report.elapsed_s = time.monotonic() - started
        await self._observe(report)
        log.info(
            "reconciled",
            chain=self.chain.name,
            block=report.block,
            found=len(report.found),
            fixed=len(report.fixed),
            remaining=len(report.remaining),
            checked=report.checked,
            elapsed_s=round(report.elapsed_s, 3),
        )
        return report

    async def pick_block(self) -> BlockHeader | None:
        """The finalized block, capped at the checkpoint; None when nothing is indexed yet."""
        async with self.pool.acquire() as con:
            row = await con.fetchrow(Q["load_checkpoint"], self.chain.chain_id)
        if row is None or row["block_number"] < 0:
            return None
        finalized: int | None = None
        if self.chain.finality == "tag":
            tagged = await self.rpc.header("finalized")
            finalized = tagged.number if tagged is not None else None
        if finalized is None:
            finalized = await self.rpc.block_number() - self.chain.max_reorg_depth
        number = min(finalized, int(row["block_number"]))
        if number < int(row["start_block"]):
            return None
        return await self.rpc.header(number)

    async def plan(self, b: int) -> BalancePlan:
        """The balances this run compares at B: all of them while the chain holds at most
        ``max_views`` keys, else the keys touched since the last run and the next sample."""
        cid, cov = self.chain.chain_id, self.coverage
        async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read"):
            estimate = await con.fetchval(Q["rc_balance_keys_estimate"])
            # the planner's estimate decides for large tables; near the limit a count bounded
            # by max_views + 1 rows does
            if (
                estimate <= 2 * cov.max_views
                and await con.fetchval(Q["rc_balance_keys_over"], cid, self.pushpull, cov.max_views)
                <= cov.max_views
            ):
                return BalancePlan(full=True)
            size = max(estimate, cov.max_views + 1)
            sample_n = max(1, min(math.ceil(cov.share * size), cov.max_views // 2))
            cur = await con.fetchrow(Q["rc_cursor_load"], cid)
            since = b if cur is None else min(int(cur["touched_block"]), b)
            after = ("", "", "") if cur is None else (cur["wallet"], cur["contract"], cur["token"])
            upto = await con.fetchval(Q["rc_touched_upto"], cid, since, b, cov.max_views - sample_n)
            touched = {
                (r["contract"], r["token"], r["wallet"])
                for r in await con.fetch(Q["rc_touched_keys"], cid, since, upto, self.pushpull)
            }
            sample = await con.fetch(Q["rc_sample_keys"], cid, *after, self.pushpull, sample_n)
        ends_cycle = len(sample) < sample_n
        last = sample[-1] if sample and not ends_cycle else None
        keys = touched | {(r["contract"], r["token"], r["wallet"]) for r in sample}
        return BalancePlan(
            full=False,
            keys=frozenset(keys),
            touched=len(touched),
            since=since,
            upto=int(upto),
            cursor=("", "", "")
            if last is None
            else (last["wallet"], last["contract"], last["token"]),
            ends_cycle=ends_cycle,
            coverage_runs=math.ceil(size / sample_n),
        )

    async def _advance(self, plan: BalancePlan) -> None:
        """Store where the next incremental run goes on (after this run was recorded)."""
        name = self.chain.name
        metrics.RECONCILE_COVERAGE_RUNS.labels(name).set(plan.coverage_runs)
        metrics.RECONCILE_DRIFT_WINDOW.labels(name).set(plan.coverage_runs * self.interval_s)
        if plan.full:
            return
        async with self.pool.acquire() as con:
            await con.execute(Q["rc_cursor_save"], self.chain.chain_id, plan.upto, *plan.cursor)

    async def detect(
        self, header: BlockHeader, checked: dict[str, int], plan: BalancePlan | None = None
    ) -> list[Finding]:
        """Every disagreement at block ``header`` (reads only); ``plan`` (default: every
        balance) says which balances."""
        b = header.number
        plan = plan or BalancePlan(full=True)
        cid = self.chain.chain_id
        keys = [list(col) for col in zip(*sorted(plan.keys), strict=True)] or [[], [], []]
        async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read"):
            cp = await con.fetchrow(Q["load_checkpoint"], self.chain.chain_id)
            assert cp is not None  # pick_block found it
            if plan.full:
                balances = await con.fetch(Q["rc_balances_at"], cid, b, self.pushpull)
            else:
                balances = await con.fetch(Q["rc_stored_at"], cid, *keys, b)
            totals = (
                await con.fetch(Q["rc_totals_stored_at"], cid, self.pushpull, b)
                if plan.ends_cycle
                else []
            )
            contribs = await con.fetch(
                Q["rc_contributions_at"], self.chain.chain_id, b, self.chamas
            )
            batches = await con.fetch(Q["rc_batch_state"], self.chain.chain_id, b)
            pushes = await con.fetch(Q["rc_unrecorded_pushes"], self.chain.chain_id, b)
            direct = (
                await con.fetch(Q["rc_direct_rewards"], cid, b)
                if plan.full
                else await con.fetch(Q["rc_direct_rewards_in"], cid, plan.since, plan.upto)
            )
            astray = await con.fetch(Q["rc_confirmed_rewards_astray"], self.chain.chain_id)
            acknowledged = {
                r["subject"] for r in await con.fetch(Q["rc_acknowledged"], self.chain.chain_id)
            }
            final = min(b, cp["finalized_block"] if cp["finalized_block"] is not None else -1)
            final_time = await con.fetchval(Q["rc_stored_time_at"], self.chain.chain_id, final)
        cid = self.chain.chain_id
        calls = [
            (
                r["contract"],
                _GET_PENDING + _encode(["address", "address"], [r["token"], r["wallet"]]),
            )
            for r in balances
        ]
        pairs = (
            detectors.balance_keys(balances)
            if plan.full
            else [(r["contract"], r["token"]) for r in totals]
        )
        calls += [(c, _GET_TOTAL_PENDING + _encode(["address"], [t])) for c, t in pairs]
        calls += [
            (
                r["contract"],
                _GET_CONTRIBUTED
                + _encode(["uint256", "address"], [int(r["chama_id"]), r["member"]]),
            )
            for r in contribs
        ]
        values = await self.views(calls, header.hash)
        n, k = len(balances), len(pairs)
        if plan.full:
            found = detectors.balances(balances, values[:n], values[n : n + k])
        else:
            found = await self._sampled(b, balances, values[:n])
            found += detectors.totals(totals, values[n : n + k])
        found += detectors.contributions(contribs, values[n + k :])
        confirmed_below = cp["block_number"] - self.chain.confirmations
        by_status, ask_chain = detectors.batches(batches, cid, b, confirmed_below, final_time)
        found += by_status
        for r in ask_chain:
            topics = [_REWARDS_PUSHED, None, None, r["nonce"]]
            logs = await self.rpc.find_logs(r["bank"], topics, self._start_block(), b)
            found.append(detectors.unseen_push(r, cid, b, logs))
        found += detectors.pushes(pushes, direct, acknowledged, cid)
        found += detectors.rewards_astray(astray, cid)
        if not plan.full:
            checked.update(balances_touched=plan.touched)
        checked.update(
            balances=n,
            total_pending=k,
            contributions=len(contribs),
            batches=len(batches),
            pushes_unrecorded=len(pushes),
            rewards_confirmed_astray=len(astray),
        )
        return found

    async def _sampled(
        self, b: int, stored: Sequence[Any], pending: Sequence[int]
    ) -> list[Finding]:
        """Findings of an incremental run's balances: the keys whose stored balance at B
        differs from the chain's get the full comparison with their events (a scan of the
        event tables, paid only when something is wrong)."""
        doubt = detectors.in_doubt(stored, pending)
        if not doubt:
            return []
        value = {
            (r["contract"], r["token"], r["wallet"]): v
            for r, v in zip(stored, pending, strict=True)
        }
        cols = [list(col) for col in zip(*doubt, strict=True)]
        async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read"):
            rows = await con.fetch(Q["rc_balances_at_keys"], self.chain.chain_id, b, *cols)
        chain_values = [value[(r["contract"], r["token"], r["wallet"])] for r in rows]
        return detectors.balances(rows, chain_values, None)

    async def _cross_check(
        self, header: BlockHeader, checked: dict[str, int], only: Sequence[Finding] | None = None
    ) -> list[Finding]:
        """``range_incomplete`` findings (see ``indexer.crosscheck``) for final ranges at or
        below B: the sample plus the ranges still open, or just those of ``only``."""
        if not self.crosscheck.enabled:
            return []
        async with self.pool.acquire() as con:
            cp = await con.fetchrow(Q["load_checkpoint"], self.chain.chain_id)
            open_rows = await con.fetch(Q["rc_open"], self.chain.chain_id)
        recorded = cp["finalized_block"] if cp is not None else None
        final = min(header.number, -1 if recorded is None else int(recorded))
        if only is not None:
            wanted = [r for f in only if (r := parse_subject(f.subject)) is not None]
        else:
            still_open = [
                r
                for row in open_rows
                if row["kind"] == "range_incomplete"
                and (r := parse_subject(row["subject"])) is not None
            ]
            wanted = self.crosscheck.ranges(self._start_block(), final, still_open)
        await self.watch.ensure_loaded()
        diffs = await self.crosscheck.check(
            self.pool, wanted, addresses=self.watch.addresses(), primary=self.rpc.endpoint
        )
        checked["ranges_cross_checked"] = len(wanted)
        return [
            Finding("range_incomplete", d.subject, *d.describe(), RefetchRange(d.first, d.last))
            for d in diffs
        ]

    def _start_block(self) -> int:
        return min((c.start_block for c in self.chain.contracts), default=0)

    # ---- contract views -----------------------------------------------------------------

    async def views(self, calls: Sequence[tuple[str, bytes]], block_hash: str) -> list[int]:
        """The uint256 results of view ``calls`` (target, calldata) at ``block_hash``."""
        if not calls:
            return []
        pin = {"blockHash": block_hash, "requireCanonical": True}
        if self.chain.multicall3 is None:
            raw = await self.rpc.batch(
                [("eth_call", [{"to": to, "data": "0x" + data.hex()}, pin]) for to, data in calls]
            )
            return [_uint(_hex_bytes(x)) for x in raw]
        chunks = [calls[i : i + MULTICALL_CHUNK] for i in range(0, len(calls), MULTICALL_CHUNK)]
        requests = []
        for chunk in chunks:
            data = _AGGREGATE3 + _encode(
                ["(address,bool,bytes)[]"], [[(to, False, cd) for to, cd in chunk]]
            )
            requests.append(
                ("eth_call", [{"to": self.chain.multicall3, "data": "0x" + data.hex()}, pin])
            )
        gate = asyncio.Semaphore(MULTICALL_PARALLEL)

        async def one(method: str, params: list[Any]) -> Any:
            async with gate:
                return await self.rpc.request(method, params)

        out: list[int] = []
        for answer in await asyncio.gather(*(one(m, p) for m, p in requests)):
            (results,) = _decode(["(bool,bytes)[]"], _hex_bytes(answer))
            out.extend(_uint(ret) for _ok, ret in results)
        return out

    # ---- recording ----------------------------------------------------------------------

    async def _record(
        self,
        findings: Sequence[Finding],
        block: int,
        actions: dict[str, str],
        plan: BalancePlan | None = None,
    ) -> tuple[int, dict[str, str]]:
        """Open, update and close rows so that the open ones are exactly ``findings`` among
        what ``plan`` covers (rows it did not look at stay as they are, unless an action
        settled them); rows closed are resolved with their action (``actions``) or
        ``cleared``. Returns how many rows were opened and the resolutions written."""
        resolved: dict[str, str] = {}
        opened = 0
        current = {(f.kind, f.subject): f for f in findings}
        async with self.pool.acquire() as con, con.transaction():
            await con.execute(Q["rc_lock"], self.lock_key)
            open_rows = await con.fetch(Q["rc_open"], self.chain.chain_id)
            seen: set[tuple[str, str]] = set()
            for row in open_rows:
                key = (row["kind"], row["subject"])
                f = current.get(key)
                out_of_sight = plan is not None and not plan.covers(row["subject"])
                if f is None and out_of_sight and row["subject"] not in actions:
                    continue
                if f is None or key in seen:
                    resolution = actions.get(row["subject"], "cleared")
                    await con.execute(Q["rc_resolve"], row["id"], resolution)
                    resolved[row["subject"]] = resolution
                    continue
                seen.add(key)
                if (row["expected"], row["actual"]) != (f.expected, f.actual):
                    await con.execute(Q["rc_update"], row["id"], f.expected, f.actual, block)
            for key, f in current.items():
                if key not in seen:
                    await con.execute(
                        Q["rc_insert"],
                        self.chain.chain_id,
                        f.kind,
                        f.subject,
                        f.expected,
                        f.actual,
                        block,
                    )
                    metrics.RECONCILE_MISMATCHES.labels(self.chain.name, f.kind).inc()
                    opened += 1
        return opened, resolved

    async def _observe(self, report: Report) -> None:
        name = self.chain.name
        metrics.RECONCILE_LAST_RUN.labels(name).set(time.time())
        metrics.RECONCILE_SECONDS.labels(name).observe(report.elapsed_s)
        for kind, n in report.checked.items():
            metrics.RECONCILE_ITEMS.labels(name, kind).inc(n)
        async with self.pool.acquire() as con:
            counts = {
                r["kind"]: r["n"]
                for r in await con.fetch(Q["rc_open_by_kind"], self.chain.chain_id)
            }
        for kind in sorted(set(KINDS) | set(counts)):
            metrics.DISCREPANCIES_OPEN.labels(name, kind).set(counts.get(kind, 0))


def _hex_bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError("eth_call result is not 0x hex")
    return bytes.fromhex(value[2:])


def _uint(data: bytes) -> int:
    (value,) = _decode(["uint256"], data)
    return int(value)


# eth_abi (and the eth_utils it loads) costs ~0.2 s to import: only a reconcile run pays it.
def _encode(types: Sequence[str], args: Sequence[Any]) -> bytes:
    """ABI-encode ``args`` (eth_abi's ``encode``)."""
    from eth_abi.abi import encode as abi_encode  # noqa: PLC0415 (see above)

    return abi_encode(types, args)


def _decode(types: Sequence[str], data: bytes) -> tuple[Any, ...]:
    """ABI-decode ``data`` (eth_abi's ``decode``)."""
    from eth_abi.abi import decode as abi_decode  # noqa: PLC0415 (see above)

    return abi_decode(types, data)
