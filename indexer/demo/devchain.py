"""Local dev-chain processes: anvil nodes and a PostgreSQL cluster, both on free loopback ports.

Used by ``indexer demo`` and (through ``tests/procs.py``) by every test that needs a real node
or database. Both are torn down even when the caller fails: anvil runs in its own session and
is killed by process group; PostgreSQL is started in its own session too, so a Ctrl-C in the
terminal reaches only our process, which then stops the server in order. As root, PostgreSQL
runs as the ``postgres`` system user (it refuses root). ``PGHOST`` set means: use that server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
ANVIL_BIN = TOOLS / "node_modules" / ".bin" / "anvil"

# anvil's public development accounts 0-4, derived from its well-known mnemonic "test test test
# test test test test test test test test junk". They hold money only on a local anvil; they
# are published in anvil's own startup banner and must never be used anywhere else.
ANVIL_DEV_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
)

# Settings for a disposable cluster: durability off (a crash loses nothing we need to keep).
_PG_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
}


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bindir() -> Path:
    """Directory of the PostgreSQL server binaries (recorded by scripts/setup.sh)."""
    recorded = TOOLS / "pgbin"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists():
            return cand
    raise RuntimeError("PostgreSQL server binaries not found: run `make setup`")


def _run_as() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _postgres_can_write(path: Path) -> bool:
    """Whether the server's user can write in ``path`` (as root, every parent must let the
    ``postgres`` user through, which a home directory or pytest's tmp often does not)."""
    if os.geteuid() != 0:
        return os.access(path, os.W_OK | os.X_OK)
    probe = subprocess.run([*_run_as(), "test", "-w", str(path)], check=False)
    return probe.returncode == 0


