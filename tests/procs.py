"""Real external processes for tests: a throwaway PostgreSQL cluster and anvil nodes.

The one implementation lives in ``indexer.demo.devchain`` (``indexer demo`` needs it without
the tests folder); this module re-exports it under the names the tests use.
"""

from __future__ import annotations

from indexer.demo.devchain import (
    ANVIL_BIN,
    ANVIL_DEV_KEYS,
    ROOT,
    TOOLS,
    Anvil,
    PgCluster,
    anvil_node,
    free_port,
    pg_bindir,
)

# anvil's public development keys (see indexer.demo.devchain), as a list for the tests.
ANVIL_KEYS = list(ANVIL_DEV_KEYS)

__all__ = [
    "ANVIL_BIN",
    "ANVIL_KEYS",
    "ROOT",
    "TOOLS",
    "Anvil",
    "PgCluster",
    "anvil_node",
    "free_port",
    "pg_bindir",
]
