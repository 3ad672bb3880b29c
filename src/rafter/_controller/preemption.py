"""Preemption on the driver: notices in, one agreed ``PreemptionInfo`` out, a stop at the deadline.

Where notices come from:
- the driver itself: SIGTERM (a scheduler stopping the job) or a first Ctrl-C. The run then ends
  "preempted" after the workers' window (a second signal stops at once), and the next invocation
  resumes from the latest checkpoint;
- a worker: SIGTERM from outside rafter (``rafter._worker.preemption``). The group is restarted from
  the latest checkpoint after the window, charged to ``FailureConfig(max_preemption_failures=...)``.

The window is ``FailureConfig(preemption_grace_s)`` seconds, or ``DEFAULT_WINDOW_S`` when that is 0
(Kubernetes' default grace period). Every rank reads the notice through ``train.get_preemption_info()``,
which the collective hub answers with the same value on every rank. The workers are stopped at the
deadline, or as soon as every rank has reported a checkpoint after the notice.
"""

from __future__ import annotations

import logging
import pickle
import signal
import threading
import time
from typing import Dict, List, Optional, Set

from rafter._backends import events as ev
from rafter._diagnose.decision import Stop
from rafter.train._preemption import PreemptionInfo

logger = logging.getLogger("rafter")

DEFAULT_WINDOW_S = 30.0
PREEMPTED_REASON = "stopped by rafter for a preemption"


class Preemption:
    """One ``fit()``'s notices. A driver notice lasts for the run; a worker notice for its attempt."""

    def __init__(self, grace_s: float) -> None:
        self.window_s = grace_s if grace_s and grace_s > 0 else DEFAULT_WINDOW_S
        self.driver_reason: Optional[str] = None  # set from a signal handler: plain assignments only
        self.driver_time = 0.0
        self.worker: Optional[PreemptionInfo] = None
        self.worker_time = 0.0
        self.worker_ranks: Set[int] = set()
        self.announced = False

    # -- notices -------------------------------------------------------------------------------
    def notice_driver(self, reason: str) -> None:
        if self.driver_reason is None:
            self.driver_reason, self.driver_time = reason, time.time()

    def notice_worker(self, rank: int, node: str, when: float) -> None:
        """A SIGTERM reached ``rank``: that process is being stopped (not every rank of its node)."""
        self.worker_ranks.add(rank)
        if self.worker is None:
            self.worker_time = when
            self.worker = PreemptionInfo(int((when + self.window_s) * 1000), {}, f"SIGTERM to rank {rank} ({node})")
        ranks = self.worker.preempted_node_to_ranks.setdefault(node, [])
        if rank not in ranks:
            ranks.append(rank)
            ranks.sort()

    def new_attempt(self) -> None:
        self.worker, self.worker_ranks = None, set()

    # -- what the ranks and the controller read ------------------------------------------------
    def info(self, all_ranks: Dict[str, List[int]]) -> Optional[PreemptionInfo]:
        if self.driver_reason is not None:
            return PreemptionInfo(int((self.driver_time + self.window_s) * 1000), all_ranks, self.driver_reason)
        return self.worker

    @property
    def noticed_at(self) -> Optional[float]:
        if self.driver_reason is not None:
            return self.driver_time
        return self.worker_time if self.worker is not None else None

    @property
    def deadline(self) -> Optional[float]:
        at = self.noticed_at
        return None if at is None else at + self.window_s


class PreemptionMonitor:
    """Per attempt: takes the ranks' notices, answers nothing itself (the collective hub does), and asks
    for a stop at the deadline or once a checkpoint reported by every rank after the notice is in."""

    def __init__(self, view, preemption: Preemption) -> None:
        self.view = view
        self.preemption = preemption
        preemption.new_attempt()
        self._reports_after: Dict[int, Set[int]] = {}  # report index -> ranks that sent it after the notice
        self._with_checkpoint: Set[int] = set()
        self._stopped = False
        self._saved = False

    def node_of(self, rank: int) -> str:
        host = getattr(self.view.outcomes.get(rank), "host", None)
        node = f"node {self.view.group.spec(rank).node_rank}"
        return f"{node} ({host})" if host else node

    def nodes(self) -> Dict[str, List[int]]:
        by_node: Dict[str, List[int]] = {}
        for rank in self.view.group.ranks:
            by_node.setdefault(self.node_of(rank), []).append(rank)
        return by_node

    def info_bytes(self) -> Optional[bytes]:
        info = self.preemption.info(self.nodes())
        return None if info is None else pickle.dumps(info)

    def on_event(self, event):
        p = self.preemption
        if isinstance(event, ev.PreemptNotice):
            node = self.node_of(event.rank)
            p.notice_worker(event.rank, node, event.time)
            logger.warning("Preemption notice: %s. The workers have %.0f s to report a checkpoint "
                           "(train.get_preemption_info() says so on every rank).", p.worker.reason, p.window_s)
        elif isinstance(event, ev.Reported) and p.noticed_at is not None and event.time >= p.noticed_at:
            ranks = self._reports_after.setdefault(event.index, set())
            ranks.add(event.rank)
            if event.checkpoint:
                self._with_checkpoint.add(event.index)
            if event.index in self._with_checkpoint and len(ranks) == len(self.view.group.ranks):
                self._saved = True
        return None

    def tick(self, now: float):
        p = self.preemption
        if p.driver_reason is not None and not p.announced:  # logged here, not in the signal handler
            p.announced = True
            again = "press Ctrl-C again" if p.driver_reason == "Ctrl-C" else "send a second SIGTERM (or Ctrl-C)"
            logger.warning("%s: stopping the run. The workers have %.0f s to report a checkpoint "
                           "(train.get_preemption_info() says so on every rank); %s to stop now.",
                           p.driver_reason, p.window_s, again)
        deadline = p.deadline
        if self._stopped or deadline is None:
            return None
        if self._saved or now >= deadline:
            self._stopped = True
            why = "after its just-in-time checkpoint" if self._saved else "at the preemption deadline"
            return Stop(reason=f"{PREEMPTED_REASON} ({why})")
        return None

    def due(self) -> Optional[float]:
        p = self.preemption
        if p.driver_reason is not None and not p.announced:
            return time.time()
        return None if self._stopped else p.deadline

    @property
    def saved(self) -> bool:
        return self._saved

    def close(self):
        return None


class DriverSignals:
    """While a fit runs in the main thread: SIGTERM and the first Ctrl-C are preemption notices (the
    workers get their window to checkpoint); a second one stops at once (KeyboardInterrupt)."""

    def __init__(self, preemption: Preemption) -> None:
        self.preemption = preemption
        self._old: Dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum, frame) -> None:
        if self.preemption.driver_reason is not None:
            raise KeyboardInterrupt  # the second one: stop now
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM to the driver"
        self.preemption.notice_driver(name)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
