"""The live line of ``indexer backfill`` on a terminal: blocks/s, events/s, ETA, or whom the
backfill waits for; log lines are printed above it.

Imported only when stderr is a terminal (``rich`` is not needed to index). The rates are
measured over the last ``WINDOW_S`` seconds so that the ETA follows the chain's density;
the final line shows the averages over the whole run.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from indexer import metrics

WINDOW_S = 10.0


@dataclass(frozen=True)
class Rates:
    """Blocks and events per second, and the seconds left (None: not measurable yet)."""

    blocks_per_s: float | None
    events_per_s: float | None
    eta_s: float | None


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def describe(rates: Rates, *, tail: str | None = None) -> str:
    """The figures of the line, e.g. ``1,234 blocks/s  56,789 events/s  ETA 0:01:05``;
    ``tail`` (``done``, ``stopped``) replaces the ETA on the last frame."""
    tail = tail or f"ETA {_duration(rates.eta_s)}"
    return f"{_num(rates.blocks_per_s)} blocks/s  {_num(rates.events_per_s)} events/s  {tail}"


def events_written(chain: str) -> float:
    """Event rows this process committed for ``chain`` (the in-process counter)."""
    return sum(
        s.value
        for fam in metrics.EVENTS_WRITTEN.collect()
        for s in fam.samples
        if s.name.endswith("_total") and s.labels.get("chain") == chain
    )


class Meter:
    """Rates over a sliding window of (time, block, events) samples."""

    def __init__(self, start_block: int, last_block: int, events: float, now: float) -> None:
        self.last_block = last_block
        self.first = (now, start_block, events)
        self.samples: deque[tuple[float, int, float]] = deque([self.first])

    def add(self, now: float, block: int, events: float | None) -> Rates:
        """Record a sample; ``events`` None when another process writes (the daemon)."""
        self.samples.append((now, block, events if events is not None else self.first[2]))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW_S:
            self.samples.popleft()
        return self._rates(self.samples[0], (now, block, events), events is not None)

    def overall(self, now: float, block: int, events: float) -> Rates:
        return self._rates(self.first, (now, block, events), True)

    def _rates(
        self,
        old: tuple[float, int, float],
        new: tuple[float, int, float | None],
        with_events: bool,
    ) -> Rates:
        dt = new[0] - old[0]
        if dt <= 0:
            return Rates(None, None, None)
        bps = max(new[1] - old[1], 0) / dt
        eps = (max((new[2] or 0.0) - old[2], 0.0) / dt) if with_events else None
        left = max(self.last_block - new[1], 0)
        eta = 0.0 if left == 0 else (left / bps if bps > 0 else None)
        return Rates(bps, eps, eta)


class BackfillLine:
    """A rich progress line on ``file`` (stderr) that stays at the bottom while anything
    written to sys.stderr, the logs included, is printed above it."""

    def __init__(self, chain: str, start: int, last: int, file: TextIO | None = None) -> None:
        self.chain = chain
        self.start = start
        self.last = last
        self.console = Console(file=file, stderr=file is None)
        self.progress = Progress(
            TextColumn("backfill {task.fields[chain]}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[blocks]}"),
            TextColumn("{task.fields[figures]}"),
            console=self.console,
            redirect_stderr=True,
            redirect_stdout=False,
            refresh_per_second=4,
        )
        self.task: TaskID | None = None
        self.meter = Meter(start, last, events_written(chain), time.monotonic())

    def __enter__(self) -> BackfillLine:
        self.progress.start()
        self.task = self.progress.add_task(
            "backfill",
            total=max(self.last - self.start, 1),
            chain=self.chain,
            blocks=self._blocks(self.start),
            figures=describe(Rates(None, None, None)),
        )
        self.progress.refresh()  # drawn before the first log line, not at the next tick
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def _blocks(self, block: int) -> str:
        return f"block {block:,} of {self.last:,}"

    def _show(self, block: int, figures: str) -> None:
        if self.task is not None:
            self.progress.update(
                self.task,
                completed=max(min(block, self.last) - self.start, 0),
                blocks=self._blocks(block),
                figures=figures,
            )

    def took_lock(self, block: int) -> None:
        """The lock came free: the rates from here on are this process's own."""
        self.meter = Meter(block, self.last, events_written(self.chain), time.monotonic())

    def indexing(self, block: int) -> None:
        """This process holds the writer lock and indexes: its own rates."""
        rates = self.meter.add(time.monotonic(), block, events_written(self.chain))
        self._show(block, describe(rates))

    def waiting(self, block: int, holder: str) -> None:
        """Another process (the daemon) holds the chain's writer lock: its progress."""
        rates = self.meter.add(time.monotonic(), block, None)
        self._show(
            block,
            f"waiting for the writer lock, held by {holder}: the daemon indexes this range  "
            f"{_num(rates.blocks_per_s)} blocks/s  ETA {_duration(rates.eta_s)}",
        )

    def finished(self, block: int, *, by_daemon: bool = False) -> None:
        """The last frame: averages over the whole run."""
        rates = self.meter.overall(time.monotonic(), block, events_written(self.chain))
        tail = "done" if block >= self.last else "stopped"
        if by_daemon:
            self._show(block, f"{_num(rates.blocks_per_s)} blocks/s  by the daemon  {tail}")
        else:
            self._show(block, describe(rates, tail=tail))
        self.progress.refresh()
