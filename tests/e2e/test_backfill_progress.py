"""`indexer backfill` on a terminal (a pseudo-terminal here): the live line with blocks/s,
events/s and ETA, logs printed above it, and a clear message while the chain's writer lock
is held by another process (the daemon), which then hands over."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import random
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from indexer.runtime import writer_lock_key
from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.harness import INDEXER_BIN, _env
from tests.procs import ROOT, Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

COLOR = re.compile(r"\x1b\[[0-9;]*m")
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
FRAME = re.compile(
    r"backfill local .*block ([\d,]+) of ([\d,]+)\s+([\d.,]+|-) blocks/s\s+([\d.,]+|-) "
    r"events/s\s+(ETA [\d:-]+|done)"
)


class Terminal:
    """`indexer ARGS` with stdin, stdout and stderr on a 200-column pseudo-terminal."""

    def __init__(self, *args: str, cwd: Path = ROOT) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(
            [INDEXER_BIN, *args],
            stdin=slave, stdout=slave, stderr=slave, cwd=cwd, start_new_session=True,
            env=_env({"TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50"}),
        )  # fmt: skip
        os.close(slave)
        self.master = master
        self.raw = b""

    def read_until(self, pattern: str, timeout: float) -> bool:
        """Read output until ``pattern`` shows (True) or the process ends (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()):
                return True
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    chunk = b""
                if not chunk:
                    return bool(re.search(pattern, self.text()))
                self.raw += chunk
        return bool(re.search(pattern, self.text()))

    def finish(self, timeout: float = 120) -> int:
        self.read_until(r"(?!x)x", timeout)  # to the end of the output
        code = self.proc.wait(timeout=10)
        os.close(self.master)
        return code

    def text(self) -> str:
        """The output with colours dropped and cursor moves as line breaks: one frame a line."""
        return CONTROL.sub("\n", COLOR.sub("", self.raw.decode(errors="replace")))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    yield started
    for t in started:
        t.kill()


def frames(text: str) -> list[re.Match[str]]:
    return list(FRAME.finditer(text))


def test_backfill_on_a_terminal_shows_blocks_events_and_eta(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    terminals: list[Terminal],
) -> None:
    """Under a pseudo-terminal the backfill draws its line (block N of M, blocks/s, events/s,
    ETA), prints its console logs above it, and its last frame reads `done` at the target
    with the run's average rates, both above 0; the tables equal the chain."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(31), 40)
    target = anvil.block_number()
    cfg = make_config(batch_blocks=5)
    term = Terminal(
        "--config", str(cfg), "backfill", "--chain", "local",
        "--from", str(d.block_number), "--to", str(target),
    )  # fmt: skip
    terminals.append(term)
    assert term.finish() == 0, term.text()[-3000:]
    text = term.text()
    shown = frames(text)
    assert shown, text[-3000:]
    last = shown[-1]
    assert int(last[1].replace(",", "")) == target == int(last[2].replace(",", ""))
    assert last[5] == "done"
    assert float(last[3].replace(",", "")) > 0
    assert float(last[4].replace(",", "")) > 0
    assert all(f[5].startswith("ETA") for f in shown[:-1] if f[5] != "done")
    # Logs go above the line: a frame, a log line after it, and the line drawn again below.
    first_log = text.index("batch_committed")
    assert shown[0].start() < first_log < last.start()
    assert text.index("backfill_done") > last.end()  # logged once the line is gone
    assert checks.checkpoint(db_dsn)[0] == target
    assert_all(db_dsn, anvil, d)


def test_backfill_says_it_waits_for_the_writer_lock_then_takes_it(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
    terminals: list[Terminal],
) -> None:
    """While another connection holds the chain's writer lock (what a running daemon does),
    the backfill's line says it waits for the writer lock and names the holder's PostgreSQL
    pid, and the log says so once (`backfill_waits_for_daemon`); when the lock is released
    it takes the lock, indexes the range itself and exits 0."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(32), 20)
    target = anvil.block_number()
    cfg = make_config(batch_blocks=5, poll_interval=0.2)
    loop = asyncio.new_event_loop()
    holder = loop.run_until_complete(asyncpg.connect(db_dsn))
    try:
        assert loop.run_until_complete(
            holder.fetchval("SELECT pg_try_advisory_lock($1)", writer_lock_key(31337))
        )
        pid = holder.get_server_pid()
        term = Terminal(
            "--config", str(cfg), "backfill", "--chain", "local",
            "--from", str(d.block_number), "--to", str(target),
        )  # fmt: skip
        terminals.append(term)
        assert term.read_until(r"waiting for the writer lock, held by", 60), term.text()[-3000:]
        time.sleep(1.5)  # a few frames while waiting: nothing is written meanwhile
        assert term.proc.poll() is None
        text = term.text()
        assert f"waiting for the writer lock, held by PostgreSQL backend pid {pid}" in text
        assert "the daemon indexes this range" in text
        assert text.count("backfill_waits_for_daemon") == 1
        assert not checks.db_fetch(db_dsn, "SELECT 1 FROM blocks LIMIT 1")
    finally:
        loop.run_until_complete(holder.close())
        loop.close()
    assert term.finish() == 0, term.text()[-3000:]
    text = term.text()
    assert "backfill_took_writer_lock" in text
    last = frames(text)[-1]
    assert last[5] == "done"
    assert int(last[1].replace(",", "")) == target
    assert checks.checkpoint(db_dsn)[0] == target
    assert_all(db_dsn, anvil, d)
