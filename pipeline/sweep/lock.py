"""A store lock, so that two `run`s on the same store refuse each other.

    with StoreLock("results/x.zarr"):
        ...  # create or check the store, compute, write

creates the lock file `lock_path(store)` -- `results/.x.zarr.escape-sweep.lock`, beside the
store rather than inside it, because `cube.create` builds a new store beside the old one and
renames it into place, which would carry a lock inside the store away -- atomically
(O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600), holding JSON {pid, host, started, heartbeat, token,
pid_started}. A daemon thread refreshes `heartbeat` every `interval` seconds through a temporary
file with an unpredictable name (`tempfile.mkstemp` beside the lock) renamed over it. A lock is
*stale*, and is taken over with a note on stderr, when its holder ran on this host and that
process is gone (pid dead, or reused by a younger process), or -- for a holder on another host
sharing the filesystem only -- when its heartbeat is older than `timeout` seconds. A live holder
on this host is never stale, however old its heartbeat (a run paused by SIGSTOP, Ctrl-Z or a
debugger keeps its lock). A live holder raises `LockedError`.

`check()` (the store's guard, called before every write) reads the lock file and compares the
token: a process writes only while the file on disk is its own. A holder that finds its lock
gone or replaced has lost it for good: the heartbeat never recreates a lock file that vanished
(it cannot know that nobody held the store in between), and `check()` raises `LockedError`.

Clocks: the heartbeat age is this host's clock minus the holder's; hosts sharing a store
should run NTP. Object-store URLs (s3://, gs://, ...) are not locked (no atomic create):
`StoreLock` is a no-op there and says so once.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError, LockedError
from ..locations import is_path, local_path

LOCK_SUFFIX = ".escape-sweep.lock"
DEFAULT_TIMEOUT = 60.0
DEFAULT_INTERVAL = 5.0
_TAKEOVER_STALE_S = 30.0  # a takeover mutex older than this was left by a crashed taker
TIMEOUT_ENV = "ESCAPE_SWEEP_LOCK_TIMEOUT"  # seconds; overrides DEFAULT_TIMEOUT (tests use a short one)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def timeout_from_env() -> float:
    """The stale-heartbeat timeout: $ESCAPE_SWEEP_LOCK_TIMEOUT seconds if set, else 60."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value < float("inf")):
        raise InputError(f"${TIMEOUT_ENV} = {raw!r}: must be a number of seconds > 0")
    return value


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _proc_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    try:  # a zombie (killed, not yet reaped) is dead for our purposes
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return True


def lock_path(store) -> Path:
    """The lock file of a local store: `<parent>/.<name>.escape-sweep.lock` (symlinks resolved)."""
    p = local_path(store).expanduser()
    p = p.parent.resolve() / p.name if p.name else p.resolve()
    if p.is_symlink():
        p = p.resolve()
    return p.with_name(f".{p.name}{LOCK_SUFFIX}")


