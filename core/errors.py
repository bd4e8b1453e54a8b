"""Errors the engine raises on purpose. Front ends print them as one line, never a traceback."""

from __future__ import annotations


class QwbError(Exception):
    """Base: its message is one line that says what was wrong and what to do."""


class ConfigError(QwbError):
    pass


class InputError(QwbError):
    """Bad input from the caller (unknown value, empty text, path outside the roots...)."""


class NotFoundError(QwbError):
    pass


class DatabaseUnavailable(QwbError):
    pass


class MigrationError(QwbError):
    pass


class ModelMismatchError(QwbError):
    """The store's vectors were made by another embedding model than the configured one."""


class LLMUnavailable(QwbError):
    """No LLM is configured or reachable for a role."""


class BudgetExceeded(QwbError):
    """A call, step or run went past its wall-clock budget and was stopped."""


class ContextOverflow(LLMUnavailable):
    """The prompt does not fit the server's context window."""


class EmptyReply(LLMUnavailable):
    """The model answered nothing."""
