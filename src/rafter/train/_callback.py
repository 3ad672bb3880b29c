"""Callback interfaces; every hook is optional and runs on the driver.

    Callback          rafter's hooks (attempts, reports of rank 0, commits, failures, the end)
    UserCallback      Ray Train's hooks: after_report(run_context, metrics per rank, checkpoint),
                      after_exception(run_context, worker_exceptions)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


class Callback:
    """Subclass and override what you need; pass instances in ``RunConfig(callbacks=[...])``."""

    def on_attempt_start(self, *, attempt: int, num_workers: int, run_path: str) -> None:
        """Before the workers of an attempt start (attempt 1, then once per restart)."""

    def after_report(self, *, metrics: Dict[str, Any], rank: int, run_path: str) -> None:
        """After each report of rank 0."""

    def on_checkpoint(self, *, checkpoint, metrics: Dict[str, Any], run_path: str) -> None:
        """After a checkpoint is committed (visible in storage)."""

    def on_failure(self, *, error, run_path: str) -> None:
        """After an attempt fails (before a restart, or before ``fit()`` raises)."""

    def on_end(self, *, result, run_path: str) -> None:
        """When the run ends, successfully (``result.error is None``) or not."""


class RayTrainCallback:
    """Ray Train's callback base class (``ray.train.UserCallback`` derives from it)."""


class UserCallback(RayTrainCallback):
    """Ray Train 2.60's callback for user hooks, called on the driver (Ray: the controller).

    Pass instances in ``RunConfig(callbacks=[...])``, next to or instead of :class:`Callback` objects.
    """

    def after_report(self, run_context: "TrainRunContext", metrics: List[Dict[str, Any]], checkpoint: Optional[Any]):
        """After every rank has reported: ``metrics[i]`` is rank i's dict; ``checkpoint`` the checkpoint that
        report committed (in storage), or None when no rank passed one."""

    def after_exception(self, run_context: "TrainRunContext", worker_exceptions: Dict[int, Exception]):
        """After one or more ranks failed: ``worker_exceptions[rank]`` is the exception that rank raised (or,
        for a rank that died without one, an exception describing how it ended)."""


@dataclass
class TrainRunContext:
    """What a run was started with, handed to :class:`UserCallback` hooks."""

    run_config: Any
    train_loop_config: Optional[Dict[str, Any]]
    scaling_config: Any
    backend_config: Any
    dataset_config: Any = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def get_run_config(self):
        return self.run_config
