"""Config loading: defaults, overrides, validation that reports every problem, secret masking."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from indexer import config, configview, watchlist
from indexer.config import Secret, Settings
from indexer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "indexer.example.toml"
CONTRACTS = ("MultiTokenPushPull", "ProductBankFactory", "ProductBank", "ChamaSavings")
PASSWORD = "hunter2-s3cret"
KEY = "0x" + "ab" * 32
SENDER = "cd" * 32

BASE = f"""
[database]
url = "postgresql://indexer:{PASSWORD}@localhost/rewards"

[[chains]]
name = "local"
chain_id = 31337
rpc_urls = ["http://127.0.0.1:8545"]

  [[chains.contracts]]
  name = "MultiTokenPushPull"
  address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
  start_block = 5

  [[chains.contracts]]
  name = "ProductBankFactory"
  address = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512"
  start_block = 7

  [[chains.contracts]]
  name = "ProductBank"
  factory = {{ contract = "ProductBankFactory", event = "ProductBankCreated", parameter = "bank" }}
"""


def _event(name: str, *inputs: tuple[str, str]) -> dict[str, Any]:
    args = [{"name": n, "type": t, "indexed": True} for n, t in inputs]
    return {"type": "event", "name": name, "inputs": args, "anonymous": False}


@pytest.fixture
def abi_dir(tmp_path: Path) -> Path:
    """Small stand-in ABIs for the four contracts (the factory's event is the real shape)."""
    folder = tmp_path / "abis"
    folder.mkdir()
    created = _event("ProductBankCreated", ("productId", "bytes32"), ("bank", "address"))
    abis = {name: [_event("Other", ("who", "address"))] for name in CONTRACTS}
    abis["ProductBankFactory"] = [created]
    for name, abi in abis.items():
        (folder / f"{name}.json").write_text(json.dumps({"abi": abi, "bytecode": "0x"}))
    return folder


def _load(
    tmp_path: Path, abi_dir: Path, text: str = BASE, env: dict[str, str] | None = None
) -> Settings:
    path = tmp_path / "indexer.toml"
    path.write_text(text)
    return config.load(path, env or {}, abi_dir=abi_dir)


def _problems(tmp_path: Path, abi_dir: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, abi_dir, text, env)
    return "\n".join(info.value.problems)


def test_config_valid_file_loads_with_defaults(tmp_path: Path, abi_dir: Path) -> None:
    """A minimal valid file loads, with service, chain-table and contract defaults applied."""
    settings = _load(tmp_path, abi_dir)
    assert settings.database_url.reveal().endswith("@localhost/rewards")
    assert settings.service == config.ServiceSettings()
    assert settings.service.metrics_listen == ("127.0.0.1", 9108)
    assert settings.signer is None
    (chain,) = settings.chains
    assert (chain.confirmations, chain.max_reorg_depth, chain.finality) == (0, 64, "depth")
    assert (chain.batch_blocks, chain.poll_interval_s, chain.multicall3) == (2000, 0.5, None)
    assert (chain.address_chunk, chain.topics_above) == (500, None)  # by address
    mtpp, factory, bank = chain.contracts
    assert mtpp.address == "0x5fbdb2315678afecb367f032d93f642f64180aa3"
    assert mtpp.abi_path == abi_dir / "MultiTokenPushPull.json"
    assert mtpp.abi[0]["name"] == "Other"
    assert factory.factory is None
    assert bank.address is None
    assert bank.factory == watchlist.FactorySpec("ProductBankFactory", "ProductBankCreated", "bank")
    assert bank.start_block == 7  # the factory's


def test_config_chain_defaults_table() -> None:
    """Known chains get their own row, unknown ones the cautious fallback."""
    mainnet = config.chain_defaults(1)
    assert (mainnet["confirmations"], mainnet["finality"]) == (12, "tag")
    assert mainnet["multicall3"] == config.MULTICALL3
    for chain_id in (1, 10, 56, 100, 137, 8453, 42161, 42220, 11155111, 31337, 999_999):
        row = config.chain_defaults(chain_id)
        assert 0 <= row["confirmations"] <= row["max_reorg_depth"]
        assert row["poll_interval_s"] > 0
        assert row["batch_blocks"] >= 1
    assert config.chain_defaults(999_999)["finality"] == "depth"
    assert config.chain_defaults(999_999)["multicall3"] is None


def test_config_explicit_values_beat_defaults(tmp_path: Path, abi_dir: Path) -> None:
    """Every optional key given in the file is taken as written."""
    text = BASE.replace(
        'rpc_urls = ["http://127.0.0.1:8545"]',
        'rpc_urls = ["http://127.0.0.1:8545"]\nconfirmations = 3\nmax_reorg_depth = 10\n'
        'poll_interval = 2\nbatch_blocks = 50\nfinality = "tag"\n'
        'multicall3 = "0xcA11bde05977b3631167028862bE2a173976CA11"\ntopics_above = 800',
    )
    text += '\n[service]\nmetrics_listen = "[::1]:0"\nreconcile_interval = 5\n'
    text += "ready_max_lag_blocks = 3\nshutdown_grace = 1.5\n"
    text += "reconcile_max_views = 7\nreconcile_share = 0.5\n"
    settings = _load(tmp_path, abi_dir, text)
    chain = settings.chains[0]
    assert (chain.confirmations, chain.max_reorg_depth, chain.batch_blocks) == (3, 10, 50)
    assert (chain.poll_interval_s, chain.finality) == (2.0, "tag")
    assert chain.multicall3 == config.MULTICALL3
    assert chain.topics_above == 800
    assert settings.service == config.ServiceSettings(("::1", 0), 5.0, 3, 1.5, 7, 0.5)


def test_config_env_overrides(tmp_path: Path, abi_dir: Path) -> None:
    """DATABASE_URL, INDEXER_RPC_URL_<CHAIN> and the key variables beat the file."""
    text = BASE.replace('name = "local"', 'name = "base-sepolia"').replace("31337", "84532")
    text += '\n[signer]\nkey = "0x' + "11" * 32 + '"\n'
    env = {
        "DATABASE_URL": "postgres://other@db/x",
        "INDEXER_RPC_URL_BASE_SEPOLIA": "https://a.example/v2/k, https://b.example",
        "INDEXER_SIGNER_KEY": KEY,
        "INDEXER_SENDER_KEY": SENDER,
    }
    settings = _load(tmp_path, abi_dir, text, env)
    assert settings.database_url.reveal() == "postgres://other@db/x"
    assert settings.chains[0].rpc_urls == ("https://a.example/v2/k", "https://b.example")
    assert settings.signer is not None
    assert settings.signer.key.reveal() == KEY
    assert settings.signer.sender_key == Secret("0x" + SENDER)


def test_config_env_references(tmp_path: Path, abi_dir: Path) -> None:
    """A value written "$NAME" is read from the environment variable NAME."""
    text = BASE.replace(f"postgresql://indexer:{PASSWORD}@localhost/rewards", "$MY_DB")
    text = text.replace('"http://127.0.0.1:8545"', '"$MY_RPC"')
    text += '\n[signer]\nkey = "$MY_KEY"\n'
    env = {"MY_DB": "postgresql://u@h/d", "MY_RPC": "https://node:8545", "MY_KEY": KEY[2:]}
    settings = _load(tmp_path, abi_dir, text, env)
    assert settings.database_url.reveal() == "postgresql://u@h/d"
    assert settings.chains[0].rpc_urls == ("https://node:8545",)
    assert settings.signer is not None
    assert settings.signer.key.reveal() == KEY


def test_config_unset_env_reference_reported(tmp_path: Path, abi_dir: Path) -> None:
    """An unset "$NAME" is one problem naming the variable, with no follow-on "missing"."""
    text = BASE.replace(f"postgresql://indexer:{PASSWORD}@localhost/rewards", "$NOPE_DB")
    problems = _problems(tmp_path, abi_dir, text)
    assert problems == "database.url: environment variable NOPE_DB is not set"


def test_config_env_origin_named_in_problem(tmp_path: Path, abi_dir: Path) -> None:
    """A bad value from the environment is reported with the variable it came from."""
    env = {"INDEXER_RPC_URL_LOCAL": "ftp://x"}
    problems = _problems(tmp_path, abi_dir, BASE, env)
    assert "chains[0].rpc_urls[0] (from INDEXER_RPC_URL_LOCAL): not an http(s)" in problems


FIRST_CONTRACT = 'name = "MultiTokenPushPull"'
BAD_CASES = [
    ("[service]\nmetrics_listn = 'x'", "service.metrics_listn: unknown key (did you mean"),
    ("[servise]", "servise: unknown key (did you mean 'service'?)"),
    (
        '[service]\nmetrics_listen = "localhost"',
        'service.metrics_listen: not HOST:PORT: "localhost"',
    ),
    ("[service]\nreconcile_interval = -1", "service.reconcile_interval: must be a positive"),
    ("[service]\nreconcile_share = 1.5", "service.reconcile_share: must be at most 1, got 1.5"),
    ("[service]\nreconcile_share = 0", "service.reconcile_share: must be a positive number"),
    ("[service]\nreconcile_max_views = 0", "reconcile_max_views: must be at least 1, got 0"),
    ("[service]\nready_max_lag_blocks = '5'", "ready_max_lag_blocks: expected an integer, got a s"),
    ('[signer]\nkey_file = "k"\nmax_batch = 101', "signer.max_batch: must be at most 100"),
    ("[signer]\nmax_batch = 0", "signer.key: missing"),
    ("signer = 3", "signer: expected a table, got an integer"),
]
CHAIN_CASES = [
    ("chain_id = 31337", "chain_id = 0", "chains[0].chain_id: must be at least 1, got 0"),
    ("chain_id = 31337", "chain_id = true", "chains[0].chain_id: expected an integer, got a b"),
    ("chain_id = 31337", "", "chains[0].chain_id: missing"),
    ("chain_id = 31337", "chain_id = 31337\nconfirmations = -1", "confirmations: must not be n"),
    ("chain_id = 31337", "chain_id = 31337\nmax_reorg_depth = -2", "max_reorg_depth: must not"),
    ("chain_id = 31337", "chain_id = 1\nmax_reorg_depth = 5", "must not exceed max_reorg_depth"),
    ("chain_id = 31337", "chain_id = 31337\nconfirmatons = 1", "confirmatons: unknown key"),
    ("chain_id = 31337", "chain_id = 31337\naddress_chunk = 0", "address_chunk: must be at l"),
    ("chain_id = 31337", "chain_id = 31337\ntopics_above = -1", "topics_above: must not be neg"),
    ("chain_id = 31337", "chain_id = 31337\ntopics_above = true", "topics_above: expected an i"),
    ("chain_id = 31337", "chain_id = 31337\nfinality = 'safe'", 'finality: must be "tag" or'),
    ("chain_id = 31337", "chain_id = 31337\nbatch_blocks = 0", "batch_blocks: must be at least"),
    ("chain_id = 31337", "chain_id = 31337\npoll_interval = 0", "poll_interval: must be a pos"),
    ("chain_id = 31337", "chain_id = 31337\nmulticall3 = 1", "multicall3: expected an address"),
    ('["http://127.0.0.1:8545"]', "[]", "chains[0].rpc_urls: no RPC URL given"),
    ('["http://127.0.0.1:8545"]', '"http://x"', "rpc_urls: expected an array of strings"),
    ('["http://127.0.0.1:8545"]', '["file:///x"]', "rpc_urls[0]: not an http(s):// URL"),
    ('["http://127.0.0.1:8545"]', '["ws://h:8546"]', "rpc_urls[0]: a ws(s):// URL goes in ws_url"),
    ("chain_id = 31337", "chain_id = 31337\nws_url = 'http://h'", "ws_url: not a ws(s):// URL"),
    ('["http://127.0.0.1:8545"]', '["http://h:99999"]', "rpc_urls[0]: not an http(s)://"),
    ('name = "local"', 'name = "a b"', 'chains[0].name: not a valid chain name: "a b"'),
]
CONTRACT_CASES = [
    (
        "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "0x12",
        'chains[0].contracts[0].address: not a 20-byte hex address: "0x12"',
    ),
    (
        "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "0x5FbDB2315678afecb367f032d93F642f64180aA3",
        "chains[0].contracts[0].address: bad EIP-55 checksum",
    ),
    (FIRST_CONTRACT, 'name = "Nope"', "chains[0].contracts[0].name: ABI file not found"),
    (FIRST_CONTRACT, FIRST_CONTRACT + '\nabi = "x.json"', "contracts[0].abi: ABI file not found"),
    (FIRST_CONTRACT, FIRST_CONTRACT + "\nadress = '0x1'", "contracts[0].adress: unknown key"),
    ("start_block = 5", "start_block = -5", "contracts[0].start_block: must not be negative"),
    ("start_block = 5", "start_block = 'five'", "start_block: expected an integer, got a string"),
    ('"ProductBankFactory", event', '"Nope", event', "factory.contract: no other contract named"),
    ('event = "ProductBankCreated"', 'event = "Made"', "factory.event: ProductBankFactory's ABI"),
    ('parameter = "bank"', 'parameter = "productId"', "factory.parameter: event ProductBankCr"),
    (', parameter = "bank" }', " }", "chains[0].contracts[2].factory.parameter: missing"),
    ('name = "ProductBank"\n', 'name = "ProductBank"\naddress = "0x' + "0" * 40 + '"\n', "give"),
    (
        'name = "ProductBankFactory"\n  address = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512"',
        'name = "ProductBankFactory"',
        "contracts[1]: give exactly one",
    ),
    ('name = "ProductBankFactory"', FIRST_CONTRACT, "contracts[1].name: duplicate name, as"),
    (
        "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512",
        "0x5fbdb2315678afecb367f032d93f642f64180aa3",
        "contracts[1].address: duplicate address, as chains[0].contracts[0]",
    ),
]


@pytest.mark.parametrize(("addition", "expected"), BAD_CASES)
def test_config_bad_top_level_key_reported(
    tmp_path: Path, abi_dir: Path, addition: str, expected: str
) -> None:
    """Each bad service, signer or top-level value is reported under its key path."""
    assert expected in _problems(tmp_path, abi_dir, addition + "\n" + BASE)


@pytest.mark.parametrize(("old", "new", "expected"), CHAIN_CASES + CONTRACT_CASES)
def test_config_bad_chain_key_reported(
    tmp_path: Path, abi_dir: Path, old: str, new: str, expected: str
) -> None:
    """Each bad chain or contract value is reported under its key path."""
    assert old in BASE
    assert expected in _problems(tmp_path, abi_dir, BASE.replace(old, new, 1))


def test_config_duplicate_chains_reported(tmp_path: Path, abi_dir: Path) -> None:
    """Two chains with one name, one chain id, or one env variable name are problems."""
    chain = '\n[[chains]]\nname = "{}"\nchain_id = {}\nrpc_urls = ["http://h"]\n'
    text = BASE + chain.format("local", 1) + chain.format("x-y", 31337) + chain.format("x_y", 2)
    problems = _problems(tmp_path, abi_dir, text)
    assert "chains[1].name: duplicate chain name, as chains[0]" in problems
    assert "chains[2].chain_id: duplicate chain_id, as chains[0]" in problems
    assert "chains[3].name: same INDEXER_RPC_URL_X_Y as chains[2]" in problems


def test_config_missing_database_url_reported(tmp_path: Path, abi_dir: Path) -> None:
    """Without [database] url or DATABASE_URL the database URL is reported missing."""
    text = BASE.replace(f'url = "postgresql://indexer:{PASSWORD}@localhost/rewards"', "")
    assert "database.url: missing" in _problems(tmp_path, abi_dir, text)


def test_config_stray_env_variables_reported(tmp_path: Path, abi_dir: Path) -> None:
    """An RPC variable for no chain, or a key variable without [signer], is a problem."""
    env = {"INDEXER_RPC_URL_LOKAL": "http://h", "INDEXER_SIGNER_KEY": KEY}
    problems = _problems(tmp_path, abi_dir, BASE, env)
    assert "INDEXER_RPC_URL_LOKAL: no chain of that name in the config" in problems
    assert "INDEXER_SIGNER_KEY: is set but the config has no [signer] table" in problems
    assert KEY not in problems


def test_config_several_problems_reported_together(tmp_path: Path, abi_dir: Path) -> None:
    """All problems of a file come in one ConfigError, in file order."""
    text = BASE.replace("chain_id = 31337", "chain_id = -1\nconfirmatons = 2")
    text = text.replace("0x5FbDB2315678afecb367f032d93F642f64180aa3", "0x12")
    text = "[service]\nmetrics_listen = 'nope'\n" + text.replace("postgresql://", "mysql://")
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, abi_dir, text)
    assert len(info.value.problems) == 5, info.value.problems
    assert str(info.value).startswith("invalid configuration: ")


