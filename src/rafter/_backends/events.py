"""Events a worker group hands to the controller (the same on every backend).

The worker's own messages (``rafter._worker.messages``: Hello, Reported, Finished, Errored,
StorageRequest, CollectiveRequest, DatasetRequest, CheckpointsRequest, CollectivesSummary) are events as
they arrive; ``Exited`` is the
backend's word that a worker process is gone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from rafter._worker.messages import (
    CheckpointsRequest,
    CollectiveRequest,
    CollectivesSummary,
    DatasetRequest,
    Errored,
    Finished,
    Hello,
    PreemptNotice,
    Reported,
    StorageRequest,
)

__all__ = ["CheckpointsRequest", "CollectiveRequest", "CollectivesSummary", "DatasetRequest", "Errored", "Exited",
           "Finished", "Hello", "PreemptNotice", "Reported", "StorageRequest", "from_message"]

_WORKER_EVENTS = (Hello, Reported, Finished, Errored, StorageRequest, CollectiveRequest, DatasetRequest,
                  CheckpointsRequest, PreemptNotice, CollectivesSummary)


@dataclass
class Exited:
    """The worker process is gone. ``exit_code`` or ``signal`` tells how; ``evidence`` what the backend knows
    about the death (e.g. ``lost_node`` on Ray), merged into the rank's ``RankOutcome.evidence``."""

    rank: int
    exit_code: Optional[int]
    signal: Optional[int]
    time: float
    killed_by_rafter: bool = False
    reason: Optional[str] = None  # set when rafter stopped it (e.g. "out of memory")
    evidence: Dict[str, Any] = field(default_factory=dict)


def from_message(rank: int, message):
    """The event for a message that arrived on ``rank``'s channel, or None for one that is not an event.
    The channel names the sender: a message claiming another rank is re-addressed to this one."""
    if not isinstance(message, _WORKER_EVENTS):
        return None
    if message.rank != rank:
        message = dataclasses.replace(message, rank=rank)
    return message
