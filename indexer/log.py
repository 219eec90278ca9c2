"""structlog set-up: JSON lines when stderr is not a TTY, console otherwise.

Identity (chain, task) comes from ``bind_contextvars``. A last processor masks every registered
secret (signer keys, the database password) wherever it appears in an event, so a secret that
slips into an exception message still never reaches a log line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import orjson
import structlog

_SECRETS: set[str] = set()
MASK = "****"


def register_secret(value: str | None) -> None:
    """Mask ``value`` (and its 0x-less form) in every future log line."""
    if value and len(value) >= 6:
        _SECRETS.add(value)
        if value.startswith("0x"):
            _SECRETS.add(value[2:])


def redact(text: str) -> str:
    """``text`` with every registered secret masked."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


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


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _SECRETS:
        return event
    for key, value in list(event.items()):
        event[key] = _mask(value)
    return event


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


class _Stderr:
    """Whatever ``sys.stderr`` is at each write: a live display that redirects it (backfill's
    progress line) then prints the log lines above itself."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(fmt: str | None = None, level: str = "info") -> None:
    """Configure structlog once per process (``fmt`` None: json unless stderr is a TTY)."""
    use_json = (fmt or ("console" if sys.stderr.isatty() else "json")) == "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _mask_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _Stderr())),
        cache_logger_on_first_use=False,
    )
