"""Errors a user can cause; the CLI prints them as one line and exits with `exit_code`."""


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
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum  # the shell's convention for death by signal
