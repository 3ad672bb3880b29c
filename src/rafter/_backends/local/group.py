"""Local backend: workers are processes forked from the zygote; the driver talks to each over a
socketpair and reads its stdout/stderr through pipes. Nothing listens on a network port here except
rank 0's TCPStore and gloo's sockets, both bound to 127.0.0.1.
"""

from __future__ import annotations

import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

from rafter._backends import events as ev
from rafter._backends.frames import FrameReader, frame
from rafter._backends.output import RankOutput
from rafter._backends.local import zygote as zygote_mod
from rafter._worker.spec import WorkerSpec

EXIT_LOG_GRACE_S = 0.5  # how long to wait for a dead worker's last output (grandchildren may hold pipes)


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
    """Driver-side handle of the fork server."""

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
                    zygote_mod.serve(child_sock, driver_pid)
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

    def spawn(self, spec: WorkerSpec, payload_path: str, fds: List[int]) -> None:
        socket.send_fds(self.sock, [pickle.dumps(("spawn", spec, payload_path))], fds)

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
                time.sleep(0.01)
            if not pid:
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
        self._pid = None


class _Rank:
    def __init__(self, spec: WorkerSpec, output: RankOutput) -> None:
        self.spec = spec
        self.output = output
        self.pid: Optional[int] = None
        self.alive = True
        self.open_streams = 2
        self.pending_exit: Optional[ev.Exited] = None
        self.exit_deadline = 0.0
        self.killed_reason: Optional[str] = None
        self.kill_pending: Optional[int] = None


