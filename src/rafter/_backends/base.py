"""The backend contract: what the controller asks of a backend and of the worker group it starts.

    backend.check_resources(scaling)                  -> torch threads per worker, or ValueError
    backend.start(use_gpu)                            once per fit(): fork server, listener, Ray connection
    backend.start_group(scaling, template, payload, echo)  -> WorkerGroup, one per attempt
    group.poll(timeout)                               -> events (``rafter._backends.events``)
    group.kill / signal / send, group.close()
    backend.shutdown()

``start_group`` gets one ``WorkerSpec`` template (everything but the rank's place) and fills in each
rank's ``rank``, ``node_rank``, ``local_rank``, ``local_world_size``, ``rdzv_host`` and ``device_index``
itself: the controller never sees how a backend places workers. A placement that cannot be made (a
restart after a node was lost) raises ``ValueError`` from ``start_group``.

:class:`GroupBase` is the half of a worker group that every backend shares: the per-rank queries,
``kill`` (including a kill asked before the worker's pid is known, delivered as soon as it is), the
delayed ``Exited`` (a worker's death may overtake its last output), and the relay of rank 0's
rendezvous address to the other ranks. A backend adds how it starts workers and how bytes reach it.
"""

from __future__ import annotations

import signal as signal_mod
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Protocol

from rafter._backends import events as ev
from rafter._backends.output import RankOutput
from rafter._worker import messages as msg
from rafter._worker.spec import WorkerSpec

if TYPE_CHECKING:
    from rafter.train._config import ScalingConfig

EXIT_LOG_GRACE_S = 0.5  # how long a dead worker's last output may trail its exit (grandchildren hold pipes)


class WorkerGroup(Protocol):
    """One attempt's workers, as the controller and the monitors see them."""

    @property
    def ranks(self) -> List[int]: ...

    def spec(self, rank: int) -> WorkerSpec: ...

    def pid(self, rank: int) -> Optional[int]: ...

    def pids(self) -> Dict[int, int]:
        """Live workers whose pids mean something on this machine (the memory monitor reads them)."""

    def log_tail(self, rank: int) -> List[str]: ...

    def kill(self, ranks: Optional[List[int]] = None, reason: str = "stopped by rafter",
             sig: int = signal_mod.SIGKILL) -> None: ...

    def signal(self, rank: int, sig: int) -> bool:
        """Send ``sig`` to a running worker's process only; False when it is not running."""

    def send(self, rank: int, message) -> None: ...

    def poll(self, timeout: float) -> List[object]: ...

    def all_exited(self) -> bool: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def check_resources(self, scaling: "ScalingConfig") -> int: ...

    def capacity(self, scaling: "ScalingConfig") -> int:
        """How many workers of this shape fit now (an elastic run sizes each attempt with it)."""

    def start(self, use_gpu: bool) -> None: ...

    def start_group(self, scaling: "ScalingConfig", template: WorkerSpec, payload: bytes,
                    echo: bool = True) -> WorkerGroup:
        """``echo``: also print each worker's output lines, prefixed by its rank (they always go to its log)."""

    def shutdown(self) -> None: ...


class RankState:
    """What a group knows about one of its ranks (a backend's subclass adds its own fields)."""

    def __init__(self, spec: WorkerSpec, output: RankOutput) -> None:
        self.spec = spec
        self.output = output
        self.pid: Optional[int] = None
        self.alive = True
        self.pending_exit: Optional[ev.Exited] = None  # held back until the rank's output is drained
        self.exit_deadline = 0.0
        self.killed_reason: Optional[str] = None
        self.kill_pending: Optional[int] = None  # a kill asked before the pid was known


