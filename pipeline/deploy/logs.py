"""What the terminal of `escape-sweep run` / `refine` shows: our own lines only. Dask's, Tornado's and Bokeh's messages (logging,
warnings, worker processes, tracebacks of closed dashboard websockets) go to a log file beside the
store, `<store>.log` (for a URL store: `<name>.escape-sweep.log` in the working directory).

Done at the file-descriptor level, for the rest of the process: fd 2 (which worker processes
inherit and every library handler writes to) points at the log; `sys.stderr` (our lines, the
progress bar, tracebacks of our own errors) stays on the terminal. ESCAPE_SWEEP_LIBRARY_LOG names
another file, or "-" to leave everything on the terminal.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import warnings
from pathlib import Path

from ..locations import is_path, local_path


def log_path(store, name: str) -> Path | None:
    """Where library messages of a run on `store` go (None: stay on the terminal)."""
    env = os.environ.get("ESCAPE_SWEEP_LIBRARY_LOG")
    if env == "-":
        return None
    if env:
        return Path(env)
    if is_path(store):
        p = local_path(store)
        return p.parent / f"{p.name}.log"
    return Path(f"{name}.escape-sweep.log")


_ROUTED: list[Path] = []  # fd 2 is the process's: routed once, for good


def route_library_output(path: Path | None) -> Path | None:
    """Send fd 2 to `path` (appending; created 0644, never through a symlink), keep `sys.stderr`
    on the terminal, and give Python's warnings and otherwise unhandled log records to the log too.
    Returns the path, or None when it could not be opened (then nothing changes)."""
    if path is None or _ROUTED:
        return _ROUTED[0] if _ROUTED else None
    import distributed  # noqa: F401  its log handlers bind the stream of fd 2 when first imported

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not os.path.lexists(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        print(f"escape-sweep: note: cannot open {path} for library messages ({e.strerror}); they stay here",
              file=sys.stderr)
        return None
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    log = sys.stderr  # the old object writes to fd 2, which now is the log
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = terminal
    logging.getLogger().addHandler(logging.StreamHandler(log))  # tornado, bokeh: no handler of their own
    shown = warnings.showwarning

    def to_log(message, category, filename, lineno, file=None, line=None):
        shown(message, category, filename, lineno, file=log, line=line)

    warnings.showwarning = to_log
    _ROUTED.append(path)
    if created:
        atexit.register(_remove_if_empty, path)
    return path


def routed() -> Path | None:
    """The log this process's library messages go to, if they were routed."""
    return _ROUTED[0] if _ROUTED else None


def _remove_if_empty(path: Path) -> None:
    """A run that had nothing to say (or never connected) leaves no empty log behind."""
    try:
        if path.stat().st_size == 0 and not path.is_symlink():
            path.unlink()
    except OSError:
        pass
