"""Configuration: one TOML file, environment overrides, every problem reported at once.

Precedence, lowest first: the TOML file < environment variables < CLI flags (the CLI
applies its flags to the returned ``Settings``). ``load()`` validates everything and raises
one ``ConfigError`` listing *all* problems, each prefixed by its key path
(``chains[0].contracts[1].address: …``) and, when the value came from the environment, by
its origin (``database.url (from DATABASE_URL): …``). No problem message ever contains a
secret (database password, signer key) or an RPC URL, which often embeds an API key.

Reference (key = default; "seconds" are int or float; every string value may instead be
written ``"$ENV_NAME"``, Shovel style, to read it from that environment variable: use that
for secrets; an unset variable is a problem)::

    [database]
    url                   required  postgresql:// or postgres:// URL. Env: DATABASE_URL
                                    (empty counts as unset, for every override variable)

    [service]                       the table and each key are optional
    metrics_listen        "127.0.0.1:9108"  HOST:PORT (IPv6 as [::1]:9108) of /metrics,
                                            /healthz and /readyz; port 0 = any free port
    reconcile_interval    600       seconds between reconciler runs (> 0)
    reconcile_max_views   50000     above this many balance keys a chain's reconcile runs
                                    are incremental, each asking at most this many views (≥ 1)
    reconcile_share       0.05      share of the balance keys each incremental run samples
                                    (0 < share ≤ 1): every key is checked each 1/share runs
    ready_max_lag_blocks  100       /readyz fails while a chain's lag (head - checkpoint,
                                    so including `confirmations`) exceeds this (≥ 0)
    shutdown_grace        10        seconds SIGTERM waits for tasks to finish (> 0)
    abi_dir               bundled   folder of <ContractName>.json ABI files, relative to
                                    the config file; default: the ABIs the package ships
                                    (abis/ of the repository); load(abi_dir=…) overrides it

    [[chains]]                      one table per chain; zero chains is valid (migrate)
    name                  required  unique; used by `--chain` and the env name below
    chain_id              required  unique, > 0; checked against eth_chainId at start
    rpc_urls              required  non-empty list of http(s):// URLs, tried in order
                                    (failover; a redirect is an error, not followed). Env:
                                    INDEXER_RPC_URL_<NAME> (name upper-cased,
                                    non-alphanumerics as "_"), comma-separated
    ws_url                -         ws(s):// URL of the node for an eth_subscribe("newHeads")
                                    that wakes the follower at once when a block arrives
                                    (requests still go over rpc_urls); lost or absent: the
                                    follower polls every poll_interval
    confirmations         table     depth a block needs before the rewards it confirms count
                                    as confirmed (≥ 0); the follower itself indexes up to
                                    the head and rolls reorgs back
    max_reorg_depth       table     deepest reorg rolled back; deeper: halt, delete nothing,
                                    alert (≥ confirmations)
    poll_interval         table     seconds between head polls when caught up (> 0)
    batch_blocks          table     most blocks fetched per range (≥ 1; the RPC client
                                    shrinks ranges a provider refuses)
    finality              table     "tag": the node's `finalized` block when it has one,
                                    else head - max_reorg_depth; "depth": always the latter
    multicall3            table     Multicall3 address for the reconciler's batched views;
                                    false = none (one eth_call per view)
    max_response_mb       64        largest RPC answer read (MiB, ≥ 1), streamed: a bigger
                                    eth_getLogs answer shrinks the range; one block over
                                    it halts the chain with the reason
    address_chunk         500       most addresses in one eth_getLogs filter (≥ 1): more
                                    watched contracts (factory-made banks) are asked for
                                    in several filters of the same batch
    topics_above          false     more watched contracts than this (≥ 0): eth_getLogs
                                    by the watched events' topic0, no address filter, the
                                    logs kept by address here: one filter per range for
                                    providers that cap addresses per filter or bill per
                                    call. Logs of watched contracts with a topic0 of no ABI
                                    are then not seen; false = always by address
    "table" = chain_defaults(chain_id) below.

      [[chains.contracts]]          zero or more per chain
      name                required  unique on the chain; the ABI is <abi_dir>/<name>.json
      abi                 -         ABI file path instead (relative to the config file)
      address             -         20-byte hex; mixed case must be a valid EIP-55 checksum
      factory             -         { contract = NAME, event = EVENT, parameter = INPUT }:
                                    the addresses are the `address` input INPUT of EVENT
                                    emitted by contract NAME (same chain, not itself made by
                                    a factory). Exactly one of address / factory.
      start_block         0         first block to index; a factory-made contract defaults
                                    to its factory's start_block

    [signer]                        optional; its presence enables the reward pusher
    key                   -         distributor key (32-byte hex, 0x optional) that signs
                                    EIP-712 batches; or:
    key_file              -         file holding that key (whitespace stripped), relative
                                    to the config file. Env INDEXER_SIGNER_KEY beats both.
    sender_key            signer key  key of the account that sends (and pays gas for)
    sender_key_file                 the batches; env INDEXER_SENDER_KEY beats both
    max_batch             50        rewards per signed batch (1..100, the contract's limit)
    deadline              3600      seconds a signed batch stays valid (> 0)
    push_interval         5         seconds between pusher rounds (> 0)
    replace_after         60        seconds an unmined transaction waits before it is
                                    replaced (same account nonce, fees +25 %) (> 0)
    max_fee_gwei          per chain  the most a replacement may offer per gas (> 0): 200 on
                                    Ethereum (1), 2000 on Polygon (137), 20 on BNB (56),
                                    5 on OP/Base/Arbitrum (10, 8453, 42161), 100 elsewhere.
                                    Reached: escalation stops, the same transaction is
                                    rebroadcast, indexer_pusher_fee_capped_transactions > 0

    [api]                           optional; its presence starts the backend's HTTP API
    listen                "127.0.0.1:9109"  HOST:PORT of /v1/... and the ops page at /
    token_file            -         file holding the bearer token that POST /v1/rewards
                                    requires (whitespace stripped, >= 16 characters),
                                    relative to the config file. Env INDEXER_API_TOKEN
                                    beats it. No token: the API is read-only.

ABI files are JSON: either an object with key ``abi`` (Foundry/Hardhat artifacts and our
``abis/``) or a bare list of ABI entries. Chain and contract names are letters, digits and
``_ . -``, starting with a letter or digit.

Also problems: unknown keys (with the nearest known key as a hint), duplicate chain names,
chain ids or RPC variable names ("a-b" and "a_b"), duplicate contract names or addresses on
a chain, an ``INDEXER_RPC_URL_*`` naming no chain, and a key variable set without a
``[signer]`` table (only the file enables pushing, which moves money).

Helpers: ``indexer/_toml.py`` reads typed TOML values, ``indexer/watchlist.py`` the
``[[chains.contracts]]`` tables; ``indexer/configview.py`` writes the result back for
``print-config``.
"""

