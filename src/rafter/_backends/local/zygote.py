"""The fork server ("zygote") that starts local workers without paying ``import torch`` each time.

The zygote is a single-threaded process that has torch imported and has never touched CUDA. Each
worker is a ``fork()`` of it: it starts in milliseconds and shares torch's pages copy-on-write.
It is started once per ``fit()`` and serves every attempt, so a restart after a failure is as fast
as the first start.

How the zygote itself is made (see ``start_zygote``):
- *fork of the driver* when that is safe: Linux, the driver is single-threaded right now, CUDA is not
  initialised in it and the run does not use GPUs. The zygote then inherits the driver's already
  imported torch for free.
- *a fresh interpreter* otherwise (``python -c ...``), which imports torch with NVML-based CUDA
  checks so that it never creates a CUDA context; workers initialise CUDA themselves, after the fork.

Protocol (AF_UNIX SOCK_SEQPACKET, pickled tuples):
  driver -> zygote: ("spawn", spec, payload_path) + fds [events, stdout, stderr];  ("shutdown",)
  zygote -> driver: ("spawned", rank, pid);  ("exited", pid, wait_status)
If the driver dies, the kernel kills the zygote (PR_SET_PDEATHSIG) and each worker dies with it.
"""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import select
import signal
import socket
import sys
from typing import Dict

MAX_MESSAGE = 1 << 20
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols include libc's prctl
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _reset_std_streams() -> None:
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=True, write_through=True)
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), line_buffering=True, write_through=True)
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
    sys.stdin = open(os.devnull)


def _become_worker(sock: socket.socket, wake_fds, spec, payload_path: str, fds) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        zygote_pid = os.getppid()
        os.setpgid(0, 0)  # own process group: Ctrl-C goes to the driver, and kill reaches descendants
        sock.close()
        for fd in wake_fds:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die_with_parent(zygote_pid)
        events_fd, out_fd, err_fd = fds
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        _reset_std_streams()
        with open(payload_path, "rb") as f:
            payload = f.read()
        from rafter._worker.bootstrap import run_worker
        from rafter._worker.channel import Channel

        code = run_worker(spec, Channel(events_fd), payload)
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(sock: socket.socket, parent_pid: int) -> None:
    """The zygote's loop; never returns."""
    die_with_parent(parent_pid)
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import cloudpickle  # noqa: F401  - preload what every worker needs
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  - every torch.optim optimizer imports it (about 1 s): pay it once here
    import torch.distributed  # noqa: F401
    import torch.nn.parallel  # noqa: F401

    import rafter._worker.bootstrap  # noqa: F401
    import rafter.train.torch  # noqa: F401

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when workers stop
    children: Dict[int, int] = {}

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.pop(pid, None)
            sock.send(pickle.dumps(("exited", pid, status)))

    try:
        while True:
            ready, _, _ = select.select([sock, wake_r], [], [], 1.0)
            if os.getppid() != parent_pid:
                break
            if wake_r in ready:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                reap()
            if sock not in ready:
                continue
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 3)
            if not data:
                break
            message = pickle.loads(data)
            if message[0] == "shutdown":
                break
            _, spec, payload_path = message
            pid = os.fork()
            if pid == 0:
                _become_worker(sock, (wake_r, wake_w), spec, payload_path, fds)
            for fd in fds:
                os.close(fd)
            children[pid] = spec.rank
            sock.send(pickle.dumps(("spawned", spec.rank, pid)))
            reap()  # a child may have exited before the handler was armed for it
    finally:
        for pid in list(children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
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
