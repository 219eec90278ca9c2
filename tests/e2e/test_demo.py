"""`indexer demo` as a new user runs it (issue 9): one subprocess, its own anvil and embedded
PostgreSQL under ``./.rewardsync``, and a final JSON summary that the assertions read.

Every typed event table of the catalogue is expected to fill: the demo's traffic makes banks (so
``product_banks`` and ``pusher_changes`` through PusherAuthorized), deposits, withdrawals,
budgets, deactivations, rewards pushed by the daemon's pusher (``rewards_pushed``,
``reward_added``), claims, and two-member chamas run to completion."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from indexer.demo.app import EVENT_TABLES
from tests.e2e.test_backfill_progress import Terminal
from tests.harness import INDEXER_BIN
from tests.procs import ROOT

pytestmark = [pytest.mark.anvil, pytest.mark.pg, pytest.mark.timeout(180)]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_demo_runs_everything_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """A 30 s demo indexes every event table, rolls back a reorg, confirms pushed rewards,
    ends with a clean reconcile and verify, exits 0 and leaves no anvil or PostgreSQL."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("INDEXER_") and k != "DATABASE_URL"
    }
    env["PYTHONPATH"] = str(ROOT)
    started = time.monotonic()
    proc = subprocess.run(
        [INDEXER_BIN, "demo", "--duration", "30", "--no-tty", "--keep", "--seed", "7"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    log = tmp_path / ".rewardsync" / "demo.log"
    tail = log.read_text()[-3000:] if log.exists() else ""
    detail = f"stderr: {proc.stderr[-2000:]}\nlog: {tail}"
    lines = _lines(proc.stdout)
    pids = [e["pid"] for e in lines if e["kind"] in ("anvil", "postgres")]
    summary = next((e for e in lines if e["kind"] == "summary"), None)
    kept = (summary or {}).get("kept", {}).get("datadir")
    try:
        assert proc.returncode == 0, detail
        assert summary is not None, proc.stdout[-2000:]
        assert len(pids) == 2, lines[:3]
        assert time.monotonic() - started < 120

        empty = [t for t in EVENT_TABLES if not summary["events"][t]]
        assert not empty, f"no rows in {empty}: {summary['events']}"
        assert summary["quarantine"] == 0
        assert summary["reorgs"]["detected"] >= 1, summary["reorgs"]
        rewards = summary["rewards"]
        assert rewards.get("confirmed", 0) > 0, rewards
        assert "failed" not in rewards, rewards
        assert sum(rewards.values()) == summary["traffic"]["rewards_queued"]
        [report] = summary["reconcile"]
        assert report["consistent"], report["found"]
        assert report["checked"]["batches"] > 0
        assert summary["verify"]["clean"], summary["verify"]
        assert summary["open_discrepancies"] == 0

        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)], pids
        datadir = Path(summary["kept"]["datadir"])
        assert (datadir / "PG_VERSION").exists()
        assert not (datadir / "postmaster.pid").exists()  # kept, and stopped
    finally:
        if kept:  # outside tmp_path when run as root (postgres cannot enter pytest's tmp)
            shutil.rmtree(Path(kept).parent, ignore_errors=True)


def test_demo_on_a_terminal_draws_its_live_view_in_place(tmp_path: Path) -> None:
    """On a (pseudo-)terminal the demo draws its rich live view (a chains table with head,
    checkpoint and events/s, rewards, discrepancies, traffic) in place, without clearing the
    screen, then prints the plain summary and exits 0."""
    term = Terminal("demo", "--duration", "8", "--seed", "3", cwd=tmp_path)
    try:
        code = term.finish(timeout=150)
    finally:
        term.kill()
    text = term.text()
    assert code == 0, text[-3000:]
    assert b"\x1b[2J" not in term.raw  # no more raw screen clears
    views = re.findall(r"rewardsync demo\s+(\d+) s of 8", text)
    assert len(views) >= 3, text[-3000:]
    header = re.search(r"chain\s+head\s+checkpoint\s+lag\s+finalized\s+events/s\s+reorgs", text)
    assert header, text[-3000:]
    rows = re.findall(r"local\s+(\d+)\s+(\d+)\s+\d+\s+\d+\s+([\d.]+)\s+\d+", text)
    assert rows, text[-3000:]
    assert max(int(checkpoint) for _, checkpoint, _ in rows) > 0
    for label in ("rewards", "discrepancies", "traffic"):
        assert re.search(rf"│\s*{label}\s", text), label
    assert "demo ended after" in text
    assert text.index("demo ended after") > text.rindex("rewardsync demo")
