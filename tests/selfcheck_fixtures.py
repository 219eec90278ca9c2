"""Run only by tests/test_harness.py in a child pytest: uses the real fixtures and records what
they started, so the parent can check that nothing is left running afterwards."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.procs import Anvil, PgCluster


def test_selfcheck_record_processes(anvil: Anvil, pg_cluster: PgCluster, db_dsn: str) -> None:
    """Record the anvil pid and the PostgreSQL port and data directory for the parent test."""
    Path(os.environ["SELFCHECK_OUT"]).write_text(
        json.dumps(
            {
                "anvil_pid": anvil.proc.pid,
                "pg_port": pg_cluster.port,
                "pg_datadir": str(pg_cluster.datadir),
                "dsn": db_dsn,
            }
        )
    )
    assert anvil.block_number() == 0
