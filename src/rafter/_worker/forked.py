"""What a forked worker does first, whichever fork server made it (local zygote, Ray node server)."""

from __future__ import annotations

import ctypes
import gc
import io
import os
import signal
import sys
from typing import Callable, Iterable

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols include libc's prctl
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def import_worker_modules() -> None:
    """Import what every worker needs (torch's heavy parts, rafter's worker side). Never touches CUDA."""
    import cloudpickle  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  - every torch.optim optimizer imports it (about 1 s): pay it once
    import torch.distributed  # noqa: F401
    import torch.nn.parallel  # noqa: F401

    import rafter._worker.bootstrap  # noqa: F401
    import rafter.train.torch._prepare  # noqa: F401  - what workers use (not the trainer, which reaches the engine)


def preload() -> None:
    """Import, once in the fork server, what every worker needs. Never touches CUDA."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import_worker_modules()

    # Move everything imported so far out of the garbage collector's sight: the workers' collections
    # then skip torch's tens of thousands of module objects, and don't touch (and so copy) their pages.
    # (No gc.collect() first: it freed nothing here and cost 0.12-0.15 s of every start.)
    gc.freeze()


def enter(close_fds: Iterable[int], stdout_fd: int, stderr_fd: int) -> None:
    """Become a worker: own session and process group (a kill reaches its children; Ctrl-C goes to the driver
    only), default signals, die with the fork server, stdout/stderr on the given fds, line-buffered.

    Its own session, as torchrun's workers have, puts each rank in its own scheduling group where the kernel
    groups by session (``sched_autogroup``, on in most desktop and many server kernels): the CPU is then
    shared rank by rank rather than thread by thread with the driver and the other ranks. In one shared group,
    2 ranks of Llama on 2 cores ran 2 % slower than torchrun's (bench/throughput.py)."""
    server_pid = os.getppid()
    os.setsid()
    for fd in close_fds:
        os.close(fd)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    die_with_parent(server_pid)
    for target, fd in ((1, stdout_fd), (2, stderr_fd)):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=True, write_through=True)
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), line_buffering=True, write_through=True)
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr


def run_and_exit(body: Callable[[], int]) -> None:
    """Run the worker's body and end the process with its exit code; never returns into the fork
    server's (or the driver's) code."""
    code = 1
    try:
        code = body()
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class ChildReaper:
    """A fork server's view of its children: SIGCHLD wakes ``select`` on ``fileno()``; ``reap()`` returns
    ``[(pid, wait_status)]`` of the children that ended. Its fds must be closed in each child (``fds``)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        signal.set_wakeup_fd(self._w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when workers stop

    @property
    def fds(self):
        return (self._r, self._w)

    def fileno(self) -> int:
        return self._r

    def reap(self):
        try:
            os.read(self._r, 4096)
        except BlockingIOError:
            pass
        ended = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            ended.append((pid, status))
        return ended


def kill_groups(pids) -> None:
    """SIGKILL each worker's process group (the worker and anything it started)."""
    for pid in list(pids):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