def test_config_missing_file_is_one_problem(tmp_path: Path) -> None:
    """A missing config file is exactly one problem naming the path."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        config.load(path, {})
    assert info.value.problems == [f"config file not found: {path}"]


def test_config_toml_syntax_error_has_line(tmp_path: Path, abi_dir: Path) -> None:
    """A TOML syntax error is one problem that says where it is."""
    problems = _problems(tmp_path, abi_dir, BASE + "\n[chains\n")
    assert "TOML syntax error" in problems
    assert "line" in problems


def test_config_no_file_reads_environment_only(abi_dir: Path) -> None:
    """Without a file, DATABASE_URL alone is a valid configuration with no chains."""
    settings = config.load(None, {"DATABASE_URL": "postgresql://u@h/d"}, abi_dir=abi_dir)
    assert settings.chains == ()
    assert settings.config_path is None


def test_config_abi_paths(tmp_path: Path, abi_dir: Path) -> None:
    """`abi` is relative to the config file; [service] abi_dir is used without the argument."""
    (tmp_path / "custom.json").write_text(json.dumps([_event("E", ("a", "address"))]))
    text = BASE.replace(FIRST_CONTRACT, FIRST_CONTRACT + '\nabi = "custom.json"')
    text = "[service]\nabi_dir = 'abis'\n" + text
    path = tmp_path / "indexer.toml"
    path.write_text(text)
    settings = config.load(path, {})
    first, factory, _ = settings.chains[0].contracts
    assert first.abi_path == tmp_path / "custom.json"
    assert first.abi == (_event("E", ("a", "address")),)
    assert factory.abi_path == tmp_path / "abis" / "ProductBankFactory.json"


def test_config_signer_key_file(tmp_path: Path, abi_dir: Path) -> None:
    """The signer key is read from key_file (relative, whitespace stripped) and normalised."""
    (tmp_path / "signer.key").write_text(f"  {KEY.upper().replace('0X', '0x')}\n")
    text = BASE + '\n[signer]\nkey_file = "signer.key"\nsender_key = "' + SENDER + '"\n'
    signer = _load(tmp_path, abi_dir, text).signer
    assert signer is not None
    assert signer.key.reveal() == KEY
    assert signer.sender_key is not None
    assert signer.sender_key.reveal() == "0x" + SENDER
    assert (signer.max_batch, signer.deadline_s, signer.push_interval_s) == (50, 3600, 5.0)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "signer.key_file: key file not found: "),
        (lambda p: p.mkdir(), "signer.key_file: cannot read key file "),
        (lambda p: p.write_bytes(b"\xff" * 40), "signer.key_file: key file "),
        (lambda p: p.write_text("0x1234"), "signer.key_file: signer key is not a 32-byte hex"),
    ],
)
def test_config_key_file_missing_or_unreadable(
    tmp_path: Path, abi_dir: Path, make: Any, expected: str
) -> None:
    """A missing, unreadable or malformed key file is reported without its contents."""
    make(tmp_path / "signer.key")
    problems = _problems(tmp_path, abi_dir, BASE + '\n[signer]\nkey_file = "signer.key"\n')
    assert expected in problems
    assert "1234" not in problems
    assert "\\xff" not in problems


def test_config_key_and_key_file_conflict(tmp_path: Path, abi_dir: Path) -> None:
    """Giving both key and key_file is a problem rather than a silent choice."""
    text = BASE + f'\n[signer]\nkey = "{KEY}"\nkey_file = "k"\n'
    assert "signer.key: give `key` or `key_file`, not both" in _problems(tmp_path, abi_dir, text)


def test_config_secrets_masked_in_render(tmp_path: Path, abi_dir: Path) -> None:
    """render() and repr() show no password, key or RPC API key, and render() is TOML."""
    text = BASE.replace('"http://127.0.0.1:8545"', '"https://u:pw@rpc.example/v2/APIKEY"')
    text += f'\n[signer]\nkey = "{KEY}"\nsender_key = "{SENDER}"\n'
    settings = _load(tmp_path, abi_dir, text)
    rendered = configview.render(settings)
    for secret in (PASSWORD, KEY[2:], SENDER, "APIKEY", "pw@"):
        assert secret not in rendered
    for secret in (PASSWORD, KEY[2:], SENDER):
        assert secret not in repr(settings)
    assert "postgresql://indexer:****@localhost/rewards" in rendered
    doc = tomllib.loads(rendered)
    assert doc["chains"][0]["rpc_urls"] == ["https://rpc.example/****"]
    assert doc["signer"] == {
        "key": "****",
        "sender_key": "****",
        "max_batch": 50,
        "deadline": 3600,
        "push_interval": 5.0,
        "replace_after": 60.0,
    }
    assert doc["chains"][0]["contracts"][2]["factory"]["parameter"] == "bank"


def test_config_mask_url() -> None:
    """Only the password of a database URL is masked, in user info or as a parameter."""
    assert configview.mask_url("postgresql://u:p@h:5432/d") == "postgresql://u:****@h:5432/d"
    assert configview.mask_url("postgresql://u@h/d?password=p&x=1") == (
        "postgresql://u@h/d?password=****&x=1"
    )
    assert configview.mask_url("postgresql://h/d") == "postgresql://h/d"
    assert configview.mask_url("garbage with p") == "****"


def test_config_secret_never_shows_itself() -> None:
    """A Secret prints as **** everywhere and compares by value."""
    secret = Secret(KEY)
    assert (repr(secret), str(secret), f"{secret}") == ("****", "****", "****")
    assert secret.reveal() == KEY
    assert secret == Secret(KEY)
    assert secret != Secret("x")


def test_config_secrets_never_in_error_text(tmp_path: Path, abi_dir: Path) -> None:
    """Bad secrets and RPC URLs are reported without their values."""
    text = BASE.replace("postgresql://indexer", "mysql://indexer")
    text = text.replace('"http://127.0.0.1:8545"', '"htp://rpc.example/v2/APIKEY"')
    text += '\n[signer]\nkey = "0xdeadbeefcafe"\nsender_key = "SENDERSECRET"\n'
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, abi_dir, text, {"DATABASE_URL": f"mysql://u:{PASSWORD}x@h/d"})
    message = str(info.value)
    assert "database.url (from DATABASE_URL): not a postgresql:// URL" in message
    assert "signer.key: signer key is not a 32-byte hex key" in message
    assert "signer.sender_key: sender key is not a 32-byte hex key" in message
    for secret in (PASSWORD, "deadbeefcafe", "SENDERSECRET", "APIKEY"):
        assert secret not in message


def test_config_example_file_parses_with_stand_in_abis(abi_dir: Path) -> None:
    """deploy/indexer.example.toml is accepted given ABIs that have its factory event."""
    settings = config.load(EXAMPLE, {}, abi_dir=abi_dir)
    assert [c.name for c in settings.chains[0].contracts] == list(CONTRACTS)
    assert settings.signer is None
    assert "factory = {" in configview.render(settings)


@pytest.mark.skipif(
    not all((ROOT / "abis" / f"{name}.json").exists() for name in CONTRACTS),
    reason="abis/ lacks the example's contracts",
)
def test_config_example_file_parses_with_repo_abis() -> None:
    """deploy/indexer.example.toml is accepted with the repository's real ABIs."""
    settings = config.load(EXAMPLE, {})
    assert len(settings.chains[0].contracts) == len(CONTRACTS)


