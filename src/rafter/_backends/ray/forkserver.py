"""One fork server per node and attempt: workers on a node share one ``import torch``. Never imports Ray.

The node's first rank actor (its "leader") binds an abstract AF_UNIX socket and starts this server as
a fresh, single-threaded interpreter that imports torch (with NVML-based CUDA checks, so it never
creates a CUDA context) and then forks one worker per request. Each rank actor on the node connects
(the kernel vouches for the peer's uid: SO_PEERCRED) and sends ``b"spawn"`` with three fds:
``[input (read end of a pipe carrying the pickled spec, payload, driver address and token), stdout,
stderr]``. The server answers ``("spawned", pid)`` and, when the worker ends, ``("exited",
wait_status)`` on the same connection.

Lifetimes: a worker lives only as long as *its own* actor: when that actor's connection closes, the
server SIGKILLs the worker's process group; and each worker dies with the server (PR_SET_PDEATHSIG).
The server does not die with the leader, so one actor's death never takes its neighbours' workers
along (their deaths stay attributable); it exits once every expected actor has come and gone, or
when its leader is gone and no actor is connected.

The worker (``_become_worker``) connects to the driver, presents the attempt's token and runs
:func:`rafter._worker.bootstrap.run_worker` unchanged, with that socket as its channel.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import struct
import sys
from typing import Dict, Optional

from rafter._worker import forked

MAX_MESSAGE = 1 << 16


def _peer_uid(sock: socket.socket) -> Optional[int]:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    except OSError:
        return None


def _become_worker(close_fds, fds) -> None:
    """Runs in the forked child; never returns."""
    input_fd, out_fd, err_fd = fds

    def body() -> int:
        forked.enter(close_fds, out_fd, err_fd)
        with os.fdopen(input_fd, "rb") as f:
            message = pickle.loads(f.read())
        sys.stdin = open(os.devnull)
        os.environ.update(message["env"])

        from rafter._backends.ray import wire
        from rafter._worker.bootstrap import run_worker
        from rafter._worker.channel import Channel

        spec = message["spec"]
        host, port = message["driver"]
        sock = wire.connect(host, port, message["token"], spec.rank, wire.CHANNEL)
        return run_worker(spec, Channel(sock.detach()), message["payload"])

    forked.run_and_exit(body)


def serve(listener: socket.socket, parent_pid: int, expected: int) -> None:
    """The server's loop; never returns."""
    forked.preload()  # what every worker needs, once per node
    import rafter._backends.ray.wire  # noqa: F401

    reaper = forked.ChildReaper()
    uid = os.getuid()
    clients: Dict[socket.socket, Optional[int]] = {}  # connection -> its worker's pid
    owners: Dict[int, socket.socket] = {}
    served = 0

    def reap() -> None:
        for pid, status in reaper.reap():
            conn = owners.pop(pid, None)
            if conn is not None:
                try:
                    conn.send(pickle.dumps(("exited", status)))
                except OSError:
                    pass

    def drop(conn: socket.socket) -> None:
        pid = clients.pop(conn, None)
        conn.close()
        if pid is not None and pid in owners:
            try:
                os.killpg(pid, signal.SIGKILL)  # its actor is gone: so is the worker
            except ProcessLookupError:
                pass

    try:
        while True:
            ready, _, _ = select.select([listener, reaper, *clients], [], [], 1.0)
            if not clients and (served >= expected or os.getppid() != parent_pid):
                break  # every actor of this node has come and gone, or none can come any more
            if reaper in ready:
                reap()
            if listener in ready:
                conn, _ = listener.accept()
                if _peer_uid(conn) != uid:
                    conn.close()
                else:
                    clients[conn] = None
                    served += 1
            for conn in [c for c in ready if c in clients]:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(conn, MAX_MESSAGE, 3)
                except OSError:
                    data, fds = b"", []
                if data != b"spawn" or len(fds) != 3 or clients[conn] is not None:
                    for fd in fds:
                        os.close(fd)
                    drop(conn)
                    continue
                pid = os.fork()
                if pid == 0:
                    _become_worker([listener.fileno(), *reaper.fds, *(c.fileno() for c in clients)], fds)
                for fd in fds:
                    os.close(fd)
                clients[conn] = pid
                owners[pid] = conn
                conn.send(pickle.dumps(("spawned", pid)))
                reap()  # it may have exited before SIGCHLD's handler saw it
    finally:
        forked.kill_groups(owners)
        os._exit(0)


def main() -> None:
    """Entry point: ``python -c "from rafter._backends.ray.forkserver import main; main()"``."""
    fd = int(os.environ.pop("RAFTER_FORKSERVER_FD"))
    parent = int(os.environ.pop("RAFTER_RAY_PARENT"))
    expected = int(os.environ.pop("RAFTER_FORKSERVER_CLIENTS"))
    serve(socket.socket(fileno=fd), parent, expected)
