"""One exception root; each subclass says whose fault a failure is.

The docstring of each class is its default message, so ``raise ConfigError()`` still says something useful.
"""

from __future__ import annotations


class ManaAiError(Exception):
    """mana-ai failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.__class__.__name__).strip())


class ConfigError(ManaAiError):
    """The configuration is invalid."""


class StorageError(ManaAiError):
    """The database failed or is unreachable."""


class ConnectionLostError(StorageError):
    """The database connection was lost or could not be used, or the transaction was rolled back (deadlock,
    serialization failure): in every case its transaction did not commit, so doing it again is safe."""


class SchemaTooNewError(StorageError):
    """The database schema is newer than this version of mana-ai understands."""


class ModelBehaviorError(ManaAiError):
    """The language model answered with something we cannot use."""


class ProviderError(ManaAiError):
    """The LLM provider failed.

    ``kind`` is a short machine-readable label (``unreachable``, ``rate_limit``, ``timeout``,
    ``server_error``, ``bad_request``, ``auth``, ``unknown`` ...) used as a metric label.
    """

    def __init__(
        self, message: str | None = None, *, kind: str = "unknown", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class PolicyDenied(ManaAiError):
    """A policy refused the action."""


class BudgetExceeded(ManaAiError):
    """A token budget is exhausted."""


class MaxTurnsExceeded(ManaAiError):
    """The planner loop hit its hard round limit."""


class CryptoError(ManaAiError):
    """Decryption or key handling failed."""


class ResearchError(ManaAiError):
    """A research backend failed."""

    def __init__(
        self, message: str | None = None, *, stage: str = "unknown", reason: str = "unknown"
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.reason = reason
