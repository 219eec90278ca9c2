"""The wheel works anywhere (issue 17): built from this tree, installed into a fresh virtualenv
in a temporary folder with no checkout, its `indexer` finds its schema and ABIs (package data),
migrates the test database and indexes the test chain.

No network here: the fresh venv reuses the dependencies already installed in the project's
venv through a path entry to a folder of links to exactly the distributions the wheel's own
`Requires-Dist` needs without extras (what `pip install rewardsync` would install): no web3,
which only `indexer demo` imports (the `demo` extra), and never this package's editable install.
The wheel goes in with --no-deps."""

from __future__ import annotations

import importlib.metadata as md
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    (site / "deps.pth").write_text(str(_link_dependencies(wheel, base / "deps")) + "\n")
    put = _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
         str(wheel)],
        base,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr[-2000:]
    where = _run([str(py), "-c", "import indexer; print(indexer.__file__)"], base)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    return venv / "bin" / "indexer"


def _closure(requirements: list[str]) -> set[str]:
    """The installed distributions these requirements pull in, extras of ours left out."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo.extend(Requirement(r) for r in md.distribution(name).requires or [])
        for extra in req.extras:  # e.g. eth-hash[pycryptodome]
            for r in md.distribution(name).requires or []:
                dep = Requirement(r)
                if dep.marker is not None and dep.marker.evaluate({"extra": extra}):
                    todo.append(dep)
    return seen


def _link_dependencies(wheel: Path, into: Path) -> Path:
    """A folder of links to the top-level files of every distribution the wheel requires."""
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        text = z.read(meta).decode()
    requires = [line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith("Requires-Dist:")]  # fmt: skip
    needed = _closure(requires)
    assert "web3" not in needed, "web3 is a runtime dependency again (belongs to [demo])"
    into.mkdir()
    for name in needed:
        dist = md.distribution(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)
    return into


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


def test_demo_without_the_demo_extra_says_what_to_install(installed: Path, tmp_path: Path) -> None:
    """Installed without `[demo]` (no web3), `indexer demo` exits 2 with one line naming the
    extra, and every module of the package outside `indexer.demo` imports without web3."""
    demo = _run([str(installed), "demo", "--no-tty", "--duration", "1"], tmp_path)
    assert demo.returncode == 2, demo.stdout + demo.stderr
    assert demo.stderr.strip().splitlines() == [
        "error: indexer demo needs the demo extra: pip install 'rewardsync[demo]'"
    ]
    assert not (tmp_path / ".rewardsync").exists()
    py = installed.parent / "python"
    probe = _run(
        [str(py), "-c",
         "import importlib, pkgutil, sys, indexer\n"
         "names = [m.name for m in pkgutil.walk_packages(indexer.__path__, 'indexer.')\n"
         "         if not m.name.startswith(('indexer.demo', 'indexer.__main__'))]\n"
         "for name in names: importlib.import_module(name)\n"
         "print(len(names), sorted(m for m in sys.modules if m.split('.')[0] == 'web3'))"],
        tmp_path,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    count, loaded = probe.stdout.strip().split(" ", 1)
    assert int(count) > 40
    assert loaded == "[]"
