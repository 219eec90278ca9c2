"""The ``indexer`` command line (typer).

Exit codes: 0 ok, 2 bad usage or configuration (also a wrong chain id or schema version),
3 an inconsistency was found (verify, reconcile), 4 a chain is unhealthy (``status``: halted,
unreachable, not indexed yet, or lagging past ``ready_max_lag_blocks``), 1 any other failure,
130 interrupted. Errors
are one line on stderr (the first error of a task group), never a traceback unless
``--log-level debug``, and never carry a secret.
"""

from __future__ import annotations

import asyncio
import ctypes
import enum
import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import structlog
import typer

from indexer import config as config_mod
from indexer import configview
from indexer import log as log_mod
from indexer.config import Settings
from indexer.errors import (
    ConfigError,
    DatabaseUnavailable,
    IndexerError,
    SchemaVersionError,
    SignerNotAuthorized,
    UsageError,
    WrongChainId,
)

# daemon, db and ops (asyncpg, aiohttp, prometheus_client: ~0.4 s) are imported by the commands
# that run them: --help and a usage error do not wait for them.

app = typer.Typer(
    name="indexer",
    help="rewardsync: index reward contracts into PostgreSQL and keep it in sync with the chain.",
    no_args_is_help=True,
    add_completion=True,  # indexer --install-completion
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[signer]" is a TOML table, not markup
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INCONSISTENT, EXIT_UNHEALTHY = 0, 1, 2, 3, 4
T = TypeVar("T")


class _Ctx:
    config_path: Path = Path("indexer.toml")
    debug: bool = False


_CTX = _Ctx()


class LogFormat(enum.StrEnum):
    json = "json"
    console = "console"


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # noqa: PLC0415 (only for --version)

        typer.echo(f"rewardsync {version('rewardsync')}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="INDEXER_CONFIG", help="TOML configuration file."),
    ] = None,
    log_format: Annotated[
        LogFormat | None, typer.Option("--log-format", help="Default: console on a TTY, else json.")
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level")] = LogLevel.info,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Show the version."),
    ] = False,
) -> None:
    """Global options."""
    log_mod.configure(log_format.value if log_format else None, log_level.value)
    _CTX.config_path = config or Path("indexer.toml")
    _CTX.debug = log_level is LogLevel.debug


# What `pip install rewardsync` leaves out and only `indexer demo` imports (the `demo` extra).
DEMO_ONLY_MODULES = frozenset({"web3", "ens"})


def _fail(code: int, message: str) -> None:
    typer.echo(f"error: {log_mod.redact(message)}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        settings = config_mod.load(_CTX.config_path, os.environ)
    except ConfigError as exc:
        _fail(EXIT_USAGE, str(exc))
        raise  # unreachable: _fail raises
    log_mod.register_secret(settings.database_url.reveal())
    password = _dsn_password(settings.database_url.reveal())
    log_mod.register_secret(password)
    if settings.signer is not None:
        log_mod.register_secret(settings.signer.key.reveal())
        if settings.signer.sender_key is not None:
            log_mod.register_secret(settings.signer.sender_key.reveal())
    return settings


def _dsn_password(dsn: str) -> str | None:
    try:
        return urlsplit(dsn).password
    except ValueError:
        return None


GC_GEN0_THRESHOLD = 100_000


def _tune_gc() -> None:
    """Collect cycles less often, and never walk what start-up made.

    The indexer allocates millions of short-lived, acyclic containers (JSON logs, rows) that
    reference counting frees; with CPython's default threshold (700) the collector ran ~1,900
    times during a 200,000-event backfill and took 1.3 s of its CPU. ``gc.freeze`` moves the
    modules, ABIs and configuration to the permanent generation; a threshold of 100,000 leaves
    cycles (asyncio's, exceptions') collected, in larger, rarer passes: 0.1 s, for ~13 MB of RSS."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit
MALLOC_TRIM_THRESHOLD = 256 << 20


def _tune_malloc() -> None:
    """Keep the large buffers of a backfill in the heap instead of fresh mappings.

    Each range passes through a few buffers of megabytes (an eth_getLogs answer, its text,
    the COPY data). glibc serves most blocks that large with mmap and gives them back with
    munmap, so every range faulted its pages in again, zeroed: a perf profile of a
    200,000-event backfill had ~12 % of the indexer's CPU in page faults. With these
    thresholds (blocks up to 32 MiB from the heap, which keeps up to 256 MiB free at its top)
    three backfills took 54-60k minor faults instead of 74-89k and 0.17-0.18 s of system CPU
    instead of 0.25-0.32 s; the peak RSS, bounded by the ranges in memory, stayed within a
    few MB. The price: after a catch-up the daemon keeps what it freed (up to 256 MiB) instead
    of returning it, so its RSS stays near the peak. Not glibc (musl, macOS): nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)


