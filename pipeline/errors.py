"""Every error the package raises on purpose, in two kinds the command line maps to exit codes.

`InputError` (exit 2): bad input, reported as one line (file or option, key, value, what is
allowed) before any compute starts. `RunError` (exit 1): a failure at run time, one line; the
store keeps what was finished. `cli.main` catches each kind once.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: one line on stderr, exit code 2, nothing computed."""


class SpecError(InputError):
    """A bad sweep spec: the message names file, key, value and what is allowed."""


class SelectionError(InputError):
    """A bad --sel / --range / plot or fit option, or a selection that picks nothing."""


class NotACube(InputError):
    """A path that is not an escape-sweep cube (missing, not Zarr, or not made by escape-sweep)."""


class StoreMismatch(InputError):
    """A store that cannot take this run (another spec's cube, or not a cube) without --overwrite."""


class RunError(RuntimeError):
    """A failure at run time: one line on stderr, exit code 1."""


class LockedError(RunError):
    """Another live run holds the store."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}


class DeployError(RunError):
    """Workers could not be had (a batch system refused jobs, a cluster failed to start)."""


class ConnectError(DeployError):
    """The scheduler could not be reached within the connect timeout."""
