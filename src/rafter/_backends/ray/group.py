"""Driver side of one attempt on Ray: the same ``poll() -> events`` contract as the local worker group.

Each rank has two TCP connections to the driver's listener (see ``wire``): its actor's control
connection (output, spawn/exit notices) and its worker's channel (``rafter._worker.channel``
messages). Sockets carry the fast path; Ray is asked only about deaths that sockets can't explain:

- the worker process exits -> its actor reports the status -> ``Exited`` with the real code/signal;
- the actor or its node is gone (control connection closed without an exit status, or the actor's
  ``run`` call failed) -> the driver asks Ray whether the node died. If it did, every rank on it gets
  ``Exited`` with ``evidence["lost_node"]`` (classified as ``lost_node`` by the verdict). Ray takes a
  health-check period to declare a crashed node dead; a rank waits for that up to ``LOST_WAIT_S``.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from rafter._backends import events as ev
from rafter._backends.output import RankOutput
from rafter._backends.ray import wire
from rafter._worker.spec import WorkerSpec

EXIT_LOG_GRACE_S = 0.5  # a worker's exit may overtake its last channel messages by this much
RAY_CHECK_S = 0.5  # how often Ray is asked about actors (only while the run is going)
LOST_WAIT_S = float(os.environ.get("RAFTER_RAY_LOST_WAIT_S", "60"))
HANDSHAKE_TIMEOUT_S = 10.0


@dataclass
class ExitedWithEvidence(ev.Exited):
    """``Exited`` plus what the backend knows about the death (merged into ``RankOutcome.evidence``)."""

    evidence: Dict[str, Any] = field(default_factory=dict)


class _Rank:
    def __init__(self, spec: WorkerSpec, actor, place, log_path: str) -> None:
        self.spec = spec
        self.actor = actor
        self.place = place  # layout.Place: node id/ip/rank
        self.run_ref = None
        self.ray_error: Optional[BaseException] = None
        self.returncode: Optional[int] = None  # from the actor's run() result
        self.pid: Optional[int] = None
        self.hostname: Optional[str] = None
        self.ctl: Optional[socket.socket] = None
        self.chan: Optional[socket.socket] = None
        self.readers: Dict[str, wire.FrameReader] = {}
        self.ctl_eof_at: Optional[float] = None
        self.chan_open = False
        self.alive = True
        self.pending_exit: Optional[ev.Exited] = None
        self.exit_deadline = 0.0
        self.killed_reason: Optional[str] = None
        self.output: Optional[RankOutput] = None  # set by the group, which knows whether to echo
        self.log_path = log_path
        self.node_oom: Optional[dict] = None  # the rank's node said it ran out of memory


class RayWorkerGroup:
    def __init__(self, listener: socket.socket, token: bytes, ranks: Dict[int, _Rank], pg, driver_ip: str,
                 echo: bool = True, on_close=None) -> None:
        self._listener = listener
        self._token = token
        self._ranks = ranks
        self._pg = pg
        self._driver_ip = driver_ip
        self._driver_node_id = _driver_node_id()
        for state in ranks.values():
            state.output = RankOutput(state.log_path, f"[rank {state.spec.rank} node {state.place.node_rank}] ", echo)
        self._on_close = on_close
        self._sel = selectors.DefaultSelector()
        self._sel.register(listener, selectors.EVENT_READ, ("accept", None))
        self._pending: Dict[socket.socket, tuple] = {}  # handshakes in progress: sock -> (bytes, deadline)
        self._by_ref: Dict[Any, int] = {}
        self._next_ray_check = 0.0
        self._closed = False
        self._rdzv: Optional[tuple] = None
        self.lost_nodes: List[dict] = []

    def attach(self, rank: int, run_ref) -> None:
        self._ranks[rank].run_ref = run_ref
        self._by_ref[run_ref] = rank

    # -- queries -------------------------------------------------------------------------------
    @property
    def ranks(self) -> List[int]:
        return sorted(self._ranks)

    def spec(self, rank: int) -> WorkerSpec:
        return self._ranks[rank].spec

    def pid(self, rank: int) -> Optional[int]:
        return self._ranks[rank].pid

    def pids(self) -> Dict[int, int]:
        """Live workers on the driver's own node (pids elsewhere mean nothing here; the memory monitor uses
        this). Each rank's actor watches its worker's memory on its own node as well."""
        return {r: s.pid for r, s in self._ranks.items()
                if s.pid is not None and s.alive and s.place.node_id == self._driver_node_id}

    def log_tail(self, rank: int) -> List[str]:
        return self._ranks[rank].output.lines()

    def all_exited(self) -> bool:
        return all(not s.alive and s.pending_exit is None for s in self._ranks.values())

    # -- control -------------------------------------------------------------------------------
    def kill(self, ranks: Optional[List[int]] = None, reason: str = "stopped by rafter", sig: int = signal.SIGKILL) -> None:
        import ray

        for r in self.ranks if ranks is None else ranks:
            state = self._ranks[r]
            if not state.alive or state.ctl_eof_at is not None or state.ray_error is not None:
                continue  # already gone; its death is being explained
            state.killed_reason = state.killed_reason or reason
            if not self._ctl_send(state, ("kill", sig)) and sig == signal.SIGKILL:
                ray.kill(state.actor, no_restart=True)  # not connected yet: stop the actor, its child dies with it

    def signal(self, rank: int, sig: int) -> bool:
        state = self._ranks[rank]
        return state.alive and state.pid is not None and self._ctl_send(state, ("signal", sig))

    def send(self, rank: int, message: tuple) -> None:
        chan = self._ranks[rank].chan
        if chan is None:
            raise OSError(f"rank {rank} is not connected")
        chan.sendall(wire.frame(message))

    def _ctl_send(self, state: _Rank, message: tuple) -> bool:
        if state.ctl is None or state.ctl_eof_at is not None:
            return False
        try:
            state.ctl.sendall(wire.frame(message))
            return True
        except OSError:
            return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for key in list(self._sel.get_map().values()):
            if key.fileobj is not self._listener:
                key.fileobj.close()
        self._sel.close()
        for sock in list(self._pending):
            sock.close()
        for state in self._ranks.values():
            for sock in (state.ctl, state.chan):
                if sock is not None:
                    sock.close()
            state.output.close()
        if self._on_close is not None:
            self._on_close(self)

    def forget_ray_objects(self) -> None:
        self._pg = None
        self._by_ref.clear()
        for state in self._ranks.values():
            state.actor = state.run_ref = None

    # -- the pump ------------------------------------------------------------------------------
    def poll(self, timeout: float) -> List[object]:
        out: List[object] = []
        for key, _ in self._sel.select(timeout):
            kind, rank = key.data
            if kind == "accept":
                self._accept()
            elif kind == "handshake":
                self._handshake(key.fileobj)
            elif kind == "ctl":
                self._on_ctl(rank, out)
            elif kind == "chan":
                self._on_chan(rank, out)
        now = time.time()
        self._expire_handshakes(now)
        if now >= self._next_ray_check:
            self._next_ray_check = now + RAY_CHECK_S
            self._check_ray(now, out)
        for state in self._ranks.values():
            if state.pending_exit is not None and (not state.chan_open or now >= state.exit_deadline):
                out.append(state.pending_exit)
                state.pending_exit = None
        return out

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            self._pending[sock] = (b"", time.time() + HANDSHAKE_TIMEOUT_S)
            self._sel.register(sock, selectors.EVENT_READ, ("handshake", None))

    def _handshake(self, sock: socket.socket) -> None:
        data, deadline = self._pending[sock]
        try:
            chunk = sock.recv(wire.HANDSHAKE_SIZE - len(data))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        data += chunk
        if chunk and len(data) < wire.HANDSHAKE_SIZE:
            self._pending[sock] = (data, deadline)
            return
        self._sel.unregister(sock)
        del self._pending[sock]
        parsed = wire.parse_handshake(data, self._token) if chunk else None
        if parsed is None or parsed[0] not in self._ranks:
            sock.close()  # not one of this attempt's actors or workers
            return
        rank, kind = parsed
        state = self._ranks[rank]
        name = "ctl" if kind == wire.CONTROL else "chan"
        if getattr(state, name) is not None:
            sock.close()
            return
        sock.settimeout(10.0)  # sends block (bounded); reads happen only when the selector says so
        setattr(state, name, sock)
        state.readers[name] = wire.FrameReader(sock)
        self._sel.register(sock, selectors.EVENT_READ, (name, rank))
        if name == "chan":
            state.chan_open = True
            if self._rdzv is not None and rank != 0:
                try:
                    self.send(rank, self._rdzv)
                except OSError:
                    pass

    def _expire_handshakes(self, now: float) -> None:
        for sock, (_, deadline) in list(self._pending.items()):
            if now > deadline:
                self._sel.unregister(sock)
                del self._pending[sock]
                sock.close()

    def _drop(self, state: _Rank, name: str) -> None:
        sock = getattr(state, name)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        if name == "chan":
            state.chan_open = False

    def _on_ctl(self, rank: int, out: List[object]) -> None:
        state = self._ranks[rank]
        reader = state.readers["ctl"]
        for message in reader.read():
            kind = message[0]
            if kind == "out":
                state.output.write(message[1], message[2])
            elif kind == "spawned":
                _, state.pid, _ip, state.hostname = message
                state.output.note(f"attempt {state.spec.attempt}, pid {state.pid}, node {state.place.node_rank} "
                                  f"({state.place.node_ip})")
            elif kind == "oom":  # the node-side memory watch's evidence (rafter._diagnose.node_memory)
                state.node_oom = message[1]
            elif kind == "exited":
                self._exited(state, message[1], evidence={"oom": state.node_oom} if state.node_oom else None)
        if reader.eof:
            self._drop(state, "ctl")
            state.output.flush()
            if state.alive:
                state.ctl_eof_at = time.time()  # the actor died without reporting: ask Ray why
                self._next_ray_check = 0.0

    def _on_chan(self, rank: int, out: List[object]) -> None:
        state = self._ranks[rank]
        reader = state.readers["chan"]
        for message in reader.read():
            self._dispatch(rank, message, out)
        if reader.eof:
            self._drop(state, "chan")

    def _dispatch(self, rank: int, message: tuple, out: List[object]) -> None:
        if message[0] == "rdzv":  # rank 0's store address; ranks that connect later get it on arrival
            self._rdzv = message
            for other, state in self._ranks.items():
                if other != rank and state.chan is not None:
                    try:
                        self.send(other, message)
                    except OSError:
                        pass
            return
        event = ev.from_message(rank, message)
        if event is not None:
            out.append(event)

    def _exited(self, state: _Rank, code: int, evidence: Optional[dict] = None) -> None:
        if not state.alive:
            return
        state.alive = False
        state.pending_exit = ExitedWithEvidence(
            rank=state.spec.rank,
            exit_code=code if code is not None and code >= 0 else None,
            signal=-code if code is not None and code < 0 else None,
            time=time.time(),
            killed_by_rafter=state.killed_reason is not None and not evidence,
            reason=state.killed_reason if not evidence else None,
            evidence=evidence or {},
        )
        state.exit_deadline = time.time() + EXIT_LOG_GRACE_S

    # -- deaths only Ray can explain -----------------------------------------------------------
    def _check_ray(self, now: float, out: List[object]) -> None:
        import ray

        waiting = [s.run_ref for s in self._ranks.values() if s.run_ref is not None and s.alive and s.ray_error is None
                   and s.returncode is None]
        if waiting:
            ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
            for ref in ready:
                state = self._ranks[self._by_ref[ref]]
                try:
                    state.returncode = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - RayActorError, RuntimeEnvSetupError, ...
                    state.ray_error = exc
        suspects = [s for s in self._ranks.values() if s.alive and (s.ctl_eof_at is not None or s.ray_error is not None)]
        if not suspects:
            return
        self._next_ray_check = now + 0.2
        dead = {n["NodeID"]: n for n in ray.nodes() if not n.get("Alive")}
        for state in suspects:
            if not state.alive:
                continue  # resolved with its node just now
            if state.place.node_id in dead:
                self._lost_node(dead[state.place.node_id], now)
            elif state.ray_error is not None and "its node has died" in str(state.ray_error):
                cause = str(state.ray_error).rsplit("its node has died.", 1)[-1].strip(" .\n\t")
                self._lost_node({"NodeID": state.place.node_id, "NodeManagerAddress": state.place.node_ip,
                                 "DeathReasonMessage": cause}, now)
            elif state.returncode is not None:  # run() returned but its "exited" notice was lost
                self._exited(state, state.returncode)
            elif state.ray_error is not None and not _unavailable(state.ray_error):
                self._actor_died(state, state.ray_error, out)
            elif now - (state.ctl_eof_at or now) > LOST_WAIT_S:
                self._lost_node({"NodeID": state.place.node_id, "NodeManagerAddress": state.place.node_ip,
                                 "DeathReasonMessage": f"no word from the node for {LOST_WAIT_S:g} s after its worker "
                                                       f"connection closed (Ray still lists it as alive)"}, now)

    def _lost_node(self, node: dict, now: float) -> None:
        node_id = node["NodeID"]
        lost = [s for s in self._ranks.values() if s.place.node_id == node_id and s.alive]
        ranks = sorted(s.spec.rank for s in self._ranks.values() if s.place.node_id == node_id)
        ip = node.get("NodeManagerAddress") or lost[0].place.node_ip
        cause = node.get("DeathReasonMessage") or "no reason given"
        info = {
            "node_ip": ip, "node_id": node_id, "ranks": ranks, "cause": cause,
            "headline": f"was lost: node {ip} (Ray node {node_id[:8]}) died; {_ranks_text(ranks)} lost",
            "details": f"Ray says the node died: {cause}",
            "fix": ("A node of the Ray cluster went away (removed, preempted, or its raylet crashed: see "
                    "`ray status` and the node's raylet.out). With RunConfig(failure_config=FailureConfig("
                    "max_failures=N)) rafter restarts the run from its latest checkpoint on the nodes that remain."),
        }
        self.lost_nodes.append(info)
        for state in lost:
            t = state.ctl_eof_at or now
            self._exited(state, None, evidence={"lost_node": dict(info, time=t)})
            state.pending_exit.time = t

    def _actor_died(self, state: _Rank, error: BaseException, out: List[object]) -> None:
        """The actor failed on a live node: it could not start (runtime env, import error) or was killed."""
        if state.killed_reason is not None:
            self._exited(state, -signal.SIGKILL)
        elif state.pid is None:
            message = str(error)
            out.append(ev.Errored(state.spec.rank, {
                "type": type(error).__name__, "module": type(error).__module__, "message": message,
                "traceback": message, "phase": "setup", "time": time.time(), "pickled": None, "exit_code": None,
            }))
            self._exited(state, 1)
        else:
            self._exited(state, -signal.SIGKILL, evidence={"ray_actor_died": str(error)})

def _driver_node_id() -> Optional[str]:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - a driver outside the cluster: no rank is on its node
        return None


def _unavailable(error: BaseException) -> bool:
    import ray

    return isinstance(error, getattr(ray.exceptions, "ActorUnavailableError", ()))


def _ranks_text(ranks: List[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))
