"""Error tree, classified by what the caller does: retry with backoff, or stop.

Like procrastinate's exceptions, a class docstring is the default message. ``Retryable`` is
handled once, at the driver loop (backoff + metric); ``Fatal`` stops the chain or the process.
"""

from __future__ import annotations


class IndexerError(Exception):
    """Indexer error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])


class Retryable(IndexerError):
    """A transient failure; the same step may succeed later."""


class Fatal(IndexerError):
    """A failure that retrying will not fix; a human must act."""


class RpcUnavailable(Retryable):
    """The RPC endpoints did not answer (transport error, HTTP 5xx or timeout)."""


class RpcRateLimited(Retryable):
    """The RPC provider is rate-limiting us."""


class RpcError(Retryable):
    """The RPC node answered with a JSON-RPC error."""

    def __init__(self, message: str | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class LaggingNode(Retryable):
    """The node has not got the requested blocks yet (a lagging node behind a load balancer)."""


class InvalidRpcData(Retryable):
    """The node returned data that does not verify (gap, broken parent link, foreign log)."""


class DatabaseUnavailable(Retryable):
    """PostgreSQL is unreachable or the connection broke; the transaction was not committed."""


class NotLeader(Retryable):
    """Another process holds this chain's writer lock; this one stands by."""


class ConfigError(Fatal):
    """The configuration is invalid."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))


class UsageError(Fatal):
    """The command cannot do what its arguments ask (exit 2, like a bad flag)."""


class WrongChainId(Fatal):
    """The RPC endpoint serves another chain than the configuration says."""


class RangeLimitError(Fatal):
    """The provider refuses the logs of even a single block."""


class ReorgTooDeep(Fatal):
    """A reorg deeper than max_reorg_depth: the chain halts, nothing is deleted."""


class FinalityViolation(Fatal):
    """A block at or below the finalized height changed: the chain halts."""


class ChainHalted(Fatal):
    """The chain is halted until `indexer rewind`."""


class SchemaVersionError(Fatal):
    """The database schema is at another version than this build understands."""


class SignerNotAuthorized(Fatal):
    """The signer lacks DISTRIBUTOR_ROLE on a bank it must push for."""
