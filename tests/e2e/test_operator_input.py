"""Bad operator input: each configuration key wrong in turn, an unreachable database, a
database at the wrong schema version, an RPC of the wrong chain, a key file missing or
unreadable. Each gives one clear line on stderr, the right exit code (2 usage/config, 1 other)
and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import checks, deploy
from tests.harness import ChainCfg, CliResult, indexer, write_config
from tests.procs import Anvil, free_port

pytestmark = [pytest.mark.anvil, pytest.mark.pg]
RUN = ("run", "--exit-when-caught-up", "--no-http")


def base_config(tmp_path: Path, dsn: str, anvil: Anvil, d: deploy.Deployment) -> Path:
    chain = ChainCfg("local", 31337, anvil.url, d.addresses, start_block=d.block_number)
    return write_config(tmp_path / "indexer.toml", dsn, [chain])


def one_line(out: CliResult) -> str:
    """The single human line on stderr (JSON log lines aside)."""
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert len(lines) == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    return lines[0]


def nothing_written(dsn: str) -> None:
    for table in ("checkpoints", "blocks", *checks.EVENT_TABLES):
        assert not checks.db_fetch(dsn, f"SELECT 1 FROM {table} LIMIT 1"), table


# (text to replace in the generated config, replacement, expected words in the error)
BAD_KEYS = [
    ('metrics_listen = "127.0.0.1:0"', 'metrics_listen = "nohost"', "metrics_listen"),
    ("chain_id = 31337", "chain_id = 0", "chain_id"),
    ("confirmations = 0", "confirmations = -1", "confirmations"),
    ("max_reorg_depth = 64", "max_reorg_depth = -2", "max_reorg_depth"),
    ("poll_interval = 0.1", "poll_interval = 0", "poll_interval"),
    ("batch_blocks = 2000", "batch_blocks = 0", "batch_blocks"),
    ('finality = "depth"', 'finality = "soon"', "finality"),
    ("rpc_urls = [", 'rpc_urls = ["ftp://x"]\nold_rpc_urls = [', "rpc_urls"),
    (
        'name = "MultiTokenPushPull"\naddress = "',
        'name = "MultiTokenPushPull"\naddress = "0x12',
        "address",
    ),
    ('name = "ChamaSavings"', 'name = "NoSuchAbi"', "ABI"),
    ("start_block = ", "start_block = -", "start_block"),
    ('name = "local"', 'name = "a b"', "name"),
    ("[database]\nurl = ", "[database]\nurl = 5\nold = ", "database.url"),
    ("[service]", "[service]\nmetrics_listn = 1", "metrics_listn"),
]


@pytest.mark.parametrize(("old", "new", "word"), BAD_KEYS, ids=[k[2] for k in BAD_KEYS])
def test_operator_bad_config_key_one_line_exit_2(
    old: str,
    new: str,
    word: str,
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
) -> None:
    """A wrong value for one key: one line naming the key, exit 2, nothing written."""
    cfg = base_config(tmp_path, db_dsn, anvil, deployment)
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new, 1))
    out = indexer(cfg, *RUN)
    assert out.code == 2, out.stderr[-2000:]
    assert word in one_line(out)
    nothing_written(db_dsn)


def test_operator_unreachable_database_exit_1(
    tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment
) -> None:
    """A database nobody listens on: one line without the password, exit 1."""
    dsn = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/nowhere"
    out = indexer(base_config(tmp_path, dsn, anvil, deployment), *RUN)
    assert out.code == 1, out.stderr[-2000:]
    line = one_line(out)
    assert "connect" in line
    assert "s3cret" not in out.stderr


@pytest.mark.parametrize("version", [None, 99])
def test_operator_wrong_schema_version_exit_2(
    version: int | None,
    tmp_path: Path,
    anvil: Anvil,
    deployment: deploy.Deployment,
    db_dsn: str,
) -> None:
    """A database without the schema, or at another schema version: one line, exit 2, nothing
    written."""
    if version is None:
        checks.db_fetch(db_dsn, "DROP TABLE schema_version")
    else:
        checks.db_fetch(db_dsn, "UPDATE schema_version SET version = $1", version)
    out = indexer(base_config(tmp_path, db_dsn, anvil, deployment), *RUN)
    assert out.code == 2, out.stderr[-2000:]
    assert "schema" in one_line(out)
    nothing_written(db_dsn)


def test_operator_rpc_of_wrong_chain_exit_2(
    tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """The RPC serves chain 31337 but the configuration says 5: one line, exit 2."""
    cfg = base_config(tmp_path, db_dsn, anvil, deployment)
    cfg.write_text(cfg.read_text().replace("chain_id = 31337", "chain_id = 5"))
    out = indexer(cfg, *RUN)
    assert out.code == 2, out.stderr[-2000:]
    assert "chain id" in one_line(out)
    nothing_written(db_dsn)


@pytest.mark.parametrize("state", ["missing", "unreadable"])
def test_operator_key_file_missing_or_unreadable_exit_2(
    state: str, tmp_path: Path, anvil: Anvil, deployment: deploy.Deployment, db_dsn: str
) -> None:
    """A signer key file that is missing or cannot be read: one line, exit 2."""
    key = tmp_path / "signer.key"
    if state == "unreadable":
        key.mkdir()  # a directory cannot be read as a file, even by root
    cfg = base_config(tmp_path, db_dsn, anvil, deployment)
    cfg.write_text(cfg.read_text() + f'\n[signer]\nkey_file = "{key}"\n')
    out = indexer(cfg, *RUN)
    assert out.code == 2, out.stderr[-2000:]
    assert "key_file" in one_line(out)
    nothing_written(db_dsn)