class LocalWorkerGroup:
    """One attempt's workers. ``poll()`` turns sockets and pipes into events for the controller."""

    def __init__(self, zygote: Zygote, specs: List[WorkerSpec], payload_path: str, echo: bool = True) -> None:
        self._zygote = zygote
        self._sel = selectors.DefaultSelector()
        self._ranks: Dict[int, _Rank] = {}
        self._by_pid: Dict[int, int] = {}
        self._channels: Dict[int, socket.socket] = {}
        self._sel.register(zygote.sock, selectors.EVENT_READ, ("zygote", None))
        for spec in specs:
            os.makedirs(spec.log_dir, exist_ok=True)
            rank = _Rank(spec, RankOutput(os.path.join(spec.log_dir, f"rank_{spec.rank}.log"),
                                          f"[rank {spec.rank}] ", echo))
            self._ranks[spec.rank] = rank
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            zygote.spawn(spec, payload_path, [theirs.fileno(), out_w, err_w])
            theirs.close()
            os.close(out_w)
            os.close(err_w)
            self._channels[spec.rank] = mine
            self._sel.register(mine, selectors.EVENT_READ, ("events", spec.rank))
            for fd, name in ((out_r, "stdout"), (err_r, "stderr")):
                os.set_blocking(fd, False)
                self._sel.register(fd, selectors.EVENT_READ, (name, spec.rank))
        self._conn = {r: FrameReader(s) for r, s in self._channels.items()}

    # -- queries -------------------------------------------------------------------------------
    @property
    def ranks(self) -> List[int]:
        return sorted(self._ranks)

    def spec(self, rank: int) -> WorkerSpec:
        return self._ranks[rank].spec

    def pid(self, rank: int) -> Optional[int]:
        return self._ranks[rank].pid

    def pids(self) -> Dict[int, int]:
        return {r: s.pid for r, s in self._ranks.items() if s.pid is not None and s.alive}

    def log_tail(self, rank: int) -> List[str]:
        return self._ranks[rank].output.lines()

    # -- control -------------------------------------------------------------------------------
    def kill(self, ranks: Optional[List[int]] = None, reason: str = "stopped by rafter", sig: int = signal.SIGKILL) -> None:
        for r in self.ranks if ranks is None else ranks:
            state = self._ranks[r]
            if not state.alive:
                continue
            state.killed_reason = state.killed_reason or reason
            if state.pid is None:  # not forked yet: killed as soon as the zygote says it is
                state.kill_pending = sig
                continue
            try:
                os.killpg(state.pid, sig)
            except ProcessLookupError:
                try:
                    os.kill(state.pid, sig)
                except ProcessLookupError:
                    pass

    def send(self, rank: int, message: tuple) -> None:
        self._channels[rank].sendall(frame(message))

    def signal(self, rank: int, sig: int) -> bool:
        pid = self._ranks[rank].pid
        if pid is None or not self._ranks[rank].alive:
            return False
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False

    def all_exited(self) -> bool:
        return all(not s.alive and s.pending_exit is None for s in self._ranks.values())

    def close(self) -> None:
        for state in self._ranks.values():
            state.output.close()
        for key in list(self._sel.get_map().values()):
            if key.fileobj is self._zygote.sock:
                continue
            self._sel.unregister(key.fileobj)
            if isinstance(key.fileobj, int):
                os.close(key.fileobj)
            else:
                key.fileobj.close()
        for sock in self._channels.values():
            sock.close()
        self._sel.close()

    # -- the pump ------------------------------------------------------------------------------
    def poll(self, timeout: float) -> List[object]:
        out: List[object] = []
        for key, _ in self._sel.select(timeout):
            kind, rank = key.data
            if kind == "zygote":
                self._on_zygote(out)
            elif kind == "events":
                self._on_events(rank, key.fileobj, out)
            else:
                self._on_output(rank, kind, key.fileobj)
        now = time.time()
        for state in self._ranks.values():
            if state.pending_exit is not None and (state.open_streams == 0 or now >= state.exit_deadline):
                out.append(state.pending_exit)
                state.pending_exit = None
        return out

    def _on_zygote(self, out: List[object]) -> None:
        try:
            data = self._zygote.sock.recv(zygote_mod.MAX_MESSAGE)
        except OSError:
            data = b""
        if not data:
            raise RuntimeError(
                "rafter's local fork server (the zygote) died unexpectedly; it may have been killed by the "
                "kernel OOM killer or a signal. The workers it started are gone with it."
            )
        message = pickle.loads(data)
        if message[0] == "spawned":
            _, rank, pid = message
            self._ranks[rank].pid = pid
            self._by_pid[pid] = rank
            if self._ranks[rank].kill_pending is not None:
                self.kill([rank], sig=self._ranks[rank].kill_pending)
            self._ranks[rank].output.note(f"attempt {self._ranks[rank].spec.attempt}, pid {pid}")
        elif message[0] == "exited":
            _, pid, status = message
            rank = self._by_pid.get(pid)
            if rank is None:
                return
            state = self._ranks[rank]
            state.alive = False
            code = os.waitstatus_to_exitcode(status)
            state.pending_exit = ev.Exited(
                rank=rank,
                exit_code=code if code >= 0 else None,
                signal=-code if code < 0 else None,
                time=time.time(),
                killed_by_rafter=state.killed_reason is not None,
                reason=state.killed_reason,
            )
            state.exit_deadline = time.time() + EXIT_LOG_GRACE_S

    def _on_events(self, rank: int, sock: socket.socket, out: List[object]) -> None:
        reader = self._conn[rank]
        messages = reader.read()
        for message in messages:
            self._dispatch(rank, message, out)
        if reader.eof:
            self._sel.unregister(sock)

    def _dispatch(self, rank: int, message: tuple, out: List[object]) -> None:
        if message[0] == "rdzv":  # rank 0's store address: forward it to every other rank
            for other in self._channels:
                if other != rank:
                    try:
                        self.send(other, message)
                    except OSError:
                        pass
            return
        event = ev.from_message(rank, message)
        if event is not None:
            out.append(event)

    def _on_output(self, rank: int, stream: str, fd: int) -> None:
        state = self._ranks[rank]
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            state.output.write(stream, chunk)
            return
        self._sel.unregister(fd)
        os.close(fd)
        state.open_streams -= 1
        state.output.flush(stream)
