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
    ready_max_lag_blocks  100       /readyz fails while a chain's lag (head - checkpoint,
                                    so including `confirmations`) exceeds this (≥ 0)
    shutdown_grace        10        seconds SIGTERM waits for tasks to finish (> 0)
    abi_dir               <repo>/abis  folder of <ContractName>.json ABI files, relative to
                                    the config file; load(abi_dir=…) overrides it

    [[chains]]                      one table per chain; zero chains is valid (migrate)
    name                  required  unique; used by `--chain` and the env name below
    chain_id              required  unique, > 0; checked against eth_chainId at start
    rpc_urls              required  non-empty list of http(s):// or ws(s):// URLs, tried in
                                    order (failover). Env: INDEXER_RPC_URL_<NAME> (name
                                    upper-cased, non-alphanumerics as "_"), comma-separated
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

ABI files are JSON: either an object with key ``abi`` (Foundry/Hardhat artifacts and our
``abis/``) or a bare list of ABI entries. Chain and contract names are letters, digits and
``_ . -``, starting with a letter or digit.

Also problems: unknown keys (with the nearest known key as a hint), duplicate chain names,
chain ids or RPC variable names ("a-b" and "a_b"), duplicate contract names or addresses on
a chain, an ``INDEXER_RPC_URL_*`` naming no chain, and a key variable set without a
``[signer]`` table (only the file enables pushing, which moves money).
"""

from __future__ import annotations

import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
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

ENV_DATABASE_URL = "DATABASE_URL"
ENV_RPC_URL_PREFIX = "INDEXER_RPC_URL_"
ENV_SIGNER_KEY = "INDEXER_SIGNER_KEY"
ENV_SENDER_KEY = "INDEXER_SENDER_KEY"

DEFAULT_ABI_DIR = Path(__file__).resolve().parent.parent / "abis"
DEFAULT_METRICS_LISTEN = ("127.0.0.1", 9108)
RECONCILE_INTERVAL_S = 600.0
READY_MAX_LAG_BLOCKS = 100
SHUTDOWN_GRACE_S = 10.0
MAX_BATCH = 50
MAX_BATCH_LIMIT = 100  # ProductBank.pushRewards accepts 1..100 rewards
DEADLINE_S = 3600
PUSH_INTERVAL_S = 5.0
REPLACE_AFTER_S = 60.0

MASK = "****"
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
class FactorySpec:
    """Where a factory-made contract's addresses come from: ``parameter`` of ``event``."""

    contract: str
    event: str
    parameter: str


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """One watched contract; ``address`` is None exactly when ``factory`` is set."""

    name: str
    abi_path: Path
    abi: tuple[dict[str, Any], ...]
    address: str | None
    start_block: int
    factory: FactorySpec | None


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


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Process-wide knobs: the HTTP endpoint, reconciler cadence, readiness, shutdown."""

    metrics_listen: tuple[str, int] = DEFAULT_METRICS_LISTEN
    reconcile_interval_s: float = RECONCILE_INTERVAL_S
    ready_max_lag_blocks: int = READY_MAX_LAG_BLOCKS
    shutdown_grace_s: float = SHUTDOWN_GRACE_S


@dataclass(frozen=True, slots=True)
class SignerSettings:
    """The pusher's keys and batching; ``sender_key`` None means the signer key sends."""

    key: Secret
    sender_key: Secret | None = None
    max_batch: int = MAX_BATCH
    deadline_s: int = DEADLINE_S
    push_interval_s: float = PUSH_INTERVAL_S
    replace_after_s: float = REPLACE_AFTER_S


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated, effective configuration; ``signer`` None disables the pusher."""

    database_url: Secret
    service: ServiceSettings
    chains: tuple[ChainSettings, ...]
    signer: SignerSettings | None
    config_path: Path | None


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
    lag = sec.get_int("ready_max_lag_blocks")
    grace = sec.get_seconds("shutdown_grace")
    return ServiceSettings(
        metrics_listen=listen,
        reconcile_interval_s=RECONCILE_INTERVAL_S if reconcile is None else reconcile,
        ready_max_lag_blocks=READY_MAX_LAG_BLOCKS if lag is None else lag,
        shutdown_grace_s=SHUTDOWN_GRACE_S if grace is None else grace,
    )


def _load_abi(path: Path, key: str, problems: Problems) -> tuple[dict[str, Any], ...] | None:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        problems.add(key, f"ABI file not found: {path}")
        return None
    except OSError as exc:
        problems.add(key, f"cannot read ABI file {path}: {exc.strerror}")
        return None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        problems.add(key, f"ABI file {path} is not valid JSON: {exc}")
        return None
    entries = doc.get("abi") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.add(key, f"ABI file {path} has no list of ABI entries (key 'abi')")
        return None
    return tuple(entries)


_CONTRACT_KEYS = ("name", "abi", "address", "factory", "start_block")


def _factory(sec: Section) -> FactorySpec | None:
    table = sec.get_table("factory")
    if table is None:
        return None
    fac = Section(table, sec.key("factory"), sec.problems, ("contract", "event", "parameter"))
    fac.require("contract", "event", "parameter")
    contract, event, parameter = (
        fac.get_str("contract"),
        fac.get_str("event"),
        fac.get_str("parameter"),
    )
    if contract is None or event is None or parameter is None:
        return None
    return FactorySpec(contract, event, parameter)


def _contract(sec: Section, ctx: _Context) -> tuple[ContractSpec | None, int | None]:
    """The contract, or None when unusable; and its start_block as given (None if absent)."""
    sec.require("name")
    name = sec.get_str("name")
    if name is not None and not NAME_RE.fullmatch(name):
        sec.problems.add(sec.key("name"), f"not a valid contract name: {json.dumps(name)}")
        name = None
    given_abi = sec.get_str("abi")
    abi_path = None
    if given_abi is not None:
        abi_path = ctx.base_dir / Path(given_abi).expanduser()
    elif name is not None:
        abi_path = ctx.abi_dir / f"{name}.json"
    abi = None
    if abi_path is not None:
        abi = _load_abi(abi_path, sec.key("abi" if given_abi else "name"), sec.problems)
    text = sec.get_str("address")
    address = None if text is None else check_address(text, sec.key("address"), sec.problems)
    factory = _factory(sec)
    if sec.has("address") == sec.has("factory"):
        sec.problems.add(sec.path, "give exactly one of `address` or `factory`")
    start = sec.get_int("start_block")
    if name is None or abi_path is None or abi is None:
        return None, start
    return ContractSpec(name, abi_path, abi, address, start or 0, factory), start


def _factory_problem(
    fac: FactorySpec, spec: ContractSpec, by_name: Mapping[str, ContractSpec]
) -> tuple[str, str] | None:
    """Why ``fac`` cannot produce addresses, as (factory key, message); None when it can."""
    maker = by_name.get(fac.contract)
    if maker is None or maker is spec:
        return "contract", f"no other contract named {fac.contract!r} on this chain"
    if maker.factory is not None:
        return "contract", f"{fac.contract} is itself factory-made (not supported)"
    events = [e for e in maker.abi if e.get("type") == "event" and e.get("name") == fac.event]
    if not events:
        return "event", f"{fac.contract}'s ABI has no event {fac.event!r}"
    for event in events:
        for arg in event.get("inputs") or []:
            if arg.get("name") == fac.parameter and arg.get("type") == "address":
                return None
    return "parameter", f"event {fac.event} has no address input named {fac.parameter!r}"


def _contracts(sec: Section, ctx: _Context) -> tuple[ContractSpec, ...]:
    parsed: list[tuple[str, ContractSpec, int | None]] = []
    seen: dict[str, str] = {}
    broken = set()  # names of contracts already reported unusable (e.g. no ABI file)
    for path, table in sec.get_tables("contracts"):
        spec, start = _contract(Section(table, path, ctx.problems, _CONTRACT_KEYS), ctx)
        if spec is None:
            broken.add(table.get("name"))
            continue
        for kind, value in (("name", spec.name), ("address", spec.address)):
            if value is not None and (first := seen.get(f"{kind}:{value}")):
                ctx.problems.add(f"{path}.{kind}", f"duplicate {kind}, as {first}")
            seen.setdefault(f"{kind}:{value}", path)
        parsed.append((path, spec, start))
    by_name = {spec.name: spec for _, spec, _ in parsed}
    out = []
    for path, spec, start in parsed:
        fac = spec.factory
        if fac is not None and fac.contract in broken and fac.contract not in by_name:
            pass  # its maker's problem is reported already
        elif fac is not None and (problem := _factory_problem(fac, spec, by_name)):
            ctx.problems.add(f"{path}.factory.{problem[0]}", problem[1])
        elif fac is not None and start is None:
            out.append(replace(spec, start_block=by_name[fac.contract].start_block))
            continue
        out.append(spec)
    return tuple(out)


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
        check_url(url, f"{key}[{i}]", ctx.problems)
    return tuple(urls)


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
        contracts=_contracts(sec, ctx),
        multicall3=_multicall3(sec, d["multicall3"]),
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
)


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
    )


def load(
    path: Path | None, env: Mapping[str, str] | None = None, *, abi_dir: Path | None = None
) -> Settings:
    """Read, override and validate the configuration.

    ``path`` None means no file (environment only). ``env`` defaults to ``os.environ``;
    ``abi_dir`` beats ``[service] abi_dir`` beats ``<repo>/abis``. Raises ``ConfigError``
    listing every problem found; reads ABI and key files but touches no network."""
    env = os.environ if env is None else env
    problems = Problems()
    raw = read_toml(path) if path is not None else {}
    raw = expand(raw, "", env, problems)
    root = Section(raw, "", problems, ("database", "service", "chains", "signer"))
    tables = {name: root.get_table(name) for name in ("database", "service", "signer")}
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
    )
    if problems.items:
        raise ConfigError(problems.items)
    return settings


# --------------------------------------------------------------------------- render


def mask_url(url: str) -> str:
    """The URL with its password (user info or ``password=`` parameter) replaced by ****."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return MASK
    netloc, slash, tail = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if colon:
        netloc = f"{user}:{MASK}@{hosts}"
    tail = re.sub(r"(?i)(password=)[^&]*", rf"\g<1>{MASK}", tail)
    return f"{scheme}://{netloc}{slash}{tail}"


