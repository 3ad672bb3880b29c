"""The fork server ("zygote") that starts local workers without paying ``import torch`` each time.

The zygote is a single-threaded process that has torch imported and has never touched CUDA. Each
worker is a ``fork()`` of it: it starts in milliseconds and shares torch's pages copy-on-write.
It serves every attempt of a ``fit()``, so a restart after a failure is as fast as the first start,
and is kept warm for the next ``fit()`` in the same process while it still matches the driver (see
``warm.py``), so a notebook's or a sweep's second fit starts as fast as a restart.

How the zygote itself is made (see ``start_zygote``):
- *fork of the driver* when that is safe: Linux, the driver is single-threaded right now, CUDA is not
  initialised in it and the run does not use GPUs. The zygote then inherits the driver's already
  imported torch for free.
- *a fresh interpreter* otherwise (``python -c ...``), which imports torch with NVML-based CUDA
  checks so that it never creates a CUDA context; workers initialise CUDA themselves, after the fork.

Protocol (AF_UNIX SOCK_SEQPACKET, pickled tuples):
  driver -> zygote: ("spawn", spec, payload_path) + fds [events, stdout, stderr];  ("killall",);  ("shutdown",)
  zygote -> driver: ("spawned", rank, pid);  ("exited", pid, wait_status)
If the driver dies, the kernel kills the zygote (PR_SET_PDEATHSIG) and each worker dies with it.
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import sys
from typing import Dict

from rafter._worker import forked

MAX_MESSAGE = 1 << 20


def _become_worker(sock: socket.socket, wake_fds, spec, payload_path: str, fds) -> None:
    """Runs in the forked child; never returns."""
    sock.close()
    events_fd, out_fd, err_fd = fds

    def body() -> int:
        forked.enter(wake_fds, out_fd, err_fd)
        sys.stdin = open(os.devnull)
        with open(payload_path, "rb") as f:
            payload = f.read()
        from rafter._worker.bootstrap import run_worker
        from rafter._worker.channel import Channel

        return run_worker(spec, Channel(events_fd), payload)

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
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 3)
            if not data:
                break
            message = pickle.loads(data)
            if message[0] == "shutdown":
                break
            if message[0] == "killall":  # between two fits: the last fit's workers go, the zygote stays
                forked.kill_groups(children)
                continue
            _, spec, payload_path = message
            pid = os.fork()
            if pid == 0:
                _become_worker(sock, reaper.fds, spec, payload_path, fds)
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