from __future__ import annotations

import hmac
import importlib.resources
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit

from indexer._toml import (
    BAD,
    NAME_RE,
    Problems,
    Section,
    check_address,
    check_url,
    expand,
    hex_key,
    kind_of,
    parse_listen,
    read_toml,
)
from indexer.errors import ConfigError
from indexer.log import MASK
from indexer.watchlist import ContractSpec, read_contracts

ENV_DATABASE_URL = "DATABASE_URL"
ENV_RPC_URL_PREFIX = "INDEXER_RPC_URL_"
ENV_SIGNER_KEY = "INDEXER_SIGNER_KEY"
ENV_SENDER_KEY = "INDEXER_SENDER_KEY"
ENV_API_TOKEN = "INDEXER_API_TOKEN"  # noqa: S105 (a variable name, not a token)

# The ABIs ship inside the package (abis/ at the top of the repository links here), so an
# installed wheel finds them wherever it lives.
DEFAULT_ABI_DIR = Path(str(importlib.resources.files("indexer"))) / "abis"
DEFAULT_METRICS_LISTEN = ("127.0.0.1", 9108)
DEFAULT_API_LISTEN = ("127.0.0.1", 9109)
MIN_API_TOKEN_CHARS = 16
RECONCILE_INTERVAL_S = 600.0
ADDRESS_CHUNK = 500  # addresses per eth_getLogs filter (providers refuse thousands)
# More watched contracts than this: logs fetched by topic0 (None: never). The scale bench
# found address chunks as cheap with the watched contracts the only traffic, and twice as
# fast when others emit the same events, so by address is the default.
TOPICS_ABOVE: int | None = None
RECONCILE_MAX_VIEWS = 50_000
RECONCILE_SHARE = 0.05
READY_MAX_LAG_BLOCKS = 100
MIB = 1024 * 1024
SHUTDOWN_GRACE_S = 10.0
MAX_BATCH = 50
MAX_BATCH_LIMIT = 100  # ProductBank.pushRewards accepts 1..100 rewards
DEADLINE_S = 3600
PUSH_INTERVAL_S = 5.0
REPLACE_AFTER_S = 60.0

