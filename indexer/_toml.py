"""Validated reading of TOML tables for ``indexer.config``: every problem is collected, none
raised early, so ``config.load()`` can report them all at once.

A ``Section`` reads typed values at a key path and records what is wrong with them (unknown
keys with a "did you mean", wrong types, bad numbers); the value checkers below add their own
problems. Nothing here knows the configuration's shape: that is ``indexer/config.py`` (and
``indexer/watchlist.py`` for the contracts).
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from indexer.errors import ConfigError


class Bad:
    """Marks a value whose problem is already reported (an unset ``$ENV``), so that readers
    skip it instead of adding a second, misleading problem."""


BAD = Bad()
ENV_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
HEX_KEY_RE = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Problems:
    """Collects problems; labels a key path with where its value came from (env, $ENV)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.origins: dict[str, str] = {}

    def add(self, path: str, message: str) -> None:
        origin = next(
            (
                o
                for p, o in self.origins.items()
                if path == p or path.startswith((p + "[", p + "."))
            ),
            None,
        )
        label = f"{path} (from {origin})" if origin else path
        self.items.append(f"{label}: {message}")


def kind_of(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    kinds |= {list: "an array", dict: "a table"}
    return kinds.get(type(value), "a date/time")


class Section:
    """Typed reads from one TOML table that report problems instead of raising: a getter
    returns None for a missing, mistyped or already-reported value. Unknown keys (typos)
    are reported on construction, with the closest known key as a hint."""

    def __init__(
        self, data: Mapping[str, Any], path: str, problems: Problems, known: Iterable[str]
    ) -> None:
        self.data, self.path, self.problems = data, path, problems
        known = tuple(known)
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.add(self.key(key), f"unknown key{hint}")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def require(self, *names: str) -> None:
        for name in names:
            if name not in self.data:
                self.problems.add(self.key(name), "missing")

    def _typed(self, name: str, types: tuple[type, ...], expected: str) -> Any:
        value = self.data.get(name)
        if value is None or value is BAD:
            return None
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            self.problems.add(self.key(name), f"expected {expected}, got {kind_of(value)}")
            return None
        return value

    def get_str(self, name: str) -> str | None:
        value: str | None = self._typed(name, (str,), "a string")
        return value

    def get_int(self, name: str, minimum: int = 0) -> int | None:
        value: int | None = self._typed(name, (int,), "an integer")
        if value is not None and value < minimum:
            rule = "must not be negative" if minimum == 0 else f"must be at least {minimum}"
            self.problems.add(self.key(name), f"{rule}, got {value}")
            return None
        return value

    def get_seconds(self, name: str) -> float | None:
        return self.get_positive(name, "seconds")

    def get_positive(self, name: str, unit: str) -> float | None:
        """A finite number > 0 (``unit`` names it in the message), None when absent or bad."""
        value = self._typed(name, (int, float), f"a number of {unit}")
        if value is not None and not (math.isfinite(value) and value > 0):
            self.problems.add(self.key(name), f"must be a positive number of {unit}, got {value}")
            return None
        return None if value is None else float(value)

    def get_table(self, name: str) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._typed(name, (dict,), "a table")
        return value

    def get_tables(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """An array of tables as (key path, table) pairs; non-tables are reported."""
        items: list[Any] | None = self._typed(name, (list,), "an array of tables")
        out = []
        for i, item in enumerate(items or []):
            if isinstance(item, dict):
                out.append((f"{self.key(name)}[{i}]", item))
            elif item is not BAD:
                self.problems.add(
                    f"{self.key(name)}[{i}]", f"expected a table, got {kind_of(item)}"
                )
        return out

    def get_strings(self, name: str) -> list[str] | None:
        items: list[Any] | None = self._typed(name, (list,), "an array of strings")
        if items is None:
            return None
        for i, item in enumerate(items):
            if not isinstance(item, str) and item is not BAD:
                self.problems.add(
                    f"{self.key(name)}[{i}]", f"expected a string, got {kind_of(item)}"
                )
        return [item for item in items if isinstance(item, str)]


def expand(value: Any, path: str, env: Mapping[str, str], problems: Problems) -> Any:
    """Replace every string written ``"$NAME"`` by the variable NAME, recursively."""
    if isinstance(value, dict):
        return {k: expand(v, f"{path}.{k}" if path else k, env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, f"{path}[{i}]", env, problems) for i, v in enumerate(value)]
    if isinstance(value, str) and (ref := ENV_REF.fullmatch(value)):
        if ref[1] not in env:
            problems.add(path, f"environment variable {ref[1]} is not set")
            return BAD
        problems.origins[path] = value
        return env[ref[1]]
    return value


def read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML document; a missing or unreadable file or a syntax error is the one
    problem raised, since nothing else can be checked without the document."""
    if not path.exists():
        raise ConfigError([f"config file not found: {path}"])
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError([f"cannot read config file {path}: {reason}"]) from None


# --------------------------------------------------------------------------- values


def check_address(text: str, path: str, problems: Problems) -> str | None:
    """Lowercase 0x address; mixed case must carry a correct EIP-55 checksum (catches typos)."""
    if not ADDRESS_RE.fullmatch(text):
        problems.add(path, f"not a 20-byte hex address: {json.dumps(text)}")
        return None
    body = text[2:]
    if body != body.lower() and body != body.upper():
        # Lazy: eth_utils takes ~0.3 s to import and only mixed-case addresses need it.
        from eth_utils.address import to_checksum_address  # noqa: PLC0415

        if to_checksum_address(text) != text:
            problems.add(path, f"bad EIP-55 checksum: {json.dumps(text)}")
            return None
    return text.lower()


def check_url(
    url: str, path: str, problems: Problems, schemes: tuple[str, ...] = ("http", "https")
) -> None:
    """An RPC URL is never echoed: it often embeds a provider API key."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        ok = scheme in schemes and bool(parts.hostname)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        scheme, ok = "", False
    if ok:
        return
    if scheme in ("ws", "wss") and "http" in schemes:
        problems.add(path, "a ws(s):// URL goes in ws_url (the newHeads subscription)")
    else:
        problems.add(path, "not an http(s):// URL" if "http" in schemes else "not a ws(s):// URL")


def parse_listen(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None  # IPv6 must be bracketed
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return None
    return host, int(port)


def hex_key(text: str) -> str | None:
    match = HEX_KEY_RE.fullmatch(text.strip())
    return "0x" + match[1].lower() if match else None
