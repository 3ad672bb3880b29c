"""``rafter.train.get_preemption_info()`` and ``PreemptionInfo`` (Ray Train 2.60's names and fields).

A preemption notice reaches the driver when the job is being stopped from outside: SIGTERM (or a first
Ctrl-C) to the driver, SIGTERM to a worker, or a Ray node being drained. Every rank then sees the same
``PreemptionInfo`` from ``get_preemption_info()`` and has until ``deadline_ms`` to report a
just-in-time checkpoint; the driver stops the workers at the deadline, or as soon as every rank has
reported a checkpoint after the notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

__all__ = ["PreemptionInfo", "get_preemption_info"]


@dataclass
class PreemptionInfo:
    """Information about an imminent preemption.

    Attributes:
        deadline_ms: when the workers are stopped (UNIX time in milliseconds).
        preempted_node_to_ranks: each preempted node's id (its address in rafter) -> the world ranks on it.
            A notice to the driver (the whole job is being stopped) names every rank.
        reason: what the notice was, in words (rafter's addition), e.g. "SIGTERM to the driver".
    """

    deadline_ms: Optional[int]
    preempted_node_to_ranks: Dict[str, List[int]] = field(default_factory=dict)
    reason: str = ""

    @property
    def preempted_node_ids(self) -> List[str]:
        """Preempted node ids, sorted."""
        return sorted(self.preempted_node_to_ranks)

    @property
    def preempted_ranks(self) -> List[int]:
        """Every affected rank, sorted."""
        return sorted({r for ranks in self.preempted_node_to_ranks.values() for r in ranks})


def get_preemption_info() -> Optional[PreemptionInfo]:
    """The preemption under way, or None. A barrier, as in Ray Train: every rank must call it the same
    number of times (each call answers the same value on every rank), so call it at the same point of
    every rank's loop, e.g. once per step::

        info = train.get_preemption_info()
        if info is not None and not saved:
            train.report(metrics, checkpoint=...)   # a just-in-time checkpoint; the run resumes from it
            saved = True
    """
    import pickle

    from rafter._worker.session import require_session
    from rafter.train.collective import _call

    reply = _call(require_session("get_preemption_info"), "get_preemption_info", None, ask_the_driver=True)
    return None if not reply else pickle.loads(reply)
