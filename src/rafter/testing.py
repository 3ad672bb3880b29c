"""Fault injection for tests and chaos experiments on your own jobs.

    monkey = ChaosMonkey(kills=5, seed=1)     # SIGKILL a random rank at a random report, 5 times
    monkey.attach(trainer); trainer.fit()

    inject_fault(trainer, point="upload", action="sigkill", rank=1, report=2)
        # rank 1 SIGKILLs itself after writing its first checkpoint file of report 2

The kills come from outside the worker, as an OOM killer or a scheduler's would.
"""

from __future__ import annotations

import random
import signal
from typing import List, Optional, Tuple

from rafter._backends import events as ev


class ChaosMonkey:
    def __init__(self, kills: int, seed: int = 0, max_report: int = 3) -> None:
        self.left = kills
        self.rng = random.Random(seed)
        self.max_report = max_report
        self.done: List[Tuple[int, int, int]] = []  # (attempt, rank, report index)

    def attach(self, trainer):
        trainer._monitors.append(self)
        return trainer

    def __call__(self, view):
        """One attempt's watcher (a controller monitor: see ``rafter._diagnose.decision``)."""
        return _ChaosAttempt(self, view)


class _ChaosAttempt:
    """Kills from outside (``group.signal``), as a scheduler would: no decision for the controller."""

    def __init__(self, monkey: ChaosMonkey, view) -> None:
        self.monkey = monkey
        self.group = view.group
        self.attempt = view
        self.rank = monkey.rng.choice(self.group.ranks)
        self.index = monkey.rng.randint(1, monkey.max_report)

    def on_event(self, event) -> None:
        m = self.monkey
        if m.left > 0 and isinstance(event, ev.Reported) and event.rank == self.rank and event.index == self.index:
            if self.group.signal(self.rank, signal.SIGKILL):
                m.left -= 1
                m.done.append((self.attempt.number, self.rank, self.index))

    def tick(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass


def inject_fault(trainer, *, point: str, action: str, rank: int, attempt: int = 1,
                 report: Optional[int] = None) -> None:
    """Arm one fault: at ``point`` ("upload", "report"), rank ``rank`` does ``action``
    ("sigkill", "segfault", "exit", "raise")."""
    fault = {"point": point, "action": action, "rank": rank, "attempt": attempt}
    if report is not None:
        fault["report"] = report
    trainer._fault = fault