def test_readme_states_the_per_chain_defaults() -> None:
    """The README's table of per-chain defaults is the code's (chain_defaults)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    row = r"^\| [^|]+ \| (\d+|-) \| (\d+) \| (\d+) \| ([\d.]+) \| (\d+) \| (\w+) \| (yes|no) \|$"
    rows = re.findall(row, text, re.M)
    assert len(rows) >= 10
    for cid, conf, depth, poll, batch, finality, mc in rows:
        d = config.chain_defaults(0 if cid == "-" else int(cid))
        assert (int(conf), int(depth), float(poll), int(batch), finality) == (
            d["confirmations"],
            d["max_reorg_depth"],
            d["poll_interval_s"],
            d["batch_blocks"],
            d["finality"],
        ), cid
        assert (mc == "yes") == bool(d["multicall3"]), cid


def test_config_api_section(tmp_path: Path, abi_dir: Path) -> None:
    """[api]: off without the table; listen defaults to 127.0.0.1:9109; the token comes from
    token_file (stripped) or INDEXER_API_TOKEN, which beats it; print-config masks it."""
    assert _load(tmp_path, abi_dir).api is None
    (tmp_path / "api.token").write_text("  file-token-0123456789\n")
    api = _load(tmp_path, abi_dir, BASE + '\n[api]\ntoken_file = "api.token"\n').api
    assert api is not None
    assert api.listen == ("127.0.0.1", 9109)
    assert api.token is not None
    assert api.token.reveal() == "file-token-0123456789"
    env = {"INDEXER_API_TOKEN": "env-token-0123456789"}
    text = BASE + '\n[api]\nlisten = "0.0.0.0:0"\ntoken_file = "api.token"\n'
    settings = _load(tmp_path, abi_dir, text, env)
    assert settings.api is not None
    assert settings.api.listen == ("0.0.0.0", 0)
    assert settings.api.token == Secret("env-token-0123456789")
    rendered = configview.render(settings)
    assert "[api]" in rendered
    assert "env-token" not in rendered
    assert _load(tmp_path, abi_dir, BASE + "\n[api]\n").api == config.ApiSettings()


def test_config_api_problems_reported_together(tmp_path: Path, abi_dir: Path) -> None:
    """A bad listen, a short token, an unknown key, and a token variable without [api] are
    each reported, the token never echoed."""
    (tmp_path / "short.token").write_text("tiny-secret")
    text = BASE + '\n[api]\nlisten = "nowhere"\ntoken_file = "short.token"\ntokn = 1\n'
    message = _problems(tmp_path, abi_dir, text)
    assert 'api.listen: not HOST:PORT: "nowhere"' in message
    assert "api.token_file: API token must be >= 16 printable characters" in message
    assert "api.tokn" in message
    assert "tiny-secret" not in message
    stray = _problems(tmp_path, abi_dir, BASE, {"INDEXER_API_TOKEN": "x" * 20})
    assert "INDEXER_API_TOKEN: is set but the config has no [api] table" in stray