_USAGE_ERRORS = (ConfigError, WrongChainId, SchemaVersionError, SignerNotAuthorized, UsageError)


def leaf(exc: BaseException) -> BaseException:
    """The error that explains an exception group (a TaskGroup's): its first leaf."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line of any failure (the module docstring's table)."""
    exc = leaf(exc)
    if isinstance(exc, _USAGE_ERRORS):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, DatabaseUnavailable):
        return EXIT_FAILURE, str(exc)
    if isinstance(exc, IndexerError):
        return EXIT_FAILURE, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    first = (str(exc) or "").splitlines()[0][:300] if str(exc) else ""
    return EXIT_FAILURE, f"unexpected {type(exc).__name__}: {first} (run with --log-level debug)"


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; any failure becomes one line and an exit code (see ``describe``)."""
    _tune_gc()
    _tune_malloc()
    try:
        return asyncio.run(_call(coro_fn))
    except (Exception, KeyboardInterrupt) as exc:  # the one error path of every command
        _report(exc)
    raise AssertionError("unreachable")


def _report(exc: BaseException) -> None:
    """Print the one redacted line of ``exc`` (the traceback too at --log-level debug), exit."""
    code, message = describe(exc)
    if _CTX.debug:
        traceback.print_exception(leaf(exc), file=sys.stderr)
    _fail(code, message)


def entry() -> None:
    """The console script: typer's own usage errors as typer prints them, anything that
    escapes a command (a bug, an import error) as one line too, never a traceback."""
    try:
        app()
    except (Exception, KeyboardInterrupt) as exc:
        try:
            _report(exc)
        except typer.Exit as done:
            sys.exit(done.exit_code)


async def _call(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()


def _chain(settings: Settings, name: str) -> config_mod.ChainSettings:
    for c in settings.chains:
        if c.name == name:
            return c
    _fail(EXIT_USAGE, f"no chain named {name!r} in the configuration")
    raise AssertionError("unreachable")


@app.command()
def migrate(
    roles: Annotated[
        bool,
        typer.Option(
            "--roles",
            help="Also create the API roles rewardsync_reader and rewardsync_backend (NOLOGIN).",
        ),
    ] = False,
) -> None:
    """Apply schema.sql (idempotent, under an advisory lock); refuses a newer schema."""
    from indexer import db  # noqa: PLC0415 (heavy: see the imports)

    settings = _settings()
    version = _run(lambda: db.migrate(settings.database_url.reveal(), roles=roles))
    structlog.get_logger().info("migrated", schema_version=version)


@app.command("print-config")
def print_config() -> None:
    """Show the effective configuration with secrets masked."""
    typer.echo(configview.render(_settings()))


@app.command()
def run(
    chain: Annotated[list[str] | None, typer.Option("--chain", help="Only these chains.")] = None,
    until_block: Annotated[
        int | None, typer.Option("--until-block", help="Stop once this block is indexed.")
    ] = None,
    exit_when_caught_up: Annotated[
        bool, typer.Option("--exit-when-caught-up", help="Stop when the head is reached.")
    ] = False,
    no_http: Annotated[bool, typer.Option("--no-http", help="Do not serve /metrics.")] = False,
) -> None:
    """Run the daemon: follow every configured chain."""
    from indexer import daemon  # noqa: PLC0415 (heavy: see the imports)

    settings = _settings()
    for name in chain or []:
        _chain(settings, name)
    code = _run(
        lambda: daemon.run(
            settings,
            chains=chain,
            until_block=until_block,
            exit_when_caught_up=exit_when_caught_up or until_block is not None,
            serve_http=not no_http,
        )
    )
    raise typer.Exit(code)


@app.command()
def backfill(
    chain: Annotated[str, typer.Option("--chain", help="Chain name.")],
    from_block: Annotated[int, typer.Option("--from", help="First block.")],
    to_block: Annotated[int, typer.Option("--to", help="Last block.")],
) -> None:
    """Index a closed range; idempotent, safe beside a running `run`."""
    from indexer import ops  # noqa: PLC0415 (heavy: see the imports)

    settings = _settings()
    c = _chain(settings, chain)
    if from_block < 0 or to_block < from_block:
        _fail(EXIT_USAGE, "--from must be >= 0 and <= --to")
    code = _run(lambda: ops.backfill(settings, c, from_block, to_block, tty=sys.stderr.isatty()))
    raise typer.Exit(code)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[
        float | None,
        typer.Option("--watch", help="Refresh every SECONDS until Ctrl-C (screen cleared)."),
    ] = None,
) -> None:
    """Per chain: checkpoint, head, lag, finalized, last reorg, health; rewards; discrepancies.
    Exit 4 when a chain is halted, unreachable or lags past ready_max_lag_blocks (for scripts)."""
    from indexer import ops  # noqa: PLC0415 (heavy: see the imports)

    settings = _settings()
    if watch is not None and watch <= 0:
        _fail(EXIT_USAGE, "--watch must be > 0 seconds")
    stop = _interrupted() if watch is not None else [False]
    while True:
        report = _run(lambda: ops.status(settings))
        if watch is not None and sys.stdout.isatty():
            typer.echo("\x1b[2J\x1b[H", nl=False)
        if as_json:
            typer.echo(json.dumps(report, indent=2 if watch is None else None, default=str))
        else:
            typer.echo(ops.format_status(report))
        healthy = all(c["healthy"] for c in report["chains"])
        if watch is None:
            raise typer.Exit(EXIT_OK if healthy else EXIT_UNHEALTHY)
        until = time.monotonic() + watch
        while not stop[0] and time.monotonic() < until:
            time.sleep(min(0.05, watch))
        if stop[0]:
            raise typer.Exit(EXIT_OK if healthy else EXIT_UNHEALTHY)


def _interrupted() -> list[bool]:
    """A flag that Ctrl-C sets instead of raising: `status --watch` ends after the report in
    progress (a KeyboardInterrupt inside asyncio.run's shutdown could leave it hanging), with
    the health code of the last report."""
    import signal  # noqa: PLC0415

    flag = [False]

    def on_sigint(_sig: int, _frame: object) -> None:
        flag[0] = True

    signal.signal(signal.SIGINT, on_sigint)
    return flag


@app.command()
def check() -> None:
    """Pre-flight for deploy pipelines: database and schema version, every endpoint's chain
    id, the sender's gas money and the signer's role on banks with queued rewards (the
    configuration and ABI files are checked by loading them). Exit 0 when all pass, else 4."""
    from indexer import ops  # noqa: PLC0415 (heavy: see the imports)

    settings = _settings()
    results = _run(lambda: ops.check(settings))
    for r in results:
        typer.echo(f"{'ok  ' if r.ok else 'FAIL'}  {r.name}: {log_mod.redact(r.detail)}")
    raise typer.Exit(EXIT_OK if all(r.ok for r in results) else EXIT_UNHEALTHY)


@app.command()
def verify(
    chain: Annotated[str, typer.Option("--chain", help="Chain name.")],
    from_block: Annotated[int, typer.Option("--from", help="First block.")],
    to_block: Annotated[int, typer.Option("--to", help="Last block.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="Fix the differences (rows and stored hashes).")
    ] = False,
) -> None:
    """Refetch a range and compare it event by event; exit 3 on any difference.

    With --repair the differences found are fixed in one transaction and listed; exit 0."""
    from indexer import ops  # noqa: PLC0415 (heavy: see the imports)

    settings = _settings()
    c = _chain(settings, chain)
    if from_block < 0 or to_block < from_block:
        _fail(EXIT_USAGE, "--from must be >= 0 and <= --to")
    diff = _run(lambda: ops.verify(settings, c, from_block, to_block, repair=repair))
    report: dict[str, Any] = {
        "chain": chain,
        "from": from_block,
        "to": to_block,
        "clean": diff.clean,
        "repaired": repair and not diff.clean,
        **diff.as_dict(),
    }
    if as_json:
        typer.echo(json.dumps(report))
    else:
        text = ops.format_diff(report)
        typer.echo(text.replace("DIFFERENCES", "REPAIRED") if report["repaired"] else text)
    raise typer.Exit(EXIT_OK if diff.clean or repair else EXIT_INCONSISTENT)


@app.command()
def rewind(
    chain: Annotated[str, typer.Option("--chain", help="Chain name.")],
    to: Annotated[int, typer.Option("--to", help="Block to roll back to (kept).")],
) -> None:
    """Roll a chain back to block N by hand and clear a halt (after a too-deep reorg)."""
    from indexer import ops  # noqa: PLC0415 (heavy: see the imports)

    settings = _settings()
    c = _chain(settings, chain)
    _run(lambda: ops.rewind(settings, c, to))


@app.command()
def push(
    chain: Annotated[str | None, typer.Option("--chain", help="Only this chain.")] = None,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
) -> None:
    """Run the reward pusher alone (needs [signer]); confirmation still comes from `run`."""
    from indexer import ops  # noqa: PLC0415 (heavy: see the imports)

    settings = _settings()
    if settings.signer is None:
        _fail(EXIT_USAGE, "no [signer] in the configuration: the pusher needs a key")
    chains = [_chain(settings, chain)] if chain else list(settings.chains)
    _run(lambda: ops.push(settings, chains, once=once))


@app.command()
def reconcile(
    chain: Annotated[str | None, typer.Option("--chain", help="Only this chain.")] = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Make the database agree with the chain.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Compare the database with contract views at the finalized block; record discrepancies
    (exit 3 when any was found, also when --fix then resolved it; 0 when consistent)."""
    from indexer import ops  # noqa: PLC0415 (heavy: see the imports)

    settings = _settings()
    chains = [_chain(settings, chain)] if chain else list(settings.chains)
    reports = _run(lambda: ops.reconcile(settings, chains, fix=fix))
    if as_json:
        typer.echo(json.dumps({"chains": [r.as_dict() for r in reports]}, default=str))
    else:
        typer.echo(ops.format_reconcile(reports))
    consistent = all(r.consistent for r in reports)
    raise typer.Exit(EXIT_OK if consistent else EXIT_INCONSISTENT)


@app.command()
def demo(
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after SECONDS (default: Ctrl-C).")
    ] = None,
    no_tty: Annotated[
        bool, typer.Option("--no-tty", help="JSON lines instead of the live screen.")
    ] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the embedded database (server stopped).")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated traffic.")] = 1,
) -> None:
    """Everything on this machine: anvil, PostgreSQL (embedded unless DATABASE_URL is set),
    the contracts, simulated traffic with reorgs, the daemon and a live view. Ctrl-C stops
    it and every process it started; files go to ./.rewardsync/. Needs rewardsync[demo]."""
    try:
        from indexer.demo import app as demo_app  # noqa: PLC0415 (web3 loads only for the demo)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in DEMO_ONLY_MODULES:
            raise
        _fail(EXIT_USAGE, "indexer demo needs the demo extra: pip install 'rewardsync[demo]'")
        raise  # unreachable: _fail raises

    if duration is not None and duration <= 0:
        _fail(EXIT_USAGE, "--duration must be > 0")
    opts = demo_app.Options(
        duration=duration,
        tty=not no_tty and sys.stdout.isatty(),
        keep=keep,
        seed=seed,
        home=Path.cwd() / ".rewardsync",
    )
    raise typer.Exit(demo_app.main(opts))