MULTICALL3 = "0xca11bde05977b3631167028862be2a173976ca11"  # same address on most chains
FINALITY_MODES = ("tag", "depth")


class ChainDefaults(TypedDict):
    """Per-chain defaults of the keys a ``[[chains]]`` table may leave out."""

    confirmations: int
    max_reorg_depth: int
    poll_interval_s: float
    batch_blocks: int
    finality: str
    multicall3: str | None


def _row(conf: int, depth: int, poll: float, batch: int, finality: str = "tag") -> ChainDefaults:
    return ChainDefaults(
        confirmations=conf,
        max_reorg_depth=depth,
        poll_interval_s=poll,
        batch_blocks=batch,
        finality=finality,
        multicall3=MULTICALL3,
    )


# The one table of per-chain defaults (like Ponder's finality.ts). max_reorg_depth covers the
# time to finality so that, without a `finalized` tag, every reorg short of finality is rolled
# back rather than halting; confirmations trade latency for fewer rollbacks; poll is about
# half a block time. With finality "tag" the node's finalized block usually bounds the window
# far sooner than max_reorg_depth.
_CHAIN_DEFAULTS: dict[int, ChainDefaults] = {
    1: _row(12, 128, 6.0, 2000),  # mainnet: 12 s blocks, final after 2 epochs (64 blocks)
    11155111: _row(12, 128, 6.0, 2000),  # sepolia: as mainnet
    10: _row(5, 600, 1.0, 2000),  # optimism: 2 s blocks, L1-final in ~15-20 min
    8453: _row(5, 600, 1.0, 2000),  # base: as optimism
    42161: _row(20, 4800, 0.5, 5000),  # arbitrum one: 0.25 s blocks, L1-final in ~20 min
    137: _row(32, 256, 1.0, 2000),  # polygon PoS: 2 s blocks, has had ~150-block reorgs
    56: _row(15, 128, 1.0, 2000),  # bsc: sub-2 s blocks, fast finality within a few blocks
    100: _row(8, 64, 2.5, 2000),  # gnosis: 5 s blocks, final after 2 epochs (32 blocks)
    42220: _row(5, 1200, 1.0, 2000),  # celo (OP-stack L2 since 2025): 1 s blocks
    # anvil/hardhat: confirmations 0 because blocks are mined on demand and tests and `demo`
    # expect events at once; reorgs happen only when a test asks (anvil_reorg) and are rolled
    # back whatever the confirmations. "depth": anvil's `finalized` tag is a fixed offset and
    # hardhat's is the head, neither means anything. No Multicall3 is deployed there.
    31337: ChainDefaults(
        confirmations=0,
        max_reorg_depth=64,
        poll_interval_s=0.5,
        batch_blocks=2000,
        finality="depth",
        multicall3=None,
    ),
}
# Unknown chains: mainnet-like caution, "depth" (we do not know whether the node's
# `finalized` tag is meaningful there) and no Multicall3 assumed.
_FALLBACK = ChainDefaults(
    confirmations=12,
    max_reorg_depth=128,
    poll_interval_s=2.0,
    batch_blocks=1000,
    finality="depth",
    multicall3=None,
)


def chain_defaults(chain_id: int) -> ChainDefaults:
    """Defaults for a chain id (a fresh dict; the fallback row for unknown chains)."""
    return ChainDefaults(**_CHAIN_DEFAULTS.get(chain_id, _FALLBACK))


