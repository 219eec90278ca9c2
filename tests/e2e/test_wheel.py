"""The wheel works anywhere (issue 17): built from this tree, installed into a fresh virtualenv
in a temporary folder with no checkout, its `indexer` finds its schema and ABIs (package data),
migrates the test database and indexes the test chain.

No network here: the fresh venv reuses the dependencies already installed in the project's
venv through a path entry (never its editable install of this package, whose finder only a
site directory's .pth would load), and the wheel goes in with --no-deps."""

from __future__ import annotations

import random
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests import checks, deploy
from tests.e2e.test_follow import assert_all
from tests.harness import ChainCfg, parse_events, write_config
from tests.procs import ROOT, Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `indexer` script of a fresh venv holding only the wheel of this tree."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist),
         str(ROOT)],
        cwd=base,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("rewardsync-*.whl")
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    site = Path(
        _run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    put = _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], base)
    assert put.returncode == 0, put.stderr[-2000:]
    where = _run([str(py), "-c", "import indexer; print(indexer.__file__)"], base)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    return venv / "bin" / "indexer"


def test_wheel_installed_outside_the_checkout_migrates_and_indexes(
    installed: Path, tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """`indexer --version`, `migrate` and `run --exit-when-caught-up` from the installed wheel,
    run in a folder that is not the checkout: the tables equal the chain."""
    d = deployment
    deploy.generate_traffic(d.w3, d, random.Random(17), 10)
    work = tmp_path / "elsewhere"
    work.mkdir()
    cfg = write_config(
        work / "indexer.toml",
        db_dsn,
        [ChainCfg("local", 31337, anvil.url, d.addresses, start_block=d.block_number)],
    )
    version = _run([str(installed), "--version"], work)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("rewardsync ")
    migrated = _run([str(installed), "--config", str(cfg), "--log-format", "json", "migrate"], work)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    ran = _run(
        [str(installed), "--config", str(cfg), "--log-format", "json", "run",
         "--exit-when-caught-up", "--no-http"],
        work,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert [e for e in parse_events(ran.stderr) if e.get("event") == "batch_committed"]
    assert checks.db_fetch(db_dsn, "SELECT version FROM schema_version")
    assert_all(db_dsn, anvil, d)
