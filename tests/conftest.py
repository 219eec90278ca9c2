"""Shared fixtures: a throwaway PostgreSQL cluster with a template database cloned per test,
and anvil nodes on free loopback ports. ``INDEXER_*`` variables are stripped so that a
developer's environment never leaks into a test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from indexer import db
from tests import deploy
from tests.harness import ChainCfg, Daemon, write_config
from tests.procs import ROOT, Anvil, PgCluster

TEMPLATE_DB = "rewardsync_template"

for _name in list(os.environ):
    if _name.startswith("INDEXER_") or _name == "DATABASE_URL":
        del os.environ[_name]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL server for the session (temp cluster unless PGHOST is set)."""
    cluster = PgCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def _build_template(cluster: PgCluster) -> None:
    admin = await asyncpg.connect(cluster.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    await db.migrate(cluster.dsn(TEMPLATE_DB))


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PgCluster) -> str:
    """Name of a template database with schema.sql applied (built once per session)."""
    asyncio.run(_build_template(pg_cluster))
    return TEMPLATE_DB


async def _clone(cluster: PgCluster, name: str, template: str) -> None:
    admin = await asyncpg.connect(cluster.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()


async def _drop(cluster: PgCluster, name: str) -> None:
    admin = await asyncpg.connect(cluster.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def db_dsn(pg_cluster: PgCluster, pg_template: str) -> Iterator[str]:
    """DSN of a fresh database cloned from the template, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_clone(pg_cluster, name, pg_template))
    try:
        yield pg_cluster.dsn(name)
    finally:
        asyncio.run(_drop(pg_cluster, name))


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    """A fresh anvil (automine) on a free port, killed after the test."""
    node = Anvil.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def repo_root() -> str:
    return str(ROOT)


@pytest.fixture
def deployment(anvil: Anvil) -> deploy.Deployment:
    """Token, MultiTokenPushPull, factory, ChamaSavings and LogEmitter on the test anvil."""
    return deploy.deploy_all(deploy.connect(anvil.url))


@pytest.fixture
def make_config(
    tmp_path: Path, anvil: Anvil, db_dsn: str, deployment: deploy.Deployment
) -> Callable[..., Path]:
    """Write an indexer.toml for the test chain; keyword arguments override ChainCfg fields."""

    def make(extra: str = "", **overrides: Any) -> Path:
        cfg = ChainCfg(
            name="local",
            chain_id=31337,
            rpc_url=anvil.url,
            addresses=deployment.addresses,
            start_block=deployment.block_number,
        )
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return write_config(tmp_path / "indexer.toml", db_dsn, [cfg], extra)

    return make


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Background daemons started by a test, killed at its end."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.close()
