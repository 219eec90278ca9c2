"""Real external processes for tests: a throwaway PostgreSQL cluster and anvil nodes.

Both bind loopback on a free port and are torn down even when tests fail. As root, PostgreSQL
runs as the ``postgres`` system user (it refuses root). ``PGHOST`` set means: use that server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
ANVIL_BIN = TOOLS / "node_modules" / ".bin" / "anvil"

# anvil's well-known development accounts (mnemonic "test test ... junk"); tests only.
ANVIL_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
]


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


@dataclass
class PgCluster:
    """A temporary PostgreSQL cluster (or an existing server when PGHOST is set)."""

    host: str = "127.0.0.1"
    port: int = 0
    user: str = "postgres"
    datadir: Path | None = None
    _proc_owner: str | None = None
    external: bool = False

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    @classmethod
    def start(cls) -> PgCluster:
        if os.environ.get("PGHOST"):
            return cls(
                host=os.environ["PGHOST"],
                port=int(os.environ.get("PGPORT", "5432")),
                user=os.environ.get("PGUSER", "postgres"),
                external=True,
            )
        bindir = pg_bindir()
        tmp = Path(tempfile.mkdtemp(prefix="rewardsync-pg-"))
        datadir = tmp / "data"
        as_root = os.geteuid() == 0
        run_as: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
        if as_root:
            shutil.chown(tmp, "postgres")
        subprocess.run(
            [
                *run_as,
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
        opts = (
            f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={tmp} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=128MB"
        )
        subprocess.run(
            [
                *run_as,
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-o",
                opts,
                "-l",
                str(tmp / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return cls(port=port, datadir=datadir, _proc_owner="postgres" if as_root else None)

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on this cluster (used by fault tests: stop -m immediate, start)."""
        assert self.datadir is not None, "pg_ctl needs a cluster started by the tests"
        run_as = ["runuser", "-u", "postgres", "--"] if self._proc_owner else []
        subprocess.run(
            [*run_as, str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), *args],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.external or self.datadir is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


@dataclass
class Anvil:
    """One anvil node on a free loopback port."""

    port: int
    proc: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)

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
            "5",
            "--balance",
            "1000000",
        ]
        if block_time is not None:
            args += ["--block-time", str(block_time)]
        args += list(extra)
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        node = cls(port=port, proc=proc, args=args)
        node._wait_ready()
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
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            out = json.loads(resp.read())
        if "error" in out:
            raise RuntimeError(f"{method}: {out['error']}")
        return out["result"]

    def mine(self, n: int = 1) -> None:
        self.rpc("anvil_mine", [hex(n)])

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def anvil_node(*extra: str, chain_id: int = 31337) -> Iterator[Anvil]:
    node = Anvil.start(*extra, chain_id=chain_id)
    try:
        yield node
    finally:
        node.stop()