class Secret:
    """A string that never shows itself: ``repr``/``str`` give ``****``; ``reveal()`` it at
    the point of use, so that logging or printing settings cannot leak it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ChainSettings:
    """One chain: endpoints, finality window and the contracts watched on it."""

    name: str
    chain_id: int
    rpc_urls: tuple[str, ...]
    confirmations: int
    max_reorg_depth: int
    poll_interval_s: float
    batch_blocks: int
    finality: str
    contracts: tuple[ContractSpec, ...]
    multicall3: str | None
    max_response_bytes: int = 64 * MIB
    ws_url: str | None = None
    address_chunk: int = ADDRESS_CHUNK
    topics_above: int | None = TOPICS_ABOVE


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Process-wide knobs: the HTTP endpoint, reconciler cadence, readiness, shutdown."""

    metrics_listen: tuple[str, int] = DEFAULT_METRICS_LISTEN
    reconcile_interval_s: float = RECONCILE_INTERVAL_S
    ready_max_lag_blocks: int = READY_MAX_LAG_BLOCKS
    shutdown_grace_s: float = SHUTDOWN_GRACE_S
    reconcile_max_views: int = RECONCILE_MAX_VIEWS
    reconcile_share: float = RECONCILE_SHARE


@dataclass(frozen=True, slots=True)
class SignerSettings:
    """The pusher's keys and batching; ``sender_key`` None means the signer key sends."""

    key: Secret
    sender_key: Secret | None = None
    max_batch: int = MAX_BATCH
    deadline_s: int = DEADLINE_S
    push_interval_s: float = PUSH_INTERVAL_S
    replace_after_s: float = REPLACE_AFTER_S
    max_fee_gwei: float | None = None  # None: default_max_fee_gwei(chain_id)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The backend's HTTP API; ``token`` None keeps it read-only (no POST /v1/rewards)."""

    listen: tuple[str, int] = DEFAULT_API_LISTEN
    token: Secret | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated, effective configuration; ``signer`` None disables the pusher, ``api``
    None the HTTP API."""

    database_url: Secret
    service: ServiceSettings
    chains: tuple[ChainSettings, ...]
    signer: SignerSettings | None
    config_path: Path | None
    api: ApiSettings | None = None


def env_suffix(chain_name: str) -> str:
    """The ``<CHAIN>`` part of ``INDEXER_RPC_URL_<CHAIN>`` for a chain name."""
    return re.sub(r"[^A-Za-z0-9]", "_", chain_name).upper()


# --------------------------------------------------------------------------- sections


@dataclass(slots=True)
class _Context:
    env: Mapping[str, str]
    problems: Problems
    base_dir: Path
    abi_dir: Path


def _database(table: Mapping[str, Any], ctx: _Context) -> Secret:
    sec = Section(table, "database", ctx.problems, ("url",))
    if ctx.env.get(ENV_DATABASE_URL):
        ctx.problems.origins["database.url"] = ENV_DATABASE_URL
        url: str | None = ctx.env[ENV_DATABASE_URL]
    else:
        url = sec.get_str("url")
    if not url:
        if sec.data.get("url") is not BAD:
            ctx.problems.add("database.url", f"missing (set [database] url or {ENV_DATABASE_URL})")
        return Secret("")
    try:
        ok = urlsplit(url).scheme in ("postgresql", "postgres")
    except ValueError:
        ok = False
    if not ok:
        ctx.problems.add("database.url", "not a postgresql:// URL")
    return Secret(url)


_SERVICE_KEYS = (
    "metrics_listen",
    "reconcile_interval",
    "reconcile_max_views",
    "reconcile_share",
    "ready_max_lag_blocks",
    "shutdown_grace",
    "abi_dir",
)


def _service(sec: Section) -> ServiceSettings:
    listen = DEFAULT_METRICS_LISTEN
    if (text := sec.get_str("metrics_listen")) is not None:
        parsed = parse_listen(text)
        if parsed is None:
            sec.problems.add(sec.key("metrics_listen"), f"not HOST:PORT: {json.dumps(text)}")
        listen = parsed or listen
    reconcile = sec.get_seconds("reconcile_interval")
    max_views = sec.get_int("reconcile_max_views", minimum=1)
    share = sec.get_positive("reconcile_share", "a share of the keys")
    if share is not None and share > 1:
        sec.problems.add(sec.key("reconcile_share"), f"must be at most 1, got {share:g}")
        share = None
    lag = sec.get_int("ready_max_lag_blocks")
    grace = sec.get_seconds("shutdown_grace")
    return ServiceSettings(
        metrics_listen=listen,
        reconcile_interval_s=RECONCILE_INTERVAL_S if reconcile is None else reconcile,
        reconcile_max_views=RECONCILE_MAX_VIEWS if max_views is None else max_views,
        reconcile_share=RECONCILE_SHARE if share is None else share,
        ready_max_lag_blocks=READY_MAX_LAG_BLOCKS if lag is None else lag,
        shutdown_grace_s=SHUTDOWN_GRACE_S if grace is None else grace,
    )


_CHAIN_KEYS = (
    "name",
    "chain_id",
    "rpc_urls",
    "confirmations",
    "max_reorg_depth",
    "poll_interval",
    "batch_blocks",
    "finality",
    "multicall3",
    "max_response_mb",
    "address_chunk",
    "topics_above",
    "ws_url",
    "contracts",
)


def _rpc_urls(sec: Section, name: str, ctx: _Context) -> tuple[str, ...]:
    key = sec.key("rpc_urls")
    var = ENV_RPC_URL_PREFIX + env_suffix(name)
    if name and ctx.env.get(var):
        ctx.problems.origins[key] = var
        urls = [u.strip() for u in ctx.env[var].split(",") if u.strip()]
    else:
        sec.require("rpc_urls")
        given = sec.get_strings("rpc_urls")
        if given is None:
            return ()  # missing or mistyped: reported already
        urls = given
    if not urls:
        ctx.problems.add(key, "no RPC URL given")
    for i, url in enumerate(urls):
        check_url(url, f"{key}[{i}]", ctx.problems, schemes=("http", "https"))
    return tuple(urls)


def _ws_url(sec: Section) -> str | None:
    url = sec.get_str("ws_url")
    if url is not None:
        check_url(url, sec.key("ws_url"), sec.problems, schemes=("ws", "wss"))
    return url


def _topics_above(sec: Section) -> int | None:
    if sec.data.get("topics_above") is False:
        return None
    value = sec.get_int("topics_above")
    return TOPICS_ABOVE if value is None else value


def _multicall3(sec: Section, default: str | None) -> str | None:
    value = sec.data.get("multicall3")
    if value is False:
        return None
    if value is None or value is BAD:
        return default
    if not isinstance(value, str):
        sec.problems.add(
            sec.key("multicall3"), f"expected an address or false, got {kind_of(value)}"
        )
        return None
    return check_address(value, sec.key("multicall3"), sec.problems)


def _chain(sec: Section, ctx: _Context) -> ChainSettings:
    sec.require("name", "chain_id")
    name = sec.get_str("name") or ""
    if name and not NAME_RE.fullmatch(name):
        sec.problems.add(sec.key("name"), f"not a valid chain name: {json.dumps(name)}")
    chain_id = sec.get_int("chain_id", minimum=1) or 0
    d = chain_defaults(chain_id)
    confirmations = sec.get_int("confirmations")
    depth = sec.get_int("max_reorg_depth")
    confirmations = d["confirmations"] if confirmations is None else confirmations
    depth = d["max_reorg_depth"] if depth is None else depth
    if confirmations > depth:
        sec.problems.add(
            sec.key("confirmations"), f"must not exceed max_reorg_depth ({confirmations} > {depth})"
        )
    finality = sec.get_str("finality") or d["finality"]
    if finality not in FINALITY_MODES:
        sec.problems.add(
            sec.key("finality"), f'must be "tag" or "depth", got {json.dumps(finality)}'
        )
    return ChainSettings(
        name=name,
        chain_id=chain_id,
        rpc_urls=_rpc_urls(sec, name, ctx),
        confirmations=confirmations,
        max_reorg_depth=depth,
        poll_interval_s=sec.get_seconds("poll_interval") or d["poll_interval_s"],
        batch_blocks=sec.get_int("batch_blocks", minimum=1) or d["batch_blocks"],
        finality=finality,
        contracts=read_contracts(sec, ctx.base_dir, ctx.abi_dir),
        multicall3=_multicall3(sec, d["multicall3"]),
        max_response_bytes=(sec.get_int("max_response_mb", minimum=1) or 64) * MIB,
        ws_url=_ws_url(sec),
        address_chunk=sec.get_int("address_chunk", minimum=1) or ADDRESS_CHUNK,
        topics_above=_topics_above(sec),
    )


def _chains(root: Section, ctx: _Context) -> tuple[ChainSettings, ...]:
    chains: list[ChainSettings] = []
    names: dict[str, str] = {}
    ids: dict[int, str] = {}
    env_vars: dict[str, str] = {}  # "a-b" and "a_b" would share one INDEXER_RPC_URL_A_B
    for path, table in root.get_tables("chains"):
        chain = _chain(Section(table, path, ctx.problems, _CHAIN_KEYS), ctx)
        var = ENV_RPC_URL_PREFIX + env_suffix(chain.name)
        if chain.name in names:
            ctx.problems.add(f"{path}.name", f"duplicate chain name, as {names[chain.name]}")
        elif var in env_vars:
            ctx.problems.add(f"{path}.name", f"same {var} as {env_vars[var]}")
        if chain.chain_id in ids:
            ctx.problems.add(f"{path}.chain_id", f"duplicate chain_id, as {ids[chain.chain_id]}")
        if chain.name:
            names.setdefault(chain.name, path)
            env_vars.setdefault(var, path)
        if chain.chain_id:
            ids.setdefault(chain.chain_id, path)
        chains.append(chain)
    for var in sorted(ctx.env):
        if var.startswith(ENV_RPC_URL_PREFIX) and ctx.env[var] and var not in env_vars:
            ctx.problems.add(var, "no chain of that name in the config")
    return tuple(chains)


_SIGNER_KEYS = (
    "key",
    "key_file",
    "sender_key",
    "sender_key_file",
    "max_batch",
    "deadline",
    "push_interval",
    "replace_after",
    "max_fee_gwei",
)

# Fee caps per chain id (gwei): above the usual peaks of each network, far below a runaway.
MAX_FEE_GWEI: dict[int, float] = {1: 200, 137: 2000, 56: 20, 10: 5, 8453: 5, 42161: 5}
DEFAULT_MAX_FEE_GWEI = 100.0


def default_max_fee_gwei(chain_id: int) -> float:
    """The fee cap of a chain when ``[signer] max_fee_gwei`` is not set."""
    return MAX_FEE_GWEI.get(chain_id, DEFAULT_MAX_FEE_GWEI)


def _key(sec: Section, name: str, var: str, ctx: _Context) -> Secret | None:
    """A key from env var, inline value or key file; None when absent or bad (reported)."""
    label = "signer key" if name == "key" else "sender key"
    path = sec.key(name)
    if ctx.env.get(var):
        ctx.problems.origins[path] = var
        text: str | None = ctx.env[var]
    elif sec.has(name) and sec.has(f"{name}_file"):
        ctx.problems.add(path, f"give `{name}` or `{name}_file`, not both")
        return None
    elif (file := sec.get_str(f"{name}_file")) is not None:
        path = sec.key(f"{name}_file")
        text = _read_key_file(ctx.base_dir / Path(file).expanduser(), path, ctx.problems)
    else:
        text = sec.get_str(name)
    if text is None:
        return None
    key = hex_key(text)
    if key is None:
        ctx.problems.add(path, f"{label} is not a 32-byte hex key")
    return None if key is None else Secret(key)


def _read_key_file(path: Path, key: str, problems: Problems) -> str | None:
    """The file's text; never echoes it, even in a decoding error."""
    try:
        return path.read_bytes().decode("ascii")
    except FileNotFoundError:
        problems.add(key, f"key file not found: {path}")
    except OSError as exc:
        problems.add(key, f"cannot read key file {path}: {exc.strerror or type(exc).__name__}")
    except UnicodeDecodeError:
        problems.add(key, f"key file {path} is not hex text")
    return None