@dataclass
class PgCluster:
    """A PostgreSQL cluster started here (or an existing server when PGHOST is set)."""

    host: str = "127.0.0.1"
    port: int = 0
    user: str = "postgres"
    datadir: Path | None = None
    _proc_owner: str | None = None
    external: bool = False

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    @classmethod
    def start(cls, home: Path | None = None, settings: dict[str, str] | None = None) -> PgCluster:
        """initdb and start a cluster in ``home`` (default: a new temporary directory; the
        data directory is ``home/data``) with extra postgresql.conf ``settings`` (the bench's
        profile loads pg_stat_statements); ``PGHOST`` set: that server instead."""
        if os.environ.get("PGHOST") and home is None:
            return cls(
                host=os.environ["PGHOST"],
                port=int(os.environ.get("PGPORT", "5432")),
                user=os.environ.get("PGUSER", "postgres"),
                external=True,
            )
        bindir = pg_bindir()
        if home is None:
            home = Path(tempfile.mkdtemp(prefix="rewardsync-pg-"))
        else:
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
        datadir = home / "data"
        as_root = os.geteuid() == 0
        if as_root:
            shutil.chown(home, "postgres")
        subprocess.run(
            [
                *_run_as(),
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port = free_port()
        # Written into postgresql.conf (not passed with -o) so that a kept cluster starts
        # again with a bare `pg_ctl start`.
        conf = {
            **_PG_SETTINGS,
            **(settings or {}),
            "port": str(port),
            "unix_socket_directories": f"'{home}'",
        }
        with (datadir / "postgresql.conf").open("a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        cluster = cls(port=port, datadir=datadir, _proc_owner="postgres" if as_root else None)
        subprocess.run(
            cluster.pg_ctl_argv("-l", str(home / "log"), "-w", "-t", "60", "start"),
            check=True,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C must not shut the server down
        )
        return cluster

    def pg_ctl_argv(self, *args: str) -> list[str]:
        """The pg_ctl command line for this cluster (as the ``postgres`` user when root)."""
        assert self.datadir is not None, "pg_ctl needs a cluster started here"
        run_as = ["runuser", "-u", "postgres", "--"] if self._proc_owner else []
        return [*run_as, str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), *args]

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on this cluster (used by fault tests: stop -m immediate, start)."""
        subprocess.run(
            self.pg_ctl_argv(*args),
            check=True,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def pid(self) -> int | None:
        """The postmaster's pid while it runs (first line of ``postmaster.pid``)."""
        if self.datadir is None:
            return None
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def start_command(self) -> str:
        """A shell command that starts this (stopped, kept) cluster again."""
        assert self.datadir is not None
        return shlex.join(self.pg_ctl_argv("-l", str(self.datadir.parent / "log"), "start"))

    def stop(self, *, keep: bool = False) -> None:
        """Stop the server; remove its files unless ``keep`` (then shut down cleanly, so
        that it starts again without recovery). Kills the postmaster if pg_ctl fails."""
        if self.external or self.datadir is None:
            return
        pid = self.pid()
        try:
            self.pg_ctl("-m", "fast" if keep else "immediate", "-w", "-t", "30", "stop")
        except subprocess.CalledProcessError:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)  # immediate shutdown of every backend
        if not keep:
            shutil.rmtree(self.datadir.parent, ignore_errors=True)


def pg_home_for(wanted: Path) -> Path:
    """``wanted`` if the server's user can work there, else a new temporary directory (as
    root under a private parent such as /root). The caller says which one it got."""
    wanted.parent.mkdir(parents=True, exist_ok=True)
    if _postgres_can_write(wanted.parent):
        return wanted
    return Path(tempfile.mkdtemp(prefix="rewardsync-pg-"))


@dataclass
class Anvil:
    """One anvil node on a free loopback port."""

    port: int
    proc: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)
    home: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, *extra: str, chain_id: int = 31337, block_time: float | None = None) -> Anvil:
        if not ANVIL_BIN.exists():
            raise RuntimeError("anvil not installed: run `make setup`")
        port = free_port()
        args = [
            str(ANVIL_BIN),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chain-id",
            str(chain_id),
            "--silent",
            "--accounts",
            str(len(ANVIL_DEV_KEYS)),
            "--balance",
            "1000000",
        ]
        if block_time is not None:
            args += ["--block-time", str(block_time)]
        args += list(extra)
        # anvil spills old block states to $HOME/.foundry/anvil/tmp and removes them only on a
        # clean exit; after a SIGKILL they stay (77 GB of them once filled this machine's
        # disk). A home of its own goes away with the node.
        home = Path(tempfile.mkdtemp(prefix="rewardsync-anvil-"))
        proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "HOME": str(home)},
        )
        node = cls(port=port, proc=proc, args=args, home=home)
        try:
            node._wait_ready()
        except BaseException:
            node.stop()
            raise
        return node

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"anvil exited with {self.proc.returncode}")
            try:
                self.rpc("eth_chainId")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("anvil did not start in 20 s")

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """One JSON-RPC call; raises RuntimeError on a JSON-RPC error."""
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
        ).encode()
        headers = {"Content-Type": "application/json"}
        req = urllib.request.Request(self.url, body, headers)  # noqa: S310 (our http anvil)
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            out = json.loads(resp.read())
        if "error" in out:
            raise RuntimeError(f"{method}: {out['error']}")
        return out["result"]

    def mine(self, n: int = 1) -> None:
        self.rpc("anvil_mine", [hex(n)])

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def reorg(self, depth: int, txs: Sequence[Any] = ()) -> None:
        """``anvil_reorg`` of ``depth`` blocks (``txs``: its [transaction, block offset]
        pairs), with no mining running beside it.

        anvil 1.7.1 races a reorg against the mining of a transaction sent just before or
        during it (automine mines after ``eth_sendRawTransaction`` has answered): numbers of
        the new branch are then left with no block (``eth_getBlockByNumber`` answers null
        below the head for good). So automine goes off, the mining of a block already under
        way is waited out (the head stays still), the reorg runs with nothing mining, and
        automine comes back (what was sent meanwhile is mined then). No block is added, so
        ``depth`` counts from the head the caller saw."""
        self.rpc("evm_setAutomine", [False])
        try:
            head, deadline = self.block_number(), time.monotonic() + 10
            while True:
                time.sleep(0.03)
                now = self.block_number()
                if now == head:
                    break
                if time.monotonic() > deadline:  # e.g. an interval miner: not for this
                    raise RuntimeError("anvil kept mining with automine off")
                head = now
            self.rpc("anvil_reorg", [depth, list(txs)])
        finally:
            self.rpc("evm_setAutomine", [True])
            if int(self.rpc("txpool_status")["pending"], 16):
                self.rpc("evm_mine")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)


@contextlib.contextmanager
def anvil_node(*extra: str, chain_id: int = 31337) -> Iterator[Anvil]:
    node = Anvil.start(*extra, chain_id=chain_id)
    try:
        yield node
    finally:
        node.stop()
