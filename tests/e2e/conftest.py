"""Fixtures for end-to-end tests: contracts deployed on a fresh anvil, a config, the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import deploy
from tests.harness import ChainCfg, Daemon, write_config
from tests.procs import Anvil


@pytest.fixture
def deployment(anvil: Anvil) -> deploy.Deployment:
    """Token, MultiTokenPushPull, factory, ChamaSavings and LogEmitter on the test anvil."""
    return deploy.deploy_all(deploy.connect(anvil.url))


@pytest.fixture
def make_config(
    tmp_path: Path, anvil: Anvil, db_dsn: str, deployment: deploy.Deployment
) -> Callable[..., Path]:
    """Write an indexer.toml for the test chain; keyword arguments override ChainCfg fields."""

    def make(**overrides: Any) -> Path:
        cfg = ChainCfg(name="local", chain_id=31337, rpc_url=anvil.url,
                       addresses=deployment.addresses, start_block=deployment.block_number)
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return write_config(tmp_path / "indexer.toml", db_dsn, [cfg])

    return make


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Background daemons started by a test, killed at its end."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.close()