def _signer(table: Mapping[str, Any] | None, ctx: _Context) -> SignerSettings | None:
    """The pusher's settings, or None without a ``[signer]`` table: pushing moves money, so
    only the file enables it, never a stray INDEXER_SIGNER_KEY in the environment."""
    if table is None:
        for var in (ENV_SIGNER_KEY, ENV_SENDER_KEY):
            if ctx.env.get(var):
                ctx.problems.add(var, "is set but the config has no [signer] table")
        return None
    sec = Section(table, "signer", ctx.problems, _SIGNER_KEYS)
    key = _key(sec, "key", ENV_SIGNER_KEY, ctx)
    sources = ("key", "key_file")
    if key is None and not ctx.env.get(ENV_SIGNER_KEY) and not any(map(sec.has, sources)):
        ctx.problems.add("signer.key", f"missing (set key, key_file or {ENV_SIGNER_KEY})")
    sender = _key(sec, "sender_key", ENV_SENDER_KEY, ctx)
    max_batch = sec.get_int("max_batch", minimum=1)
    if max_batch is not None and max_batch > MAX_BATCH_LIMIT:
        ctx.problems.add("signer.max_batch", f"must be at most {MAX_BATCH_LIMIT}, got {max_batch}")
    return SignerSettings(
        key=key or Secret(""),
        sender_key=sender,
        max_batch=max_batch or MAX_BATCH,
        deadline_s=sec.get_int("deadline", minimum=1) or DEADLINE_S,
        push_interval_s=sec.get_seconds("push_interval") or PUSH_INTERVAL_S,
        replace_after_s=sec.get_seconds("replace_after") or REPLACE_AFTER_S,
        max_fee_gwei=sec.get_positive("max_fee_gwei", "gwei"),
    )


