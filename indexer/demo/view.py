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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

import asyncpg
from prometheus_client import REGISTRY
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from indexer import db, metrics

if TYPE_CHECKING:
    from indexer.demo.app import Demo


def describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


async def view(demo: Demo, pool: asyncpg.Pool, down: asyncio.Event) -> None:
    """On a TTY a rich live view redrawn every 0.5 s in place (what the terminal showed
    before stays above it); otherwise one JSON line every 3 s."""
    if not demo.opts.tty:

        def json_line(snap: dict[str, Any]) -> None:
            line(demo.out, json.dumps({"kind": "progress", **snap}, default=str))

        await _every(3.0, demo, pool, down, json_line)
        return
    console = Console(file=demo.out, highlight=False)
    with Live(console=console, auto_refresh=False, redirect_stdout=False) as live:

        def redraw(snap: dict[str, Any]) -> None:
            live.update(panel(demo, snap), refresh=True)

        await _every(0.5, demo, pool, down, redraw)


async def _every(
    period: float,
    demo: Demo,
    pool: asyncpg.Pool,
    down: asyncio.Event,
    show: Callable[[dict[str, Any]], None],
) -> None:
    rate = _Rate()
    while not down.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(down.wait(), period)
        try:
            snap = await snapshot(demo, pool, rate)
        except _DB_ERRORS as exc:
            snap = {"error": describe(exc)}
        show(snap)


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


def panel(demo: Demo, snap: dict[str, Any]) -> RenderableType:
    """The live view: a table of the chains, then rewards, discrepancies and traffic."""
    until = f" of {demo.opts.duration:g}" if demo.opts.duration else ""
    title = (
        f"rewardsync demo  {snap.get('t', 0):.0f} s{until}   Ctrl-C stops   "
        f"metrics {demo.metrics_url}"
    )
    if "error" in snap:
        body: RenderableType = Text(f"status unavailable: {snap['error']}", style="yellow")
        return Panel(body, title=title, title_align="left", expand=False)
    chains = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("chain", "head", "checkpoint", "lag", "finalized", "events/s", "reorgs"):
        chains.add_column(name, justify="left" if name == "chain" else "right")
    chains.add_column("last reorg")
    for c in snap["chains"]:
        r = c["last_reorg"]
        last = "-" if r is None else (
            f"depth {r['depth']} to #{r['common_ancestor']}, {r['ago_s']:.0f} s ago"
        )  # fmt: skip
        chains.add_row(
            c["name"], _s(c["head"]), _s(c["checkpoint"]), _s(c["lag"]), _s(c["finalized"]),
            str(c["events_per_s"]), str(c["reorgs"]), last,
        )  # fmt: skip
    rewards = "  ".join(f"{k} {v}" for k, v in sorted(snap["rewards"].items())) or "none yet"
    t = snap["traffic"]
    open_ = snap["open_discrepancies"]
    facts = Text.assemble(
        ("rewards        ", "bold"), rewards, "\n",
        ("discrepancies  ", "bold"), (f"{open_} open", "red" if open_ else "green"), "\n",
        ("traffic        ", "bold"),
        f"{t['actions']} actions, {t['rewards_queued']} rewards queued, "
        f"{t['reorgs_made']} reorgs made, {t['errors']} refused",
    )  # fmt: skip
    return Panel(Group(chains, facts), title=title, title_align="left", expand=False)


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
