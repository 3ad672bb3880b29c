"""The fork server ("zygote") that starts local workers without paying ``import torch`` each time:
its loop (``serve``, in the zygote) and the driver's handle on it (``Zygote``).

The zygote is a single-threaded process that has torch imported and has never touched CUDA. Each
worker is a ``fork()`` of it: it starts in milliseconds and shares torch's pages copy-on-write.
It serves every attempt of a ``fit()``, so a restart after a failure is as fast as the first start,
and is kept warm for the next ``fit()`` in the same process while it still matches the driver (see
``warm.py``), so a notebook's or a sweep's second fit starts as fast as a restart.

How the zygote itself is made (see ``Zygote.__init__``):
- *fork of the driver* when that is safe: Linux, the driver is single-threaded right now, CUDA is not
  initialised in it and the run does not use GPUs. The zygote then inherits the driver's already
  imported torch for free.
- *a fresh interpreter* otherwise (``python -c ...``), which imports torch with NVML-based CUDA
  checks so that it never creates a CUDA context; workers initialise CUDA themselves, after the fork.

Protocol (AF_UNIX SOCK_SEQPACKET, pickled tuples):
  driver -> zygote: ("spawn", spec) + fds [events, stdout, stderr, metrics];  ("killall",);  ("shutdown",)
  zygote -> driver: ("spawned", rank, pid);  ("exited", pid, wait_status)
If the driver dies, the kernel kills the zygote (PR_SET_PDEATHSIG) and each worker dies with it.
The train function reaches each worker over its events socket (``Payload``), never through a file.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

from rafter._worker import forked

MAX_MESSAGE = 1 << 20


def _become_worker(sock: socket.socket, wake_fds, spec, fds) -> None:
    """Runs in the forked child; never returns."""
    sock.close()
    events_fd, out_fd, err_fd, metrics_fd = fds

    def body() -> int:
        forked.enter(wake_fds, out_fd, err_fd)
        sys.stdin = open(os.devnull)
        from rafter._worker.bootstrap import run_worker
        from rafter._worker.channel import Channel

        return run_worker(spec, Channel(events_fd, metrics_fd))  # the payload is the channel's first message

    forked.run_and_exit(body)


def serve(sock: socket.socket, parent_pid: int) -> None:
    """The zygote's loop; never returns."""
    forked.die_with_parent(parent_pid)
    forked.preload()

    reaper = forked.ChildReaper()
    children: Dict[int, int] = {}

    def reap() -> None:
        for pid, status in reaper.reap():
            if children.pop(pid, None) is not None:
                sock.send(pickle.dumps(("exited", pid, status)))

    try:
        while True:
            ready, _, _ = select.select([sock, reaper], [], [], 1.0)
            if os.getppid() != parent_pid:
                break
            if reaper in ready:
                reap()
            if sock not in ready:
                continue
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 4)
            if not data:
                break
            message = pickle.loads(data)
            if message[0] == "shutdown":
                break
            if message[0] == "killall":  # between two fits: the last fit's workers go, the zygote stays
                forked.kill_groups(children)
                continue
            _, spec = message
            pid = os.fork()
            if pid == 0:
                _become_worker(sock, reaper.fds, spec, fds)
            for fd in fds:
                os.close(fd)
            children[pid] = spec.rank
            sock.send(pickle.dumps(("spawned", spec.rank, pid)))
            reap()  # a child may have exited before its SIGCHLD woke the loop
    finally:
        forked.kill_groups(children)
        for pid in list(children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        os._exit(0)


def main() -> None:
    """Entry point of a zygote started as a fresh interpreter."""
    fd = int(os.environ.pop("RAFTER_ZYGOTE_FD"))
    parent = int(os.environ.pop("RAFTER_ZYGOTE_PARENT"))
    sock = socket.socket(fileno=fd)
    serve(sock, parent)


# -- the driver's side -------------------------------------------------------------------------------
def _fork_is_safe(use_gpu: bool) -> bool:
    """Fork the driver only when no Python thread could hold a lock the child needs, and CUDA is untouched.

    Native helper threads (OpenBLAS's pool, started by ``import numpy``) are tolerated: those libraries
    re-initialise themselves after fork, as torch's DataLoader workers rely on every day.
    """
    if not sys.platform.startswith("linux") or use_gpu:
        return False
    if "ray" in sys.modules:  # Ray's native state (even after ray.shutdown()) does not survive a fork
        return False
    if threading.active_count() != 1:
        return False
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return False
    return True


class Zygote:
    """Driver-side handle of the fork server: starts it, asks it for workers, shuts it down."""

    def __init__(self, use_gpu: bool) -> None:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = parent_sock
        self._popen: Optional[subprocess.Popen] = None
        self._pid: Optional[int] = None
        self.forked = _fork_is_safe(use_gpu)
        driver_pid = os.getpid()
        if self.forked:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                try:
                    parent_sock.close()
                    os.setpgid(0, 0)
                    serve(child_sock, driver_pid)
                finally:
                    os._exit(1)
            self._pid = pid
        else:
            env = dict(os.environ, RAFTER_ZYGOTE_FD=str(child_sock.fileno()), RAFTER_ZYGOTE_PARENT=str(driver_pid))
            code = f"import sys; sys.path[:0] = {sys.path!r}; from rafter._backends.local.zygote import main; main()"
            self._popen = subprocess.Popen(
                [sys.executable, "-c", code],
                pass_fds=[child_sock.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._pid = self._popen.pid
        child_sock.close()

    def spawn(self, spec, fds: List[int]) -> None:
        socket.send_fds(self.sock, [pickle.dumps(("spawn", spec))], fds)

    @property
    def pid(self) -> Optional[int]:
        return self._pid

    def alive(self) -> bool:
        """The fork server is running and its socket is open (checked before a warm zygote is reused)."""
        if self._pid is None or self.sock.fileno() < 0:
            return False
        if self._popen is not None:
            return self._popen.poll() is None
        try:
            pid, _ = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return pid == 0

    def kill_workers(self) -> bool:
        """Ask the fork server to SIGKILL every worker it still has (before it is kept warm)."""
        try:
            self.sock.send(pickle.dumps(("killall",)))
            return True
        except OSError:
            return False

    def close(self) -> None:
        try:
            self.sock.send(pickle.dumps(("shutdown",)))
        except OSError:
            pass
        self.sock.close()
        if self._popen is not None:
            try:
                self._popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        elif self._pid is not None:
            deadline = time.monotonic() + 5
            while True:
                pid, _ = os.waitpid(self._pid, os.WNOHANG)
                if pid or time.monotonic() > deadline:
                    break
                time.sleep(0.01)  # polling waitpid (no event for a child's exit here), bounded by the deadline
            if not pid:
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
        self._pid = None
