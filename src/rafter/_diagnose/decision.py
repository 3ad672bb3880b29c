"""What a monitor may ask of the controller. Monitors observe; the controller acts (in one place).

    Stop(ranks, reason, evidence)  stop these ranks (None: every rank), saying why, and record the evidence
    Note(evidence)                 record evidence only (e.g. the kernel OOM killer took a rank)

``evidence`` maps a rank to entries merged into its ``RankOutcome.evidence`` (``{"hang": {...}}``),
which the verdict reads. A monitor returns a decision, or None, from ``on_event(event)``, ``tick(now)``
and ``close()`` (at the attempt's end); it is built per attempt from an :class:`AttemptView`.

``tick`` runs after every turn of the controller's loop: after events, and at least every
``rafter._controller.controller.POLL_S`` (1 s) when there are none. A monitor with a deadline of its
own (a timeout) may also have ``due() -> Optional[float]``: the ``time.time()`` by which it wants its
next tick (None: no deadline). The loop sleeps no longer than that, so a monitor's deadline is met to
the millisecond while an idle or steadily reporting run wakes the driver only once a period.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

LATE_S = 2.0  # an event read this long after it was sent, or more: its clock is not trusted (another node's)


def progress_time(event) -> float:
    """When the rank made the progress that ``event`` tells of: its own time stamp when that is at most
    ``LATE_S`` old (the local backend reads metrics-only reports in batches, up to
    rafter._backends.local.group.METRICS_LANE_S after they were sent), else now."""
    now = time.time()
    sent = getattr(event, "time", None)
    return sent if isinstance(sent, float) and 0.0 <= now - sent <= LATE_S else now


@dataclass
class Note:
    evidence: Dict[int, Dict[str, Any]] = field(default_factory=dict)


@dataclass
class Stop(Note):
    ranks: Optional[List[int]] = None  # None: every rank of the group
    reason: str = "stopped by rafter"


@dataclass
class AttemptView:
    """What a monitor may read about the attempt it watches."""

    number: int
    group: Any  # rafter._backends.base.WorkerGroup (monitors may query and signal it, not kill it)
    outcomes: Mapping[int, Any]  # rank -> RankOutcome, kept current by the controller
    run_config: Any
    scaling: Any
    timeout_s: Optional[float] = None  # the process group's collective timeout
    run_state: Any = None  # the run folder's record (committed checkpoints), for monitors that answer workers
    _first_failure: Any = None  # callable -> time of the attempt's first failure, or None
    _failed_ranks: Any = None  # callable -> the failed ranks, kept by the controller (else: a scan)
    answers: Dict[str, Any] = field(default_factory=dict)  # collective op -> callable giving the driver's answer

    @property
    def first_failure(self) -> Optional[float]:
        return self._first_failure() if self._first_failure is not None else None

    def failed_ranks(self) -> List[int]:
        if self._failed_ranks is not None:
            return self._failed_ranks()
        return [r for r, o in self.outcomes.items() if o.failed]
