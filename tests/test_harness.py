"""The test harness itself: a test run leaves no anvil or PostgreSQL process behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import ROOT


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.anvil
@pytest.mark.pg
def test_harness_leaves_no_process_behind(tmp_path: Path) -> None:
    """A child pytest that used anvil and a temp PostgreSQL cluster leaves neither running."""
    out = tmp_path / "procs.json"
    env = {k: v for k, v in os.environ.items() if k != "PGHOST"}
    env["SELFCHECK_OUT"] = str(out)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/selfcheck_fixtures.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    rec = json.loads(out.read_text())
    assert not _alive(rec["anvil_pid"])
    assert not Path(rec["pg_datadir"]).exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", rec["pg_port"])) != 0, "postgres still listening"
