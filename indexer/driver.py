"""The driver of one chain's follower: step until done, stopped or halted.

It sleeps when there is nothing new, backs off (capped exponential, full jitter) on
``Retryable`` and on a lost database connection (the next step re-reads the checkpoint, so a
commit whose reply was lost is neither repeated nor skipped), and halts the chain with the
reason when a fault that retrying does not fix keeps coming back (``PERSISTENT_FAULTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import asyncpg
import structlog

from indexer import metrics
from indexer.db import CLIENT_DATA_ERRORS, CONNECTION_ERRORS, TRANSIENT_FAULTS
from indexer.errors import InvalidRpcData, NotLeader, RangeLimitError
from indexer.follower import ChainFollower
from indexer.heads import HeadSubscription
from indexer.jsonrpc import backoff_delay
from indexer.types import Step

log = structlog.get_logger()

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


def backoff_s(attempt: int, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter (the RPC client's own rule)."""
    return backoff_delay(attempt, base_s=BACKOFF_BASE_S, max_s=BACKOFF_MAX_S, rng=rng)


PERSISTENT_FAULT_LIMIT = 4  # failures of the kinds below, with no success between: halt
# Failures that retrying the same range does not fix: a node that keeps answering data that
# does not verify, a provider that refuses even one block's logs, rows PostgreSQL refuses.
PERSISTENT_FAULTS: tuple[type[BaseException], ...] = (
    InvalidRpcData,
    RangeLimitError,
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    *CLIENT_DATA_ERRORS,
)
_RETRIED: tuple[type[BaseException], ...] = (*TRANSIENT_FAULTS, *PERSISTENT_FAULTS)


async def run_follower(  # noqa: PLR0913 (keyword-only: the loop's knobs)
    follower: ChainFollower,
    *,
    poll_interval_s: float,
    exit_when_caught_up: bool,
    stop: asyncio.Event,
    rng: random.Random | None = None,
    heads: HeadSubscription | None = None,
) -> Step:
    """The driver: sleep on nothing new, back off on Retryable, stop on done, halt or ``stop``.

    With ``heads`` (a chain's ``ws_url``) the sleep on nothing new ends as soon as the node
    announces a block; ``poll_interval_s`` stays the longest sleep, so a lost subscription
    only makes the follower as slow as polling.

    A lost database connection (any of ``CONNECTION_ERRORS``, also from plain reads) is
    retried like ``Retryable``: the next step re-reads the checkpoint, so a commit whose reply
    was lost is neither repeated nor skipped. ``PERSISTENT_FAULT_LIMIT`` consecutive
    ``PERSISTENT_FAULTS`` halt the chain (``chain_halted``) instead of looping forever.

    Returns the last step (HALTED means the chain is halted; with ``exit_when_caught_up`` the
    caller turns that into a non-zero exit)."""
    try:
        return await _drive(
            follower,
            poll_interval_s=poll_interval_s,
            exit_when_caught_up=exit_when_caught_up,
            stop=stop,
            rng=rng,
            heads=heads,
        )
    finally:
        await follower.close()


async def _drive(  # noqa: PLR0912, PLR0913 (one branch per outcome; run_follower's knobs)
    follower: ChainFollower,
    *,
    poll_interval_s: float,
    exit_when_caught_up: bool,
    stop: asyncio.Event,
    rng: random.Random | None,
    heads: HeadSubscription | None,
) -> Step:
    rng = rng or random.Random()
    attempt = 0
    persistent = 0
    while not stop.is_set():
        try:
            result = await follower.step()
        except NotLeader:
            raise  # the daemon goes back to standing by
        except _RETRIED as exc:
            attempt += 1
            if isinstance(exc, PERSISTENT_FAULTS):
                persistent += 1  # other faults in between neither count nor reset
            metrics.RETRIES.labels(follower.spec.name, type(exc).__name__).inc()
            if persistent >= PERSISTENT_FAULT_LIMIT:
                halted = await _halt_persistent(follower, exc, persistent)
                if halted and exit_when_caught_up:
                    return Step.HALTED
                if halted:
                    persistent = attempt = 0
                    await _sleep(stop, max(poll_interval_s, 1.0))
                    continue
            delay = backoff_s(attempt, rng)
            log.warning(
                "step_retry",
                error=_one_line(exc),
                kind=type(exc).__name__,
                attempt=attempt,
                delay_s=round(delay, 2),
            )
            await _sleep(stop, delay)
            continue
        finally:
            structlog.contextvars.unbind_contextvars("chain")
        attempt = persistent = 0
        step = result.step
        if step is Step.DONE:
            return step
        if step is Step.HALTED:
            if exit_when_caught_up:
                return step
            await _sleep(stop, max(poll_interval_s, 1.0))
        elif step in (Step.NOTHING_NEW, Step.WAITING):
            if exit_when_caught_up and step is Step.NOTHING_NEW:
                return Step.DONE
            await _until_new_head(stop, heads, poll_interval_s)
    return Step.DONE


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:500]


async def _halt_persistent(follower: ChainFollower, exc: BaseException, tries: int) -> bool:
    """Halt the chain after a fault that keeps coming back; False if the halt itself failed
    (the database is gone: the driver retries and counts again)."""
    block = follower.checkpoint + 1
    reason = (
        f"persistent fault at block {block} after {tries} tries: {type(exc).__name__}: "
        f"{_one_line(exc)}; fix the node or the data, then run `indexer rewind`"
    )
    try:
        await follower.sink.set_halted(reason)
    except CONNECTION_ERRORS:
        return False
    follower.set_health(halted=True)
    log.error("chain_halted", chain=follower.spec.name, reason=reason, kind=type(exc).__name__)
    return True


async def _until_new_head(
    stop: asyncio.Event, heads: HeadSubscription | None, seconds: float
) -> None:
    """Sleep ``seconds``, waking early on a new head (when subscribed) or when asked to stop."""
    if heads is None:
        await _sleep(stop, seconds)
        return
    stopping = asyncio.ensure_future(stop.wait())
    woken = asyncio.ensure_future(heads.wait(seconds))
    try:
        await asyncio.wait({stopping, woken}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        woken.cancel()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, waking early when asked to stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