class GroupBase:
    """The shared half of a worker group. Subclasses implement the hooks below the line."""

    def __init__(self, ranks: Dict[int, RankState]) -> None:
        self._ranks = ranks
        self._rdzv: Optional[msg.Rendezvous] = None
        # Kept as ranks change state, so that a turn of the driver's loop costs O(events), not O(ranks).
        self._sorted: List[int] = sorted(ranks)
        self._gone = 0  # ranks whose worker has exited (every rank starts alive)
        self._exiting: Dict[int, RankState] = {}  # ranks whose Exited is held back (see _flush_exits)

    # -- queries -------------------------------------------------------------------------------
    @property
    def ranks(self) -> List[int]:
        if len(self._sorted) != len(self._ranks):  # a subclass added or removed ranks
            self._sorted = sorted(self._ranks)
        return self._sorted

    def spec(self, rank: int) -> WorkerSpec:
        return self._ranks[rank].spec

    def pid(self, rank: int) -> Optional[int]:
        return self._ranks[rank].pid

    def pids(self) -> Dict[int, int]:
        return {r: s.pid for r, s in self._ranks.items() if s.pid is not None and s.alive and self._pid_is_here(s)}

    def log_tail(self, rank: int) -> List[str]:
        return self._ranks[rank].output.lines()

    def all_exited(self) -> bool:
        return self._gone >= len(self._ranks) and not self._exiting

    # -- control -------------------------------------------------------------------------------
    def kill(self, ranks: Optional[List[int]] = None, reason: str = "stopped by rafter",
             sig: int = signal_mod.SIGKILL) -> None:
        for r in self.ranks if ranks is None else ranks:
            state = self._ranks[r]
            if not state.alive or self._dying(state):
                continue
            state.killed_reason = state.killed_reason or reason
            if state.pid is None:
                state.kill_pending = sig
                self._kill_unstarted(state, sig)
            else:
                self._deliver(state, sig, group=True)

    def signal(self, rank: int, sig: int) -> bool:
        state = self._ranks[rank]
        if state.pid is None or not state.alive:
            return False
        return self._deliver(state, sig, group=False)

    def send(self, rank: int, message) -> None:
        self._send_to(rank, message)

    # -- for subclasses --------------------------------------------------------------------------
    def _started(self, state: RankState, pid: int) -> None:
        """The worker's pid is known: deliver a kill that was asked before."""
        state.pid = pid
        if state.kill_pending is not None and state.alive:
            self._deliver(state, state.kill_pending, group=True)

    def _exited(self, state: RankState, code: Optional[int], evidence: Optional[dict] = None,
                at: Optional[float] = None) -> None:
        """The worker is gone (``code``: its exit code, or minus the signal). ``evidence`` (e.g. the lost node)
        says the death was not rafter's doing, even if rafter had asked for it."""
        if not state.alive:
            return
        state.alive = False
        self._gone += 1
        self._exiting[state.spec.rank] = state
        now = time.time()
        state.pending_exit = ev.Exited(
            rank=state.spec.rank,
            exit_code=code if code is not None and code >= 0 else None,
            signal=-code if code is not None and code < 0 else None,
            time=now if at is None else at,
            killed_by_rafter=state.killed_reason is not None and not evidence,
            reason=state.killed_reason if not evidence else None,
            evidence=dict(evidence or {}),
        )
        state.exit_deadline = now + EXIT_LOG_GRACE_S

    def _flush_exits(self, out: List[object]) -> None:
        """Hand over each ``Exited`` once its rank's output is drained, or after the grace period."""
        if not self._exiting:
            return
        now = time.time()
        for rank, state in list(self._exiting.items()):
            if self._output_done(state) or now >= state.exit_deadline:
                out.append(state.pending_exit)
                state.pending_exit = None
                del self._exiting[rank]

    def _dispatch(self, rank: int, message, out: List[object]) -> None:
        """A worker's message: an event for the controller, or rank 0's store address, which goes to every
        other rank (now, or when it connects: see ``_rdzv``)."""
        if isinstance(message, msg.Rendezvous):
            self._rdzv = message
            for other in self._ranks:
                if other != rank and self._connected(other):
                    try:
                        self._send_to(other, message)
                    except OSError:
                        pass
            return
        event = ev.from_message(rank, message)
        if event is not None:
            out.append(event)

    # -- hooks -----------------------------------------------------------------------------------
    def _deliver(self, state: RankState, sig: int, group: bool) -> bool:
        """Send ``sig`` to the worker (``group``: its whole process group); True if it was sent."""
        raise NotImplementedError

    def _kill_unstarted(self, state: RankState, sig: int) -> None:
        """A kill before the pid is known; by default it waits in ``kill_pending`` for ``_started``."""

    def _dying(self, state: RankState) -> bool:
        """True while a rank's death is being explained (a kill must not take the blame for it)."""
        return False

    def _output_done(self, state: RankState) -> bool:
        raise NotImplementedError

    def _connected(self, rank: int) -> bool:
        return True

    def _send_to(self, rank: int, message) -> None:
        raise NotImplementedError

    def _pid_is_here(self, state: RankState) -> bool:
        return True
