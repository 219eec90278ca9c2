"""rewardsync: an EVM event indexer and rewards sync daemon for PostgreSQL."""

from __future__ import annotations

import sys

__version__ = "0.1.0"


def _import_structlog_without_rich() -> None:
    """Import structlog while ``rich`` cannot be imported.

    structlog imports rich when it is installed (typer brings it) only to offer pretty
    tracebacks, which this package never uses: ``format_exc_info`` renders exceptions as plain
    text before any renderer (indexer/log.py). That import was ~60 ms, a fifth of a backfill's
    start. rich stays importable for everything else (the terminal progress line, typer's help):
    only structlog's own optional import of it fails."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog  # noqa: F401, PLC0415
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()
