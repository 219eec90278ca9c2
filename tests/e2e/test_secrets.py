"""No secret (database password, signer key with or without 0x, RPC URL credentials) ever
reaches stdout, stderr or /metrics, on success and on failure."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import deploy
from tests.harness import CliResult, Daemon, indexer, wait_synced
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

DB_PASSWORD = "Pg-Passw0rd-7f3e9c"
SIGNER_KEY = "7c" * 8 + "5a3f" * 12  # 32 bytes of hex
RPC_SECRET_URL = "http://user:pw@127.0.0.1:1/v3/SECRETKEY123456789"
SECRETS = (DB_PASSWORD, SIGNER_KEY, "0x" + SIGNER_KEY, "SECRETKEY123456789", "user:pw@")


def with_password(dsn: str) -> str:
    """``dsn`` with a password (the test cluster trusts local connections and ignores it)."""
    return dsn.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@", 1)


def assert_clean(text: str, what: str) -> None:
    for secret in SECRETS:
        assert secret.lower() not in text.lower(), f"{what} leaks {secret[:6]}…:\n{text[-3000:]}"


def assert_result_clean(out: CliResult, what: str) -> None:
    assert_clean(out.stdout, f"{what} stdout")
    assert_clean(out.stderr, f"{what} stderr")


@pytest.fixture
def secret_config(
    tmp_path: Path, make_config: Callable[..., Path], db_dsn: str, anvil: Anvil
) -> Callable[..., Path]:
    """A config with a database password, a signer key file and a credential-bearing RPC URL
    (a dead second endpoint, or the only one with ``rpc_ok=False``)."""
    key_file = tmp_path / "signer.key"
    key_file.write_text(f"0x{SIGNER_KEY}\n")

    def make(*, dsn: str | None = None, rpc_ok: bool = True) -> Path:
        cfg = make_config().rename(tmp_path / f"secret-{len(list(tmp_path.glob('secret-*')))}.toml")
        urls = f'["{anvil.url}", "{RPC_SECRET_URL}"]' if rpc_ok else f'["{RPC_SECRET_URL}"]'
        text = cfg.read_text().replace(db_dsn, dsn or with_password(db_dsn))
        text = text.replace(f'["{anvil.url}"]', urls)
        cfg.write_text(text + f'\n[signer]\nkey_file = "{key_file}"\n')
        return cfg

    return make


def test_secrets_absent_from_cli_output_on_success_and_failure(
    secret_config: Callable[..., Path], deployment: deploy.Deployment
) -> None:
    """print-config, run, status and failing commands (dead RPC, unreachable database,
    bad key file) print no secret."""
    cfg = secret_config()
    bad_rpc = secret_config(rpc_ok=False)
    no_db = secret_config(dsn=f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:1/nothere")
    backfill = ("backfill", "--chain", "local", "--from", "0", "--to", "5")
    commands: dict[str, tuple[Path, tuple[str, ...]]] = {
        "print-config": (cfg, ("print-config",)),
        "run": (cfg, ("run", "--exit-when-caught-up", "--no-http")),
        "run, dead rpc": (bad_rpc, ("run", "--exit-when-caught-up", "--no-http")),
        "backfill, dead rpc": (bad_rpc, backfill),
        "status, dead rpc": (bad_rpc, ("status",)),
        "migrate, no database": (no_db, ("migrate",)),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:  # each CLI start costs seconds
        futures = {name: pool.submit(indexer, c, *args) for name, (c, args) in commands.items()}
        runs = {name: f.result() for name, f in futures.items()}
    for name in ("print-config", "run"):
        assert runs[name].code == 0, runs[name].stderr[-2000:]
    assert runs["status, dead rpc"].code == 4, "status: the chain is unreachable"
    assert "****" in runs["print-config"].stdout or "***" in runs["print-config"].stdout
    for name in ("run, dead rpc", "backfill, dead rpc", "migrate, no database"):
        assert runs[name].code != 0, name
        assert runs[name].stderr.strip(), name
    for name, out in runs.items():
        assert_result_clean(out, name)


def test_secrets_absent_from_bad_key_and_dsn_errors(
    tmp_path: Path, secret_config: Callable[..., Path]
) -> None:
    """Configuration errors about a malformed key file or database URL do not echo them."""
    cfg = secret_config()
    bad_key = tmp_path / "bad.key"
    bad_key.write_text(f"0x{SIGNER_KEY}zz\n")
    text = cfg.read_text()
    cfg.write_text(text.replace(str(tmp_path / "signer.key"), str(bad_key)))
    out = indexer(cfg, "print-config")
    assert out.code == 2
    assert_result_clean(out, "bad key file")
    cfg.write_text(text.replace("postgresql://postgres:", "postgresq1://postgres:"))
    out = indexer(cfg, "migrate")
    assert out.code == 2
    assert_result_clean(out, "bad database url")


def test_secrets_absent_from_daemon_logs_and_metrics(
    secret_config: Callable[..., Path],
    deployment: deploy.Deployment,
    anvil: Anvil,
    db_dsn: str,
    daemons: list[Daemon],
) -> None:
    """A running daemon whose second RPC endpoint fails logs and exports no secret."""
    cfg = secret_config()
    daemon = Daemon(cfg)
    daemons.append(daemon)
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    wait_synced(db_dsn, anvil)
    daemon.wait_for(lambda e: e.get("event") == "rpc_chain_id_unverified")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert "indexer_rpc_endpoint_errors_total" in body
    assert_clean(body, "/metrics")
    assert daemon.stop(timeout=10) == 0
    assert_clean(daemon.log_path.read_text(), "daemon log")
