"""The Ray actor that holds one rank's placement-group bundle and supervises its worker process.

Why a separate worker process instead of running the worker inside the actor: the driver must learn
*how* a worker died (exit code, or the signal: SIGKILL, SIGSEGV, ...) for the verdict to name the
cause, and an actor's own death reaches the driver only as an ``ActorDiedError`` with a message. The
worker is forked by the node's fork server (see ``forkserver``: one ``import torch`` per node), which
reports its wait status to this actor; a worker that crashes leaves a healthy actor that says how.

The actor talks to the driver over its own TCP connection (``wire.CONTROL``): it forwards the worker's
stdout/stderr as they come, then ``("exited", returncode)`` once both pipes are drained; the driver
sends ``("kill", sig)`` and ``("signal", sig)``. If that connection drops (the driver died), the
actor kills its worker. The node's leader (its first actor) starts the fork server from its main
thread.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Optional

from rafter._backends.ray import wire

SERVER_CODE = "from rafter._backends.ray.forkserver import main; main()"
DRAIN_GRACE_S = 0.5  # after the worker exits, how long its children may hold its pipes open
CONNECT_WAIT_S = 120.0  # how long a rank actor waits for its node's leader to open the fork server


def interface_for(ip: str) -> Optional[str]:
    """The network interface that holds ``ip`` (for GLOO_SOCKET_IFNAME), or None."""
    try:
        import psutil

        for name, addrs in psutil.net_if_addrs().items():
            if any(a.family == socket.AF_INET and a.address == ip for a in addrs):
                return name
    except Exception:  # noqa: BLE001 - gloo then picks the interface itself
        pass
    return None


class RafterRank:
    def __init__(self, server_address: bytes, node_workers: int) -> None:
        """``node_workers`` > 0 makes this actor its node's leader, which starts the fork server for them."""
        import ray

        self.node_ip = ray.util.get_node_ip_address()
        self.server_address = server_address
        self.server: Optional[subprocess.Popen] = None
        self.pid: Optional[int] = None
        self.done = False
        self.pending_kill: Optional[int] = None  # a kill that came before the worker existed
        self.driver_killed = False  # the driver asked for the SIGKILL (not the kernel, not this node's watch)
        self._ctl: Optional[socket.socket] = None
        self._lock = threading.Lock()
        if node_workers:  # bind first, then start the server: peers can connect (and queue) at once
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            listener.bind(server_address)
            listener.listen(64)
            env = dict(os.environ, RAFTER_FORKSERVER_FD=str(listener.fileno()), RAFTER_RAY_PARENT=str(os.getpid()),
                       RAFTER_FORKSERVER_CLIENTS=str(node_workers))
            self.server = subprocess.Popen([sys.executable, "-c", SERVER_CODE], pass_fds=[listener.fileno()], env=env,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
            listener.close()

    # -- queries before the run ----------------------------------------------------------------
    def info(self) -> dict:
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": self.node_ip,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "hostname": socket.gethostname(),
            "cwd": os.getcwd(),
        }

    def sees(self, path: str) -> bool:
        return os.path.exists(path)

    # -- the run -------------------------------------------------------------------------------
    def run(self, spec, payload: bytes, driver: tuple, token: bytes, shipped: bool) -> int:
        """Have the worker forked, stream its output, return its returncode (negative: killed by that signal)."""
        try:
            self._ctl = wire.connect(driver[0], driver[1], token, spec.rank, wire.CONTROL)
        except OSError as exc:
            raise ConnectionError(
                f"rank {spec.rank}'s Ray actor on node {self.node_ip} could not connect to the driver at "
                f"{driver[0]}:{driver[1]} ({exc}). Workers connect back to the driver: run the driver on a node "
                f"of the cluster, or let the cluster's nodes reach the driver's machine on any TCP port."
            ) from None
        if shipped:  # the driver's folder came as this actor's runtime_env working_dir
            spec.cwd, spec.sys_path = os.getcwd(), []
        env = {}
        ifname = interface_for(self.node_ip)
        if ifname and "GLOO_SOCKET_IFNAME" not in spec.env and "GLOO_SOCKET_IFNAME" not in os.environ:
            env["GLOO_SOCKET_IFNAME"] = ifname
        message = pickle.dumps({"spec": spec, "payload": payload, "driver": tuple(driver), "token": token, "env": env},
                               protocol=pickle.HIGHEST_PROTOCOL)
        server = self._connect_server()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        socket.send_fds(server, [b"spawn"], [in_r, out_w, err_w])
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        pumps = [threading.Thread(target=self._pump, args=(fd, name), daemon=True)
                 for fd, name in ((out_r, "stdout"), (err_r, "stderr"))]
        for t in pumps:
            t.start()
        threading.Thread(target=self._feed, args=(in_w, message), daemon=True).start()
        threading.Thread(target=self._serve_commands, daemon=True).start()
        code = -signal.SIGKILL
        # Memory on this node: the driver can't see it (rafter._diagnose.node_memory).
        from rafter._diagnose.node_memory import NodeMemoryWatch

        watch = NodeMemoryWatch(f"{self.node_ip} ({socket.gethostname()})", spec.memory_limit,
                                stop=lambda: self._signal(signal.SIGKILL, group=True),
                                send=lambda evidence: self._send(("oom", evidence)))
        while True:
            data = server.recv(1 << 16)
            if not data:  # the fork server died, and the worker with it
                self._send(("out", "stderr", b"rafter: this node's fork server died; the worker died with it\n"))
                break
            reply = pickle.loads(data)
            if reply[0] == "spawned":
                self.pid = reply[1]
                self._send(("spawned", self.pid, self.node_ip, socket.gethostname()))
                watch.start(self.pid)
                if self.pending_kill is not None:
                    self._signal(self.pending_kill, group=True)
            elif reply[0] == "exited":
                code = os.waitstatus_to_exitcode(reply[1])
                break
        if self.pid is not None:
            watch.exited(self.pid, code, killed_by_rafter=self.driver_killed)  # sends its evidence, if any
        watch.close()
        self.done = True
        for t in pumps:
            t.join(DRAIN_GRACE_S)
        self._send(("exited", code))
        return code

    def _connect_server(self) -> socket.socket:
        deadline = time.monotonic() + CONNECT_WAIT_S
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                sock.connect(self.server_address)
                return sock
            except OSError as exc:  # the node's leader has not bound it yet
                sock.close()
                if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT) or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def _feed(self, fd: int, message: bytes) -> None:
        try:
            with open(fd, "wb") as f:
                f.write(message)
        except OSError:
            pass  # the worker died first; its exit status tells why

    def _pump(self, fd: int, name: str) -> None:
        with open(fd, "rb", buffering=0) as f:
            while True:
                try:
                    chunk = f.read(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    return
                self._send(("out", name, chunk))

    def _send(self, message: tuple) -> None:
        data = wire.frame(message)
        with self._lock:
            try:
                self._ctl.sendall(data)
            except OSError:
                pass  # the driver is gone; _serve_commands stops the worker

    def _serve_commands(self) -> None:
        reader = wire.FrameReader(self._ctl)
        while not reader.eof:
            for message in reader.read():
                if message[0] in ("kill", "signal"):
                    self.driver_killed = self.driver_killed or (message[0] == "kill" and message[1] == signal.SIGKILL)
                    self._signal(message[1], group=message[0] == "kill")
        self._signal(signal.SIGKILL, group=True)  # the driver went away: no worker may outlive it

    def _signal(self, sig: int, group: bool) -> None:
        if self.pid is None and group:
            self.pending_kill = sig
        if self.pid is None or self.done:
            return
        try:
            if group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
