"""`indexer check`, the deploy pipeline's pre-flight: every check one line, exit 0 only when
all pass (4 otherwise), against a real PostgreSQL and anvil."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import deploy
from tests.e2e.test_pusher import make_bank, queue, signer_toml
from tests.fakes.rpc import FakeRpc
from tests.harness import indexer
from tests.procs import Anvil

pytestmark = [pytest.mark.anvil, pytest.mark.pg]


def lines(stdout: str) -> dict[str, str]:
    """check's output as {name: "ok ..."/"FAIL ..."}."""
    out = {}
    for ln in stdout.splitlines():
        state, rest = ln.split(None, 1)
        name, _, detail = rest.partition(": ")
        out[name] = f"{state} {detail}"
    return out


def test_check_passes_on_a_sound_deployment_and_names_each_failure(
    anvil: Anvil,
    deployment: deploy.Deployment,
    make_config: Callable[..., Path],
    db_dsn: str,
) -> None:
    """Migrated database, right chain id, funded sender, signer with the role: all ok, exit 0.
    Then a second endpoint of another chain, a bank whose role was never granted, and no
    migrated schema each give their FAIL line and exit 4."""
    d = deployment
    bank, campaign = make_bank(d)
    cfg = make_config(extra=signer_toml())
    assert indexer(cfg, "migrate").code == 0
    queue(db_dsn, d, bank, campaign, 2)
    good = indexer(cfg, "check")
    assert good.code == 0, good.stdout + good.stderr[-2000:]
    got = lines(good.stdout)
    assert got["database"].startswith("ok reachable, schema version")
    assert got["chain local endpoint #0"] == "ok chain id 31337"
    assert got["chain local sender"].startswith("ok ")
    assert got["chain local signer"] == "ok distributor of every bank"

    def other_chain(method: str, params: list[Any], answer: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "result": "0x5"} if method == "eth_chainId" else answer

    liar = FakeRpc.start_in_thread(anvil.url, corrupt=other_chain)
    try:
        cfg.write_text(
            cfg.read_text().replace(f'["{anvil.url}"]', f'["{anvil.url}", "{liar.url}"]')
        )
        stranger = deploy.create_bank(
            d, deploy.product_id("no-role"), distributor=deploy.address_of(deploy.ADMIN_KEY)
        )
        queue(db_dsn, d, stranger, campaign, 1)
        bad = indexer(cfg, "check")
    finally:
        liar.stop()
    assert bad.code == 4, bad.stdout + bad.stderr[-2000:]
    got = lines(bad.stdout)
    assert got["chain local endpoint #1"] == "FAIL chain id 5, the configuration says 31337"
    assert got["chain local signer"].startswith("FAIL ")
    assert stranger.address.lower() in got["chain local signer"]

    cfg.write_text(cfg.read_text().replace(db_dsn, db_dsn.rsplit("/", 1)[0] + "/postgres"))
    empty = indexer(cfg, "check")
    assert empty.code == 4
    assert lines(empty.stdout)["database"].startswith("FAIL database has no rewardsync schema")


def test_status_watch_refreshes_until_interrupted(
    deployment: deploy.Deployment, make_config: Callable[..., Path]
) -> None:
    """`status --watch 0.3 --json` prints a fresh report every 0.3 s; Ctrl-C ends it with the
    health exit code (4 here: nothing is indexed yet)."""
    import json  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import time  # noqa: PLC0415

    from tests.harness import INDEXER_BIN, ROOT, _env  # noqa: PLC0415

    cfg = make_config()
    assert indexer(cfg, "migrate").code == 0
    proc = subprocess.Popen(
        [INDEXER_BIN, "--config", str(cfg), "--log-format", "json", "status", "--json",
         "--watch", "0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(None), cwd=ROOT, text=True,
    )  # fmt: skip
    try:
        time.sleep(4)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    reports = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert len(reports) >= 2, out
    assert all(r["chains"][0]["name"] == "local" for r in reports)
    assert proc.returncode == 4
