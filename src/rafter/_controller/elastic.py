"""Elastic runs, ``ScalingConfig(num_workers=(min, max))``: each attempt as large as the cluster holds.

- Before every attempt the group is sized with the backend's ``capacity()``, clamped to ``[min, max]``
  (an attempt that can't have ``min`` fails to start, as a fixed-size one would).
- While an attempt is healthy, ``ResizeMonitor`` looks for room every
  ``ScalingConfig.elastic_resize_monitor_interval_s`` and, when more workers fit, stops the group so that
  the next attempt grows (from the latest checkpoint, with the new world size).
- A rank lost with its node shrinks the next attempt instead of counting as a failure, while ``min``
  workers still fit.
A resize is always a full restart from the latest checkpoint, as in Ray Train.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from rafter._diagnose.decision import Stop

RESIZE_REASON = "stopped by rafter to resize the group"


def size(requested, capacity: Callable[[], int]) -> int:
    """The worker count for the next attempt: what fits, within the elastic range (``min`` at least)."""
    return max(requested.min_workers, min(requested.max_workers, capacity()))


class ResizeMonitor:
    """Per attempt of an elastic run: asks for a stop when the cluster has room for more workers."""

    def __init__(self, view, requested, capacity: Callable[[], int]) -> None:
        self.requested = requested
        self.capacity = capacity
        self.current = len(view.group.ranks)
        self.interval = requested.elastic_resize_monitor_interval_s
        self.next_check = time.time() + self.interval
        self.grow_to: Optional[int] = None

    def on_event(self, event):
        return None

    def tick(self, now: float):
        if self.grow_to is not None or now < self.next_check or self.current >= self.requested.max_workers:
            return None
        self.next_check = now + self.interval
        try:
            n = size(self.requested, self.capacity)
        except Exception:  # noqa: BLE001 - the cluster could not be asked this time; ask again later
            return None
        if n <= self.current:
            return None
        self.grow_to = n
        return Stop(reason=f"{RESIZE_REASON} from {self.current} to {n} workers")

    def close(self):
        return None