_API_KEYS = ("listen", "token_file")


def _api(table: Mapping[str, Any] | None, ctx: _Context) -> ApiSettings | None:
    """The HTTP API's settings, or None without an ``[api]`` table (off by default)."""
    if table is None:
        if ctx.env.get(ENV_API_TOKEN):
            ctx.problems.add(ENV_API_TOKEN, "is set but the config has no [api] table")
        return None
    sec = Section(table, "api", ctx.problems, _API_KEYS)
    listen = DEFAULT_API_LISTEN
    if (text := sec.get_str("listen")) is not None:
        parsed = parse_listen(text)
        if parsed is None:
            sec.problems.add(sec.key("listen"), f"not HOST:PORT: {json.dumps(text)}")
        listen = parsed or listen
    token: str | None = None
    key = sec.key("token_file")
    if ctx.env.get(ENV_API_TOKEN):
        ctx.problems.origins[key] = ENV_API_TOKEN
        token = ctx.env[ENV_API_TOKEN].strip()
    elif (file := sec.get_str("token_file")) is not None:
        token = _read_key_file(ctx.base_dir / Path(file).expanduser(), key, ctx.problems)
        token = None if token is None else token.strip()
    if token is not None and (len(token) < MIN_API_TOKEN_CHARS or not token.isprintable()):
        ctx.problems.add(key, f"API token must be >= {MIN_API_TOKEN_CHARS} printable characters")
        token = None
    return ApiSettings(listen=listen, token=None if token is None else Secret(token))


