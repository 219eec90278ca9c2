"""What the demo shows: the live view (a screen on a TTY, JSON lines otherwise), start-up
facts and the summary at the end.

Read from the in-process daemon's own gauges and the database, never from extra RPC calls, so
the view costs the demo nothing it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any, TextIO

import asyncpg
from prometheus_client import REGISTRY

from indexer import db, metrics

if TYPE_CHECKING:
    from indexer.demo.app import Demo


def describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


async def view(demo: Demo, pool: asyncpg.Pool, down: asyncio.Event) -> None:
    """On a TTY a screen redrawn every 0.5 s; otherwise one JSON line every 3 s."""
    period = 0.5 if demo.opts.tty else 3.0
    rate = _Rate()
    while not down.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(down.wait(), period)
        try:
            snap = await snapshot(demo, pool, rate)
        except _DB_ERRORS as exc:
            snap = {"error": describe(exc)}
        if demo.opts.tty:
            demo.out.write("\x1b[H\x1b[2J" + screen(demo, snap) + "\n")
            demo.out.flush()
        else:
            line(demo.out, json.dumps({"kind": "progress", **snap}, default=str))


# What a status read may fail with while the database is busy or restarting: shown, not fatal.
_DB_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *db.CONNECTION_ERRORS)


class _Rate:
    """Events per second from the in-process ``indexer_events_written_total`` counter."""

    def __init__(self) -> None:
        self.last: tuple[float, float] | None = None

    def __call__(self, total: float) -> float:
        now = time.monotonic()
        last, self.last = self.last, (now, total)
        if last is None or now <= last[0]:
            return 0.0
        return round((total - last[1]) / (now - last[0]), 1)


def gauge(name: str, chain: str) -> int | None:
    value = REGISTRY.get_sample_value(name, {"chain": chain})
    return None if value is None else int(value)


def _events_written(chain: str) -> float:
    return sum(
        s.value
        for fam in metrics.EVENTS_WRITTEN.collect()
        for s in fam.samples
        if s.name.endswith("_total") and s.labels.get("chain") == chain
    )


async def snapshot(demo: Demo, pool: asyncpg.Pool, rate: _Rate) -> dict[str, Any]:
    """``indexer status`` from the daemon's own gauges (no extra RPC) and the database."""
    name, chain_id = demo.settings.chains[0].name, demo.settings.chains[0].chain_id
    async with pool.acquire() as con:
        reorg = await con.fetchrow(db.Q["last_reorg"], chain_id)
        reorgs = await con.fetchval("SELECT count(*) FROM reorgs WHERE chain_id = $1", chain_id)
        rewards = {r["status"]: r["n"] for r in await con.fetch(db.Q["rewards_by_status"])}
        discrepancies = await con.fetchval(db.Q["open_discrepancies"])
    chain = {
        "name": name,
        "head": gauge("indexer_head_block", name),
        "checkpoint": gauge("indexer_checkpoint_block", name),
        "lag": gauge("indexer_lag_blocks", name),
        "finalized": gauge("indexer_finalized_block", name),
        "events_per_s": rate(_events_written(name)),
        "reorgs": reorgs,
        "last_reorg": None
        if reorg is None
        else {
            "depth": reorg["depth"],
            "common_ancestor": reorg["common_ancestor"],
            "ago_s": round(time.time() - reorg["detected_at"].timestamp(), 1),
        },
    }
    return {
        "t": round(time.monotonic() - demo.started, 1),
        "chains": [chain],
        "rewards": rewards,
        "open_discrepancies": discrepancies,
        "traffic": {
            "actions": sum(demo.stats.actions.values()),
            "rewards_queued": demo.stats.rewards_queued,
            "reorgs_made": demo.stats.reorgs_made,
            "errors": demo.stats.errors,
        },
    }


def screen(demo: Demo, snap: dict[str, Any]) -> str:
    until = f" of {demo.opts.duration:g}" if demo.opts.duration else ""
    lines = [
        f"rewardsync demo  {snap.get('t', 0):.0f} s{until}   Ctrl-C stops   "
        f"metrics {demo.metrics_url}",
        "",
    ]
    if "error" in snap:
        return "\n".join([*lines, f"  (status unavailable: {snap['error']})"])
    lines.append(
        f"{'chain':<8}{'head':>8}{'checkpoint':>12}{'lag':>6}{'finalized':>11}"
        f"{'events/s':>10}{'reorgs':>8}  last reorg"
    )
    for c in snap["chains"]:
        r = c["last_reorg"]
        last = "-" if r is None else f"depth {r['depth']} to #{r['common_ancestor']}, "
        last += "" if r is None else f"{r['ago_s']:.0f} s ago"
        lines.append(
            f"{c['name']:<8}{_s(c['head']):>8}{_s(c['checkpoint']):>12}{_s(c['lag']):>6}"
            f"{_s(c['finalized']):>11}{c['events_per_s']:>10}{c['reorgs']:>8}  {last}"
        )
    rewards = "  ".join(f"{k} {v}" for k, v in sorted(snap["rewards"].items())) or "none yet"
    t = snap["traffic"]
    lines += [
        "",
        f"rewards      {rewards}",
        f"discrepancies open: {snap['open_discrepancies']}",
        f"traffic      {t['actions']} actions, {t['rewards_queued']} rewards queued, "
        f"{t['reorgs_made']} reorgs made, {t['errors']} refused",
    ]
    return "\n".join(lines)


def _s(value: object) -> str:
    return "-" if value is None else str(value)


def line(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def say(out: TextIO, tty: bool, what: str, **fields: Any) -> None:
    """A start-up fact: JSON without a TTY (scripts read the pids), a plain line with one."""
    if tty:
        line(out, f"{what}: " + "  ".join(f"{k} {v}" for k, v in fields.items()))
    else:
        line(out, json.dumps({"kind": what, **fields}))


def summary(out: TextIO, tty: bool, result: dict[str, Any]) -> None:
    """The end of the demo: JSON without a TTY, a few plain lines with one."""
    if not tty:
        line(out, json.dumps(result, default=str))
        return
    if "events" not in result:
        line(out, f"demo ended (exit {result['exit_code']})")
        return
    line(out, f"demo ended after {result['seconds']} s at block {result['checkpoint']}")
    line(out, "events: " + ", ".join(f"{t} {n}" for t, n in result["events"].items()))
    r = result["reorgs"]
    line(out, f"reorgs detected and rolled back: {r['detected']} (deepest {r['max_depth']})")
    line(out, "rewards: " + ", ".join(f"{k} {v}" for k, v in sorted(result["rewards"].items())))
    for rc in result["reconcile"]:
        state = "consistent" if rc["consistent"] else f"{len(rc['found'])} discrepancies"
        line(out, f"reconcile {rc['chain']} at block {rc['block']}: {state}")
    v = result["verify"]
    line(out, f"verify {v['from']}..{v['to']}: {'clean' if v['clean'] else 'DIFFERENCES'}")
    pids = f"anvil pid {result.get('anvil_pid')}, postgres pid {result.get('postgres_pid')}"
    line(out, f"stopped ({pids}); exit {result['exit_code']}")
