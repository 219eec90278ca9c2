"""``python -m indexer`` runs the CLI."""

from __future__ import annotations

from indexer.cli import entry

entry()