class StoreLock:
    """Context manager holding `<store>/.escape-sweep.lock` for the duration of a run.

    path      the store (need not exist yet; its parent directory is created if missing)
    timeout   seconds without heartbeat after which a holder is presumed dead (default 60)
    interval  seconds between heartbeats (default 5; must be well under timeout)
    """

    def __init__(self, path, *, timeout: float = DEFAULT_TIMEOUT, interval: float = DEFAULT_INTERVAL):
        self.remote = not is_path(path)  # a URL or a zarr store object: nothing to lock
        self.store = local_path(path) if not self.remote else path
        self.path = None if self.remote else lock_path(path)
        self.timeout = float(timeout)
        self.interval = float(min(interval, max(timeout / 4, 0.05)))
        self.token = uuid.uuid4().hex
        self.lost = False
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._record: dict | None = None

    # ---------------------------------------------------------------- reading and judging

    def read(self) -> dict | None:
        """The lock file's record, {} if unreadable/partial, None if absent."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            rec = json.loads(text)
        except ValueError:
            return {}
        return rec if isinstance(rec, dict) else {}

    def stale_reason(self, rec: dict | None, now: float | None = None) -> str | None:
        """Why `rec` is stale, or None if its holder must be presumed alive."""
        if rec is None:
            return "absent"
        now = time.time() if now is None else now
        beat = rec.get("heartbeat")
        if not isinstance(beat, (int, float)):
            # unreadable or half-written: judge by the file's age instead
            try:
                beat = self.path.stat().st_mtime
            except OSError:
                return "absent"
        if rec.get("host") == socket.gethostname() and isinstance(rec.get("pid"), int):
            pid = rec["pid"]
            if not _pid_alive(pid):
                return f"pid {pid} is not running on this host"
            started = rec.get("pid_started")
            actual = _proc_start(pid)
            if isinstance(started, (int, float)) and actual is not None and abs(actual - started) > 1.0:
                return f"pid {pid} now belongs to another process"
            return None  # a live holder on this host: paused or slow, never stale
        age = now - beat
        if age > self.timeout:
            return f"no heartbeat for {age:.0f} s (timeout {self.timeout:.0f} s)"
        return None

    def _describe(self, rec: dict) -> str:
        since = rec.get("started")
        beat = rec.get("heartbeat")
        parts = [f"pid {rec.get('pid', '?')} on host {rec.get('host', '?')}"]
        if isinstance(since, (int, float)):
            parts.append(f"since {_iso(since)}")
        if isinstance(beat, (int, float)):
            parts.append(f"last heartbeat {max(time.time() - beat, 0):.0f} s ago")
        return ", ".join(parts)

    # ---------------------------------------------------------------- writing

    def _make_record(self) -> dict:
        now = time.time()
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now,
            "started_iso": _iso(now),
            "heartbeat": now,
            "token": self.token,
            "pid_started": _proc_start(os.getpid()),
        }

    def _create(self) -> bool:
        """Create the lock file exclusively; False if it exists."""
        rec = self._make_record()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(rec).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._record = rec
        return True

    def _beat(self) -> None:
        """Refresh the heartbeat if the lock is still ours. A lock file that vanished or holds
        another token is lost for good: it is never recreated (someone may have held the store
        in between). Serialised with takeovers by the takeover mutex."""
        mutex = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o600)
        except FileExistsError:
            try:  # left by a crashed taker: clear it, beat next time
                if time.time() - mutex.stat().st_mtime > _TAKEOVER_STALE_S:
                    mutex.unlink()
            except OSError:
                pass
            return  # a takeover is under way: judge at the next beat
        os.close(fd)
        try:
            rec = self.read()
            if rec is None or rec.get("token") != self.token:
                self.lost = True
                return
            rec["heartbeat"] = time.time()
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(rec))
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            self._record = rec
        finally:
            try:
                mutex.unlink()
            except OSError:
                pass

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except OSError:
                pass  # a transient filesystem hiccup; the next beat retries
            if self.lost:
                return  # check() says so before the next write

    # ---------------------------------------------------------------- acquire / release

    def _takeover(self, rec: dict, reason: str) -> bool:
        """Replace a stale lock, serialised by a takeover mutex so two takers cannot both win."""
        mutex = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o600)
        except FileExistsError:
            try:
                if time.time() - mutex.stat().st_mtime > _TAKEOVER_STALE_S:
                    mutex.unlink()
            except OSError:
                pass
            return False
        os.close(fd)
        try:
            current = self.read()
            if current is not None:
                if current.get("token") != rec.get("token") or self.stale_reason(current) is None:
                    return False  # changed under us: judge again
                self.path.unlink()
            if not self._create():
                return False
        finally:
            try:
                mutex.unlink()
            except OSError:
                pass
        print(f"escape-sweep: note: took over the stale store lock {self.path} "
              f"({self._describe(rec)}: {reason})", file=sys.stderr)
        return True

    def acquire(self) -> "StoreLock":
        if self.remote:
            print(f"escape-sweep: note: {self.store} is not a local path; "
                  "concurrent runs on it are not locked out", file=sys.stderr)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            if self._create():
                break
            rec = self.read()
            if rec is None:
                continue  # released between our create and read
            reason = self.stale_reason(rec)
            if reason is None:
                if not rec:  # being written right now, or garbage younger than timeout
                    time.sleep(0.05)
                    continue
                raise LockedError(
                    f"store {self.store} is in use by another escape-sweep run "
                    f"({self._describe(rec)}); wait for it to finish, or stop it. "
                    f"A holder that dies is taken over once its process is gone (same host) "
                    f"or its heartbeat is {self.timeout:.0f} s old (a holder on another host).",
                    rec,
                )
            if self._takeover(rec, reason):
                break
            time.sleep(0.05)
        else:
            rec = self.read() or {}
            raise LockedError(f"store {self.store}: could not take the lock ({self._describe(rec)})", rec)
        self._held = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat_loop, name="escape-sweep-lock", daemon=True)
        self._thread.start()
        return self

    def check(self) -> None:
        """Raise LockedError unless the lock file on disk is still ours (same token): called
        before every write, so a run that lost its lock (judged dead and taken over, or its
        file removed) never writes again."""
        if self.remote:
            return
        rec = None if self.lost else self.read()
        if not self.lost and (not self._held or rec is None or rec.get("token") != self.token):
            self.lost = True
        if self.lost:
            rec = self.read()
            who = f"taken over by {self._describe(rec)}" if rec else "removed"
            raise LockedError(f"store {self.store}: lost the store lock {self.path} ({who}); stopped without "
                              "writing further", rec or {})

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.interval, 1.0) + 5)
            self._thread = None
        rec = self.read()
        if rec is not None and rec.get("token") == self.token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