def _mask_rpc(url: str) -> str:
    """Scheme, host and port only: the path and query of a provider URL carry its API key."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    hidden = parts.path.strip("/") or parts.query
    return f"{parts.scheme}://{host}" + (f"/{MASK}" if hidden else "")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # JSON strings are valid TOML basic strings
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def _lines(table: Mapping[str, Any], indent: str = "") -> list[str]:
    return [f"{indent}{k} = {_toml(v)}" for k, v in table.items() if v is not None]


def _render_chain(chain: ChainSettings) -> list[str]:
    out = ["", "[[chains]]"]
    out += _lines(
        {
            "name": chain.name,
            "chain_id": chain.chain_id,
            "rpc_urls": [_mask_rpc(u) for u in chain.rpc_urls],
            "confirmations": chain.confirmations,
            "max_reorg_depth": chain.max_reorg_depth,
            "poll_interval": chain.poll_interval_s,
            "batch_blocks": chain.batch_blocks,
            "finality": chain.finality,
            "multicall3": chain.multicall3 or False,
        }
    )
    for c in chain.contracts:
        fac = c.factory
        table = {"name": c.name, "abi": c.abi_path, "address": c.address}
        table |= {"start_block": c.start_block}
        if fac is not None:
            table["factory"] = {
                "contract": fac.contract,
                "event": fac.event,
                "parameter": fac.parameter,
            }
        out += ["", "  [[chains.contracts]]", *_lines(table, "  ")]
    return out


def render(settings: Settings) -> str:
    """The effective configuration as TOML, secrets masked (for ``indexer print-config``).

    Every key is shown with its effective value, defaults included. Masked: the database
    password, signer keys, and the path and query of RPC URLs (provider API keys)."""
    svc = settings.service
    out = [f"# effective configuration of {settings.config_path or '(no file)'}; secrets masked"]
    out += ["[database]", f"url = {_toml(mask_url(settings.database_url.reveal()))}"]
    host, port = svc.metrics_listen
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    out += ["", "[service]"]
    out += _lines(
        {
            "metrics_listen": listen,
            "reconcile_interval": svc.reconcile_interval_s,
            "ready_max_lag_blocks": svc.ready_max_lag_blocks,
            "shutdown_grace": svc.shutdown_grace_s,
        }
    )
    for chain in settings.chains:
        out += _render_chain(chain)
    if (signer := settings.signer) is not None:
        out += ["", "[signer]", f'key = "{MASK}"']
        out += [f'sender_key = "{MASK}"'] if signer.sender_key is not None else []
        out += _lines(
            {
                "max_batch": signer.max_batch,
                "deadline": signer.deadline_s,
                "push_interval": signer.push_interval_s,
                "replace_after": signer.replace_after_s,
            }
        )
    return "\n".join(out) + "\n"
