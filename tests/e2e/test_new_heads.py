"""``ws_url``: anvil's newHeads subscription wakes the follower when a block is mined, long
before its ``poll_interval``; an unreachable socket leaves the follower polling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_money_safety import metric
from tests.harness import Daemon, wait_synced
from tests.procs import Anvil, free_port

pytestmark = [pytest.mark.anvil, pytest.mark.pg]

KEY = "0123456789abcdef0123456789abcdef"  # a provider key in the URL
POLL_S = 120.0  # far longer than the waits below: only a new head can explain a commit


def with_ws(cfg: Path, url: str) -> Path:
    cfg.write_text(
        cfg.read_text().replace('finality = "depth"\n', f'finality = "depth"\nws_url = "{url}"\n')
    )
    return cfg


def test_a_new_head_wakes_the_follower_before_its_poll(
    anvil: Anvil, make_config: Callable[..., Path], db_dsn: str, daemons: list[Daemon]
) -> None:
    cfg = with_ws(make_config(poll_interval=POLL_S), anvil.url.replace("http://", "ws://"))
    daemon = Daemon(cfg)
    daemons.append(daemon)
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    daemon.wait_for(lambda e: e.get("event") == "ws_subscribed")
    wait_synced(db_dsn, anvil, timeout=30)
    for _ in range(3):  # each block is indexed without waiting for the 120 s poll
        anvil.mine(1)
        wait_synced(db_dsn, anvil, timeout=30)
    assert metric(port, "indexer_ws_connected") == 1
    assert metric(port, "indexer_ws_heads_total") >= 3
    assert daemon.stop() == 0


def test_an_unreachable_ws_url_leaves_the_follower_polling(
    anvil: Anvil, make_config: Callable[..., Path], db_dsn: str, daemons: list[Daemon]
) -> None:
    cfg = with_ws(make_config(poll_interval=0.2), f"ws://127.0.0.1:{free_port()}/v2/{KEY}")
    daemon = Daemon(cfg)
    daemons.append(daemon)
    port = daemon.wait_for(lambda e: e.get("event") == "http_listening")["port"]
    failed = daemon.wait_for(lambda e: e.get("event") == "ws_subscription_failed")
    assert KEY not in str(failed)  # the URL is redacted
    anvil.mine(2)
    wait_synced(db_dsn, anvil, timeout=30)
    assert metric(port, "indexer_ws_connected") == 0
    assert daemon.stop() == 0
