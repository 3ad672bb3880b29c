"""One live driver per run folder.

Local storage: ``<run>/.rafter_lock`` holds the owner's pid, host and start time, under a POSIX record lock
(``fcntl.lockf``). The kernel drops that lock the moment the driver dies (even by SIGKILL), and it is not
inherited by forked children (the fork server, workers), so a dead driver never keeps its run locked.

Remote storage (fsspec): the same file is a lease: the owner rewrites its expiry every ``LEASE_S / 3`` s
from a heartbeat thread; a lease not renewed for ``LEASE_S`` s belongs to a dead driver.

A second driver stops before touching anything, naming the holder and what to do; a stale owner's lock is
taken over with one line saying so.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Dict, Optional

from rafter._run_folder import LOCK_FILE, RunFolderError
from rafter._storage import Storage, open_fd

logger = logging.getLogger("rafter")

LEASE_S = 60.0
RECORD_WAIT_S = 2.0  # how long a loser waits for the winner of a simultaneous start to write its record
# POSIX locks don't conflict inside one process, and closing *any* fd of the file drops them: so this process's
# own locks are known here (path -> owner record), and the lock file is never opened twice by its owner.
_held_here: Dict[str, Dict[str, Any]] = {}
_held_lock = threading.Lock()


class RunFolderInUseError(RunFolderError):
    """Another live driver owns this run folder."""


def _owner() -> Dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": time.time(), "token": uuid.uuid4().hex}


def _when(t: Any) -> str:
    try:
        return datetime.datetime.fromtimestamp(float(t)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return "?"


def describe(rec: Dict[str, Any]) -> str:
    if not rec:
        return "another driver (it is still writing its details)"
    return f"driver pid {rec.get('pid')} on host {rec.get('host')} (started {_when(rec.get('start'))})"


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError) as exc:
        return isinstance(exc, PermissionError)
    return True


def _in_use(run_path: str, rec: Dict[str, Any], extra: str = "") -> RunFolderInUseError:
    pid = rec.get("pid")
    stop = f"stop it (kill {pid}) " if pid and rec.get("host") == socket.gethostname() else "stop it "
    return RunFolderInUseError(
        f"The run folder {run_path} is in use by {describe(rec)}{extra}. Two drivers in one run folder would "
        f"commit the same checkpoint names and mix their metrics.", path=run_path,
        fix=f"wait for that run to finish, or {stop}and run again to resume it, or give this run its own "
            f"RunConfig(name=...)")


def _parse(text: str) -> Dict[str, Any]:
    try:
        rec = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return rec if isinstance(rec, dict) else {}


class LocalLock:
    def __init__(self, run_path: str) -> None:
        self.run_path = run_path
        self.path = os.path.join(run_path, LOCK_FILE)
        self.fd: Optional[int] = None
        self.previous: Dict[str, Any] = {}

    def acquire(self) -> "LocalLock":
        with _held_lock:
            if self.path in _held_here:
                raise _in_use(self.run_path, _held_here[self.path], " (in this same process)")
            while True:
                fd = open_fd(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except (BlockingIOError, PermissionError):
                    os.close(fd)
                    raise _in_use(self.run_path, self._holder()) from None
                except OSError as exc:  # a filesystem without locks (ENOLCK): the owner's pid must do
                    rec = _parse(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
                    if rec and rec.get("host") == socket.gethostname() and _pid_alive(rec.get("pid")):
                        os.close(fd)
                        raise _in_use(self.run_path, rec) from None
                    logger.warning("The filesystem of %s has no file locks (%s); rafter tells a live owner of "
                                   "this run folder by its pid only.", self.run_path, exc.strerror or exc)
                    break
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)  # the owner unlinked it while we waited: lock the new file instead
            self.fd = fd
            _held_here[self.path] = me = _owner()
        self.previous = _parse(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
        if self.previous:
            gone = "is no longer running" if not _pid_alive(self.previous.get("pid")) or \
                self.previous.get("host") != socket.gethostname() else "holds no lock any more"
            logger.warning("taking over run folder %s from %s, which %s.", self.run_path,
                           describe(self.previous), gone)
        data = json.dumps(me).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        return self

    def _holder(self) -> Dict[str, Any]:
        deadline = time.monotonic() + RECORD_WAIT_S
        while True:
            rec = _parse(_read(self.path))
            if rec or time.monotonic() > deadline:
                return rec
            time.sleep(0.05)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: a waiting driver then re-opens a fresh file
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        with _held_lock:
            _held_here.pop(self.path, None)


def _read(path: str) -> str:
    try:
        fd = open_fd(path, os.O_RDONLY)
    except OSError:
        return ""
    with os.fdopen(fd, "r", errors="replace") as f:
        return f.read()


class RemoteLease:
    def __init__(self, storage: Storage, run_path: str) -> None:
        self.storage = storage
        self.run_path = run_path
        self.path = storage.join_path(run_path, LOCK_FILE)
        self.me = _owner()
        self.previous: Dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _current(self) -> Dict[str, Any]:
        try:
            return _parse(self.storage.read_text(self.path)) if self.storage.exists(self.path) else {}
        except (OSError, ValueError):
            return {}

    def _write(self) -> None:
        self.storage.write_text_atomic(self.path, json.dumps(dict(self.me, expires=time.time() + LEASE_S)))

    def acquire(self) -> "RemoteLease":
        rec = self._current()
        if rec and rec.get("token") != self.me["token"] and float(rec.get("expires", 0)) > time.time():
            left = float(rec["expires"]) - time.time()
            raise _in_use(self.run_path, rec, f", whose lease runs {left:.0f} s more unless it renews it")
        if rec:
            logger.warning("taking over run folder %s from %s, whose lease expired %.0f s ago.",
                           self.run_path, describe(rec), time.time() - float(rec.get("expires", 0)))
        self.previous = rec
        self._write()
        if self._current().get("token") != self.me["token"]:
            raise _in_use(self.run_path, self._current(), " (it started at the same moment)")
        self._thread = threading.Thread(target=self._heartbeat, name="rafter-lease", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            try:
                self._write()
            except Exception as exc:  # noqa: BLE001 - keep renewing; say why it failed
                logger.warning("could not renew the lease on %s (%s); will retry.", self.path, exc)

    def release(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._current().get("token") == self.me["token"]:
            self.storage.remove(self.path)


def hold(storage: Storage, run_path: str):
    """Take ownership of the run folder (which must exist), or raise RunFolderInUseError."""
    return (LocalLock(run_path) if storage.local else RemoteLease(storage, run_path)).acquire()


def holder(storage: Storage, run_path: str) -> Optional[Dict[str, Any]]:
    """Who owns a run folder, for ``rafter results`` (never call it from the owner itself): the owner's record
    with ``alive`` set, or None when no driver holds or held it."""
    path = storage.join_path(run_path, LOCK_FILE)
    if not storage.local:
        rec = _parse(storage.read_text(path)) if storage.exists(path) else {}
        return dict(rec, alive=float(rec.get("expires", 0)) > time.time()) if rec else None
    try:
        fd = open_fd(path, os.O_RDWR)
    except OSError:
        return None
    try:
        rec = _parse(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alive = False
        except (BlockingIOError, PermissionError):
            alive = True
        except OSError:
            alive = rec.get("host") == socket.gethostname() and _pid_alive(rec.get("pid"))
    finally:
        os.close(fd)
    return dict(rec, alive=alive)
