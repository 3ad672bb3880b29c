"""Local backend: workers are processes forked from the zygote; the driver talks to each over a
socketpair and reads its stdout/stderr through pipes. Nothing listens on a network port here except
rank 0's TCPStore and gloo's sockets, both bound to 127.0.0.1.
"""

from __future__ import annotations

import collections
import os
import pickle
import selectors
import socket
import time
from typing import Deque, Dict, List, Tuple

from rafter._backends.base import GroupBase, RankState
from rafter._backends.frames import Lanes, frame
from rafter._backends.local import zygote as zygote_mod
from rafter._backends.output import RankOutput
from rafter._worker import messages as msg
from rafter._worker.spec import WorkerSpec

# How often, at most, a rank's metrics-only reports wake the driver; the controller's idle tick
# (rafter._controller.controller.POLL_S) is as long, so that a training run wakes the driver once a period.
# Monitors date progress by each report's own stamp (rafter._diagnose.decision.progress_time).
METRICS_LANE_S = 1.0
LANE_SNDBUF = 1 << 20  # asked for the worker's end of the lane; the kernel caps it (net.core.wmem_max)


class LocalRank(RankState):
    def __init__(self, spec: WorkerSpec, output: RankOutput) -> None:
        super().__init__(spec, output)
        self.open_streams = 3  # stdout, stderr and the metrics lane
        self.metrics_open = True


class LocalWorkerGroup(GroupBase):
    """One attempt's workers. ``poll()`` turns sockets and pipes into events for the controller."""

    def __init__(self, zygote: zygote_mod.Zygote, specs: List[WorkerSpec], payload: bytes, echo: bool = True) -> None:
        super().__init__({})
        self._zygote = zygote
        self._sel = selectors.DefaultSelector()
        self._by_pid: Dict[int, int] = {}
        self._channels: Dict[int, socket.socket] = {}
        self._metrics: Dict[int, socket.socket] = {}  # each rank's metrics lane (see rafter._worker.channel)
        self._resume: Deque[Tuple[float, int]] = collections.deque()  # (when, rank): lanes read lately
        self._sel.register(zygote.sock, selectors.EVENT_READ, ("zygote", None))
        for spec in specs:
            os.makedirs(spec.log_dir, exist_ok=True)
            self._ranks[spec.rank] = LocalRank(
                spec, RankOutput(os.path.join(spec.log_dir, f"rank_{spec.rank}.log"), f"[rank {spec.rank}] ", echo))
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            lane, their_lane = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            their_lane.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LANE_SNDBUF)  # room for more reports
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            zygote.spawn(spec, [theirs.fileno(), out_w, err_w, their_lane.fileno()])
            theirs.close()
            their_lane.close()
            os.close(out_w)
            os.close(err_w)
            self._channels[spec.rank] = mine
            self._sel.register(mine, selectors.EVENT_READ, ("events", spec.rank))
            lane.setblocking(False)
            self._metrics[spec.rank] = lane
            self._sel.register(lane, selectors.EVENT_READ, ("metrics", spec.rank))
            for fd, name in ((out_r, "stdout"), (err_r, "stderr")):
                os.set_blocking(fd, False)
                self._sel.register(fd, selectors.EVENT_READ, (name, spec.rank))
        self._conn = {r: Lanes(s, self._metrics[r]) for r, s in self._channels.items()}
        first = frame(msg.Payload(payload))
        for sock in self._channels.values():
            try:
                sock.sendall(first)  # waits only for a payload bigger than the socket buffer, until read
            except OSError:
                pass  # the worker is gone already; its exit says why

    # -- hooks of GroupBase ----------------------------------------------------------------------
    def _deliver(self, state: RankState, sig: int, group: bool) -> bool:
        if group:
            try:
                os.killpg(state.pid, sig)
                return True
            except ProcessLookupError:
                pass  # it has not made its own process group yet
        try:
            os.kill(state.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def _output_done(self, state: LocalRank) -> bool:
        return state.open_streams == 0

    def _send_to(self, rank: int, message) -> None:
        self._channels[rank].sendall(frame(message))

    # -- lifecycle -------------------------------------------------------------------------------
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
        for sock in list(self._channels.values()) + list(self._metrics.values()):
            sock.close()
        self._sel.close()

    # -- the pump ------------------------------------------------------------------------------
    def poll(self, timeout: float) -> List[object]:
        out: List[object] = []
        self._resume_lanes()
        if self._resume:
            timeout = max(0.0, min(timeout, self._resume[0][0] - time.monotonic()))
        ready = self._sel.select(timeout)
        if not ready and self._resume_lanes():
            ready = self._sel.select(0)  # woken for the lanes that rested: read them in this wake, not the next
        for key, _ in ready:
            kind, rank = key.data
            if kind == "zygote":
                self._on_zygote()
            elif kind == "events":
                self._on_events(rank, key.fileobj, out)
            elif kind == "metrics":
                self._on_metrics(rank, key.fileobj, out)
            else:
                self._on_output(rank, kind, key.fileobj)
        for rank in self._exiting:  # a dead rank's last reports come before its Exited
            self._on_metrics(rank, None, out)
        self._flush_exits(out)
        return out

    def _resume_lanes(self) -> bool:
        """Watch again the lanes whose rest is over; True if there were any."""
        now, resumed = time.monotonic(), False
        while self._resume and self._resume[0][0] <= now:
            _, rank = self._resume.popleft()
            if self._ranks[rank].metrics_open:
                self._sel.register(self._metrics[rank], selectors.EVENT_READ, ("metrics", rank))
                resumed = True
        return resumed

    def _on_zygote(self) -> None:
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
            state = self._ranks[rank]
            self._by_pid[pid] = rank
            state.output.note(f"attempt {state.spec.attempt}, pid {pid}")
            self._started(state, pid)
        elif message[0] == "exited":
            _, pid, status = message
            rank = self._by_pid.get(pid)
            if rank is not None:
                self._exited(self._ranks[rank], os.waitstatus_to_exitcode(status))

    def _on_events(self, rank: int, sock: socket.socket, out: List[object]) -> None:
        lanes = self._conn[rank]
        for message in lanes.read_main():
            self._dispatch(rank, message, out)
        if lanes.main.eof:
            self._sel.unregister(sock)
        if lanes.metrics.eof:
            self._metrics_done(rank)

    def _on_metrics(self, rank: int, sock, out: List[object]) -> None:
        """Metrics-only reports. After a read the lane rests for ``METRICS_LANE_S``: a rank that reports
        every step wakes the driver at most that often, and each wake reads all it sent meanwhile (what
        does not fit in the lane meanwhile comes on the main lane, which wakes the driver at once)."""
        lanes = self._conn[rank]
        if lanes.metrics.eof:
            return
        for message in lanes.read_metrics():
            self._dispatch(rank, message, out)
        if lanes.metrics.eof:
            self._metrics_done(rank)
        elif sock is not None:
            self._sel.unregister(sock)
            # On a grid shared by every rank: the lanes of all ranks come back together, in one wake.
            self._resume.append(((time.monotonic() // METRICS_LANE_S + 1) * METRICS_LANE_S, rank))

    def _metrics_done(self, rank: int) -> None:
        state = self._ranks[rank]
        if state.metrics_open:
            state.metrics_open = False
            state.open_streams -= 1
            try:
                self._sel.unregister(self._metrics[rank])
            except KeyError:
                pass  # resting: it is not registered

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
