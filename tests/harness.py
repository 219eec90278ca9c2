"""End-to-end helpers: write an indexer.toml for a test chain and run the real `indexer`
binary as a subprocess (run-until mode instead of sleeping and killing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.checks import db_fetch
from tests.procs import ROOT

INDEXER_BIN = str(Path(sys.executable).parent / "indexer")


@dataclass
class ChainCfg:
    """One [[chains]] table for a test config."""

    name: str
    chain_id: int
    rpc_url: str
    addresses: dict[str, str]  # contract name -> address (from tests.deploy.Deployment)
    start_block: int = 0
    max_reorg_depth: int = 64
    confirmations: int = 0
    batch_blocks: int = 2000
    poll_interval: float = 0.1
    finality: str = "depth"
    watch: tuple[str, ...] = ("MultiTokenPushPull", "ProductBankFactory", "ChamaSavings")
    with_banks: bool = True


def write_config(path: Path, dsn: str, chains: list[ChainCfg], extra: str = "") -> Path:
    """An indexer.toml for ``chains`` on database ``dsn``."""
    lines = [f'[database]\nurl = "{dsn}"\n', '[service]\nmetrics_listen = "127.0.0.1:0"\n']
    for c in chains:
        lines.append(
            f'[[chains]]\nname = "{c.name}"\nchain_id = {c.chain_id}\n'
            f'rpc_urls = ["{c.rpc_url}"]\nconfirmations = {c.confirmations}\n'
            f"max_reorg_depth = {c.max_reorg_depth}\npoll_interval = {c.poll_interval}\n"
            f'batch_blocks = {c.batch_blocks}\nfinality = "{c.finality}"\n'
        )
        for name in c.watch:
            lines.append(
                f'[[chains.contracts]]\nname = "{name}"\naddress = "{c.addresses[name]}"\n'
                f"start_block = {c.start_block}\n"
            )
        if c.with_banks:
            lines.append(
                '[[chains.contracts]]\nname = "ProductBank"\n'
                'factory = { contract = "ProductBankFactory", event = "ProductBankCreated", '
                'parameter = "bank" }\n'
                f"start_block = {c.start_block}\n"
            )
    path.write_text("\n".join(lines) + extra)
    return path


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


def parse_events(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("INDEXER_") and k != "DATABASE_URL"
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def indexer(
    cfg: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> CliResult:
    """Run `indexer --config cfg ARGS` to completion with JSON logs."""
    proc = subprocess.run(
        [INDEXER_BIN, "--config", str(cfg), "--log-format", "json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(env),
        cwd=ROOT,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr, parse_events(proc.stderr))


class Daemon:
    """`indexer run` in the background; stderr (JSON logs) collected into a file."""

    def __init__(
        self, cfg: Path, *args: str, env: dict[str, str] | None = None, log_path: Path | None = None
    ) -> None:
        self.log_path = log_path or cfg.with_suffix(f".{time.monotonic_ns()}.log")
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [INDEXER_BIN, "--config", str(cfg), "--log-format", "json", "run", *args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=_env(env),
            cwd=ROOT,
            start_new_session=True,
        )

    def events(self) -> list[dict[str, Any]]:
        return parse_events(self.log_path.read_text())

    def wait_for(self, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        """The first log event satisfying ``predicate``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if predicate(e):
                    return e
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"no matching log event; exit={self.proc.poll()}\n" + self.log_path.read_text()[-3000:]
        )

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()


def wait_synced(dsn: str, node: Any, timeout: float = 60, chain_id: int = 31337) -> int:
    """Wait until the checkpoint equals the node's head (number and hash); returns it."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        head = node.rpc("eth_getBlockByNumber", ["latest", False])
        rows = db_fetch(
            dsn, "SELECT block_number, block_hash FROM checkpoints WHERE chain_id=$1", chain_id
        )
        if rows:
            last = (rows[0]["block_number"], rows[0]["block_hash"])
            if last == (int(head["number"], 16), head["hash"]):
                return last[0]
        time.sleep(0.05)
    raise AssertionError(f"not synced after {timeout}s: checkpoint {last}")


def call_tx(sender: str, to: str, data: str) -> dict[str, Any]:
    """A transaction request for anvil_reorg (sent from an unlocked dev account)."""
    return {"from": sender, "to": to, "data": data, "gas": hex(500_000)}
