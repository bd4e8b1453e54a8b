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
    """The database cannot be reached. The message is one line: what happened and what to do.

    `restarting` is True when this process found its embedded server stopped and is starting
    it again (long-running processes only): the failed operation was not done, and retrying it
    in a moment works. `external` is True for a database qwb does not run (database.url)."""

    def __init__(self, message: str, *, restarting: bool = False, external: bool = False) -> None:
        super().__init__(message)
        self.restarting = restarting
        self.external = external


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
