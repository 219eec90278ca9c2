"""Fakes at the boundaries: a fault-injecting JSON-RPC server (and later a scripted chain and a
TCP fault proxy), all offline and seeded."""

from __future__ import annotations