def load(
    path: Path | None, env: Mapping[str, str] | None = None, *, abi_dir: Path | None = None
) -> Settings:
    """Read, override and validate the configuration.

    ``path`` None means no file (environment only). ``env`` defaults to ``os.environ``;
    ``abi_dir`` beats ``[service] abi_dir`` beats the bundled ABIs. Raises ``ConfigError``
    listing every problem found; reads ABI and key files but touches no network."""
    env = os.environ if env is None else env
    problems = Problems()
    raw = read_toml(path) if path is not None else {}
    raw = expand(raw, "", env, problems)
    root = Section(raw, "", problems, ("database", "service", "chains", "signer", "api"))
    tables = {name: root.get_table(name) for name in ("database", "service", "signer", "api")}
    base_dir = path.parent if path is not None else Path()
    service_sec = Section(tables["service"] or {}, "service", problems, _SERVICE_KEYS)
    configured_dir = service_sec.get_str("abi_dir")
    if abi_dir is None:
        abi_dir = base_dir / configured_dir if configured_dir is not None else DEFAULT_ABI_DIR
    ctx = _Context(env, problems, base_dir, abi_dir)
    settings = Settings(
        database_url=_database(tables["database"] or {}, ctx),
        service=_service(service_sec),
        chains=_chains(root, ctx),
        signer=_signer(tables["signer"] if "signer" in raw else None, ctx),
        config_path=path,
        api=_api(tables["api"] if "api" in raw else None, ctx),
    )
    if problems.items:
        raise ConfigError(problems.items)
    return settings
