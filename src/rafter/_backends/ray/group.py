"""Driver side of one attempt on Ray: the same ``poll() -> events`` contract as the local worker group.

Each rank has two TCP connections to the driver's listener (see ``wire``): its actor's control
connection (output, spawn/exit notices) and its worker's channel (``rafter._worker.channel``
messages). Sockets carry the fast path; Ray is asked only about deaths that sockets can't explain:

- the worker process exits -> its actor reports the status -> ``Exited`` with the real code/signal;
- the actor or its node is gone (control connection closed without an exit status, or the actor's
  ``run`` call failed) -> the driver asks Ray whether the node died. If it did, every rank on it gets
  ``Exited`` with ``evidence["lost_node"]`` (classified as ``lost_node`` by the verdict). Ray takes a
  health-check period to declare a crashed node dead; a rank waits for that up to ``lost_wait_s()``
  (RAFTER_RAY_LOST_WAIT_S, read when the group starts).
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from typing import Any, Dict, List, Optional

from rafter._backends.base import GroupBase, RankState
from rafter._backends.output import RankOutput
from rafter._backends.ray import wire
from rafter._util.text import ranks_label
from rafter._worker import messages as msg
from rafter._worker.spec import WorkerSpec

RAY_CHECK_S = 0.5  # how often Ray is asked about actors (only while the run is going)
SIGKILL_HOLD_S = 2.0  # a SIGKILL rafter did not send waits this long for its node's death to show
HANDSHAKE_TIMEOUT_S = 10.0


def lost_wait_s() -> float:
    """How long a rank whose connection closed waits for Ray to say its node died (RAFTER_RAY_LOST_WAIT_S)."""
    return float(os.environ.get("RAFTER_RAY_LOST_WAIT_S", "60"))


class RayRank(RankState):
    def __init__(self, spec: WorkerSpec, actor, place, log_path: str, echo: bool = True) -> None:
        super().__init__(spec, RankOutput(log_path, f"[rank {spec.rank} node {place.node_rank}] ", echo))
        self.actor = actor
        self.place = place  # layout.Place: node id/ip/rank
        self.run_ref = None
        self.ray_error: Optional[BaseException] = None
        self.returncode: Optional[int] = None  # from the actor's run() result
        self.hostname: Optional[str] = None
        self.ctl: Optional[socket.socket] = None
        self.chan: Optional[socket.socket] = None
        self.readers: Dict[str, wire.FrameReader] = {}
        self.ctl_eof_at: Optional[float] = None
        self.chan_open = False
        self.sigkill_at: Optional[float] = None  # when the actor reported a SIGKILL that rafter did not send
        self.node_oom: Optional[dict] = None  # the rank's node said it ran out of memory


class RayWorkerGroup(GroupBase):
    """One attempt's actors and workers on Ray. Closing it kills the actors and frees the placement group."""

    def __init__(self, listener: socket.socket, token: bytes, ranks: Dict[int, RayRank], pg, driver_ip: str,
                 on_close=None) -> None:
        super().__init__(ranks)
        self._listener = listener
        self._token = token
        self._pg = pg
        self._driver_ip = driver_ip
        self._driver_node_id = _driver_node_id()
        self._on_close = on_close
        self._sel = selectors.DefaultSelector()
        self._sel.register(listener, selectors.EVENT_READ, ("accept", None))
        self._pending: Dict[socket.socket, tuple] = {}  # handshakes in progress: sock -> (bytes, deadline)
        self._by_ref: Dict[Any, int] = {}
        self._next_ray_check = 0.0
        self._closed = False
        self._lost_wait_s = lost_wait_s()
        self.lost_nodes: List[dict] = []

    def attach(self, rank: int, run_ref) -> None:
        self._ranks[rank].run_ref = run_ref
        self._by_ref[run_ref] = rank

    # -- hooks of GroupBase ----------------------------------------------------------------------
    def _pid_is_here(self, state: RayRank) -> bool:
        """Only the driver's own node (pids elsewhere mean nothing here; the memory monitor reads them). Each
        rank's actor watches its worker's memory on its own node as well."""
        return state.place.node_id == self._driver_node_id

    def _dying(self, state: RayRank) -> bool:
        return state.ctl_eof_at is not None or state.ray_error is not None or state.sigkill_at is not None

    def _deliver(self, state: RayRank, sig: int, group: bool) -> bool:
        sent = self._ctl_send(state, ("kill" if group else "signal", sig))
        if not sent and group and sig == signal.SIGKILL:
            self._kill_actor(state)
        return sent

    def _kill_unstarted(self, state: RayRank, sig: int) -> None:
        if state.ctl is None and sig == signal.SIGKILL:
            self._kill_actor(state)  # not connected yet: stop the actor, its child dies with it

    def _output_done(self, state: RayRank) -> bool:
        return not state.chan_open

    def _connected(self, rank: int) -> bool:
        return self._ranks[rank].chan is not None

    def _send_to(self, rank: int, message) -> None:
        chan = self._ranks[rank].chan
        if chan is None:
            raise OSError(f"rank {rank} is not connected")
        chan.sendall(wire.frame(message))

    @staticmethod
    def _kill_actor(state: RayRank) -> None:
        import ray

        if state.actor is not None:
            ray.kill(state.actor, no_restart=True)

    def _ctl_send(self, state: RayRank, message: tuple) -> bool:
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
        release(self._pg, [s.actor for s in self._ranks.values() if s.actor is not None])
        self._pg = None  # the group may outlive Ray (in a traceback): hold no Ray handles
        self._by_ref.clear()
        for state in self._ranks.values():
            state.actor = state.run_ref = None
        if self._on_close is not None:
            self._on_close(self)

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
        self._flush_exits(out)
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
            if self._rdzv is not None and rank != 0:  # rank 0's address came before this rank connected
                try:
                    self._send_to(rank, self._rdzv)
                except OSError:
                    pass

    def _expire_handshakes(self, now: float) -> None:
        for sock, (_, deadline) in list(self._pending.items()):
            if now > deadline:
                self._sel.unregister(sock)
                del self._pending[sock]
                sock.close()

    def _drop(self, state: RayRank, name: str) -> None:
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
                _, pid, _ip, state.hostname = message
                state.output.note(f"attempt {state.spec.attempt}, pid {pid}, node {state.place.node_rank} "
                                  f"({state.place.node_ip})")
                self._started(state, pid)
            elif kind == "oom":  # the node-side memory watch's evidence (rafter._diagnose.node_memory)
                state.node_oom = message[1]
            elif kind == "exited":
                if state.node_oom:
                    self._exited(state, message[1], evidence={"oom": state.node_oom})
                elif message[1] == -signal.SIGKILL and state.killed_reason is None:
                    # Held back: a node going down kills its workers first (its fork server dies), and its
                    # actors a moment later. The node's death, if that is what it is, explains this one.
                    state.sigkill_at = time.time()
                    self._next_ray_check = 0.0
                else:
                    self._exited(state, message[1])
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
        suspects = [s for s in self._ranks.values()
                    if s.alive and (s.ctl_eof_at is not None or s.ray_error is not None or s.sigkill_at is not None)]
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
            elif state.sigkill_at is not None and state.ctl_eof_at is None:
                if now - state.sigkill_at >= SIGKILL_HOLD_S:  # its actor lives on: the node is fine
                    self._exited(state, -signal.SIGKILL, at=state.sigkill_at)
            elif state.returncode is not None and state.sigkill_at is None:  # its "exited" notice was lost
                self._exited(state, state.returncode)
            elif state.ray_error is not None and not _unavailable(state.ray_error) and state.sigkill_at is None:
                self._actor_died(state, state.ray_error, out)
            elif now - (state.ctl_eof_at or now) > self._lost_wait_s:
                self._lost_node({"NodeID": state.place.node_id, "NodeManagerAddress": state.place.node_ip,
                                 "DeathReasonMessage": f"no word from the node for {self._lost_wait_s:g} s after its worker "
                                                       f"connection closed (Ray still lists it as alive)"}, now)

    def _lost_node(self, node: dict, now: float) -> None:
        node_id = node["NodeID"]
        lost = [s for s in self._ranks.values() if s.place.node_id == node_id and s.alive]
        ranks = sorted(s.spec.rank for s in self._ranks.values() if s.place.node_id == node_id)
        ip = node.get("NodeManagerAddress") or lost[0].place.node_ip
        cause = node.get("DeathReasonMessage") or "no reason given"
        info = {
            "node_ip": ip, "node_id": node_id, "ranks": ranks, "cause": cause,
            "headline": f"was lost: node {ip} (Ray node {node_id[:8]}) died; {ranks_label(ranks)} lost",
            "details": f"Ray says the node died: {cause}",
            "fix": ("A node of the Ray cluster went away (removed, preempted, or its raylet crashed: see "
                    "`ray status` and the node's raylet.out). With RunConfig(failure_config=FailureConfig("
                    "max_failures=N)) rafter restarts the run from its latest checkpoint on the nodes that remain."),
        }
        self.lost_nodes.append(info)
        for state in lost:
            t = state.ctl_eof_at or now
            self._exited(state, None, evidence={"lost_node": dict(info, time=t)}, at=t)

    def _actor_died(self, state: RayRank, error: BaseException, out: List[object]) -> None:
        """The actor failed on a live node: it could not start (runtime env, import error) or was killed."""
        if state.killed_reason is not None:
            self._exited(state, -signal.SIGKILL)
        elif state.pid is None:
            message = str(error)
            out.append(msg.Errored(state.spec.rank, {
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


def release(pg, actors) -> None:
    """Kill an attempt's actors (their workers die with them) and free its placement group."""
    import ray
    from ray.util.placement_group import remove_placement_group

    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass
    if pg is None:
        return
    try:
        remove_placement_group(pg)
    except Exception:  # noqa: BLE001 - already removed, or the GCS is gone with the cluster
        pass
