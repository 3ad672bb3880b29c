"""The driver's half of ``rafter.train.get_all_reported_checkpoints()``.

A request from a rank that made N reports is answered once every rank has made N reports (so report
N's checkpoint, if any, is committed), once its ``timeout_s`` passed, or once a rank that has made fewer
returned from its train function (it never will, and waiting would hang the caller).
"""

from __future__ import annotations

import time
from typing import List, Optional, Tuple

from rafter._backends import events as ev
from rafter._worker import messages as msg


def committed(state) -> List[Tuple[str, dict]]:
    """``[(path, metrics)]`` of the run's committed checkpoints, oldest first."""
    return [(state.checkpoints.path(c["name"]), c["metrics"]) for c in state.checkpoints.checkpoints]


class ReportedCheckpointsHub:
    def __init__(self, view) -> None:
        self._group = view.group
        self._attempt = view
        self._waiting: List[Tuple[int, int, Optional[float]]] = []  # (rank, num_reports, deadline)

    def on_event(self, event) -> None:
        if isinstance(event, ev.CheckpointsRequest):
            deadline = None if event.timeout_s is None else time.monotonic() + event.timeout_s
            self._waiting.append((event.rank, event.num_reports, deadline))
        if self._waiting and isinstance(event, (ev.CheckpointsRequest, ev.Reported, ev.Finished)):
            self._answer(time.monotonic())

    def tick(self, now: float) -> None:
        if self._waiting:
            self._answer(time.monotonic())

    def close(self) -> None:
        self._waiting.clear()

    def _ready(self, num_reports: int, deadline: Optional[float], now: float) -> bool:
        if deadline is not None and now >= deadline:
            return True
        for o in self._attempt.outcomes.values():
            if o.reports < num_reports and not o.finished:
                return False
        return True

    def _answer(self, now: float) -> None:
        still = []
        for rank, num_reports, deadline in self._waiting:
            if not self._ready(num_reports, deadline, now):
                still.append((rank, num_reports, deadline))
                continue
            try:
                self._group.send(rank, msg.CheckpointsDone(committed(self._attempt.run_state)))
            except OSError:
                pass
        self._waiting = still
