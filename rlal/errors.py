"""The one exception type for bad user input.

Library code raises :class:`RlalError` (a ``ValueError``) with a one-line message naming the problem;
the command line prints it as ``error: <message>`` and exits with status 2, never with a traceback.
"""


class RlalError(ValueError):
    """Bad input from the user: a missing or corrupt file, an unknown name, an invalid setting."""


class DataError(RlalError):
    """A dataset that cannot be found, read or decoded; the message names the file or the paths searched."""


class RunInterrupted(RlalError):
    """The run was stopped by SIGINT or SIGTERM; its last checkpoint is intact (the CLI exits with 130)."""


class TrainingDiverged(RlalError):
    """The training loss became NaN or infinite; nothing of the diverged epoch is checkpointed."""


class UntrustedFactory(RlalError):
    """A saved pruned model names a factory (code that loading would import and run) that the caller has
    not opted in to; the message says how to opt in."""


class RunDirLocked(RlalError):
    """Another live process holds the run directory's lock; the message names it (pid and host)."""


class WriteFailed(RlalError):
    """A file could not be written (full disk, read-only file system); whatever it was replacing is intact.
    ``reason`` is the cause in a few words (``No space left on device``)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message
