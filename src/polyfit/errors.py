"""Errors a user can cause; the CLI prints them as one line and exits with `exit_code`."""

import signal


class PolyfitError(Exception):
    """A failure explained by its message alone: no traceback is shown."""

    exit_code = 1


class UsageError(PolyfitError):
    """Bad params, arguments or input files: nothing was run."""

    exit_code = 2


class DivergedError(PolyfitError):
    """Training produced a non-finite or exploding loss."""


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM) raised as an exception, so runs end KILLED as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum  # the shell's convention for death by signal


def one_line(error: BaseException) -> str:
    """The root cause's first line: MLflow wraps SQLAlchemy, which wraps sqlite3's
    "database or disk is full" under a paragraph about autoflush and the failed SQL."""
    text = str(_root_cause(error)).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (raise ... from, SQLAlchemy's .orig). Our own errors
    are already the user's line."""
    seen = {id(error)}
    while not isinstance(error, PolyfitError):
        inner = getattr(error, "orig", None) or error.__cause__ or error.__context__
        if not isinstance(inner, BaseException) or id(inner) in seen or not str(inner).strip():
            return error
        seen.add(id(inner))
        error = inner
    return error
