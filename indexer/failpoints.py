"""Failpoints for crash and fault tests, enabled only by ``INDEXER_FAILPOINTS``.

Format: ``name=action[,name=action]`` where action is ``kill`` (SIGKILL this process),
``kill@N`` (on the N-th hit), ``sleep:S`` (pause S seconds), ``error`` (raise
``FailpointError``, a retryable fault), or ``crash@N`` (raise ``FailpointCrash``, an error
nobody expects, on the N-th hit only: a task's bug, to prove the task is restarted).
Unset, ``hit`` costs one dict lookup.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from indexer.errors import Retryable

ENV_VAR = "INDEXER_FAILPOINTS"


class FailpointError(Retryable):
    """A failpoint injected an error."""


class FailpointCrash(RuntimeError):
    """A failpoint injected an unexpected error (not an IndexerError)."""


def _parse(spec: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in spec.split(","):
        if "=" in item:
            name, action = item.split("=", 1)
            out[name.strip()] = action.strip()
    return out


_ACTIVE: dict[str, str] = _parse(os.environ.get(ENV_VAR, ""))
_HITS: dict[str, int] = {}


def configure(spec: str) -> None:
    """Replace the active failpoints (tests in the same process)."""
    _ACTIVE.clear()
    _ACTIVE.update(_parse(spec))
    _HITS.clear()


async def hit(name: str) -> None:
    """Run the action configured for ``name``, if any."""
    action = _ACTIVE.get(name)
    if action is None:
        return
    _HITS[name] = _HITS.get(name, 0) + 1
    if action.startswith("kill"):
        nth = int(action.split("@", 1)[1]) if "@" in action else 1
        if _HITS[name] >= nth:
            sys.stderr.write(f"failpoint {name}: kill\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        sys.stderr.write(f"failpoint {name}: sleep\n")  # tests wait for the stuck instant
        sys.stderr.flush()
        await asyncio.sleep(float(action.split(":", 1)[1]))
    elif action == "error":
        raise FailpointError(f"failpoint {name}")
    elif action.startswith("crash"):
        nth = int(action.split("@", 1)[1]) if "@" in action else 1
        if _HITS[name] == nth:
            raise FailpointCrash(f"failpoint {name}: crash")
